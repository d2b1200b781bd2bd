/*
 * aqpy_runtime.c - what the torch runtime (python/arrow_quant_v2/torch.py) needs from the C
 * library: the rows of a model file (_model_rows, _model_metadata) and the dequantization of
 * one packed tensor from caller-owned buffers into a caller-owned output (_dequantize_into).
 *
 * _model_rows(path, hold=True) hands quantized rows out in place: their buffers are
 * _HeldBuffer objects over the reader's memory (the decompressed record batch, or the file's
 * copy-on-write mapping), kept alive by a hold (aq_qmodel_row_hold) that a capsule owns and every
 * buffer of the row references, so the packed weights are never copied.
 *
 * _dequantize_into reads and writes through the buffer protocol, so a torch tensor's memory is
 * used in place (the runtime wraps its data pointer in a ctypes array): no copy on the way in or
 * out. It runs aq_dequantize, which checks the buffers against the layout first, with the GIL
 * released.
 */
#include "aqpy.h"

#include <string.h>

static aqpy_state *rt_state(PyObject *module)
{
    return PyModule_GetState(module);
}

static void rt_raise_status(PyObject *module, aq_status code, const char *msg)
{
    aq_error err;
    err.code = code;
    snprintf(err.message, sizeof err.message, "%s", msg);
    aq__py_raise(rt_state(module), &err);
}

/* ------------------------------------------------------------------------------------------ */
/* _dequantize_into                                                                           */
/* ------------------------------------------------------------------------------------------ */

static int rt_dtype(const char *name, aq_dtype *out)
{
    static const struct {
        const char *name;
        aq_dtype dtype;
    } names[] = {{"f32", AQ_DTYPE_F32}, {"f16", AQ_DTYPE_F16}, {"bf16", AQ_DTYPE_BF16}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].dtype;
            return 0;
        }
    }
    return -1;
}

/* The shape as int64 values (at most AQ_MAX_NDIM). 0, or -1 with an exception set. */
static int rt_shape(PyObject *module, PyObject *obj, int64_t *shape, size_t *ndim)
{
    PyObject *seq = PySequence_Fast(obj, "shape must be a sequence of integers");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > AQ_MAX_NDIM) {
        Py_DECREF(seq);
        rt_raise_status(module, AQ_INVALID_ARGUMENT, "shape has too many dimensions");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        shape[i] = (int64_t)v;
    }
    *ndim = (size_t)n;
    Py_DECREF(seq);
    return 0;
}

PyDoc_STRVAR(rt_dequantize_into_doc,
             "_dequantize_into(scheme, bit_width, group_size, shape, packed, scales, zero_points,"
             " out, out_dtype='f32', *, name=None, threads=1)\n--\n\n"
             "Dequantizes one packed tensor (docs/format.md, any scheme) into out, a writable "
             "C-contiguous buffer of at least prod(shape) elements of out_dtype ('f32', 'f16' "
             "or 'bf16'). packed, scales and zero_points are read through the buffer protocol "
             "(scales and zero_points as float32). The GIL is released during the work. "
             "threads: worker threads of the C library (0: one per CPU).");

static PyObject *rt_dequantize_into(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"scheme",      "bit_width", "group_size", "shape", "packed",  "scales",
                             "zero_points", "out",       "out_dtype",  "name",  "threads", NULL};
    const char *scheme_name, *dtype_name = "f32", *name = NULL;
    unsigned int bits;
    unsigned long long group;
    PyObject *shape_obj;
    Py_buffer packed = {0}, scales = {0}, zps = {0}, out = {0};
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sIKOy*y*y*w*|s$zi:_dequantize_into", kwlist,
                                     &scheme_name, &bits, &group, &shape_obj, &packed, &scales,
                                     &zps, &out, &dtype_name, &name, &threads)) {
        return NULL;
    }
    PyObject *result = NULL;
    aq_ctx *ctx = NULL;
    aq_error err = {0};
    aq_scheme scheme;
    aq_dtype dtype;
    int64_t shape[AQ_MAX_NDIM];
    size_t ndim = 0;
    if (aq_scheme_from_name(scheme_name, &scheme, &err) != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
        goto done;
    }
    if (rt_dtype(dtype_name, &dtype) != 0) {
        rt_raise_status(module, AQ_INVALID_ARGUMENT, "out_dtype must be 'f32', 'f16' or 'bf16'");
        goto done;
    }
    if (rt_shape(module, shape_obj, shape, &ndim) != 0) {
        goto done;
    }
    if (scales.len % 4 != 0 || zps.len % 4 != 0 || scales.len != zps.len) {
        rt_raise_status(module, AQ_INVALID_ARGUMENT,
                        "scales and zero_points must hold the same number of float32 values");
        goto done;
    }
    aq_qtensor q = {
        .name = name,
        .scheme = scheme,
        .bit_width = bits,
        .group_size = (size_t)group,
        .shape = shape,
        .ndim = ndim,
        .packed = packed.buf,
        .packed_size = (size_t)packed.len,
        .scales = scales.buf,
        .zero_points = zps.buf,
        .groups = (size_t)scales.len / 4,
    };
    size_t capacity = (size_t)out.len / aq_dtype_size(dtype);
    aq_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = aq_ctx_create(&ctx, &err);
    if (st == AQ_OK) {
        st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err);
    }
    if (st == AQ_OK) {
        st = aq_dequantize(ctx, &q, dtype, out.buf, capacity, &err);
    }
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    aq_ctx_free(ctx);
    PyBuffer_Release(&packed);
    PyBuffer_Release(&scales);
    PyBuffer_Release(&zps);
    PyBuffer_Release(&out);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* _model_rows, _model_metadata                                                               */
/* ------------------------------------------------------------------------------------------ */

static PyObject *rt_bytes(const void *p, size_t n)
{
    return PyByteArray_FromStringAndSize(n > 0 ? p : "", (Py_ssize_t)n);
}

/* ------------------------------------------------------------------------------------------ */
/* _HeldBuffer: a writable buffer over held row memory                                        */
/* ------------------------------------------------------------------------------------------ */

#define RT_HOLD_CAPSULE "arrow_quant_v2._qmodel_hold"

typedef struct rt_held_obj {
    PyObject_HEAD PyObject *owner; /* the hold's capsule */
    void *ptr;
    Py_ssize_t len;
} rt_held_obj;

static void rt_hold_destroy(PyObject *capsule)
{
    aq_qmodel_hold_free(PyCapsule_GetPointer(capsule, RT_HOLD_CAPSULE));
}

static int rt_held_getbuffer(PyObject *self, Py_buffer *view, int flags)
{
    rt_held_obj *h = (rt_held_obj *)self;
    return PyBuffer_FillInfo(view, self, h->ptr, h->len, 0, flags);
}

static void rt_held_dealloc(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    Py_XDECREF(((rt_held_obj *)self)->owner);
    tp->tp_free(self);
    Py_DECREF(tp);
}

static PyType_Slot rt_held_slots[] = {
    {Py_bf_getbuffer, rt_held_getbuffer},
    {Py_tp_dealloc, rt_held_dealloc},
    {Py_tp_doc, "Memory of a model file row used in place (from _model_rows(..., hold=True)): "
                "a writable buffer that keeps the row's record batch or file mapping alive."},
    {0, NULL}};

PyType_Spec aq__py_held_spec = {
    .name = "arrow_quant_v2._HeldBuffer",
    .basicsize = sizeof(rt_held_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = rt_held_slots,
};

static PyObject *rt_held_new(PyObject *module, PyObject *owner, const void *p, size_t n)
{
    rt_held_obj *h = PyObject_New(rt_held_obj, rt_state(module)->held_type);
    if (h == NULL) {
        return NULL;
    }
    h->owner = Py_NewRef(owner);
    h->ptr = (void *)(uintptr_t)p;
    h->len = (Py_ssize_t)n;
    return (PyObject *)h;
}

/* One row as a tuple: (name, scheme, source_dtype, raw, bit_width, group_size, shape, data,
 * scales, zero_points), the three buffers as bytearrays (owned copies); with a hold capsule,
 * as _HeldBuffer objects over the row's memory, and the capsule as an eleventh item. */
static PyObject *rt_row(PyObject *module, const aq_qmodel_row *r, PyObject *hold)
{
    PyObject *shape = PyTuple_New((Py_ssize_t)r->ndim);
    if (shape == NULL) {
        return NULL;
    }
    for (size_t d = 0; d < r->ndim; d++) {
        PyObject *v = PyLong_FromLongLong((long long)r->shape[d]);
        if (v == NULL) {
            Py_DECREF(shape);
            return NULL;
        }
        PyTuple_SET_ITEM(shape, (Py_ssize_t)d, v);
    }
    if (hold != NULL) {
        return Py_BuildValue(
            "(sssiInNNNNO)", r->name, r->scheme, r->source_dtype, r->raw, r->bit_width,
            (Py_ssize_t)r->group_size, shape, rt_held_new(module, hold, r->data, r->data_size),
            rt_held_new(module, hold, r->scales, r->groups * sizeof(float)),
            rt_held_new(module, hold, r->zero_points, r->groups * sizeof(float)), hold);
    }
    return Py_BuildValue("(sssiInNNNN)", r->name, r->scheme, r->source_dtype, r->raw, r->bit_width,
                         (Py_ssize_t)r->group_size, shape, rt_bytes(r->data, r->data_size),
                         rt_bytes(r->scales, r->groups * sizeof(float)),
                         rt_bytes(r->zero_points, r->groups * sizeof(float)));
}

/* A capsule owning a hold on the current row of qm; NULL with an exception set. */
static PyObject *rt_hold(PyObject *module, aq_qmodel *qm)
{
    aq_qmodel_hold *h = NULL;
    aq_error err = {0};
    if (aq_qmodel_row_hold(qm, &h, &err) != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
        return NULL;
    }
    PyObject *cap = PyCapsule_New(h, RT_HOLD_CAPSULE, rt_hold_destroy);
    if (cap == NULL) {
        aq_qmodel_hold_free(h);
    }
    return cap;
}

PyDoc_STRVAR(rt_model_rows_doc,
             "_model_rows(path, prefix=None, *, hold=False)\n--\n\n"
             "The rows of a model file (validated by the library) whose name starts with prefix "
             "(every row when None), in file order, as tuples (name, scheme, source_dtype, raw, "
             "bit_width, group_size, shape, data, scales, zero_points); the buffers are "
             "bytearrays. Rows of other names are skipped without copying. hold=True: the "
             "buffers of quantized rows are the file's own memory, not copies (writable "
             "_HeldBuffer objects over the decompressed batch or the file's copy-on-write "
             "mapping, which they keep alive), and their tuples have an eleventh item, the "
             "hold, for _hold_check; kept rows are copied as before.");

static PyObject *rt_model_rows(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "prefix", "hold", NULL};
    PyObject *path_obj = NULL;
    const char *prefix = NULL;
    int hold = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&|z$p:_model_rows", kwlist,
                                     PyUnicode_FSConverter, &path_obj, &prefix, &hold)) {
        return NULL;
    }
    PyObject *rows = PyList_New(0);
    aq_qmodel *qm = NULL;
    aq_error err = {0};
    aq_status st;
    size_t plen = prefix != NULL ? strlen(prefix) : 0;
    if (rows == NULL) {
        goto fail;
    }
    Py_BEGIN_ALLOW_THREADS;
    st = aq_qmodel_open(PyBytes_AS_STRING(path_obj), &qm, &err);
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
        goto fail;
    }
    for (;;) {
        const aq_qmodel_row *r = NULL;
        Py_BEGIN_ALLOW_THREADS;
        st = aq_qmodel_next(qm, &r, &err);
        Py_END_ALLOW_THREADS;
        if (st != AQ_OK) {
            aq__py_raise(rt_state(module), &err);
            goto fail;
        }
        if (r == NULL) {
            break;
        }
        if (plen > 0 && strncmp(r->name, prefix, plen) != 0) {
            continue;
        }
        PyObject *cap = NULL;
        if (hold && !r->raw && (cap = rt_hold(module, qm)) == NULL) {
            goto fail;
        }
        PyObject *t = rt_row(module, r, cap);
        Py_XDECREF(cap);
        if (t == NULL || PyList_Append(rows, t) != 0) {
            Py_XDECREF(t);
            goto fail;
        }
        Py_DECREF(t);
    }
    aq_qmodel_free(qm);
    Py_DECREF(path_obj);
    return rows;
fail:
    aq_qmodel_free(qm);
    Py_XDECREF(rows);
    Py_DECREF(path_obj);
    return NULL;
}

PyDoc_STRVAR(rt_model_metadata_doc,
             "_model_metadata(path, key)\n--\n\n"
             "The value of one schema metadata key of a model file (str), or None.");

static PyObject *rt_model_metadata(PyObject *module, PyObject *args)
{
    PyObject *path_obj = NULL;
    const char *key;
    if (!PyArg_ParseTuple(args, "O&s:_model_metadata", PyUnicode_FSConverter, &path_obj, &key)) {
        return NULL;
    }
    aq_qmodel *qm = NULL;
    aq_error err = {0};
    aq_status st;
    PyObject *result = NULL;
    Py_BEGIN_ALLOW_THREADS;
    st = aq_qmodel_open(PyBytes_AS_STRING(path_obj), &qm, &err);
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
    } else {
        const char *v = aq_qmodel_metadata(qm, key);
        result = v != NULL ? PyUnicode_DecodeUTF8(v, (Py_ssize_t)strlen(v), "replace")
                           : Py_NewRef(Py_None);
    }
    aq_qmodel_free(qm);
    Py_DECREF(path_obj);
    return result;
}

PyDoc_STRVAR(rt_hold_check_doc,
             "_hold_check(hold)\n--\n\n"
             "Raises OSError when the file a hold of _model_rows(..., hold=True) maps was "
             "truncated while mapped (its pages then read as zeros).");

static PyObject *rt_hold_check(PyObject *module, PyObject *cap)
{
    aq_qmodel_hold *h = PyCapsule_GetPointer(cap, RT_HOLD_CAPSULE);
    if (h == NULL) {
        return NULL;
    }
    aq_error err = {0};
    if (aq_qmodel_hold_check(h, &err) != AQ_OK) {
        aq__py_raise(rt_state(module), &err);
        return NULL;
    }
    return Py_NewRef(Py_None);
}

PyMethodDef aq__py_runtime_methods[] = {
    {"_hold_check", (PyCFunction)rt_hold_check, METH_O, rt_hold_check_doc},
    {"_dequantize_into", (PyCFunction)(void (*)(void))rt_dequantize_into,
     METH_VARARGS | METH_KEYWORDS, rt_dequantize_into_doc},
    {"_model_rows", (PyCFunction)(void (*)(void))rt_model_rows, METH_VARARGS | METH_KEYWORDS,
     rt_model_rows_doc},
    {"_model_metadata", (PyCFunction)rt_model_metadata, METH_VARARGS, rt_model_metadata_doc},
    {NULL, NULL, 0, NULL}};
