/*
 * aqpy_module.c - the arrow_quant_v2 extension module: module state, exceptions and the
 * ArrowQuantV2 class over the public C API (arrowquant.h only).
 *
 * Threads: every call into the library runs with the GIL released. The library calls the
 * progress function on the calling thread only (arrowquant.h), so the progress trampoline
 * takes the GIL back, calls the Python callback and releases it again; the library's worker
 * threads never see a Python object.
 */
#include "aqpy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static aqpy_state *aqpy_state_of(PyObject *module)
{
    return PyModule_GetState(module);
}

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Raises the Python exception for a library error: MemoryError for allocation, OSError for
 * files, QuantizationError (a ValueError) for everything the input or the arguments got
 * wrong, RuntimeError for an internal error. The message is the library's, verbatim. */
void aq__py_raise(aqpy_state *st, const aq_error *err)
{
    const char *msg = err->message[0] != '\0' ? err->message : aq_status_message(err->code);
    PyObject *type;
    switch (err->code) {
    case AQ_NO_MEMORY:
        type = PyExc_MemoryError;
        break;
    case AQ_IO:
        type = PyExc_OSError;
        break;
    case AQ_INTERNAL:
        type = PyExc_RuntimeError;
        break;
    default:
        type = st->error;
        break;
    }
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "replace");
    if (text == NULL) {
        return;
    }
    PyObject *exc = PyObject_CallOneArg(type, text);
    Py_DECREF(text);
    if (exc == NULL) {
        return;
    }
    if (type == st->error) {
        PyObject *name = PyUnicode_FromString(aq_status_name(err->code));
        if (name == NULL || PyObject_SetAttrString(exc, "status", name) != 0) {
            Py_XDECREF(name);
            Py_DECREF(exc);
            return;
        }
        Py_DECREF(name);
    }
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
}

/* An error reported by an Arrow stream (errno-style code and its get_last_error text). */
static void aqpy_raise_stream(aqpy_state *st, int code, const char *message)
{
    aq_error err;
    err.code = code == ENOMEM ? AQ_NO_MEMORY : code == EIO ? AQ_IO : AQ_INVALID_DATA;
    snprintf(err.message, sizeof err.message, "%s",
             message != NULL ? message : "Arrow stream error");
    aq__py_raise(st, &err);
}

/* ------------------------------------------------------------------------------------------ */
/* Running library calls without the GIL, with progress callbacks on this thread             */
/* ------------------------------------------------------------------------------------------ */

typedef struct aqpy_run {
    PyThreadState *tstate; /* non-NULL while the GIL is released */
    PyObject *callback;    /* borrowed; NULL: no progress */
    Py_ssize_t total;      /* rows expected, or -1 when unknown (streams) */
    int failed;            /* the callback raised; its exception is held in exc */
    PyObject *exc;
} aqpy_run;

static void aqpy_release_gil(aqpy_run *run)
{
    run->tstate = PyEval_SaveThread();
}

static void aqpy_acquire_gil(aqpy_run *run)
{
    PyEval_RestoreThread(run->tstate);
    run->tstate = NULL;
}

/* Fetches the pending exception into run->exc (the GIL held). */
static void aqpy_run_keep_exception(aqpy_run *run)
{
    run->failed = 1;
    run->exc = aq__py_exc_take();
}

/* Called by the library on this thread between rows: runs Python's signal handlers (Ctrl-C
 * raises KeyboardInterrupt here) and the user's callback. An exception from either stops the
 * library call (nonzero return: AQ_CANCELLED, no output) and is raised when it returns. */
static int aqpy_progress(void *user, size_t rows_done, size_t elements_done)
{
    aqpy_run *run = user;
    (void)elements_done;
    if (run->failed) {
        return 1;
    }
    aqpy_acquire_gil(run);
    if (PyErr_CheckSignals() != 0) {
        aqpy_run_keep_exception(run);
    } else if (run->callback != NULL) {
        PyObject *r =
            run->total >= 0
                ? PyObject_CallFunction(run->callback, "nn", (Py_ssize_t)rows_done, run->total)
                : PyObject_CallFunction(run->callback, "nO", (Py_ssize_t)rows_done, Py_None);
        if (r == NULL) {
            aqpy_run_keep_exception(run);
        } else {
            Py_DECREF(r);
        }
    }
    aqpy_release_gil(run);
    return run->failed;
}

/* Options of one quantization call besides the context's parameters. */
typedef struct aqpy_quality {
    double min_cosine;     /* min_accuracy=; 0: off */
    double target_bpw;     /* 0: off */
    const aq_rules *rules; /* config=: the layer rules (NULL: none) */
    const aq_calib *calib; /* calibration= (NULL: none) */
} aqpy_quality;

static void aqpy_run_init(aqpy_run *run, PyObject *callback, Py_ssize_t total,
                          aq_batch_options *opts, aq_report *report, int continue_on_error,
                          const aqpy_quality *quality)
{
    memset(run, 0, sizeof *run);
    *opts = AQ_SIZED_INIT(aq_batch_options);
    run->callback = callback;
    run->total = total;
    opts->continue_on_error = continue_on_error;
    opts->report = report;
    /* Always installed: even without a callback, Ctrl-C must stop a long call. */
    opts->progress = aqpy_progress;
    opts->progress_user = run;
    if (quality != NULL) {
        opts->min_cosine = quality->min_cosine;
        opts->target_bpw = quality->target_bpw;
        opts->rules = quality->rules;
        opts->calib = quality->calib;
    }
}

/* Raises the callback's exception if it failed (after the GIL is back). Returns 1 if so. */
static int aqpy_run_failed(aqpy_run *run)
{
    if (!run->failed) {
        return 0;
    }
    aq__py_exc_raise(run->exc);
    run->exc = NULL;
    return 1;
}

/* Warns once per row skipped in continue-on-error mode (SkippedLayerWarning). */
static int aqpy_warn_skipped(PyObject *module, const aq_report *report)
{
    size_t n = aq_report_count(report);
    if (n == 0) {
        return 0;
    }
    PyObject *category = PyObject_GetAttrString(module, "SkippedLayerWarning");
    if (category == NULL) {
        return -1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t row;
        const char *name, *message;
        aq_status code;
        aq_error err;
        if (aq_report_get(report, i, &row, &name, &code, &message, &err) != AQ_OK) {
            aq__py_raise(aqpy_state_of(module), &err);
            rc = -1;
            break;
        }
        rc = PyErr_WarnFormat(category, 1, "skipped row %zu ('%s'): %s", row, name, message);
    }
    Py_DECREF(category);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* pyarrow, when importable                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Borrowed reference to pyarrow, or Py_None when it is not importable; NULL on another error.
 * Looked up once per module. */
static PyObject *aqpy_pyarrow(aqpy_state *st)
{
    if (st->pyarrow == NULL) {
        PyObject *pa = PyImport_ImportModule("pyarrow");
        if (pa == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_ImportError)) {
                return NULL;
            }
            PyErr_Clear();
            pa = Py_NewRef(Py_None);
        }
        st->pyarrow = pa;
    }
    return st->pyarrow;
}

/* Turns a light result into a pyarrow object (pa.record_batch / pa.table over its capsules,
 * no copy) when pyarrow is importable. Steals light; new reference. */
static PyObject *aqpy_finish(aqpy_state *st, PyObject *light, const char *pa_function)
{
    if (light == NULL) {
        return NULL;
    }
    PyObject *pa = aqpy_pyarrow(st);
    if (pa == NULL) {
        Py_DECREF(light);
        return NULL;
    }
    if (pa == Py_None) {
        return light;
    }
    PyObject *r = PyObject_CallMethod(pa, pa_function, "O", light);
    Py_DECREF(light);
    return r;
}

/* Wraps a library result (struct array, moved) as a result batch. */
static PyObject *aqpy_batch_result(aqpy_state *st, struct ArrowSchema *schema,
                                   struct ArrowArray *array)
{
    aq__py_holder *h = aq__py_holder_create(array);
    if (h == NULL) {
        schema->release(schema);
        return PyErr_NoMemory();
    }
    return aqpy_finish(st, aq__py_batch_new(st, schema, h), "record_batch");
}

/* ------------------------------------------------------------------------------------------ */
/* Importing Arrow inputs                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* A borrowed record batch: from __arrow_c_array__ capsules (kept alive by keep) or from
 * pyarrow's older _export_to_c into our own structures. */
typedef struct aqpy_batch_in {
    PyObject *keep;
    struct ArrowSchema *schema;
    struct ArrowArray *array;
    struct ArrowSchema own_schema;
    struct ArrowArray own_array;
} aqpy_batch_in;

static void aqpy_batch_in_reset(aqpy_batch_in *in)
{
    Py_CLEAR(in->keep); /* the capsules' destructors release what was not moved out */
    if (in->own_array.release != NULL) {
        in->own_array.release(&in->own_array);
    }
    if (in->own_schema.release != NULL) {
        in->own_schema.release(&in->own_schema);
    }
    in->schema = NULL;
    in->array = NULL;
}

static int aqpy_has(PyObject *obj, const char *name)
{
    int r = PyObject_HasAttrString(obj, name);
    return r;
}

/* Reads the two capsules of __arrow_c_array__. */
static int aqpy_capsules_of_array(PyObject *obj, aqpy_batch_in *in)
{
    PyObject *r = PyObject_CallMethod(obj, "__arrow_c_array__", NULL);
    if (r == NULL) {
        return -1;
    }
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 2) {
        Py_DECREF(r);
        PyErr_SetString(PyExc_TypeError, "__arrow_c_array__ must return a tuple of two PyCapsules "
                                         "('arrow_schema', 'arrow_array')");
        return -1;
    }
    in->keep = r;
    in->schema = PyCapsule_GetPointer(PyTuple_GET_ITEM(r, 0), AQPY_CAPSULE_SCHEMA);
    if (in->schema == NULL) {
        return -1;
    }
    in->array = PyCapsule_GetPointer(PyTuple_GET_ITEM(r, 1), AQPY_CAPSULE_ARRAY);
    if (in->array == NULL) {
        return -1;
    }
    if (in->schema->release == NULL || in->array->release == NULL) {
        PyErr_SetString(PyExc_ValueError, "__arrow_c_array__ returned released structures");
        return -1;
    }
    return 0;
}

static int aqpy_is_reader_like(PyObject *obj)
{
    return aqpy_has(obj, "read_next_batch") || aqpy_has(obj, "to_reader");
}

/* 1: imported a record batch; 0: obj has no record-batch interface (nothing raised); -1:
 * error. */
static int aqpy_import_batch(PyObject *obj, aqpy_batch_in *in)
{
    memset(in, 0, sizeof *in);
    if (aqpy_has(obj, "__arrow_c_array__")) {
        return aqpy_capsules_of_array(obj, in) == 0 ? 1 : -1;
    }
    if (aqpy_has(obj, "_export_to_c") && !aqpy_is_reader_like(obj) &&
        !aqpy_has(obj, "__arrow_c_stream__")) {
        PyObject *r = PyObject_CallMethod(obj, "_export_to_c", "KK",
                                          (unsigned long long)(uintptr_t)&in->own_array,
                                          (unsigned long long)(uintptr_t)&in->own_schema);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        in->schema = &in->own_schema;
        in->array = &in->own_array;
        return 1;
    }
    return 0;
}

static int aqpy_type_error(PyObject *obj, const char *what)
{
    PyErr_Format(PyExc_TypeError,
                 "expected %s: an object with __arrow_c_array__ or __arrow_c_stream__ (pyarrow, "
                 "polars, duckdb, nanoarrow, ...), got %.200s",
                 what, Py_TYPE(obj)->tp_name);
    return -1;
}

/* Imports any Arrow tabular object as a stream owned by the caller (*out). */
static int aqpy_import_stream(PyObject *obj, struct ArrowArrayStream *out)
{
    memset(out, 0, sizeof *out);
    if (aqpy_has(obj, "__arrow_c_stream__")) {
        PyObject *cap = PyObject_CallMethod(obj, "__arrow_c_stream__", NULL);
        if (cap == NULL) {
            return -1;
        }
        struct ArrowArrayStream *s = PyCapsule_GetPointer(cap, AQPY_CAPSULE_STREAM);
        if (s == NULL || s->release == NULL) {
            if (s != NULL) {
                PyErr_SetString(PyExc_ValueError, "__arrow_c_stream__ returned a released stream");
            }
            Py_DECREF(cap);
            return -1;
        }
        *out = *s; /* moved: the capsule's destructor sees release == NULL */
        s->release = NULL;
        Py_DECREF(cap);
        return 0;
    }
    /* Older pyarrow: Table.to_reader(), RecordBatchReader._export_to_c(stream_pointer). */
    if (aqpy_has(obj, "to_reader") ||
        (aqpy_has(obj, "read_next_batch") && aqpy_has(obj, "_export_to_c"))) {
        PyObject *reader = aqpy_has(obj, "to_reader") ? PyObject_CallMethod(obj, "to_reader", NULL)
                                                      : Py_NewRef(obj);
        if (reader == NULL) {
            return -1;
        }
        PyObject *r =
            PyObject_CallMethod(reader, "_export_to_c", "K", (unsigned long long)(uintptr_t)out);
        Py_DECREF(reader);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    aqpy_batch_in in;
    int rc = aqpy_import_batch(obj, &in);
    if (rc <= 0) {
        return rc < 0 ? -1 : aqpy_type_error(obj, "an Arrow table, record batch or stream");
    }
    /* One batch: move the array into a holder and stream over it. */
    aq__py_holder *h = aq__py_holder_create(in.array);
    rc = h != NULL && aq__py_stream_over(in.schema, &h, 1, out) == 0 ? 0 : -1;
    aq__py_holder_release(h);
    aqpy_batch_in_reset(&in);
    if (rc != 0) {
        PyErr_NoMemory();
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* ArrowQuantV2                                                                               */
/* ------------------------------------------------------------------------------------------ */

typedef enum aqpy_mode { AQPY_MODE_DIFFUSION, AQPY_MODE_TIME_AWARE, AQPY_MODE_BASE } aqpy_mode;

static const char *const aqpy_mode_names[] = {"diffusion", "time_aware", "base"};

typedef struct aqpy_quant {
    PyObject_HEAD aqpy_mode mode;
    int64_t threads;
} aqpy_quant;

static aqpy_state *aqpy_state_of_quant(aqpy_quant *self)
{
    return aq__py_state_from_type(Py_TYPE(self));
}

static PyObject *aqpy_module_of_quant(aqpy_quant *self)
{
    return PyType_GetModule(Py_TYPE(self));
}

static int aqpy_quant_init(aqpy_quant *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"mode", "threads", NULL};
    const char *mode = "diffusion";
    long long threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|s$L:ArrowQuantV2", kwlist, &mode, &threads)) {
        return -1;
    }
    aqpy_state *st = aqpy_state_of_quant(self);
    size_t i;
    for (i = 0; i < sizeof aqpy_mode_names / sizeof aqpy_mode_names[0]; i++) {
        if (strcmp(mode, aqpy_mode_names[i]) == 0) {
            break;
        }
    }
    if (i == sizeof aqpy_mode_names / sizeof aqpy_mode_names[0]) {
        PyErr_Format(st->error, "Invalid mode: '%s'. Must be 'diffusion', 'time_aware' or 'base'",
                     mode);
        return -1;
    }
    int64_t lo, hi;
    aq_error err;
    if (aq_param_bounds(AQ_PARAM_THREADS, &lo, &hi, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        return -1;
    }
    if (threads < lo || threads > hi) {
        PyErr_Format(st->error, "Invalid threads: %lld. Must be %lld to %lld (0: one per CPU)",
                     threads, (long long)lo, (long long)hi);
        return -1;
    }
    self->mode = (aqpy_mode)i;
    self->threads = threads;
    return 0;
}

static void aqpy_quant_dealloc(aqpy_quant *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *aqpy_quant_repr(aqpy_quant *self)
{
    return PyUnicode_FromFormat("ArrowQuantV2(mode='%s')", aqpy_mode_names[self->mode]);
}

static PyObject *aqpy_quant_get_mode(aqpy_quant *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(aqpy_mode_names[self->mode]);
}

/* Reads an optional integer argument (an int or anything with __index__, such as numpy
 * integers; not a bool); None keeps *out. */
static int aqpy_optional_int(aqpy_state *st, PyObject *obj, const char *name, int64_t *out)
{
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    PyObject *index = PyBool_Check(obj) ? NULL : PyNumber_Index(obj);
    if (index == NULL) {
        PyErr_Format(PyExc_TypeError, "%s must be an int or None, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    long long v = PyLong_AsLongLong(index);
    if (v == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(st->error, "Invalid %s: %S. Out of range", name, index);
        }
        Py_DECREF(index);
        return -1;
    }
    Py_DECREF(index);
    *out = v;
    return 0;
}

/* The keyword arguments that configure a quantization call; NULL or None: the default. */
typedef struct aqpy_args {
    PyObject *bit_width, *group_size, *scheme, *min_accuracy, *target_bpw;
} aqpy_args;

/* A context configured for one call (a NULL args: the mode's defaults) and its quality
 * options (quality may be NULL when args is).
 *
 * The scheme: an explicit scheme= wins; otherwise mode 'base' is plain affine and the modes
 * 'diffusion' and 'time_aware' use the best scheme the library has: kquant (two-level scales
 * in 512-element super-blocks; 2, 4 and 8 bits) when no group_size is given, and, since
 * kquant has no group size to choose, affine_search (searched clipping, the best group-wise
 * scheme) when one is. An explicit scheme='kquant' with a group_size other than 512 is a
 * QuantizationError. See docs/decisions.md. Each comes from the library's tables:
 * aqpy_mode_scheme. */
/* The group size a scheme always uses (the scheme table's), or 0. */
static size_t aqpy_fixed_group(aq_scheme scheme)
{
    aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
    return aq_scheme_get_info(scheme, &info, NULL) == AQ_OK ? info.fixed_group_size : 0;
}

/* A mode's scheme when none is given: 'base' the settings table's default scheme; the other
 * modes the default profile's scheme (kquant), or with a group size, when that scheme
 * fixes its own, the first selectable row of the scheme table that takes importance and the
 * context's group size. */
static aq_scheme aqpy_mode_scheme(aqpy_mode mode, bool has_group)
{
    aq_scheme sch = (aq_scheme)0;
    aq_setting_info set = AQ_SIZED_INIT(aq_setting_info);
    aq_profile prof;
    if (mode == AQPY_MODE_BASE) {
        if (aq_setting_find("scheme", &set, NULL) != AQ_OK ||
            aq_scheme_from_name(set.default_value, &sch, NULL) != AQ_OK) {
            sch = (aq_scheme)0;
        }
        return sch;
    }
    if (aq_setting_find("profile", &set, NULL) == AQ_OK &&
        aq_profile_get(set.default_value, &prof, NULL) == AQ_OK) {
        sch = prof.scheme;
    }
    if (!has_group || aqpy_fixed_group(sch) == 0) {
        return sch;
    }
    for (int s = 0; s < (int)AQ_SCHEME_COUNT; s++) {
        aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
        if (aq_scheme_get_info((aq_scheme)s, &info, NULL) == AQ_OK && info.selectable &&
            info.importance && info.fixed_group_size == 0) {
            return (aq_scheme)s;
        }
    }
    return sch;
}

static aq_ctx *aqpy_make_ctx(aqpy_quant *self, const aqpy_args *a, aqpy_quality *quality)
{
    aqpy_state *st = aqpy_state_of_quant(self);
    int64_t bits = AQ_DEFAULT_BIT_WIDTH, group = AQ_DEFAULT_GROUP_SIZE;
    aq_scheme sch = aqpy_mode_scheme(self->mode, false);
    aq_error err;
    aq_ctx *ctx = NULL;
    if (a != NULL) {
        bool has_group = a->group_size != NULL && a->group_size != Py_None;
        if (aqpy_optional_int(st, a->bit_width, "bit_width", &bits) != 0 ||
            aqpy_optional_int(st, a->group_size, "group_size", &group) != 0 ||
            aq__py_setting_float(st, a->min_accuracy, "min_accuracy", "min_cosine",
                                 &quality->min_cosine) != 0 ||
            aq__py_setting_float(st, a->target_bpw, "target_bpw", "target_bpw",
                                 &quality->target_bpw) != 0) {
            return NULL;
        }
        if (a->scheme != NULL && a->scheme != Py_None) {
            const char *name = PyUnicode_Check(a->scheme) ? PyUnicode_AsUTF8(a->scheme) : NULL;
            if (name == NULL) {
                if (!PyErr_Occurred()) {
                    PyErr_Format(PyExc_TypeError, "scheme must be a str or None, not %.100s",
                                 Py_TYPE(a->scheme)->tp_name);
                }
                return NULL;
            }
            if (aq_scheme_from_name(name, &sch, &err) != AQ_OK) {
                aq__py_raise(st, &err);
                return NULL;
            }
            size_t fixed = aqpy_fixed_group(sch);
            if (fixed != 0 && has_group && (size_t)group != fixed) {
                PyErr_Format(st->error,
                             "Invalid group_size: %lld. scheme '%s' always uses super-blocks "
                             "of %zu elements: pass group_size=None (or %zu), or another scheme",
                             (long long)group, aq_scheme_name(sch), fixed, fixed);
                return NULL;
            }
        } else {
            sch = aqpy_mode_scheme(self->mode, has_group);
        }
    }
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, group, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, (int64_t)sch, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_THREADS, self->threads, &err) != AQ_OK) {
        aq_ctx_free(ctx);
        aq__py_raise(st, &err);
        return NULL;
    }
    return ctx;
}

static int aqpy_check_callback(PyObject **callback)
{
    if (*callback == Py_None) {
        *callback = NULL;
    } else if (*callback != NULL && !PyCallable_Check(*callback)) {
        PyErr_Format(PyExc_TypeError, "progress_callback must be callable or None, not %.100s",
                     Py_TYPE(*callback)->tp_name);
        return -1;
    }
    return 0;
}

/* Pulls every batch of a library output stream (the GIL released) into a light table. A
 * callback exception wins over the stream's error. Consumes *stream. */
static PyObject *aqpy_drain_stream(aqpy_state *st, struct ArrowArrayStream *stream, aqpy_run *run)
{
    struct ArrowSchema schema = {0};
    aq__py_holder **holders = NULL;
    size_t n = 0, cap = 0;
    int rc = 0, nomem = 0;
    char message[AQ_ERROR_MESSAGE_SIZE] = "";
    PyObject *result = NULL;

    aqpy_release_gil(run);
    rc = stream->get_schema(stream, &schema);
    while (rc == 0 && !run->failed) {
        struct ArrowArray array;
        memset(&array, 0, sizeof array);
        rc = stream->get_next(stream, &array);
        if (rc != 0 || array.release == NULL) {
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? 2 * cap : 8;
            aq__py_holder **grown = realloc(holders, ncap * sizeof *grown);
            if (grown == NULL) {
                array.release(&array);
                nomem = 1;
                break;
            }
            holders = grown;
            cap = ncap;
        }
        if ((holders[n] = aq__py_holder_create(&array)) == NULL) {
            nomem = 1;
            break;
        }
        n++;
    }
    if (rc != 0) {
        const char *e = stream->get_last_error(stream);
        snprintf(message, sizeof message, "%s", e != NULL ? e : "Arrow stream error");
    }
    stream->release(stream);
    aqpy_acquire_gil(run);

    if (aqpy_run_failed(run)) {
        goto done;
    }
    if (rc != 0) {
        aqpy_raise_stream(st, rc, message);
        goto done;
    }
    if (nomem) {
        PyErr_NoMemory();
        goto done;
    }
    result = aq__py_table_new(st, &schema, holders, n);
done:
    if (schema.release != NULL) {
        schema.release(&schema);
    }
    for (size_t i = 0; i < n; i++) {
        aq__py_holder_release(holders[i]);
    }
    free(holders);
    return result;
}

typedef aq_status (*aqpy_stream_fn)(aq_ctx *, struct ArrowArrayStream *, const aq_batch_options *,
                                    struct ArrowArrayStream *, aq_error *);

/* The table path shared by quantize_arrow and dequantize_arrow: stream the input through fn
 * and collect the results. Returns a light table. */
static PyObject *aqpy_stream_call(aqpy_quant *self, aq_ctx *ctx, aqpy_stream_fn fn, PyObject *input,
                                  int continue_on_error, PyObject *callback,
                                  const aqpy_quality *quality, aq__py_diffusion *d)
{
    aqpy_state *st = aqpy_state_of_quant(self);
    struct ArrowArrayStream in, out;
    aq_report *report = NULL;
    aq_batch_options opts;
    aqpy_run run;
    aq_error err;
    PyObject *result = NULL;

    aqpy_quality q = {0.0, 0.0, NULL, NULL};
    if (quality != NULL) {
        q = *quality;
    }
    if (aqpy_import_stream(input, &in) != 0) {
        return NULL;
    }
    if (d != NULL && d->has_rules) {
        /* Family 'auto' detects each component's family from every layer name: the input is
         * read first (held in memory), then streamed from there. */
        aq__py_names names;
        memset(&names, 0, sizeof names);
        aq_status bs = AQ_OK;
        if (d->needs_names) {
            PyThreadState *ts = PyEval_SaveThread();
            struct ArrowArrayStream held;
            bs = aq__py_stream_buffer(&in, &names, &held, &err); /* releases in */
            PyEval_RestoreThread(ts);
            if (bs != AQ_OK) {
                aq__py_names_reset(&names);
                aq__py_raise(st, &err);
                return NULL;
            }
            in = held;
        }
        int rc = aq__py_diffusion_rules(aqpy_module_of_quant(self), d, &names, ctx);
        aq__py_names_reset(&names);
        if (rc != 0) {
            in.release(&in);
            return NULL;
        }
        q.rules = d->rules;
    }
    if (continue_on_error && aq_report_create(&report, &err) != AQ_OK) {
        in.release(&in);
        aq__py_raise(st, &err);
        return NULL;
    }
    aqpy_run_init(&run, callback, -1, &opts, report, continue_on_error,
                  quality != NULL ? &q : NULL);
    aqpy_release_gil(&run);
    aq_status status = fn(ctx, &in, &opts, &out, &err); /* moves in, even on failure */
    aqpy_acquire_gil(&run);
    if (status != AQ_OK) {
        aq__py_raise(st, &err);
        goto done;
    }
    result = aqpy_drain_stream(st, &out, &run);
    if (result != NULL && report != NULL &&
        aqpy_warn_skipped(aqpy_module_of_quant(self), report) != 0) {
        Py_CLEAR(result);
    }
done:
    aq_report_free(report);
    return result;
}

/* After a library call that ran with the GIL released: the result batch, or NULL with the
 * Python error set (the progress callback's exception, the library's error, or a skipped-layer
 * warning the filters turned into an error). The output is released on every path but success. */
static PyObject *aqpy_finish_batch(aqpy_quant *self, aqpy_run *run, aq_status status,
                                   const aq_error *err, const aq_report *report,
                                   struct ArrowSchema *out_schema, struct ArrowArray *out_array)
{
    aqpy_state *st = aqpy_state_of_quant(self);
    if (aqpy_run_failed(run)) {
        if (status == AQ_OK) {
            out_schema->release(out_schema);
            out_array->release(out_array);
        }
        return NULL;
    }
    if (status != AQ_OK) {
        aq__py_raise(st, err);
        return NULL;
    }
    if (report != NULL && aqpy_warn_skipped(aqpy_module_of_quant(self), report) != 0) {
        out_schema->release(out_schema);
        out_array->release(out_array);
        return NULL;
    }
    return aqpy_batch_result(st, out_schema, out_array);
}

typedef aq_status (*aqpy_batch_fn)(aq_ctx *, const struct ArrowSchema *, const struct ArrowArray *,
                                   const aq_batch_options *, struct ArrowSchema *,
                                   struct ArrowArray *, aq_error *);

/* The record-batch path: one library call on the borrowed batch. Returns the final result
 * (pyarrow or light). */
static PyObject *aqpy_batch_call(aqpy_quant *self, aq_ctx *ctx, aqpy_batch_fn fn, aqpy_batch_in *in,
                                 int continue_on_error, PyObject *callback,
                                 const aqpy_quality *quality)
{
    aqpy_state *st = aqpy_state_of_quant(self);
    struct ArrowSchema out_schema;
    struct ArrowArray out_array;
    aq_report *report = NULL;
    aq_batch_options opts;
    aqpy_run run;
    aq_error err;

    if (continue_on_error && aq_report_create(&report, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        return NULL;
    }
    aqpy_run_init(&run, callback, (Py_ssize_t)in->array->length, &opts, report, continue_on_error,
                  quality);
    aqpy_release_gil(&run);
    aq_status status = fn(ctx, in->schema, in->array, &opts, &out_schema, &out_array, &err);
    aqpy_acquire_gil(&run);
    PyObject *result = aqpy_finish_batch(self, &run, status, &err, report, &out_schema, &out_array);
    aq_report_free(report);
    return result;
}

/* A result stream (a light table) as a single result batch: its batches joined, or the empty
 * result when it had none. Steals table. */
static PyObject *aqpy_table_to_batch(aqpy_quant *self, aq_ctx *ctx, PyObject *table)
{
    aqpy_state *st = aqpy_state_of_quant(self);
    PyObject *batch = aq__py_table_to_batch(st, table);
    Py_DECREF(table);
    if (batch == NULL) {
        return NULL;
    }
    if (batch != Py_None) {
        return aqpy_finish(st, batch, "record_batch");
    }
    Py_DECREF(batch);
    /* No batch at all: the empty result, with the result schema. */
    struct ArrowSchema schema;
    struct ArrowArray array;
    aq_error err;
    PyThreadState *ts = PyEval_SaveThread();
    aq_status status = aq_tensors_quantize(ctx, NULL, 0, NULL, &schema, &array, &err);
    PyEval_RestoreThread(ts);
    if (status != AQ_OK) {
        aq__py_raise(st, &err);
        return NULL;
    }
    return aqpy_batch_result(st, &schema, &array);
}

/* config= and calibration= of the quantize methods: the configuration's rules replace bit_width,
 * group_size and scheme (given together: an error), and its floor and budget apply unless
 * min_accuracy / target_bpw are given. 0, or -1 with an exception set. */
static int aqpy_diffusion_begin(aqpy_quant *self, PyObject *config, PyObject *calibration,
                                const aqpy_args *a, aqpy_quality *q, aq__py_diffusion *d)
{
    if (self->mode == AQPY_MODE_TIME_AWARE && (calibration == NULL || calibration == Py_None)) {
        /* The mode's whole point is the timestep-balanced importance: without statistics it
         * would silently be mode 'diffusion'. */
        memset(d, 0, sizeof *d);
        PyErr_SetString(aqpy_state_of_quant(self)->error,
                        "mode='time_aware' weighs each weight by its timestep-balanced "
                        "importance and needs calibration=: the torch model to calibrate "
                        "(a torch.nn.Module, or {'model': m, 'timesteps': [...], 'samples': "
                        "inputs}, or arrow_quant_v2.ModelCalibration), a CalibrationResult "
                        "(arrow_quant_v2.calibrate), an Arrow table with layer_name, "
                        "timestep_group, mean_square, or the path of an Arrow IPC file holding "
                        "one; use mode='diffusion' to quantize without calibration");
        return -1;
    }
    /* The modes 'diffusion' and 'time_aware' apply the diffusion layer rules and the budget
     * by default: without config, scheme and group_size, the profile of the bit width asked
     * for (2: edge, 4: local, 8: cloud), as quantize_diffusion_model and the command do. */
    bool implicit = false;
    PyObject *profile = NULL;
    if (self->mode != AQPY_MODE_BASE && (config == NULL || config == Py_None) &&
        a->scheme == Py_None && a->group_size == Py_None) {
        int64_t bits = AQ_DEFAULT_BIT_WIDTH;
        if (aqpy_optional_int(aqpy_state_of_quant(self), a->bit_width, "bit_width", &bits) != 0) {
            memset(d, 0, sizeof *d);
            return -1;
        }
        profile = PyUnicode_FromString(bits == 2 ? "edge" : bits == 8 ? "cloud" : "local");
        if (profile == NULL) {
            memset(d, 0, sizeof *d);
            return -1;
        }
        config = profile;
        implicit = true;
    }
    int rc = aq__py_diffusion_open(aqpy_module_of_quant(self), config, calibration, d);
    Py_XDECREF(profile);
    if (rc != 0) {
        return -1;
    }
    if (d->has_rules) {
        if (!implicit &&
            (a->bit_width != Py_None || a->group_size != Py_None || a->scheme != Py_None)) {
            PyErr_SetString(aqpy_state_of_quant(self)->error,
                            "config sets every layer's bits and scheme (its layer rules): it "
                            "cannot be combined with bit_width, group_size or scheme (use "
                            "config.replace(...) or its bits_for overrides)");
            aq__py_diffusion_reset(d);
            return -1;
        }
        /* With the mode's own profile, min_accuracy or target_bpw given alone keep the
         * meaning they have without rules (a floor alone, a budget alone). */
        bool own = implicit && (a->min_accuracy != Py_None || a->target_bpw != Py_None);
        if (a->min_accuracy == Py_None && !own) {
            q->min_cosine = d->min_cosine;
        }
        if (a->target_bpw == Py_None && !own) {
            q->target_bpw = d->target_bpw;
        }
    }
    q->calib = d->calib;
    return 0;
}

#define AQPY_QUALITY_DOC                                                                          \
    "scheme: 'affine' (min-max), 'affine_search' (searched clipping, same format) or 'kquant' "   \
    "(two-level scales in 512-element super-blocks: it takes no group_size); None: the "          \
    "mode's scheme ('base': affine; 'diffusion' and 'time_aware': kquant, or affine_search "      \
    "when a group_size is given).\n"                                                              \
    "min_accuracy: a cosine-similarity floor (0 <= x < 1, the settings table's min_cosine; "      \
    "None or 0: off): a layer that falls below it is quantized again with more bits (2 -> 4 -> "  \
    "8); its bit_width column says where it ended.\n"                                             \
    "target_bpw: a size budget in bits per weight, all metadata counted (2 to 32, the settings "  \
    "table's bounds; None or 0: off): bit "                                                       \
    "widths are chosen per layer, greedily by error saved per byte, so that the result stays "    \
    "within it (per batch for tables); too small a budget raises QuantizationError.\n"            \
    "config: a DiffusionQuantConfig or a profile name ('edge', 'local', 'cloud'; None: in the "   \
    "modes 'diffusion' and 'time_aware' without scheme and group_size, the profile of the bit "   \
    "width, whose floor and budget give way to min_accuracy / target_bpw given alone): the "      \
    "diffusion "                                                                                  \
    "layer rules decide each layer (kept as float16, 8 bits, or the profile's bits and scheme), " \
    "with the configuration's overrides, floor and budget (min_accuracy / target_bpw given "      \
    "here win); not combinable with bit_width, group_size or scheme. With family 'auto' the "     \
    "family is detected from the layer names (quantize_arrow then reads its whole input "         \
    "first).\n"                                                                                   \
    "calibration: time-aware statistics (a CalibrationResult's table, any Arrow table with "      \
    "layer_name, timestep_group, mean_square, or an Arrow IPC file's path): the importance of "   \
    "each weight for affine_search and kquant.\n"

PyDoc_STRVAR(
    aqpy_quantize_arrow_batch_doc,
    "quantize_arrow_batch(record_batch, bit_width=None, group_size=None, scheme=None, "
    "continue_on_error=False, progress_callback=None, *, min_accuracy=None, "
    "target_bpw=None, config=None, calibration=None)\n"
    "--\n\n"
    "Quantizes a record batch with columns layer_name (string), weights (list of "
    "float32; float16 and float64 are converted) and optionally shape (list<int64>).\n\n"
    "record_batch: any object with __arrow_c_array__ (pyarrow.RecordBatch, nanoarrow, "
    "...), or with __arrow_c_stream__ (a polars DataFrame, a duckdb relation: its "
    "batches give one result batch), or pyarrow's _export_to_c.\n"
    "bit_width: 2, 4 or 8 (None: 4). group_size: elements per group (None: 128).\n" AQPY_QUALITY_DOC
    "continue_on_error: skip bad layers (each reported by a SkippedLayerWarning) "
    "instead of raising.\n"
    "progress_callback: called as f(layers_done, layers_total) on the calling thread; "
    "an exception it raises stops the work at the next layer and propagates (so does "
    "Ctrl-C).\n\n"
    "Returns a pyarrow.RecordBatch with the columns layer_name, quantized_data, scales, "
    "zero_points, shape, bit_width (an arrow_quant_v2.RecordBatch when pyarrow is not "
    "importable). Raises QuantizationError (a ValueError) for bad input.");

static PyObject *aqpy_quantize_arrow_batch(aqpy_quant *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"record_batch",
                             "bit_width",
                             "group_size",
                             "scheme",
                             "continue_on_error",
                             "progress_callback",
                             "min_accuracy",
                             "target_bpw",
                             "config",
                             "calibration",
                             NULL};
    PyObject *input, *callback = Py_None, *config = Py_None, *calibration = Py_None;
    aqpy_args a = {Py_None, Py_None, Py_None, Py_None, Py_None};
    aqpy_quality quality = {0.0, 0.0, NULL, NULL};
    int continue_on_error = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOOpO$OOOO:quantize_arrow_batch", kwlist,
                                     &input, &a.bit_width, &a.group_size, &a.scheme,
                                     &continue_on_error, &callback, &a.min_accuracy, &a.target_bpw,
                                     &config, &calibration) ||
        aqpy_check_callback(&callback) != 0) {
        return NULL;
    }
    aq_ctx *ctx = aqpy_make_ctx(self, &a, &quality);
    if (ctx == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    aq__py_diffusion d;
    if (aqpy_diffusion_begin(self, config, calibration, &a, &quality, &d) != 0) {
        aq_ctx_free(ctx);
        return NULL;
    }
    aqpy_batch_in in;
    int rc = aqpy_import_batch(input, &in);
    if (rc > 0 && d.has_rules) {
        aq__py_names names;
        memset(&names, 0, sizeof names);
        int nr = d.needs_names ? aq__py_batch_names(in.schema, in.array, &names) : 0;
        if (nr != 0) {
            if (nr < 0) {
                PyErr_NoMemory();
            } else {
                PyErr_SetString(
                    aqpy_state_of_quant(self)->error,
                    "config family 'auto' detects the family from the layer names: "
                    "column 'layer_name' must be utf8, large_utf8 or utf8_view here (or give "
                    "the config a family)");
            }
            rc = -1;
        } else if (aq__py_diffusion_rules(aqpy_module_of_quant(self), &d, &names, ctx) != 0) {
            rc = -1;
        }
        quality.rules = d.rules;
        aq__py_names_reset(&names);
    }
    if (rc > 0) {
        result = aqpy_batch_call(self, ctx, aq_batch_quantize, &in, continue_on_error, callback,
                                 &quality);
    } else if (rc == 0 && aqpy_has(input, "__arrow_c_stream__")) {
        PyObject *table = aqpy_stream_call(self, ctx, aq_stream_quantize, input, continue_on_error,
                                           callback, &quality, &d);
        result = table != NULL ? aqpy_table_to_batch(self, ctx, table) : NULL;
    } else if (rc == 0) {
        aqpy_type_error(input, "an Arrow record batch");
    }
    aqpy_batch_in_reset(&in);
    aq__py_diffusion_reset(&d);
    aq_ctx_free(ctx);
    return result;
}

PyDoc_STRVAR(aqpy_quantize_arrow_doc,
             "quantize_arrow(table, bit_width=None, group_size=None, scheme=None, "
             "continue_on_error=False, progress_callback=None, *, min_accuracy=None, "
             "target_bpw=None, config=None, calibration=None)\n"
             "--\n\n"
             "Quantizes every batch of a table, streaming: each batch is read, quantized and "
             "its result kept, one at a time (the input is never concatenated).\n\n"
             "table: any object with __arrow_c_stream__ (pyarrow.Table or RecordBatchReader, "
             "polars.DataFrame, duckdb relations, ...) or __arrow_c_array__; pyarrow's "
             "_export_to_c is used where no capsule method exists.\n"
             "The other arguments are those of quantize_arrow_batch; progress_callback gets "
             "(layers_done, None) since a stream's length is not known in advance; target_bpw "
             "holds for each batch, hence for the whole table.\n\n"
             "Returns a pyarrow.Table (an arrow_quant_v2.Table when pyarrow is not "
             "importable). The same input gives the same bytes as quantize_arrow_batch.");

static PyObject *aqpy_quantize_arrow(aqpy_quant *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"table",
                             "bit_width",
                             "group_size",
                             "scheme",
                             "continue_on_error",
                             "progress_callback",
                             "min_accuracy",
                             "target_bpw",
                             "config",
                             "calibration",
                             NULL};
    PyObject *input, *callback = Py_None, *config = Py_None, *calibration = Py_None;
    aqpy_args a = {Py_None, Py_None, Py_None, Py_None, Py_None};
    aqpy_quality quality = {0.0, 0.0, NULL, NULL};
    int continue_on_error = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OOOpO$OOOO:quantize_arrow", kwlist, &input,
                                     &a.bit_width, &a.group_size, &a.scheme, &continue_on_error,
                                     &callback, &a.min_accuracy, &a.target_bpw, &config,
                                     &calibration) ||
        aqpy_check_callback(&callback) != 0) {
        return NULL;
    }
    aq_ctx *ctx = aqpy_make_ctx(self, &a, &quality);
    if (ctx == NULL) {
        return NULL;
    }
    aq__py_diffusion d;
    if (aqpy_diffusion_begin(self, config, calibration, &a, &quality, &d) != 0) {
        aq_ctx_free(ctx);
        return NULL;
    }
    PyObject *table = aqpy_stream_call(self, ctx, aq_stream_quantize, input, continue_on_error,
                                       callback, &quality, &d);
    aq__py_diffusion_reset(&d);
    aq_ctx_free(ctx);
    return aqpy_finish(aqpy_state_of_quant(self), table, "table");
}

PyDoc_STRVAR(aqpy_dequantize_arrow_doc,
             "dequantize_arrow(result)\n"
             "--\n\n"
             "Restores a quantization result (the six result columns; scheme and group size "
             "from its schema metadata) to the columns layer_name (string), weights "
             "(list<float32>) and shape (list<int64>).\n\n"
             "A record batch (anything with __arrow_c_array__) gives a record batch; a table or "
             "stream (__arrow_c_stream__ only) gives a table.");

static PyObject *aqpy_dequantize_arrow(aqpy_quant *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"result", NULL};
    PyObject *input;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:dequantize_arrow", kwlist, &input)) {
        return NULL;
    }
    aqpy_state *st = aqpy_state_of_quant(self);
    aq_ctx *ctx = aqpy_make_ctx(self, NULL, NULL);
    if (ctx == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    aqpy_batch_in in;
    int rc = aqpy_import_batch(input, &in);
    if (rc > 0) {
        result = aqpy_batch_call(self, ctx, aq_batch_dequantize, &in, 0, NULL, NULL);
    } else if (rc == 0) {
        result = aqpy_finish(
            st, aqpy_stream_call(self, ctx, aq_stream_dequantize, input, 0, NULL, NULL, NULL),
            "table");
    }
    aqpy_batch_in_reset(&in);
    aq_ctx_free(ctx);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* quantize_batch: a dict of arrays through the buffer protocol                               */
/* ------------------------------------------------------------------------------------------ */

/* The dtype of a buffer's struct-module format, native byte order only. */
static int aqpy_buffer_dtype(const Py_buffer *view, aq_dtype *out)
{
    const char *f = view->format != NULL ? view->format : "B";
    if (*f == '@' || *f == '=' || *f == (PY_LITTLE_ENDIAN ? '<' : '>')) {
        f++;
    }
    if (strcmp(f, "f") == 0 && view->itemsize == 4) {
        *out = AQ_DTYPE_F32;
    } else if (strcmp(f, "e") == 0 && view->itemsize == 2) {
        *out = AQ_DTYPE_F16;
    } else if (strcmp(f, "d") == 0 && view->itemsize == 8) {
        *out = AQ_DTYPE_F64;
    } else {
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(aqpy_quantize_batch_doc,
             "quantize_batch(weights, bit_width=None, continue_on_error=False, "
             "progress_callback=None, *, group_size=None, scheme=None, min_accuracy=None, "
             "target_bpw=None, config=None, calibration=None)\n"
             "--\n\n"
             "Quantizes a dict of {layer name: array}. Arrays are numpy arrays or any object "
             "with the buffer protocol, float32, float16 or float64, C-contiguous (a "
             "non-contiguous array is a ValueError naming the layer); the shape is the "
             "buffer's. Nothing is copied on the way in.\n"
             "The other arguments are those of quantize_arrow_batch.\n\n"
             "Returns the result record batch, one row per layer in dict order, as "
             "quantize_arrow_batch does.");

static PyObject *aqpy_quantize_batch(aqpy_quant *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"weights",           "bit_width",  "continue_on_error",
                             "progress_callback", "group_size", "scheme",
                             "min_accuracy",      "target_bpw", "config",
                             "calibration",       NULL};
    PyObject *weights, *callback = Py_None, *config = Py_None, *calibration = Py_None;
    aqpy_args a = {Py_None, Py_None, Py_None, Py_None, Py_None};
    aqpy_quality quality = {0.0, 0.0, NULL, NULL};
    int continue_on_error = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OpO$OOOOOO:quantize_batch", kwlist, &weights,
                                     &a.bit_width, &continue_on_error, &callback, &a.group_size,
                                     &a.scheme, &a.min_accuracy, &a.target_bpw, &config,
                                     &calibration) ||
        aqpy_check_callback(&callback) != 0) {
        return NULL;
    }
    if (!PyDict_Check(weights)) {
        return PyErr_Format(PyExc_TypeError, "weights must be a dict of name -> array, not %.100s",
                            Py_TYPE(weights)->tp_name);
    }
    aqpy_state *st = aqpy_state_of_quant(self);
    aq_ctx *ctx = aqpy_make_ctx(self, &a, &quality);
    if (ctx == NULL) {
        return NULL;
    }
    aq__py_diffusion diff;
    if (aqpy_diffusion_begin(self, config, calibration, &a, &quality, &diff) != 0) {
        aq_ctx_free(ctx);
        return NULL;
    }
    /* Our own references to keys and values: the callback may change the dict. */
    PyObject *items = PyDict_Items(weights);
    Py_ssize_t n = items != NULL ? PyList_GET_SIZE(items) : 0, got = 0;
    Py_buffer *views = calloc((size_t)n + 1, sizeof *views);
    aq_tensor *tensors = calloc((size_t)n + 1, sizeof *tensors);
    int64_t *shapes = calloc((size_t)n * AQ_MAX_NDIM + 1, sizeof *shapes);
    aq_report *report = NULL;
    PyObject *result = NULL;
    aq_error err;
    if (items == NULL) {
        goto done;
    }
    if (views == NULL || tensors == NULL || shapes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 0);
        PyObject *value = PyTuple_GET_ITEM(PyList_GET_ITEM(items, i), 1);
        const char *name = PyUnicode_Check(key) ? PyUnicode_AsUTF8(key) : NULL;
        if (name == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_TypeError, "layer names must be str, not %.100s",
                             Py_TYPE(key)->tp_name);
            }
            goto done;
        }
        if (PyObject_GetBuffer(value, &views[i], PyBUF_RECORDS_RO) != 0) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "Layer '%s': expected an array with the buffer protocol (numpy "
                         "float32, float16 or float64), got %.100s",
                         name, Py_TYPE(value)->tp_name);
            goto done;
        }
        got = i + 1;
        const Py_buffer *v = &views[i];
        if (!PyBuffer_IsContiguous(v, 'C')) {
            PyErr_Format(st->error,
                         "Layer '%s' is not C-contiguous; pass numpy.ascontiguousarray(array)",
                         name);
            goto done;
        }
        aq_dtype dtype;
        if (aqpy_buffer_dtype(v, &dtype) != 0) {
            PyErr_Format(st->error,
                         "Layer '%s' has element format '%s' (%zd bytes); expected float32, "
                         "float16 or float64 in native byte order",
                         name, v->format != NULL ? v->format : "B", v->itemsize);
            goto done;
        }
        if (v->ndim > AQ_MAX_NDIM) {
            PyErr_Format(st->error, "Layer '%s' has %d dimensions; at most %d are supported", name,
                         v->ndim, AQ_MAX_NDIM);
            goto done;
        }
        int64_t *shape = shapes + (size_t)i * AQ_MAX_NDIM;
        for (int d = 0; d < v->ndim; d++) {
            shape[d] = (int64_t)v->shape[d];
        }
        tensors[i].name = name;
        tensors[i].dtype = dtype;
        tensors[i].data = v->buf;
        tensors[i].shape = shape;
        tensors[i].ndim = (size_t)v->ndim;
    }
    if (diff.has_rules) {
        /* The rules see every layer name (the dict's keys, borrowed). */
        aq__py_names names = {NULL, 0, 0};
        const char **v = malloc(((size_t)n + 1) * sizeof *v);
        if (v == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            v[i] = tensors[i].name;
        }
        names.v = (char **)v;
        names.n = (size_t)n;
        int rc = aq__py_diffusion_rules(aqpy_module_of_quant(self), &diff, &names, ctx);
        free(v);
        if (rc != 0) {
            goto done;
        }
        quality.rules = diff.rules;
    }
    if (continue_on_error && aq_report_create(&report, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        goto done;
    }
    {
        struct ArrowSchema out_schema;
        struct ArrowArray out_array;
        aq_batch_options opts;
        aqpy_run run;
        aqpy_run_init(&run, callback, n, &opts, report, continue_on_error, &quality);
        aqpy_release_gil(&run);
        aq_status status =
            aq_tensors_quantize(ctx, tensors, (size_t)n, &opts, &out_schema, &out_array, &err);
        aqpy_acquire_gil(&run);
        result = aqpy_finish_batch(self, &run, status, &err, report, &out_schema, &out_array);
    }
done:
    for (Py_ssize_t i = 0; i < got; i++) {
        if (views[i].obj != NULL) {
            PyBuffer_Release(&views[i]);
        }
    }
    free(views);
    free(tensors);
    free(shapes);
    Py_XDECREF(items);
    aq_report_free(report);
    aq__py_diffusion_reset(&diff);
    aq_ctx_free(ctx);
    return result;
}

static PyGetSetDef aqpy_quant_getset[] = {
    {"mode", (getter)aqpy_quant_get_mode, NULL, "The mode: diffusion, time_aware or base.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef aqpy_quant_methods[] = {
    {"quantize_arrow_batch", (PyCFunction)(void (*)(void))aqpy_quantize_arrow_batch,
     METH_VARARGS | METH_KEYWORDS, aqpy_quantize_arrow_batch_doc},
    {"quantize_arrow", (PyCFunction)(void (*)(void))aqpy_quantize_arrow,
     METH_VARARGS | METH_KEYWORDS, aqpy_quantize_arrow_doc},
    {"quantize_batch", (PyCFunction)(void (*)(void))aqpy_quantize_batch,
     METH_VARARGS | METH_KEYWORDS, aqpy_quantize_batch_doc},
    {"dequantize_arrow", (PyCFunction)(void (*)(void))aqpy_dequantize_arrow,
     METH_VARARGS | METH_KEYWORDS, aqpy_dequantize_arrow_doc},
    {NULL, NULL, 0, NULL}};

PyDoc_STRVAR(aqpy_quant_doc,
             "ArrowQuantV2(mode='diffusion', *, threads=0)\n"
             "--\n\n"
             "A weight quantizer over the ArrowQuant C library.\n\n"
             "mode: 'diffusion' (the best the library does at the size asked for: without "
             "config, scheme and group_size, the layer rules, floor and budget of the bit "
             "width's profile, 2 'edge', 4 'local', 8 'cloud', in kquant: the same bytes as "
             "quantize_diffusion_model; kquant alone with a scheme, affine_search with a "
             "group_size), 'time_aware' (the same, with each weight weighed by its "
             "timestep-balanced importance: a calibration= is required) or 'base' (plain "
             "affine). Anything else raises QuantizationError (a ValueError). A method's "
             "scheme=, group_size= or config= overrides the mode's rules.\n"
             "threads: worker threads of the C library (0: one per CPU). Results never "
             "depend on it.\n\n"
             "Every method runs the C code with the GIL released; progress callbacks run on the "
             "calling thread.");

static PyType_Slot aqpy_quant_slots[] = {{Py_tp_init, aqpy_quant_init},
                                         {Py_tp_dealloc, aqpy_quant_dealloc},
                                         {Py_tp_repr, aqpy_quant_repr},
                                         {Py_tp_methods, aqpy_quant_methods},
                                         {Py_tp_getset, aqpy_quant_getset},
                                         {Py_tp_doc, (void *)aqpy_quant_doc},
                                         {0, NULL}};

static PyType_Spec aqpy_quant_spec = {
    .name = "arrow_quant_v2.ArrowQuantV2",
    .basicsize = sizeof(aqpy_quant),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = aqpy_quant_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Module                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static int aqpy_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **out)
{
    *out = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*out == NULL) {
        return -1;
    }
    return PyModule_AddType(module, *out);
}

static int aqpy_exec(PyObject *module)
{
    aqpy_state *st = aqpy_state_of(module);
    aq__py_gguf_init();
    aq__py_model_init();
    if (PyModule_AddFunctions(module, aq__py_runtime_methods) != 0 ||
        PyModule_AddFunctions(module, aq__py_settings_methods) != 0) {
        return -1;
    }
    st->error = PyErr_NewExceptionWithDoc(
        "arrow_quant_v2.QuantizationError",
        "Bad input or arguments: a ValueError whose message names the layer, column or "
        "parameter and what was expected. Its status attribute holds the library's status "
        "name (e.g. 'AQ_NON_FINITE').",
        PyExc_ValueError, NULL);
    if (st->error == NULL || PyModule_AddObjectRef(module, "QuantizationError", st->error) != 0) {
        return -1;
    }
    PyObject *warning = PyErr_NewExceptionWithDoc(
        "arrow_quant_v2.SkippedLayerWarning",
        "Issued once per layer skipped with continue_on_error=True, with the reason.",
        PyExc_UserWarning, NULL);
    if (warning == NULL || PyModule_AddObject(module, "SkippedLayerWarning", warning) != 0) {
        Py_XDECREF(warning);
        return -1;
    }
    if (aqpy_add_type(module, &aqpy_quant_spec, &st->quant_type) != 0 ||
        aqpy_add_type(module, &aq__py_batch_spec, &st->batch_type) != 0 ||
        aqpy_add_type(module, &aq__py_table_spec, &st->table_type) != 0 ||
        aqpy_add_type(module, &aq__py_schema_spec, &st->schema_type) != 0 ||
        aqpy_add_type(module, &aq__py_held_spec, &st->held_type) != 0) {
        return -1;
    }
    if (PyModule_AddStringConstant(module, "__version__", aq_version_string()) != 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_BIT_WIDTH", AQ_DEFAULT_BIT_WIDTH) != 0 ||
        PyModule_AddIntConstant(module, "DEFAULT_GROUP_SIZE", AQ_DEFAULT_GROUP_SIZE) != 0) {
        return -1;
    }
    return 0;
}

static int aqpy_traverse(PyObject *module, visitproc visit, void *arg)
{
    aqpy_state *st = aqpy_state_of(module);
    Py_VISIT(st->error);
    Py_VISIT(st->quant_type);
    Py_VISIT(st->batch_type);
    Py_VISIT(st->table_type);
    Py_VISIT(st->schema_type);
    Py_VISIT(st->held_type);
    Py_VISIT(st->pyarrow);
    return 0;
}

static int aqpy_clear(PyObject *module)
{
    aqpy_state *st = aqpy_state_of(module);
    Py_CLEAR(st->error);
    Py_CLEAR(st->quant_type);
    Py_CLEAR(st->batch_type);
    Py_CLEAR(st->table_type);
    Py_CLEAR(st->schema_type);
    Py_CLEAR(st->held_type);
    Py_CLEAR(st->pyarrow);
    return 0;
}

static void aqpy_free(void *module)
{
    aqpy_clear(module);
}

static PyModuleDef_Slot aqpy_slots[] = {
    {Py_mod_exec, aqpy_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL}};

PyDoc_STRVAR(aqpy_module_doc,
             "ArrowQuant: 2/4/8-bit weight quantization of Arrow data and numpy arrays.\n\n"
             "ArrowQuantV2(mode).quantize_arrow_batch(batch) / quantize_arrow(table) / "
             "quantize_batch(dict) / dequantize_arrow(result). Inputs and results speak the "
             "Arrow PyCapsule interface.");

static PyModuleDef aqpy_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "arrow_quant_v2.arrow_quant_v2",
    .m_doc = aqpy_module_doc,
    .m_size = sizeof(aqpy_state),
    .m_methods = aq__py_model_methods,
    .m_slots = aqpy_slots,
    .m_traverse = aqpy_traverse,
    .m_clear = aqpy_clear,
    .m_free = aqpy_free,
};

PyMODINIT_FUNC PyInit_arrow_quant_v2(void);

PyMODINIT_FUNC PyInit_arrow_quant_v2(void)
{
    return PyModuleDef_Init(&aqpy_module_def);
}
