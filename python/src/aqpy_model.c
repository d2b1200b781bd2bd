/*
 * aqpy_model.c - the model-level functions of the arrow_quant_v2 extension:
 * _quantize_model (aq_model_quantize with the diffusion layer rules, optional calibration)
 * and _compare_models (aq_model_compare). python/arrow_quant_v2/model.py wraps them as
 * quantize_diffusion_model and validate_quality.
 *
 * Both run the library with the GIL released. The library calls progress and per-tensor
 * functions on the calling thread, so those take the GIL back to run Python's signal
 * handlers (Ctrl-C) and the user's callback; per-tensor results are collected in C and
 * turned into Python objects once the call is over.
 */
#include "aqpy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void aqpy_model_value_error(PyObject *module, const char *fmt, const char *what)
{
    aq_error err;
    err.code = AQ_INVALID_ARGUMENT;
    snprintf(err.message, sizeof err.message, fmt, what);
    aq__py_raise(PyModule_GetState(module), &err);
}

/* ------------------------------------------------------------------------------------------ */
/* A library call without the GIL                                                             */
/* ------------------------------------------------------------------------------------------ */

typedef struct mrun {
    PyThreadState *tstate;
    PyObject *callback; /* borrowed; NULL: none */
    volatile int cancel;
    int failed;    /* a Python exception is held in exc */
    int by_return; /* the callback returned False */
    PyObject *exc;
    size_t done;
} mrun;

static void mrun_keep_exception(mrun *run)
{
    run->failed = 1;
    run->cancel = 1;
    run->exc = aq__py_exc_take();
}

static int mrun_raise(mrun *run)
{
    if (!run->failed) {
        return 0;
    }
    aq__py_exc_raise(run->exc);
    run->exc = NULL;
    return 1;
}

/* Between tensors, on this thread: Ctrl-C and the user's callback (False stops the run). */
static void mrun_progress(void *user, const aq_model_progress *p)
{
    mrun *run = user;
    if (run->cancel) {
        return;
    }
    PyEval_RestoreThread(run->tstate);
    if (PyErr_CheckSignals() != 0) {
        mrun_keep_exception(run);
    } else if (run->callback != NULL) {
        PyObject *info = Py_BuildValue(
            "{s:n,s:n,s:n,s:n,s:s,s:s}", "tensors_done", (Py_ssize_t)p->tensors_done,
            "tensors_total", (Py_ssize_t)p->tensors_total, "bytes_done", (Py_ssize_t)p->bytes_done,
            "bytes_total", (Py_ssize_t)p->bytes_total, "current",
            p->current != NULL ? p->current : "", "phase", p->planning ? "planning" : "quantizing");
        PyObject *r = info != NULL ? PyObject_CallOneArg(run->callback, info) : NULL;
        Py_XDECREF(info);
        if (r == NULL) {
            mrun_keep_exception(run);
        } else {
            if (r == Py_False) {
                run->cancel = 1;
                run->by_return = 1;
                run->done = p->tensors_done;
            }
            Py_DECREF(r);
        }
    }
    run->tstate = PyEval_SaveThread();
}

/* ------------------------------------------------------------------------------------------ */
/* Per-tensor records, collected without the GIL                                              */
/* ------------------------------------------------------------------------------------------ */

typedef struct mrec {
    char *name;
    aq_model_tensor_result r; /* name and rule re-pointed at owned / static storage */
    char *rule;
} mrec;

typedef struct mrecs {
    mrec *v;
    size_t n, cap;
    int oom;
} mrecs;

static mrec *mrecs_push(mrecs *rs, const char *name)
{
    if (rs->n == rs->cap) {
        size_t cap = rs->cap * 2 + 64;
        mrec *v = realloc(rs->v, cap * sizeof *v);
        if (v == NULL) {
            rs->oom = 1;
            return NULL;
        }
        rs->v = v;
        rs->cap = cap;
    }
    mrec *x = &rs->v[rs->n];
    memset(x, 0, sizeof *x);
    if ((x->name = aq__py_strdup(name != NULL ? name : "")) == NULL) {
        rs->oom = 1;
        return NULL;
    }
    rs->n++;
    return x;
}

static void mrecs_free(mrecs *rs)
{
    for (size_t i = 0; i < rs->n; i++) {
        free(rs->v[i].name);
        free(rs->v[i].rule);
    }
    free(rs->v);
    memset(rs, 0, sizeof *rs);
}

static void mrun_on_tensor(void *user, const aq_model_tensor_result *res)
{
    mrecs *rs = user;
    if (rs->oom) {
        return;
    }
    mrec *x = mrecs_push(rs, res->name);
    if (x == NULL) {
        return;
    }
    x->r = *res;
    x->r.name = NULL;
    x->r.rule = NULL;
    if (res->rule != NULL && (x->rule = aq__py_strdup(res->rule)) == NULL) {
        rs->oom = 1;
    }
}

static PyObject *mfloat(double v)
{
    return PyFloat_FromDouble(v);
}

static PyObject *mrec_dict(const mrec *x)
{
    const aq_model_tensor_result *r = &x->r;
    if (r->kept) {
        return Py_BuildValue("{s:n,s:s,s:O,s:z,s:n,s:n}", "index", (Py_ssize_t)r->index, "name",
                             x->name, "kept", Py_True, "rule", x->rule, "elements",
                             (Py_ssize_t)r->elements, "bytes", (Py_ssize_t)r->bytes);
    }
    return Py_BuildValue(
        "{s:n,s:s,s:O,s:z,s:n,s:n,s:s,s:I,s:I,s:O,s:N,s:n,s:N,s:N}", "index", (Py_ssize_t)r->index,
        "name", x->name, "kept", Py_False, "rule", x->rule, "elements", (Py_ssize_t)r->elements,
        "bytes", (Py_ssize_t)r->bytes, "scheme", aq_scheme_name(r->scheme), "bit_width",
        r->bit_width, "initial_bit_width", r->initial_bit_width, "moved",
        r->moved ? Py_True : Py_False, "initial_cosine", mfloat(r->initial_cosine), "group_size",
        (Py_ssize_t)r->group_size, "sqnr_db", mfloat(r->sqnr_db), "cosine", mfloat(r->cosine));
}

/* ------------------------------------------------------------------------------------------ */
/* Calibration tables                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Feeds an object speaking __arrow_c_stream__ to calib (the GIL held: the producer may be
 * Python code). 0, or -1 with an exception set. */
int aq__py_calib_from_stream(PyObject *module, aq_calib *calib, PyObject *obj)
{
    PyObject *cap = PyObject_CallMethod(obj, "__arrow_c_stream__", NULL);
    if (cap == NULL) {
        return -1;
    }
    struct ArrowArrayStream *src = PyCapsule_GetPointer(cap, AQPY_CAPSULE_STREAM);
    if (src == NULL || src->release == NULL) {
        Py_DECREF(cap);
        if (!PyErr_Occurred()) {
            aqpy_model_value_error(module, "%s",
                                   "calibration: the stream capsule was already "
                                   "consumed");
        }
        return -1;
    }
    struct ArrowArrayStream stream = *src;
    src->release = NULL;
    Py_DECREF(cap);
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    aq_error err;
    int rc = -1;
    int code = stream.get_schema(&stream, &schema);
    if (code != 0) {
        const char *m = stream.get_last_error(&stream);
        aqpy_model_value_error(module, "calibration: cannot read the table's schema: %s",
                               m != NULL ? m : "stream error");
        goto done;
    }
    for (;;) {
        struct ArrowArray batch;
        memset(&batch, 0, sizeof batch);
        if ((code = stream.get_next(&stream, &batch)) != 0) {
            const char *m = stream.get_last_error(&stream);
            aqpy_model_value_error(module, "calibration: cannot read the table: %s",
                                   m != NULL ? m : "stream error");
            goto done;
        }
        if (batch.release == NULL) {
            break;
        }
        aq_status st = aq_calib_add_batch(calib, &schema, &batch, &err);
        batch.release(&batch);
        if (st != AQ_OK) {
            aq__py_raise(PyModule_GetState(module), &err);
            goto done;
        }
    }
    rc = 0;
done:
    if (schema.release != NULL) {
        schema.release(&schema);
    }
    stream.release(&stream);
    return rc;
}

static PyObject *mcalib_layers(const aq_calib *calib)
{
    size_t n = aq_calib_layer_count(calib);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        aq_calib_layer_info info;
        if (aq_calib_layer_get(calib, i, &info, NULL) != AQ_OK) {
            Py_CLEAR(list);
            PyErr_SetString(PyExc_RuntimeError, "calibration layer out of range");
            break;
        }
        PyObject *d =
            Py_BuildValue("{s:s,s:n,s:n,s:d,s:d}", "name", info.name, "channels",
                          (Py_ssize_t)info.channels, "groups", (Py_ssize_t)info.groups,
                          "scale_ratio", info.scale_ratio, "shape_variation", info.shape_variation);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, d);
    }
    return list;
}

/* ------------------------------------------------------------------------------------------ */
/* _quantize_model                                                                            */
/* ------------------------------------------------------------------------------------------ */

PyDoc_STRVAR(aqpy_quantize_model_doc,
             "_quantize_model(src, dst, *, keep=None, bits_for=None, schemes=None, "
             "calibration=None, progress=None, **settings)\n--\n\n"
             "settings: every setting of the library's table (_settings()) by name, checked "
             "by the table; those not given come from the profile (explicit values win), "
             "then from the table's defaults. "
             "Quantizes a safetensors file, sharded checkpoint or diffusers folder into an "
             "arrowquant model file with the diffusion layer rules of a profile. Returns a dict "
             "(summary, tensors, calibration_layers). Use arrow_quant_v2.quantize_diffusion_"
             "model instead.");

/* The result of _quantize_model: {summary, tensors, calibration_layers}; NULL with an
 * exception set. */
static PyObject *mresult(const mrecs *recs, const aq_model_summary *sum, const aq_model *model,
                         const aq_calib *calib, int threads, const char *kernels)
{
    PyObject *result = NULL;
    PyObject *tensors = PyList_New((Py_ssize_t)recs->n);
    for (size_t i = 0; tensors != NULL && i < recs->n; i++) {
        PyObject *d = mrec_dict(&recs->v[i]);
        if (d == NULL) {
            Py_CLEAR(tensors);
            break;
        }
        PyList_SET_ITEM(tensors, (Py_ssize_t)i, d);
    }
    PyObject *summary = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:d,s:d,s:d,s:z,s:n,s:n,s:s}", "tensors",
        (Py_ssize_t)sum->tensors, "quantized", (Py_ssize_t)sum->quantized, "kept",
        (Py_ssize_t)sum->kept, "params", (Py_ssize_t)sum->params, "quantized_params",
        (Py_ssize_t)sum->quantized_params, "bytes_in", (Py_ssize_t)sum->bytes_in, "bytes_out",
        (Py_ssize_t)sum->bytes_out, "quantized_bytes", (Py_ssize_t)sum->quantized_bytes, "batches",
        (Py_ssize_t)sum->batches, "mean_sqnr_db", sum->mean_sqnr_db, "min_sqnr_db",
        sum->min_sqnr_db, "mean_cosine", sum->mean_cosine, "worst", sum->worst, "moved",
        (Py_ssize_t)sum->moved, "threads", (Py_ssize_t)threads, "kernels", kernels);
    /* The pipeline members that gave no tensors, with why: never skipped silently. */
    PyObject *skipped = summary != NULL ? PyDict_New() : NULL;
    for (size_t i = 0; skipped != NULL && i < aq_model_skipped_count(model); i++) {
        const char *sn, *sr;
        aq_error gerr;
        if (aq_model_skipped_get(model, i, &sn, &sr, &gerr) != AQ_OK) {
            PyErr_SetString(PyExc_RuntimeError, gerr.message);
            Py_CLEAR(skipped);
            break;
        }
        PyObject *v = PyUnicode_FromString(sr);
        if (v == NULL || PyDict_SetItemString(skipped, sn, v) != 0) {
            Py_XDECREF(v);
            Py_CLEAR(skipped);
            break;
        }
        Py_DECREF(v);
    }
    if (skipped == NULL || PyDict_SetItemString(summary, "skipped", skipped) != 0) {
        Py_CLEAR(summary);
    }
    Py_XDECREF(skipped);
    PyObject *layers = calib != NULL ? mcalib_layers(calib) : Py_NewRef(Py_None);
    if (tensors != NULL && summary != NULL && layers != NULL) {
        result = Py_BuildValue("{s:N,s:N,s:N}", "summary", summary, "tensors", tensors,
                               "calibration_layers", layers);
    } else {
        Py_XDECREF(tensors);
        Py_XDECREF(summary);
        Py_XDECREF(layers);
    }
    return result;
}

/* The schemes named in `names`, in a new array (NULL when n is 0): 0, or -1 with an
 * exception set. */
static int mschemes(PyObject *module, const char **names, size_t n, aq_scheme **out)
{
    *out = NULL;
    if (n == 0) {
        return 0;
    }
    aq_scheme *sch = malloc(n * sizeof *sch);
    if (sch == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        aq_error err;
        aq_error_clear(&err);
        if (aq_scheme_from_name(names[i], &sch[i], &err) != AQ_OK) {
            aq__py_raise(PyModule_GetState(module), &err);
            free(sch);
            return -1;
        }
    }
    *out = sch;
    return 0;
}

/* Runs aq_model_quantize with options o (the callbacks set here) and the GIL released,
 * recording each tensor in recs and the library's status in *st. 0, or -1 with the exception
 * the progress callback raised. */
static int mquantize(PyObject *progress, aq_ctx *ctx, aq_model *model, const char *dst,
                     aq_model_quantize_options *o, mrecs *recs, aq_model_summary *sum,
                     aq_status *st, aq_error *err)
{
    o->on_tensor = mrun_on_tensor;
    o->on_tensor_user = recs;
    mrun run;
    memset(&run, 0, sizeof run);
    run.callback = progress != Py_None ? progress : NULL;
    o->progress = mrun_progress;
    o->progress_user = &run;
    o->cancel = &run.cancel;
    memset(sum, 0, sizeof *sum);
    run.tstate = PyEval_SaveThread();
    *st = aq_model_quantize(ctx, model, dst, o, sum, err);
    PyEval_RestoreThread(run.tstate);
    run.tstate = NULL;
    if (mrun_raise(&run)) {
        return -1;
    }
    if (run.by_return && *st == AQ_CANCELLED) {
        snprintf(err->message, sizeof err->message,
                 "Quantization cancelled: the progress callback returned False after %zu "
                 "tensors; no output written",
                 run.done);
    }
    return 0;
}

static const char *const mkw_positional[] = {"src", "dst", NULL};
static const char *const mkw_own[] = {"keep",        "bits_for", "schemes",
                                      "calibration", "progress", NULL};
enum { MKW_KEEP, MKW_BITS_FOR, MKW_SCHEMES, MKW_CALIBRATION, MKW_PROGRESS, MKW_OWN };

/* Every setting of the table is a keyword of _quantize_model; it applies those the table marks
 * model_file (filled by aq__py_model_init: a setting is added to the table, marked there, and
 * read into the run by name). */
static const char *mkw_applies[64];

void aq__py_model_init(void)
{
    aq__py_applies_fill(mkw_applies, sizeof mkw_applies / sizeof *mkw_applies, 0);
}

const aq__py_kwspec aq__py_quantize_model_kw = {"_quantize_model", mkw_positional, mkw_own,
                                                mkw_applies,
                                                "the arrowquant model writer does not read it"};

/* The settings a run reads: the profile applied (explicit values win), as the command's. */
static int msettings(PyObject *module, PyObject *args, PyObject *kwargs, PyObject **src_b,
                     PyObject **dst_b, PyObject **own, aq_settings **out)
{
    PyObject *pos[2];
    aq_settings *s = NULL;
    *src_b = *dst_b = NULL;
    if (aq__py_kw_parse(module, &aq__py_quantize_model_kw, args, kwargs, pos, own, &s) != 0) {
        return -1;
    }
    if (aq__py_kw_profile(module, s) != 0) {
        aq_settings_free(s);
        return -1;
    }
    if (!PyUnicode_FSConverter(pos[0], src_b) || !PyUnicode_FSConverter(pos[1], dst_b)) {
        Py_CLEAR(*src_b);
        aq_settings_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

static PyObject *aqpy_quantize_model(PyObject *module, PyObject *args, PyObject *kwargs)
{
    PyObject *src_b = NULL, *dst_b = NULL, *own[MKW_OWN];
    aq_settings *set = NULL;
    if (msettings(module, args, kwargs, &src_b, &dst_b, own, &set) != 0) {
        return NULL;
    }
    PyObject *keep = own[MKW_KEEP], *bits_for = own[MKW_BITS_FOR], *schemes = own[MKW_SCHEMES];
    PyObject *calibration = own[MKW_CALIBRATION] != NULL ? own[MKW_CALIBRATION] : Py_None;
    PyObject *progress = own[MKW_PROGRESS] != NULL ? own[MKW_PROGRESS] : Py_None;
    PyObject *result = NULL, *keep_seq = NULL, *bits_seq = NULL, *sch_seq = NULL;
    const char **keep_v = NULL, **bits_v = NULL, **sch_v = NULL;
    size_t n_keep = 0, n_bits = 0, n_sch = 0;
    aq_scheme *sch = NULL;
    const char **names = NULL;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_rules *rules = NULL;
    aq_calib *calib = NULL;
    mrecs recs;
    memset(&recs, 0, sizeof recs);
    aq_error err;
    aq_error_clear(&err);
    aq_status st = AQ_OK;
    const char *src = PyBytes_AS_STRING(src_b), *dst = PyBytes_AS_STRING(dst_b);
    aq_profile prof;
    int64_t comp = 0, scope = 0, threads = 0, moments = 0, min_elements = 0, batch_bytes = 0;
    double min_cosine = 0.0, target_bpw = 0.0;
    int target_given = 0;
    const char *family_name = NULL, *combine_name = NULL;
    if ((st = aq_settings_get_int(set, "compression", &comp, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "budget_scope", &scope, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "threads", &threads, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "preserve_moments", &moments, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "min_elements", &min_elements, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "batch_bytes", &batch_bytes, &err)) != AQ_OK ||
        (st = aq_settings_get_float(set, "min_cosine", &min_cosine, &err)) != AQ_OK ||
        (st = aq_settings_get_float(set, "target_bpw", &target_bpw, &err)) != AQ_OK ||
        (st = aq_settings_is_set(set, "target_bpw", &target_given, &err)) != AQ_OK ||
        (st = aq_settings_get_text(set, "family", &family_name, &err)) != AQ_OK ||
        (st = aq_settings_get_text(set, "calibration_combine", &combine_name, &err)) != AQ_OK) {
        goto fail;
    }
    /* The profile's budget, not given explicitly, is its own size on this model, as the
     * command's --profile default (AQ_TARGET_BPW_PROFILE). */
    if (!target_given && target_bpw != 0.0) {
        target_bpw = AQ_TARGET_BPW_PROFILE;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_SetString(PyExc_TypeError, "progress must be callable or None");
        goto done;
    }
    if (aq__py_strings(module, keep, "keep", &keep_seq, &keep_v, &n_keep) != 0 ||
        aq__py_strings(module, bits_for, "bits_for", &bits_seq, &bits_v, &n_bits) != 0 ||
        aq__py_strings(module, schemes, "schemes", &sch_seq, &sch_v, &n_sch) != 0) {
        goto done;
    }
    if (mschemes(module, sch_v, n_sch, &sch) != 0) {
        goto done;
    }
    /* The configuration may change the profile's bits, scheme and group size: the rules then
     * give those to the tensors that follow the profile. */
    size_t n = 0;
    if (aq__py_run_open(module, src, (int)threads, &ctx, &model, &names, &n) != 0 ||
        aq__py_settings_profile(module, set, ctx, &prof) != 0) {
        goto done;
    }
    if ((st = aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, prof.bit_width, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, moments, &err)) != AQ_OK) {
        goto fail;
    }
    if (aq__py_run_rules(module, &prof, family_name, names, n, keep_v, n_keep, bits_v, n_bits,
                         &rules) != 0 ||
        (calibration != Py_None &&
         aq__py_run_calib(module, calibration, combine_name, &calib) != 0)) {
        goto done;
    }
    /* aq_model_quantize checks the calibration against the model's names before any output. */
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.compression = (int)comp; /* the choices follow aq_ipc_compression */
    o.min_elements = (size_t)min_elements;
    o.batch_bytes = (size_t)batch_bytes;
    o.profile = prof.name;
    o.min_cosine = min_cosine;
    o.target_bpw = target_bpw;
    o.schemes = sch;
    o.n_schemes = n_sch;
    o.rules = rules;
    o.calib = calib;
    o.budget_scope = (aq_budget_scope)scope; /* the choices follow aq_budget_scope */
    aq_model_summary sum;
    if (mquantize(progress, ctx, model, dst, &o, &recs, &sum, &st, &err) != 0) {
        goto done;
    }
    if (st != AQ_OK) {
        goto fail;
    }
    if (recs.oom) {
        PyErr_NoMemory();
        goto done;
    }
    result = mresult(&recs, &sum, model, calib, (int)threads, aq_ctx_kernels(ctx));
    goto done;
fail:
    aq__py_raise(PyModule_GetState(module), &err);
done:
    mrecs_free(&recs);
    aq_calib_free(calib);
    aq_rules_free(rules);
    aq_model_free(model);
    aq_ctx_free(ctx);
    free(names);
    free(sch);
    free(keep_v);
    free(bits_v);
    free(sch_v);
    Py_XDECREF(keep_seq);
    Py_XDECREF(bits_seq);
    Py_XDECREF(sch_seq);
    Py_XDECREF(src_b);
    Py_XDECREF(dst_b);
    aq_settings_free(set);
    return result;
}

/* ------------------------------------------------------------------------------------------ */
/* _compare_models                                                                            */
/* ------------------------------------------------------------------------------------------ */

typedef struct crec {
    char *name;
    aq_compare_tensor t; /* name and side strings re-pointed at owned storage */
    char *strs[4];       /* a.dtype, a.scheme, b.dtype, b.scheme */
} crec;

typedef struct ccollect {
    crec *v;
    size_t n, cap;
    int oom;
    PyThreadState *tstate;
    int failed;
    PyObject *exc;
} ccollect;

static char *mdup_or_null(const char *s, int *oom)
{
    if (s == NULL) {
        return NULL;
    }
    char *d = aq__py_strdup(s);
    if (d == NULL) {
        *oom = 1;
    }
    return d;
}

static int ccollect_tensor(void *user, const aq_compare_tensor *t)
{
    ccollect *c = user;
    if (c->n == c->cap) {
        size_t cap = c->cap * 2 + 64;
        crec *v = realloc(c->v, cap * sizeof *v);
        if (v == NULL) {
            c->oom = 1;
            return 1;
        }
        c->v = v;
        c->cap = cap;
    }
    crec *x = &c->v[c->n++];
    memset(x, 0, sizeof *x);
    x->t = *t;
    x->name = mdup_or_null(t->name, &c->oom);
    x->strs[0] = mdup_or_null(t->a.dtype, &c->oom);
    x->strs[1] = mdup_or_null(t->a.scheme, &c->oom);
    x->strs[2] = mdup_or_null(t->b.dtype, &c->oom);
    x->strs[3] = mdup_or_null(t->b.scheme, &c->oom);
    x->t.a.shape = x->t.b.shape = NULL;
    if (c->oom) {
        return 1;
    }
    /* Ctrl-C between tensors. */
    PyEval_RestoreThread(c->tstate);
    if (PyErr_CheckSignals() != 0) {
        c->failed = 1;
        c->exc = aq__py_exc_take();
    }
    c->tstate = PyEval_SaveThread();
    return c->failed;
}

static void ccollect_free(ccollect *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->v[i].name);
        for (int k = 0; k < 4; k++) {
            free(c->v[i].strs[k]);
        }
    }
    free(c->v);
    Py_XDECREF(c->exc);
}

static PyObject *cside(const char *dtype, const char *scheme, unsigned bits)
{
    if (dtype == NULL) {
        return Py_NewRef(Py_None);
    }
    return Py_BuildValue("{s:s,s:z,s:I}", "dtype", dtype, "scheme", scheme, "bit_width", bits);
}

static PyObject *crec_dict(const crec *x)
{
    const aq_compare_tensor *t = &x->t;
    PyObject *a = cside(x->strs[0], x->strs[1], t->a.bit_width);
    PyObject *b = cside(x->strs[2], x->strs[3], t->b.bit_width);
    if (a == NULL || b == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        return NULL;
    }
    if (t->status != AQ_COMPARE_COMPARED) {
        return Py_BuildValue("{s:s,s:s,s:N,s:N,s:n,s:O,s:O,s:O,s:O}", "name", x->name, "status",
                             aq_compare_status_name(t->status), "original", a, "quantized", b,
                             "elements", (Py_ssize_t)t->elements, "sqnr_db", Py_None, "cosine",
                             Py_None, "max_abs_error", Py_None, "below_min_cosine", Py_False);
    }
    return Py_BuildValue("{s:s,s:s,s:N,s:N,s:n,s:d,s:d,s:d,s:O}", "name", x->name, "status",
                         aq_compare_status_name(t->status), "original", a, "quantized", b,
                         "elements", (Py_ssize_t)t->elements, "sqnr_db", t->metrics.sqnr_db,
                         "cosine", t->metrics.cosine, "max_abs_error", t->metrics.max_abs_error,
                         "below_min_cosine", t->below_min_cosine ? Py_True : Py_False);
}

PyDoc_STRVAR(aqpy_compare_models_doc,
             "_compare_models(a, b, min_cosine=None)\n--\n\n"
             "Compares two models (safetensors file, index or folder, or arrowquant model "
             "file) tensor by tensor, A as the reference; min_cosine None: the floor B records "
             "(aq_model_default_floor). Returns a dict (summary, tensors). Use "
             "arrow_quant_v2.validate_quality instead.");

static PyObject *aqpy_compare_models(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"a", "b", "min_cosine", NULL};
    PyObject *a_b = NULL, *b_b = NULL, *floor_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|O", kwlist, PyUnicode_FSConverter, &a_b,
                                     PyUnicode_FSConverter, &b_b, &floor_obj)) {
        Py_XDECREF(a_b);
        return NULL;
    }
    aq_error err;
    aq_error_clear(&err);
    aq_model_floor mf = {0.0, "argument", NULL};
    if (floor_obj != Py_None) {
        mf.min_cosine = PyFloat_AsDouble(floor_obj);
        if (mf.min_cosine == -1.0 && PyErr_Occurred()) {
            Py_DECREF(a_b);
            Py_DECREF(b_b);
            return NULL;
        }
    } else if (aq_model_default_floor(PyBytes_AS_STRING(b_b), &mf, &err) != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        Py_DECREF(a_b);
        Py_DECREF(b_b);
        return NULL;
    }
    double min_cosine = mf.min_cosine;
    ccollect c;
    memset(&c, 0, sizeof c);
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.min_cosine = min_cosine;
    o.on_tensor = ccollect_tensor;
    o.on_tensor_user = &c;
    aq_model_compare_summary s;
    memset(&s, 0, sizeof s);
    PyObject *result = NULL;
    c.tstate = PyEval_SaveThread();
    aq_status st = aq_model_compare(PyBytes_AS_STRING(a_b), PyBytes_AS_STRING(b_b), &o, &s, &err);
    PyEval_RestoreThread(c.tstate);
    if (c.failed) {
        aq__py_exc_raise(c.exc);
        c.exc = NULL;
        goto done;
    }
    if (c.oom) {
        PyErr_NoMemory();
        goto done;
    }
    if (st != AQ_OK) {
        aq__py_raise(PyModule_GetState(module), &err);
        goto done;
    }
    PyObject *tensors = PyList_New((Py_ssize_t)c.n);
    for (size_t i = 0; tensors != NULL && i < c.n; i++) {
        PyObject *d = crec_dict(&c.v[i]);
        if (d == NULL) {
            Py_CLEAR(tensors);
            break;
        }
        PyList_SET_ITEM(tensors, (Py_ssize_t)i, d);
    }
    PyObject *summary = Py_BuildValue(
        "{s:n,s:n,s:n,s:n,s:n,s:d,s:d,s:d,s:d,s:z,s:n,s:d,s:s,s:z}", "tensors",
        (Py_ssize_t)s.tensors, "compared", (Py_ssize_t)s.compared, "missing_in_original",
        (Py_ssize_t)s.missing_in_a, "missing_in_quantized", (Py_ssize_t)s.missing_in_b,
        "mismatched", (Py_ssize_t)s.mismatched, "mean_sqnr_db", s.mean_sqnr_db, "min_sqnr_db",
        s.min_sqnr_db, "mean_cosine", s.mean_cosine, "min_cosine", s.min_cosine, "worst", s.worst,
        "below_min_cosine", (Py_ssize_t)s.below_min_cosine, "floor", min_cosine, "floor_source",
        mf.source, "floor_profile", mf.profile);
    if (tensors != NULL && summary != NULL) {
        result = Py_BuildValue("{s:N,s:N}", "summary", summary, "tensors", tensors);
    } else {
        Py_XDECREF(tensors);
        Py_XDECREF(summary);
    }
done:
    aq_model_compare_summary_reset(&s);
    ccollect_free(&c);
    Py_XDECREF(a_b);
    Py_XDECREF(b_b);
    return result;
}

PyMethodDef aq__py_model_methods[] = {
    {"_quantize_model", (PyCFunction)(void (*)(void))aqpy_quantize_model,
     METH_VARARGS | METH_KEYWORDS, aqpy_quantize_model_doc},
    {"_compare_models", (PyCFunction)(void (*)(void))aqpy_compare_models,
     METH_VARARGS | METH_KEYWORDS, aqpy_compare_models_doc},
    AQ__PY_GGUF_METHODS AQ__PY_PLAN_METHODS{NULL, NULL, 0, NULL}};

/* ------------------------------------------------------------------------------------------ */
/* config= and calibration= of ArrowQuantV2's quantize methods                                */
/* ------------------------------------------------------------------------------------------ */

void aq__py_names_reset(aq__py_names *names)
{
    for (size_t i = 0; i < names->n; i++) {
        free(names->v[i]);
    }
    free(names->v);
    memset(names, 0, sizeof *names);
}

static int mnames_push(aq__py_names *names, const char *s, size_t len)
{
    if (names->n == names->cap) {
        size_t cap = names->cap * 2 + 64;
        char **v = realloc(names->v, cap * sizeof *v);
        if (v == NULL) {
            return -1;
        }
        names->v = v;
        names->cap = cap;
    }
    char *d = malloc(len + 1);
    if (d == NULL) {
        return -1;
    }
    memcpy(d, s, len);
    d[len] = '\0';
    names->v[names->n++] = d;
    return 0;
}

/* The names of a utf8 view column (Arrow's string_view: 16-byte views, strings of up to 12
 * bytes inline, longer ones in the variadic data buffers). 0, 1 for a malformed column, -1 when
 * out of memory. */
static int mnames_from_views(const struct ArrowArray *array, const struct ArrowArray *col,
                             aq__py_names *names)
{
    if (col->n_buffers < 3) {
        return 1;
    }
    const int64_t ndata = col->n_buffers - 3; /* validity, views, data..., sizes */
    const uint8_t *valid = col->buffers[0];
    const uint8_t *views = col->buffers[1];
    for (int64_t i = 0; i < array->length; i++) {
        int64_t k = array->offset + col->offset + i;
        if (valid != NULL && col->null_count != 0 && !((valid[k >> 3] >> (k & 7)) & 1)) {
            continue; /* the library reports the null row */
        }
        const uint8_t *v = views + 16 * k;
        int32_t len, buf, off;
        memcpy(&len, v, 4);
        const char *str;
        if (len < 0) {
            return 1;
        }
        if (len <= 12) {
            str = (const char *)v + 4;
        } else {
            memcpy(&buf, v + 8, 4);
            memcpy(&off, v + 12, 4);
            if (buf < 0 || buf >= ndata || off < 0) {
                return 1;
            }
            str = (const char *)col->buffers[2 + buf] + off;
        }
        if (mnames_push(names, str, (size_t)len) != 0) {
            return -1;
        }
    }
    return 0;
}

int aq__py_batch_names(const struct ArrowSchema *schema, const struct ArrowArray *array,
                       aq__py_names *names)
{
    for (int64_t c = 0; c < schema->n_children && c < array->n_children; c++) {
        const struct ArrowSchema *f = schema->children[c];
        if (f->name == NULL || strcmp(f->name, "layer_name") != 0) {
            continue;
        }
        const struct ArrowArray *col = array->children[c];
        if (strcmp(f->format, "vu") == 0) {
            return mnames_from_views(array, col, names);
        }
        int large = strcmp(f->format, "U") == 0;
        if ((!large && strcmp(f->format, "u") != 0) || col->n_buffers < 3) {
            return 1;
        }
        const uint8_t *valid = col->buffers[0];
        const char *data = col->buffers[2];
        for (int64_t i = 0; i < array->length; i++) {
            int64_t k = array->offset + col->offset + i, b, e;
            if (valid != NULL && col->null_count != 0 && !((valid[k >> 3] >> (k & 7)) & 1)) {
                continue; /* the library reports the null row */
            }
            if (large) {
                b = ((const int64_t *)col->buffers[1])[k];
                e = ((const int64_t *)col->buffers[1])[k + 1];
            } else {
                b = ((const int32_t *)col->buffers[1])[k];
                e = ((const int32_t *)col->buffers[1])[k + 1];
            }
            if (b < 0 || e < b || mnames_push(names, data + b, (size_t)(e - b)) != 0) {
                return e < b || b < 0 ? 1 : -1;
            }
        }
        return 0;
    }
    return 0; /* no layer_name column: the library says so */
}

void aq__py_diffusion_reset(aq__py_diffusion *d)
{
    Py_CLEAR(d->spec);
    aq_rules_free(d->rules);
    aq_calib_free(d->calib);
    memset(d, 0, sizeof *d);
}

static const char *mspec_str(PyObject *spec, const char *key)
{
    PyObject *v = PyDict_GetItemString(spec, key);
    return v != NULL && PyUnicode_Check(v) ? PyUnicode_AsUTF8(v) : NULL;
}

static double mspec_float(PyObject *spec, const char *key)
{
    PyObject *v = PyDict_GetItemString(spec, key);
    return v != NULL ? PyFloat_AsDouble(v) : 0.0;
}

int aq__py_diffusion_open(PyObject *module, PyObject *config, PyObject *calibration,
                          aq__py_diffusion *d)
{
    memset(d, 0, sizeof *d);
    if ((config == NULL || config == Py_None) && (calibration == NULL || calibration == Py_None)) {
        return 0;
    }
    PyObject *mod = PyImport_ImportModule("arrow_quant_v2.model");
    if (mod == NULL) {
        return -1;
    }
    d->spec = PyObject_CallMethod(mod, "_batch_spec", "OO", config != NULL ? config : Py_None,
                                  calibration != NULL ? calibration : Py_None);
    Py_DECREF(mod);
    if (d->spec == NULL || !PyDict_Check(d->spec)) {
        if (d->spec != NULL) {
            PyErr_SetString(PyExc_RuntimeError, "_batch_spec must return a dict");
        }
        aq__py_diffusion_reset(d);
        return -1;
    }
    d->active = 1;
    d->has_rules = PyObject_IsTrue(PyDict_GetItemString(d->spec, "rules")) == 1;
    if (d->has_rules) {
        d->min_cosine = mspec_float(d->spec, "min_cosine");
        d->target_bpw = mspec_float(d->spec, "target_bpw");
        const char *fam = mspec_str(d->spec, "family");
        d->needs_names = fam != NULL && strcmp(fam, "auto") == 0;
    }
    PyObject *cal = PyDict_GetItemString(d->spec, "calibration");
    if (cal != NULL && cal != Py_None) {
        const char *combine = mspec_str(d->spec, "calibration_combine");
        if (aq__py_run_calib(module, cal, combine != NULL ? combine : "max", &d->calib) != 0) {
            aq__py_diffusion_reset(d);
            return -1;
        }
    }
    return 0;
}

int aq__py_diffusion_rules(PyObject *module, aq__py_diffusion *d, const aq__py_names *names,
                           aq_ctx *ctx)
{
    if (!d->has_rules) {
        return 0;
    }
    aq_error err;
    aq_error_clear(&err);
    aq_profile prof;
    PyObject *bw = PyDict_GetItemString(d->spec, "bit_width");
    PyObject *gs = PyDict_GetItemString(d->spec, "group_size");
    unsigned bits = bw != NULL ? (unsigned)PyLong_AsUnsignedLong(bw) : 0;
    size_t group = gs != NULL ? PyLong_AsSize_t(gs) : 0;
    if (PyErr_Occurred()) {
        return -1;
    }
    const char **lists[2] = {NULL, NULL};
    size_t counts[2] = {0, 0};
    PyObject *seqs[2] = {NULL, NULL};
    int rc = -1;
    if (aq__py_run_profile(module, mspec_str(d->spec, "profile"), bits,
                           mspec_str(d->spec, "scheme"), group, ctx, &prof) != 0 ||
        aq__py_strings(module, PyDict_GetItemString(d->spec, "keep"), "keep", &seqs[0], &lists[0],
                       &counts[0]) != 0 ||
        aq__py_strings(module, PyDict_GetItemString(d->spec, "bits_for"), "bits_for", &seqs[1],
                       &lists[1], &counts[1]) != 0) {
        goto done;
    }
    rc = aq__py_run_rules(module, &prof, mspec_str(d->spec, "family"),
                          names != NULL ? (const char *const *)names->v : NULL,
                          names != NULL ? names->n : 0, lists[0], counts[0], lists[1], counts[1],
                          &d->rules);
done:
    for (int l = 0; l < 2; l++) {
        free(lists[l]);
        Py_XDECREF(seqs[l]);
    }
    return rc;
}

aq_status aq__py_stream_buffer(struct ArrowArrayStream *in, aq__py_names *names,
                               struct ArrowArrayStream *out, aq_error *err)
{
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    aq__py_holder **holders = NULL;
    size_t n = 0, cap = 0;
    aq_status st = AQ_OK;
    int rc = in->get_schema(in, &schema);
    while (rc == 0) {
        struct ArrowArray array;
        memset(&array, 0, sizeof array);
        if ((rc = in->get_next(in, &array)) != 0 || array.release == NULL) {
            break;
        }
        if (n == cap) {
            size_t ncap = cap * 2 + 8;
            aq__py_holder **g = realloc(holders, ncap * sizeof *g);
            if (g == NULL) {
                array.release(&array);
                st = AQ_NO_MEMORY;
                break;
            }
            holders = g;
            cap = ncap;
        }
        if ((holders[n] = aq__py_holder_create(&array)) == NULL) {
            st = AQ_NO_MEMORY;
            break;
        }
        n++;
        int r = aq__py_batch_names(&schema, aq__py_holder_array(holders[n - 1]), names);
        if (r != 0) {
            st = r < 0 ? AQ_NO_MEMORY : AQ_INVALID_ARGUMENT;
            break;
        }
    }
    if (rc != 0) {
        const char *e = in->get_last_error(in);
        st = AQ_INVALID_DATA;
        snprintf(err->message, sizeof err->message, "%s", e != NULL ? e : "Arrow stream error");
        err->code = st;
    } else if (st == AQ_INVALID_ARGUMENT) {
        snprintf(err->message, sizeof err->message,
                 "config family 'auto' detects the family from the layer names: column "
                 "'layer_name' must be utf8, large_utf8 or utf8_view here (or give the config a "
                 "family)");
        err->code = st;
    } else if (st == AQ_NO_MEMORY) {
        snprintf(err->message, sizeof err->message, "out of memory");
        err->code = st;
    } else if (aq__py_stream_over(&schema, holders, n, out) != 0) {
        st = AQ_NO_MEMORY;
        snprintf(err->message, sizeof err->message, "out of memory");
        err->code = st;
    }
    in->release(in);
    if (schema.release != NULL) {
        schema.release(&schema);
    }
    for (size_t i = 0; i < n; i++) {
        aq__py_holder_release(holders[i]);
    }
    free(holders);
    return st;
}
