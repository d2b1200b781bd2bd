/*
 * The GGUF functions of the extension module (docs/gguf.md): _quantize_gguf (a model to a GGUF
 * file, uniform or with the diffusion layer rules), _gguf_encode / _gguf_decode (one buffer of
 * floats to ggml blocks and back) and _gguf_to_safetensors. The heavy work runs without the
 * GIL; the pure-Python wrappers are in arrow_quant_v2/model.py and gguf.py.
 */
#include "aqpy.h"

#include <math.h>

static PyObject *gp_raise(PyObject *module, const aq_error *err)
{
    aq__py_raise(PyModule_GetState(module), err);
    return NULL;
}

static int gp_value_error(PyObject *module, const char *msg)
{
    aq_error err;
    err.code = AQ_INVALID_ARGUMENT;
    snprintf(err.message, sizeof err.message, "%s", msg);
    aq__py_raise(PyModule_GetState(module), &err);
    return -1;
}

typedef struct gp_recs {
    PyObject *list; /* filled after the run: the records are copied without the GIL */
    aq_gguf_tensor_result *v;
    char **names;
    size_t n, cap;
    int oom;
} gp_recs;

static void gp_on_tensor(void *user, const aq_gguf_tensor_result *r)
{
    gp_recs *g = user;
    if (g->oom) {
        return;
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        aq_gguf_tensor_result *v = realloc(g->v, cap * sizeof *v);
        char **names = v != NULL ? realloc(g->names, cap * sizeof *names) : NULL;
        if (v != NULL) {
            g->v = v;
        }
        if (names == NULL) {
            g->oom = 1;
            return;
        }
        g->names = names;
        g->cap = cap;
    }
    size_t len = strlen(r->name) + 1;
    if ((g->names[g->n] = malloc(len)) == NULL) {
        g->oom = 1;
        return;
    }
    memcpy(g->names[g->n], r->name, len);
    g->v[g->n] = *r;
    g->n++;
}

PyObject *aq__py_gguf_summary(const aq_gguf_write_summary *sum)
{
    PyObject *types = PyDict_New();
    for (size_t t = 0; types != NULL && t <= AQ_GGUF_BF16; t++) {
        if (sum->count_by_type[t] == 0) {
            continue;
        }
        PyObject *c = PyLong_FromSize_t(sum->count_by_type[t]);
        if (c == NULL || PyDict_SetItemString(types, aq_gguf_type_name((aq_gguf_type)t), c) != 0) {
            Py_XDECREF(c);
            Py_CLEAR(types);
            break;
        }
        Py_DECREF(c);
    }
    return types == NULL
               ? NULL
               : Py_BuildValue("{s:n,s:n,s:n,s:n,s:N}", "tensors", (Py_ssize_t)sum->tensors,
                               "quantized", (Py_ssize_t)sum->quantized, "bytes_in",
                               (Py_ssize_t)sum->bytes_in, "bytes_out", (Py_ssize_t)sum->bytes_out,
                               "types", types);
}

/* The result of _quantize_gguf: {summary, tensors}; NULL with an exception set. */
static PyObject *gp_result(const gp_recs *recs, const aq_gguf_write_summary *sum, int threads,
                           const char *kernels)
{
    PyObject *result = NULL;
    PyObject *tensors = PyList_New((Py_ssize_t)recs->n);
    for (size_t i = 0; tensors != NULL && i < recs->n; i++) {
        const aq_gguf_tensor_result *r = &recs->v[i];
        PyObject *d = Py_BuildValue("{s:s,s:s,s:s,s:n,s:n,s:d,s:d}", "name", recs->names[i], "type",
                                    aq_gguf_type_name(r->type), "reason", r->reason, "elements",
                                    (Py_ssize_t)r->elements, "bytes", (Py_ssize_t)r->bytes,
                                    "sqnr_db", r->sqnr_db, "cosine", r->cosine);
        if (d == NULL) {
            Py_CLEAR(tensors);
            break;
        }
        PyList_SET_ITEM(tensors, (Py_ssize_t)i, d);
    }
    PyObject *summary = aq__py_gguf_summary(sum);
    if (summary != NULL) {
        PyObject *t = PyLong_FromLong(threads), *k = PyUnicode_FromString(kernels);
        if (t == NULL || k == NULL || PyDict_SetItemString(summary, "threads", t) != 0 ||
            PyDict_SetItemString(summary, "kernels", k) != 0) {
            Py_CLEAR(summary);
        }
        Py_XDECREF(t);
        Py_XDECREF(k);
    }
    if (tensors != NULL && summary != NULL) {
        result = Py_BuildValue("{s:N,s:N}", "summary", summary, "tensors", tensors);
    } else {
        Py_XDECREF(tensors);
        Py_XDECREF(summary);
    }
    return result;
}

const char aq__py_quantize_gguf_doc[] =
    "_quantize_gguf(src, dst, gguf_type, *, keep=None, bits_for=None, calibration=None, "
    "architecture=None, name=None, **settings)\n--\n\n"
    "settings: every setting of the library's table (_settings()) by name, checked by the "
    "table; GGUF output applies profile (none by default), family, threads and "
    "calibration_combine and gguf_search, and refuses a value for another. "
    "Writes a model as a GGUF file whose block tensors are of gguf_type; with a profile the "
    "diffusion layer rules choose each tensor's type (a mixed file). Returns a dict (summary, "
    "tensors). Use arrow_quant_v2.quantize_gguf instead.";

static const char *const gkw_positional[] = {"src", "dst", "gguf_type", NULL};
static const char *const gkw_own[] = {"keep",         "bits_for", "calibration",
                                      "architecture", "name",     NULL};
enum { GKW_KEEP, GKW_BITS_FOR, GKW_CALIBRATION, GKW_ARCH, GKW_NAME, GKW_OWN };
/* The settings of the table's rows marked gguf, filled by aq__py_gguf_init. */
static const char *gkw_applies[64];

void aq__py_gguf_init(void)
{
    aq__py_applies_fill(gkw_applies, sizeof gkw_applies / sizeof *gkw_applies, 1);
}

/* Every setting of the table is a keyword; GGUF output applies those the table marks gguf (the
 * profile only when given: without one every tensor of two or more dimensions gets gguf_type). */
const aq__py_kwspec aq__py_quantize_gguf_kw = {
    "_quantize_gguf", gkw_positional, gkw_own, gkw_applies,
    "the GGUF writer takes its encodings from gguf_type and the profile's layer rules"};

/* A str or None keyword. */
static int gp_text(PyObject *obj, const char *what, const char **out)
{
    *out = NULL;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a str or None, not %.100s", what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = PyUnicode_AsUTF8(obj);
    return *out != NULL ? 0 : -1;
}

PyObject *aq__py_quantize_gguf(PyObject *module, PyObject *args, PyObject *kwargs)
{
    PyObject *pos[3], *own[GKW_OWN], *src_b = NULL, *dst_b = NULL;
    aq_settings *set = NULL;
    const char *type_name = NULL, *arch = NULL, *name = NULL;
    int profile_given = 0;
    aq_error perr;
    if (aq__py_kw_parse(module, &aq__py_quantize_gguf_kw, args, kwargs, pos, own, &set) != 0) {
        return NULL;
    }
    if (aq_settings_is_set(set, "profile", &profile_given, &perr) != AQ_OK) {
        gp_raise(module, &perr);
        aq_settings_free(set);
        return NULL;
    }
    if ((profile_given && aq__py_kw_profile(module, set) != 0) ||
        gp_text(pos[2], "gguf_type", &type_name) != 0 || type_name == NULL ||
        gp_text(own[GKW_ARCH], "architecture", &arch) != 0 ||
        gp_text(own[GKW_NAME], "name", &name) != 0 || !PyUnicode_FSConverter(pos[0], &src_b) ||
        !PyUnicode_FSConverter(pos[1], &dst_b)) {
        if (type_name == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "gguf_type must be a str, not None");
        }
        Py_XDECREF(src_b);
        aq_settings_free(set);
        return NULL;
    }
    PyObject *keep = own[GKW_KEEP], *bits_for = own[GKW_BITS_FOR];
    PyObject *calibration = own[GKW_CALIBRATION] != NULL ? own[GKW_CALIBRATION] : Py_None;
    PyObject *result = NULL, *keep_seq = NULL, *bits_seq = NULL;
    const char **keep_v = NULL, **bits_v = NULL, **names = NULL;
    size_t n_keep = 0, n_bits = 0;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_rules *rules = NULL;
    aq_calib *calib = NULL;
    gp_recs recs;
    memset(&recs, 0, sizeof recs);
    aq_error err;
    aq_error_clear(&err);
    aq_status st;
    const char *src = PyBytes_AS_STRING(src_b), *dst = PyBytes_AS_STRING(dst_b);
    aq_gguf_write_options o = AQ_SIZED_INIT(aq_gguf_write_options);
    int64_t threads = 0, search = 0;
    const char *family_name = NULL, *combine = NULL;
    if ((st = aq_settings_get_int(set, "threads", &threads, &err)) != AQ_OK ||
        (st = aq_settings_get_int(set, "gguf_search", &search, &err)) != AQ_OK ||
        (st = aq_settings_get_text(set, "family", &family_name, &err)) != AQ_OK ||
        (st = aq_settings_get_text(set, "calibration_combine", &combine, &err)) != AQ_OK) {
        goto fail;
    }
    if (aq__py_strings(module, keep, "keep", &keep_seq, &keep_v, &n_keep) != 0 ||
        aq__py_strings(module, bits_for, "bits_for", &bits_seq, &bits_v, &n_bits) != 0) {
        goto done;
    }
    if ((n_keep > 0 || n_bits > 0) && !profile_given) {
        gp_value_error(module, "keep and bits_for need a profile (the layer rules they override)");
        goto done;
    }
    size_t n = 0;
    if ((st = aq_gguf_type_from_name(type_name, 1, &o.type, &err)) != AQ_OK) {
        goto fail;
    }
    if (aq__py_run_open(module, src, (int)threads, &ctx, &model, &names, &n) != 0) {
        goto done;
    }
    if ((st = aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, search, &err)) != AQ_OK) {
        goto fail;
    }
    if (profile_given) {
        aq_profile prof;
        if (aq__py_settings_profile(module, set, NULL, &prof) != 0 ||
            aq__py_run_rules(module, &prof, family_name, names, n, keep_v, n_keep, bits_v, n_bits,
                             &rules) != 0) {
            goto done;
        }
        o.rules = rules;
    }
    if (calibration != Py_None) {
        if (aq__py_run_calib(module, calibration, combine, &calib) != 0) {
            goto done;
        }
        if ((st = aq_calib_check_model(calib, names, n, &err)) != AQ_OK) {
            goto fail;
        }
        o.calib = calib;
    }
    o.architecture = arch;
    o.name = name;
    o.on_tensor = gp_on_tensor;
    o.on_tensor_user = &recs;
    aq_gguf_write_summary sum;
    PyThreadState *ts = PyEval_SaveThread();
    st = aq_model_to_gguf(ctx, model, dst, &o, &sum, &err);
    PyEval_RestoreThread(ts);
    if (st != AQ_OK) {
        goto fail;
    }
    if (recs.oom) {
        PyErr_NoMemory();
        goto done;
    }
    result = gp_result(&recs, &sum, (int)threads, aq_ctx_kernels(ctx));
    goto done;
fail:
    gp_raise(module, &err);
done:
    for (size_t i = 0; i < recs.n; i++) {
        free(recs.names[i]);
    }
    free(recs.names);
    free(recs.v);
    aq_calib_free(calib);
    aq_rules_free(rules);
    aq_model_free(model);
    aq_ctx_free(ctx);
    free(names);
    free(keep_v);
    free(bits_v);
    Py_XDECREF(keep_seq);
    Py_XDECREF(bits_seq);
    Py_DECREF(src_b);
    Py_DECREF(dst_b);
    aq_settings_free(set);
    return result;
}

/* The aq_dtype of a buffer's struct format: float32, float16, float64. */
static int gp_dtype(const Py_buffer *b, aq_dtype *out)
{
    const char *f = b->format != NULL ? b->format : "B";
    if (f[0] == '<' || f[0] == '=' || f[0] == '@') {
        f++;
    }
    if (strcmp(f, "f") == 0) {
        *out = AQ_DTYPE_F32;
    } else if (strcmp(f, "e") == 0) {
        *out = AQ_DTYPE_F16;
    } else if (strcmp(f, "d") == 0) {
        *out = AQ_DTYPE_F64;
    } else {
        return -1;
    }
    return 0;
}

const char aq__py_gguf_encode_doc[] =
    "_gguf_encode(gguf_type, data, importance=None, threads=0, gguf_search='full')\n--\n\n"
    "Encodes a C-contiguous float32/float16/float64 buffer (whole blocks) into ggml blocks; "
    "returns bytes. Use arrow_quant_v2.gguf.encode instead.";

PyObject *aq__py_gguf_encode(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"gguf_type", "data", "importance", "threads", "gguf_search", NULL};
    const char *type_name, *search_name = "full";
    PyObject *data, *importance = Py_None;
    int threads = 0, search;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sO|Ois", kwlist, &type_name, &data, &importance,
                                     &threads, &search_name) ||
        aq__py_run_choice(module, "gguf_search", search_name, &search) != 0) {
        return NULL;
    }
    Py_buffer b, w;
    memset(&w, 0, sizeof w);
    if (PyObject_GetBuffer(data, &b, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
        return NULL;
    }
    PyObject *out = NULL;
    aq_ctx *ctx = NULL;
    aq_error err;
    aq_status st;
    aq_gguf_type type;
    aq_dtype dtype;
    size_t block, bytes;
    if (gp_dtype(&b, &dtype) != 0) {
        PyErr_Format(PyExc_TypeError, "data must hold float32, float16 or float64, not '%s'",
                     b.format != NULL ? b.format : "B");
        goto done;
    }
    size_t n = (size_t)b.len / (size_t)b.itemsize;
    if (importance != Py_None) {
        if (PyObject_GetBuffer(importance, &w, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) != 0) {
            goto done;
        }
        aq_dtype wd;
        if (gp_dtype(&w, &wd) != 0 || wd != AQ_DTYPE_F32 || (size_t)w.len != n * sizeof(float)) {
            PyErr_SetString(PyExc_ValueError,
                            "importance must be float32 with one weight per element");
            goto done;
        }
    }
    if ((st = aq_gguf_type_from_name(type_name, 1, &type, &err)) != AQ_OK ||
        (st = aq_gguf_type_info(type, &block, &bytes, NULL, &err)) != AQ_OK ||
        (st = aq_ctx_create(&ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, search, &err)) != AQ_OK) {
        gp_raise(module, &err);
        goto done;
    }
    if (n % block != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%zu elements are not whole %s blocks of %zu", n,
                 aq_gguf_type_name(type), block);
        gp_value_error(module, msg);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(n / block * bytes));
    if (out == NULL) {
        goto done;
    }
    const int64_t shape = (int64_t)n;
    aq_tensor t = {.name = "data", .dtype = dtype, .data = b.buf, .shape = &shape, .ndim = 1};
    Py_BEGIN_ALLOW_THREADS st =
        aq_gguf_encode(ctx, type, &t, w.buf, PyBytes_AS_STRING(out), n / block * bytes, &err);
    Py_END_ALLOW_THREADS if (st != AQ_OK)
    {
        Py_CLEAR(out);
        gp_raise(module, &err);
    }
done:
    aq_ctx_free(ctx);
    if (w.obj != NULL) {
        PyBuffer_Release(&w);
    }
    PyBuffer_Release(&b);
    return out;
}

const char aq__py_gguf_decode_doc[] =
    "_gguf_decode(gguf_type, data, count, threads=0)\n--\n\n"
    "Decodes count elements of ggml blocks into float32; returns bytes. Use "
    "arrow_quant_v2.gguf.decode instead.";

PyObject *aq__py_gguf_decode(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"gguf_type", "data", "count", "threads", NULL};
    const char *type_name;
    Py_buffer b;
    Py_ssize_t count;
    int threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "sy*n|i", kwlist, &type_name, &b, &count,
                                     &threads)) {
        return NULL;
    }
    PyObject *out = NULL;
    aq_ctx *ctx = NULL;
    aq_error err;
    aq_status st;
    aq_gguf_type type;
    if (count < 0) {
        gp_value_error(module, "count must be >= 0");
        goto done;
    }
    if ((st = aq_gguf_type_from_name(type_name, 0, &type, &err)) != AQ_OK ||
        (st = aq_ctx_create(&ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err)) != AQ_OK) {
        gp_raise(module, &err);
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, count * (Py_ssize_t)sizeof(float));
    if (out == NULL) {
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS st = aq_gguf_decode(ctx, type, b.buf, (size_t)b.len, (size_t)count,
                                               (float *)(void *)PyBytes_AS_STRING(out), &err);
    Py_END_ALLOW_THREADS if (st != AQ_OK)
    {
        Py_CLEAR(out);
        gp_raise(module, &err);
    }
done:
    aq_ctx_free(ctx);
    PyBuffer_Release(&b);
    return out;
}

const char aq__py_gguf_to_safetensors_doc[] =
    "_gguf_to_safetensors(src, dst, dtype='f32')\n--\n\n"
    "Writes a GGUF file's tensors as one safetensors file (block types decoded to dtype).";

PyObject *aq__py_gguf_to_safetensors(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"src", "dst", "dtype", NULL};
    PyObject *src_b = NULL, *dst_b = NULL;
    const char *dtype_name = "f32";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O&|s", kwlist, PyUnicode_FSConverter, &src_b,
                                     PyUnicode_FSConverter, &dst_b, &dtype_name)) {
        Py_XDECREF(src_b);
        Py_XDECREF(dst_b);
        return NULL;
    }
    PyObject *result = NULL;
    aq_st_dtype d = strcmp(dtype_name, "f32") == 0    ? AQ_ST_F32
                    : strcmp(dtype_name, "f16") == 0  ? AQ_ST_F16
                    : strcmp(dtype_name, "bf16") == 0 ? AQ_ST_BF16
                                                      : AQ_ST_UNKNOWN;
    if (d == AQ_ST_UNKNOWN) {
        gp_value_error(module, "dtype must be 'f32', 'f16' or 'bf16'");
    } else {
        aq_ctx *ctx = NULL;
        aq_error err;
        aq_status st = aq_ctx_create(&ctx, &err);
        if (st == AQ_OK) {
            Py_BEGIN_ALLOW_THREADS st = aq_gguf_to_safetensors(ctx, PyBytes_AS_STRING(src_b),
                                                               PyBytes_AS_STRING(dst_b), d, &err);
            Py_END_ALLOW_THREADS
        }
        aq_ctx_free(ctx);
        if (st != AQ_OK) {
            gp_raise(module, &err);
        } else {
            result = Py_NewRef(Py_None);
        }
    }
    Py_DECREF(src_b);
    Py_DECREF(dst_b);
    return result;
}
