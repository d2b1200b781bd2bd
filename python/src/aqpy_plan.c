/*
 * The model pipeline in three steps, for a distributed driver (arrow_quant_v2.ray):
 * _model_plan_tensors (what a serialised plan says of each tensor), _model_execute (a range of
 * the plan's tensors into rows, returned as C Data Interface capsules) and _model_write (a
 * model file from a plan and rows in order). The plan itself is made by the command
 * (`arrowquant quantize --plan-out`), which reads every setting as it always does.
 */
#include "aqpy.h"

#include <stdlib.h>
#include <string.h>

/* The plan in a bytes-like object, read back: 0, or -1 with an exception set. */
static int pplan(PyObject *module, PyObject *obj, aq_model_plan **out)
{
    Py_buffer view;
    if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE) != 0) {
        return -1;
    }
    aq_error err;
    aq_error_clear(&err);
    aq_status st = aq_model_plan_deserialize(view.buf, (size_t)view.len, out, &err);
    PyBuffer_Release(&view);
    if (st != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        return -1;
    }
    return 0;
}

const char aq__py_model_plan_tensors_doc[] =
    "_model_plan_tensors(plan) -> list of (name, kept, scheme, bits, source_bytes, elements)\n\n"
    "What a serialised plan (arrowquant quantize --plan-out) says of each tensor, in order.";

PyObject *aq__py_model_plan_tensors(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"plan", NULL};
    PyObject *obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O", kwlist, &obj)) {
        return NULL;
    }
    aq_model_plan *plan = NULL;
    if (pplan(module, obj, &plan) != 0) {
        return NULL;
    }
    size_t n = aq_model_plan_count(plan);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        aq_model_plan_tensor t = AQ_SIZED_INIT(aq_model_plan_tensor);
        aq_error err;
        if (aq_model_plan_tensor_get(plan, i, &t, &err) != AQ_OK) {
            aq__py_raise(PyModule_GetState(module), &err);
            Py_CLEAR(list);
            break;
        }
        PyObject *item =
            Py_BuildValue("(sOsInn)", t.name, t.kept ? Py_True : Py_False,
                          t.kept ? "raw" : aq_scheme_name(t.scheme), t.kept ? 0u : t.bit_width,
                          (Py_ssize_t)t.source_bytes, (Py_ssize_t)t.elements);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    aq_model_plan_free(plan);
    return list;
}

const char aq__py_model_execute_doc[] =
    "_model_execute(src, plan, begin, end, threads=1, calibration=None, combine='max')\n"
    "    -> (schema capsule, array capsule)\n\n"
    "Tensors [begin, end) of the plan, read from the checkpoint at src, quantized (or kept) into\n"
    "the model file's rows: a struct array of one row per tensor (pyarrow.record_batch takes\n"
    "an object whose __arrow_c_array__ returns the pair). calibration: the calibration table\n"
    "the plan was made with (the path of an Arrow IPC file, or an object with\n"
    "__arrow_c_stream__), its groups combined by 'max' or 'mean' (the command's --calibration\n"
    "and --calibration-combine). The GIL is released while quantizing.";

PyObject *aq__py_model_execute(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"src",     "plan",        "begin",   "end",
                             "threads", "calibration", "combine", NULL};
    PyObject *src_b = NULL, *plan_obj, *calib_obj = Py_None;
    Py_ssize_t begin, end;
    int threads = 1;
    const char *combine = "max";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&Onn|$iOs", kwlist, PyUnicode_FSConverter,
                                     &src_b, &plan_obj, &begin, &end, &threads, &calib_obj,
                                     &combine)) {
        return NULL;
    }
    PyObject *result = NULL;
    aq_model_plan *plan = NULL;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_error err;
    aq_error_clear(&err);
    aq_status st = AQ_OK;
    aq_calib *calib = NULL;
    if (begin < 0 || end < 0) {
        PyErr_SetString(PyExc_ValueError, "_model_execute: begin and end must be >= 0");
        goto done;
    }
    if (pplan(module, plan_obj, &plan) != 0) {
        goto done;
    }
    if (calib_obj != Py_None && aq__py_run_calib(module, calib_obj, combine, &calib) != 0) {
        goto done;
    }
    struct ArrowSchema schema;
    struct ArrowArray rows;
    memset(&schema, 0, sizeof schema);
    memset(&rows, 0, sizeof rows);
    const char *src = PyBytes_AS_STRING(src_b);
    aq_model_execute_options eo = AQ_SIZED_INIT(aq_model_execute_options);
    eo.calib = calib;
    Py_BEGIN_ALLOW_THREADS;
    st = aq_ctx_create(&ctx, &err);
    if (st == AQ_OK) {
        st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err);
    }
    if (st == AQ_OK) {
        st = aq_model_open(src, &model, &err);
    }
    if (st == AQ_OK) {
        st = aq_model_execute(ctx, model, plan, (size_t)begin, (size_t)end, &eo, &schema, &rows,
                              &err);
    }
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    PyObject *sc = aq__py_schema_capsule(&schema);
    PyObject *ac = sc != NULL ? aq__py_array_capsule(&rows) : NULL;
    if (sc == NULL || ac == NULL) {
        Py_XDECREF(sc);
        if (rows.release != NULL) {
            rows.release(&rows);
        }
        if (schema.release != NULL) {
            schema.release(&schema);
        }
        goto done;
    }
    result = PyTuple_Pack(2, sc, ac);
    Py_DECREF(sc);
    Py_DECREF(ac);
done:
    aq_model_free(model);
    aq_calib_free(calib);
    aq_ctx_free(ctx);
    aq_model_plan_free(plan);
    Py_XDECREF(src_b);
    return result;
}

/* Appends one object speaking __arrow_c_array__ to w: 0, or -1 with an exception set. */
static int pappend(PyObject *module, aq_model_writer *w, PyObject *obj)
{
    PyObject *pair = PyObject_CallMethod(obj, "__arrow_c_array__", NULL);
    if (pair == NULL) {
        return -1;
    }
    int rc = -1;
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
        PyErr_SetString(PyExc_TypeError, "__arrow_c_array__ must return (schema, array)");
        goto done;
    }
    struct ArrowSchema *sc = PyCapsule_GetPointer(PyTuple_GET_ITEM(pair, 0), "arrow_schema");
    struct ArrowArray *arr = PyCapsule_GetPointer(PyTuple_GET_ITEM(pair, 1), "arrow_array");
    if (sc == NULL || arr == NULL) {
        goto done;
    }
    aq_error err;
    aq_error_clear(&err);
    aq_status st;
    Py_BEGIN_ALLOW_THREADS;
    st = aq_model_writer_append(w, sc, arr, &err);
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    rc = 0;
done:
    Py_DECREF(pair);
    return rc;
}

const char aq__py_model_write_doc[] =
    "_model_write(plan, dst, batches) -> dict\n\n"
    "The model file at dst from the plan and its rows: batches is an iterable of objects\n"
    "speaking __arrow_c_array__ (pyarrow record batches of _model_execute's rows), in tensor\n"
    "order. Written under a temporary name, renamed into place when every tensor is there.\n"
    "Returns the summary (tensors, kept, quantized, params, bytes_in, bytes_out, batches,\n"
    "moved, mean_sqnr_db, min_sqnr_db, mean_cosine, worst); for a GGUF plan, the GGUF file's\n"
    "(tensors, quantized, bytes_in, bytes_out, types), as _quantize_gguf gives it.";

PyObject *aq__py_model_write(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"plan", "dst", "batches", NULL};
    PyObject *plan_obj, *dst_b = NULL, *batches;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO&O", kwlist, &plan_obj, PyUnicode_FSConverter,
                                     &dst_b, &batches)) {
        return NULL;
    }
    PyObject *result = NULL, *it = NULL, *item = NULL;
    aq_model_plan *plan = NULL;
    aq_model_writer *w = NULL;
    aq_error err;
    aq_error_clear(&err);
    aq_status st;
    if (pplan(module, plan_obj, &plan) != 0) {
        goto done;
    }
    if ((st = aq_model_writer_open(plan, PyBytes_AS_STRING(dst_b), NULL, &w, &err)) != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    if ((it = PyObject_GetIter(batches)) == NULL) {
        goto done;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = pappend(module, w, item);
        Py_CLEAR(item);
        if (rc != 0) {
            goto done;
        }
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    aq_model_plan_tensor first = AQ_SIZED_INIT(aq_model_plan_tensor);
    if ((st = aq_model_plan_tensor_get(plan, 0, &first, &err)) != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    /* A GGUF plan's writer closes with the GGUF file's summary. */
    const int gguf = first.gguf_type >= 0;
    aq_model_summary s;
    aq_gguf_write_summary g;
    memset(&s, 0, sizeof s);
    memset(&g, 0, sizeof g);
    Py_BEGIN_ALLOW_THREADS;
    st = gguf ? aq_model_writer_close_gguf(w, &g, &err) : aq_model_writer_close(w, &s, &err);
    Py_END_ALLOW_THREADS;
    if (st != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    if (gguf) {
        result = aq__py_gguf_summary(&g);
        goto done;
    }
    result = Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:d,s:d,s:d,s:s}", "tensors",
                           (Py_ssize_t)s.tensors, "kept", (Py_ssize_t)s.kept, "quantized",
                           (Py_ssize_t)s.quantized, "params", (Py_ssize_t)s.params, "bytes_in",
                           (Py_ssize_t)s.bytes_in, "bytes_out", (Py_ssize_t)s.bytes_out, "batches",
                           (Py_ssize_t)s.batches, "moved", (Py_ssize_t)s.moved, "mean_sqnr_db",
                           s.mean_sqnr_db, "min_sqnr_db", s.min_sqnr_db, "mean_cosine",
                           s.mean_cosine, "worst", s.worst != NULL ? s.worst : "");
done:
    Py_XDECREF(it);
    aq_model_writer_free(w); /* without a close, the temporary file goes */
    aq_model_plan_free(plan);
    Py_XDECREF(dst_b);
    return result;
}
