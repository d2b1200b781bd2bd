/*
 * Conversion of a model (safetensors, sharded, diffusers folder) to a GGUF file (docs/gguf.md),
 * as the model pipeline's three steps (docs/pipeline.md): a GGUF plan, execute, write.
 *
 * GGUF puts every tensor's type, shape and offset in the header, before the data, and every
 * size follows from the types: so the plan chooses the types (aq_model_plan_create_gguf), the
 * writer writes the header from the plan alone, then each tensor's block bytes as they come
 * (rows made here or elsewhere, in tensor order). In one process (aq_model_to_gguf) each
 * tensor is encoded into one reused buffer of its size and its source pages released: memory
 * stays near the largest tensor.
 */
#include "arrow_owned.h"
#include "gguf_internal.h"
#include "io_internal.h"
#include "kernels_ggml.h"
#include "model_plan.h"
#include "quant_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define GW_ALIGN 32u
#define GW_MAX_DIMS 4u

/* A growing byte buffer for the header. */
typedef struct gw_buf {
    uint8_t *p;
    size_t len, cap;
    bool failed;
} gw_buf;

static void gw_put(gw_buf *b, const void *data, size_t n)
{
    if (b->failed) {
        return;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < b->len + n) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void gw_u32(gw_buf *b, uint32_t v)
{
    uint8_t le[4];
    for (unsigned k = 0; k < 4; k++) {
        le[k] = (uint8_t)(v >> (8 * k));
    }
    gw_put(b, le, 4);
}

static void gw_u64(gw_buf *b, uint64_t v)
{
    uint8_t le[8];
    for (unsigned k = 0; k < 8; k++) {
        le[k] = (uint8_t)(v >> (8 * k));
    }
    gw_put(b, le, 8);
}

static void gw_str(gw_buf *b, const char *s)
{
    size_t n = strlen(s);
    gw_u64(b, n);
    gw_put(b, s, n);
}

/* A string of two parts (a key's prefix and its name). */
static void gw_str2(gw_buf *b, const char *a, const char *z)
{
    gw_u64(b, strlen(a) + strlen(z));
    gw_put(b, a, strlen(a));
    gw_put(b, z, strlen(z));
}

static void gw_kv_str(gw_buf *b, const char *key, const char *value)
{
    gw_str(b, key);
    gw_u32(b, 8);
    gw_str(b, value);
}

static void gw_kv_u32(gw_buf *b, const char *key, uint32_t value)
{
    gw_str(b, key);
    gw_u32(b, 4);
    gw_u32(b, value);
}

/* llama.cpp's general.file_type for a file whose quantized tensors are of type t. */
static uint32_t gw_file_type(aq_gguf_type t)
{
    switch (t) {
    case AQ_GGUF_F32:
        return 0;
    case AQ_GGUF_F16:
        return 1;
    case AQ_GGUF_Q4_0:
        return 2;
    case AQ_GGUF_Q8_0:
        return 7;
    case AQ_GGUF_Q5_0:
        return 8;
    case AQ_GGUF_Q2_K:
        return 10;
    case AQ_GGUF_Q3_K:
        return 11; /* Q3_K_S: every quantized tensor Q3_K */
    case AQ_GGUF_Q4_K:
        return 14;
    case AQ_GGUF_Q5_K:
        return 16;
    case AQ_GGUF_Q6_K:
        return 18;
    case AQ_GGUF_BF16:
        return 32;
    default:
        return 0;
    }
}

/* ---- the header, from the plan ---- */

/* comfy.gguf.orig_shape.NAME, the true shape (int32, outermost first), of each tensor of more
 * than 4 dimensions, into h. */
static aq_status gw_orig_shapes(const aq_model_plan *p, gw_buf *h, aq_error *err)
{
    for (size_t i = 0; i < p->n; i++) {
        const aq__plan_tensor *t = &p->t[i];
        if (t->ndim <= GW_MAX_DIMS) {
            continue;
        }
        gw_str2(h, "comfy.gguf.orig_shape.", t->name);
        gw_u32(h, 9);
        gw_u32(h, 5);
        gw_u64(h, t->ndim);
        for (size_t d = 0; d < t->ndim; d++) {
            if (t->shape[d] > INT32_MAX) {
                return aq__error_set(err, AQ_UNSUPPORTED,
                                     "tensor '%s': dimension %zu of %lld does not fit the int32 of "
                                     "comfy.gguf.orig_shape",
                                     t->name, d, (long long)t->shape[d]);
            }
            gw_u32(h, (uint32_t)t->shape[d]);
        }
    }
    return AQ_OK;
}

/* The header: the key/values (architecture, name, versions, alignment, the source's metadata,
 * the true shapes of tensors of more than 4 dimensions) and the tensor infos (names, ggml
 * shapes, types, offsets), padded to the alignment, into h. */
static aq_status gw_header(const aq_model_plan *p, gw_buf *h, aq_error *err)
{
    size_t n_extra = 0;
    for (size_t i = 0; i < p->n; i++) {
        n_extra += p->t[i].ndim > GW_MAX_DIMS;
    }
    size_t n_kv = 4 + n_extra + p->n_meta + (p->arch != NULL) + (p->gguf_name != NULL);
    gw_put(h, "GGUF", 4);
    gw_u32(h, 3);
    gw_u64(h, p->n);
    gw_u64(h, n_kv);
    if (p->arch != NULL) {
        gw_kv_str(h, "general.architecture", p->arch);
    }
    if (p->gguf_name != NULL) {
        gw_kv_str(h, "general.name", p->gguf_name);
    }
    gw_kv_u32(h, "general.quantization_version", 2);
    gw_kv_u32(h, "general.file_type", gw_file_type((aq_gguf_type)p->gguf_type));
    gw_kv_u32(h, "general.alignment", GW_ALIGN);
    gw_kv_str(h, "arrowquant.version", aq_version_string());
    for (size_t i = 0; i < p->n_meta; i++) {
        gw_str2(h, "arrowquant.meta.", p->meta_keys[i]);
        gw_u32(h, 8);
        gw_str(h, p->meta_values[i]);
    }
    aq_status st = gw_orig_shapes(p, h, err);
    if (st != AQ_OK) {
        return st;
    }
    /* The tensor infos: ggml's shape is innermost first; more than 4 dimensions fold the outer
     * ones into the fourth (the true shape is in comfy.gguf.orig_shape.NAME above). */
    uint64_t offset = 0;
    for (size_t i = 0; i < p->n; i++) {
        const aq__plan_tensor *t = &p->t[i];
        uint64_t ne[GW_MAX_DIMS] = {1, 1, 1, 1};
        for (size_t d = 0; d < t->ndim; d++) {
            size_t ggml_dim = t->ndim - 1 - d;
            ne[ggml_dim < GW_MAX_DIMS ? ggml_dim : GW_MAX_DIMS - 1] *= (uint64_t)t->shape[d];
        }
        const uint32_t nd =
            t->ndim == 0 ? 1 : (uint32_t)(t->ndim < GW_MAX_DIMS ? t->ndim : GW_MAX_DIMS);
        gw_str(h, t->name);
        gw_u32(h, nd);
        for (uint32_t d = 0; d < nd; d++) {
            gw_u64(h, ne[d]);
        }
        gw_u32(h, t->gguf_type);
        gw_u64(h, offset);
        offset += t->gguf_bytes + (GW_ALIGN - t->gguf_bytes % GW_ALIGN) % GW_ALIGN;
    }
    static const uint8_t zeros[GW_ALIGN];
    gw_put(h, zeros, (GW_ALIGN - h->len % GW_ALIGN) % GW_ALIGN);
    if (h->failed) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory for the GGUF header");
    }
    return AQ_OK;
}

/* ---- execute: tensors into their blocks ---- */

static bool gw_is_float(uint32_t type)
{
    return type == AQ_GGUF_F32 || type == AQ_GGUF_F16 || type == AQ_GGUF_BF16;
}

/* What encodes a plan's tensors: the context (the plan's gguf_search, the caller's threads),
 * the calibration, and buffers reused from tensor to tensor. */
typedef struct gw_exec {
    aq_ctx c;
    aq_model *model;
    const aq_model_plan *plan;
    const aq_calib *calib;
    float *dec;
    size_t dec_cap;
    float *imp;
    size_t imp_cap;
} gw_exec;

static void gw_exec_init(gw_exec *x, aq_ctx *ctx, aq_model *model, const aq_model_plan *plan,
                         const aq_calib *calib)
{
    memset(x, 0, sizeof *x);
    x->c = *ctx;
    x->c.gguf_search = plan->gguf_search != 0;
    x->model = model;
    x->plan = plan;
    x->calib = calib;
}

static void gw_exec_free(gw_exec *x)
{
    free(x->dec);
    free(x->imp);
}

static aq_status gw_grow(void **p, size_t *cap, size_t need, size_t elem, const char *name,
                         aq_error *err)
{
    if (need <= *cap) {
        return AQ_OK;
    }
    free(*p);
    *cap = 0;
    if ((*p = malloc(need * elem)) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory (%zu bytes)", name,
                             need * elem);
    }
    *cap = need;
    return AQ_OK;
}

/* Tensor i encoded as the plan says into out (its gguf_bytes) and its decoded floats measured
 * against the source (*sqnr_db, *cosine); its source pages released after. */
static aq_status gw_exec_tensor(gw_exec *x, size_t i, uint8_t *out, double *sqnr_db, double *cosine,
                                aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(x->model, i);
    const aq__plan_tensor *e = &x->plan->t[i];
    aq_tensor src;
    aq_status st = aq_model_tensor_view(x->model, i, &src, err);
    if (st != AQ_OK) {
        return st;
    }
    const float *imp = NULL;
    if (x->calib != NULL && t->ndim >= 2 && !gw_is_float(e->gguf_type)) {
        int found = 0;
        if ((st = gw_grow((void **)&x->imp, &x->imp_cap, t->elements, sizeof(float), t->name,
                          err)) != AQ_OK ||
            (st = aq_calib_importance(x->calib, t->name, t->shape, t->ndim, x->imp, t->elements,
                                      &found, err)) != AQ_OK) {
            return st;
        }
        imp = found ? x->imp : NULL;
    }
    const aq_gguf_type type = (aq_gguf_type)e->gguf_type;
    if ((st = gw_grow((void **)&x->dec, &x->dec_cap, t->elements, sizeof(float), t->name, err)) !=
            AQ_OK ||
        (st = aq_gguf_encode(&x->c, type, &src, imp, out, e->gguf_bytes, err)) != AQ_OK ||
        (st = aq_gguf_decode(&x->c, type, out, e->gguf_bytes, t->elements, x->dec, err)) != AQ_OK) {
        return st;
    }
    /* The quality of what was written, as a reader will decode it. */
    const int64_t flat = (int64_t)t->elements;
    aq_tensor ref = src, approx = {.name = t->name,
                                   .dtype = AQ_DTYPE_F32,
                                   .data = x->dec,
                                   .shape = &flat,
                                   .ndim = 1};
    ref.shape = &flat;
    ref.ndim = 1;
    aq_metrics m = {.sqnr_db = (double)INFINITY, .cosine = 1.0};
    if (t->elements > 0 && (st = aq_metrics_compute(&ref, &approx, &m, err)) != AQ_OK) {
        return st;
    }
    aq_model_release(x->model, i);
    *sqnr_db = m.sqnr_db;
    *cosine = m.cosine;
    return AQ_OK;
}

/* The rows' columns. */
enum { GW_NCOLS = 6 };
static const char *const gw_col_names[GW_NCOLS] = {"layer_name", "gguf_type", "data",
                                                   "sqnr_db",    "cosine",    "checksum"};
static const char *const gw_col_formats[GW_NCOLS] = {"u", "I", "Z", "g", "g", "L"};

/* The checksum of a row: its name, bytes and type. */
static uint64_t gw_row_checksum(const char *name, size_t name_len, const uint8_t *data,
                                size_t data_len, uint32_t type)
{
    const char *tn = aq_gguf_type_name((aq_gguf_type)type);
    aq__row_bytes rb = {.name = name,
                        .name_len = name_len,
                        .data = data,
                        .data_len = data_len,
                        .scheme = tn,
                        .scheme_len = strlen(tn)};
    return aq__row_checksum(&rb);
}

static aq_status gw_rows_schema(struct ArrowSchema *out, aq_error *err)
{
    aq_status st = aq__schema_alloc(out, "+s", "", 0, GW_NCOLS, err);
    for (int c = 0; c < GW_NCOLS && st == AQ_OK; c++) {
        st = aq__schema_alloc(out->children[c], gw_col_formats[c], gw_col_names[c], 0, 0, err);
    }
    return st;
}

/* The rows of tensors [begin, end) with their blocks already in data (a buffer of the data
 * column, offsets[k]..offsets[k+1] for row k). */
static aq_status gw_rows_columns(const aq_model_plan *plan, size_t begin, size_t end,
                                 struct ArrowArray *a, const double *q, aq_error *err)
{
    const size_t n = end - begin;
    const char **names = calloc(n + 1, sizeof *names);
    uint32_t *types = calloc(n + 1, sizeof *types);
    uint64_t *sums = calloc(n + 1, sizeof *sums);
    aq_status st = AQ_OK;
    if (names == NULL || types == NULL || sums == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory building rows");
        goto done;
    }
    const int64_t *off = a->children[2]->buffers[1];
    const uint8_t *data = a->children[2]->buffers[2];
    for (size_t k = 0; k < n; k++) {
        const aq__plan_tensor *e = &plan->t[begin + k];
        names[k] = e->name;
        types[k] = e->gguf_type;
        sums[k] =
            gw_row_checksum(e->name, strlen(e->name), data + off[k], e->gguf_bytes, e->gguf_type);
    }
    if ((st = aq__rows_utf8(a->children[0], names, n, err)) != AQ_OK ||
        (st = aq__rows_prim(a->children[1], types, 4, n, err)) != AQ_OK ||
        (st = aq__rows_prim(a->children[3], q, 8, n, err)) != AQ_OK ||
        (st = aq__rows_prim(a->children[4], q + n, 8, n, err)) != AQ_OK ||
        (st = aq__rows_prim(a->children[5], sums, 8, n, err)) != AQ_OK) {
        goto done;
    }
done:
    free(names);
    free(types);
    free(sums);
    return st;
}

aq_status aq__gguf_execute(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan, size_t begin,
                           size_t end, const aq_model_execute_options *opts,
                           struct ArrowSchema *schema, struct ArrowArray *rows, aq_error *err)
{
    const size_t n = end - begin;
    gw_exec x;
    gw_exec_init(&x, ctx, model, plan, opts != NULL ? opts->calib : NULL);
    struct ArrowSchema sc;
    struct ArrowArray a;
    memset(&sc, 0, sizeof sc);
    memset(&a, 0, sizeof a);
    aq_model_progress prog = {0, n, 0, 0, NULL, 0};
    size_t total = 0;
    for (size_t i = begin; i < end; i++) {
        prog.bytes_total += plan->t[i].nbytes;
        total += plan->t[i].gguf_bytes;
    }
    /* q: the rows' SQNR, then their cosines. */
    double *q = calloc(2 * n, sizeof *q);
    aq_status st = q != NULL ? AQ_OK : aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    if (st != AQ_OK || (st = gw_rows_schema(&sc, err)) != AQ_OK ||
        (st = aq__array_alloc(&a, (int64_t)n, 1, GW_NCOLS, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[2], (int64_t)n, 3, 0, err)) != AQ_OK) {
        goto done;
    }
    /* The data column's buffers, the blocks encoded straight into them. */
    int64_t *off = aq__array_buffer_alloc(a.children[2], 1, (n + 1) * sizeof(int64_t));
    uint8_t *data = aq__array_buffer_alloc(a.children[2], 2, total > 0 ? total : 1);
    if (off == NULL || data == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory for %zu bytes of rows", total);
        goto done;
    }
    off[0] = 0;
    for (size_t k = 0; k < n; k++) {
        const aq__plan_tensor *e = &plan->t[begin + k];
        if (opts != NULL && opts->cancel != NULL && *opts->cancel) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled");
            goto done;
        }
        if ((st = gw_exec_tensor(&x, begin + k, data + off[k], &q[k], &q[n + k], err)) != AQ_OK) {
            goto done;
        }
        off[k + 1] = off[k] + (int64_t)e->gguf_bytes;
        prog.tensors_done++;
        prog.bytes_done += e->nbytes;
        prog.current = e->name;
        if (opts != NULL && opts->progress != NULL) {
            opts->progress(opts->progress_user, &prog);
        }
    }
    if ((st = gw_rows_columns(plan, begin, end, &a, q, err)) == AQ_OK) {
        aq__schema_move(&sc, schema);
        aq__array_move(&a, rows);
    }
done:
    aq__schema_release_if(&sc);
    aq__array_release_if(&a);
    free(q);
    gw_exec_free(&x);
    return st;
}

/* ---- write: the header, then each tensor's bytes ---- */

struct aq__gguf_writer {
    const aq_model_plan *plan;
    aq__outfile *out;
    size_t next; /* the plan's tensor the next bytes must be */
    aq__model_totals tot;
    aq_gguf_write_summary gsum;  /* aq_model_to_gguf's totals of the tensors written */
    aq_gguf_tensor_fn on_tensor; /* each tensor written, as aq_model_to_gguf reports it */
    void *on_tensor_user;
    /* A writer of rows made elsewhere (aq_model_writer): each tensor as aq_model_quantize
     * reports one, and progress after it. */
    aq_model_tensor_fn on_model_tensor;
    void *on_model_tensor_user;
    aq_model_progress_fn progress;
    void *progress_user;
    aq_model_progress prog;
};

void aq__gguf_writer_reports(aq__gguf_writer *w, aq_model_tensor_fn on_tensor, void *on_tensor_user,
                             aq_model_progress_fn progress, void *progress_user)
{
    w->on_model_tensor = on_tensor;
    w->on_model_tensor_user = on_tensor_user;
    w->progress = progress;
    w->progress_user = progress_user;
    memset(&w->prog, 0, sizeof w->prog);
    w->prog.tensors_total = w->plan->n;
    for (size_t i = 0; i < w->plan->n; i++) {
        w->prog.bytes_total += w->plan->t[i].nbytes;
    }
}

/* Tensor i written: what aq_model_quantize would say of it, and progress. */
static void gw_report_model(aq__gguf_writer *w, size_t i, double sqnr_db, double cosine)
{
    const aq__plan_tensor *e = &w->plan->t[i];
    if (w->on_model_tensor != NULL) {
        aq_model_tensor_result r;
        memset(&r, 0, sizeof r);
        r.index = i;
        r.name = e->name;
        r.kept = e->kept;
        r.initial_cosine = cosine;
        r.elements = e->elements;
        r.bytes = e->gguf_bytes;
        r.sqnr_db = sqnr_db;
        r.cosine = cosine;
        r.rule = e->rule;
        w->on_model_tensor(w->on_model_tensor_user, &r);
    }
    w->prog.tensors_done = i + 1;
    w->prog.bytes_done += e->nbytes;
    w->prog.current = e->name;
    if (w->progress != NULL) {
        w->progress(w->progress_user, &w->prog);
    }
}

aq_status aq__gguf_writer_open(const aq_model_plan *plan, const char *out_path,
                               aq_gguf_tensor_fn on_tensor, void *on_tensor_user,
                               aq__gguf_writer **out, aq_error *err)
{
    aq__gguf_writer *w = calloc(1, sizeof *w);
    gw_buf h = {0};
    aq_status st = AQ_OK;
    if (w == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", out_path);
        goto done;
    }
    w->plan = plan;
    w->on_tensor = on_tensor;
    w->on_tensor_user = on_tensor_user;
    aq__model_totals_init(&w->tot);
    if ((st = gw_header(plan, &h, err)) != AQ_OK ||
        (st = aq__outfile_open(out_path, &w->out, err)) != AQ_OK ||
        (st = aq__outfile_write(w->out, h.p, h.len, err)) != AQ_OK) {
        goto done;
    }
    *out = w;
    w = NULL;
done:
    aq__gguf_writer_free(w);
    free(h.p);
    return st;
}

/* Tensor i's bytes (its blocks, as the plan sizes them) written, padded to the alignment up
 * to the next tensor. */
static aq_status gw_put_tensor(aq__gguf_writer *w, size_t i, const uint8_t *data, double sqnr_db,
                               double cosine, aq_error *err)
{
    static const uint8_t zeros[GW_ALIGN];
    const aq__plan_tensor *e = &w->plan->t[i];
    const size_t pad = i + 1 == w->plan->n ? 0 : (GW_ALIGN - e->gguf_bytes % GW_ALIGN) % GW_ALIGN;
    aq_status st = aq__outfile_write(w->out, data, e->gguf_bytes, err);
    if (st != AQ_OK || (st = aq__outfile_write(w->out, zeros, pad, err)) != AQ_OK) {
        /* A failed write leaves the file unusable: nothing more goes to it. */
        aq__outfile_free(w->out);
        w->out = NULL;
        return st;
    }
    aq__model_totals_add(&w->tot, e->name, e->kept != 0, e->elements, e->nbytes, e->gguf_bytes,
                         sqnr_db, cosine);
    w->gsum.tensors++;
    w->gsum.bytes_in += e->nbytes;
    w->gsum.count_by_type[e->gguf_type]++;
    w->gsum.quantized += e->kept ? 0 : 1;
    w->next = i + 1;
    if (w->on_tensor != NULL) {
        aq_gguf_tensor_result r = {.index = i,
                                   .name = e->name,
                                   .type = (aq_gguf_type)e->gguf_type,
                                   .reason = e->reason,
                                   .elements = e->elements,
                                   .bytes = e->gguf_bytes,
                                   .sqnr_db = sqnr_db,
                                   .cosine = cosine};
        w->on_tensor(w->on_tensor_user, &r);
    }
    gw_report_model(w, i, sqnr_db, cosine);
    return AQ_OK;
}

/* Row k of GGUF rows, checked against the plan's next tensor and written. */
static aq_status gw_append_row(aq__gguf_writer *w, const struct ArrowArray *rows, int64_t k,
                               aq_error *err)
{
    if (w->next >= w->plan->n) {
        return aq__error_set(err, AQ_INVALID_DATA, "rows: more rows than the plan's %zu tensors",
                             w->plan->n);
    }
    const aq__plan_tensor *e = &w->plan->t[w->next];
    const struct ArrowArray *const *ch = (const struct ArrowArray *const *)rows->children;
    const int64_t j = rows->offset + k;
    int64_t at;
    size_t name_len, data_len;
    aq__rows_span(ch[0], false, j, &at, &name_len);
    const char *name = aq__rows_at(ch[0]->buffers[2], 1, at);
    aq__rows_span(ch[2], true, j, &at, &data_len);
    const uint8_t *data = aq__rows_at(ch[2]->buffers[2], 1, at);
    uint32_t type;
    uint64_t sum;
    double q[2];
    memcpy(&type, aq__rows_value(ch[1], j, 4), 4);
    memcpy(&q[0], aq__rows_value(ch[3], j, 8), 8);
    memcpy(&q[1], aq__rows_value(ch[4], j, 8), 8);
    memcpy(&sum, aq__rows_value(ch[5], j, 8), 8);
    if (!aq__rows_is(name, name_len, e->name)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: '%.*s' came where tensor %zu of the plan, '%s', was expected "
                             "(rows out of order, missing, or of another plan)",
                             (int)(name_len > 200 ? 200 : name_len), name, w->next, e->name);
    }
    if (type != e->gguf_type || data_len != e->gguf_bytes) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: tensor '%s' is %s of %zu bytes in the plan: its row is %s of "
                             "%zu bytes",
                             e->name, aq_gguf_type_name((aq_gguf_type)e->gguf_type), e->gguf_bytes,
                             aq_gguf_type_name((aq_gguf_type)type), data_len);
    }
    if (gw_row_checksum(name, name_len, data, data_len, type) != sum) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: tensor '%s': its checksum does not match its bytes (damaged "
                             "on the way)",
                             e->name);
    }
    return gw_put_tensor(w, w->next, data, q[0], q[1], err);
}

aq_status aq__gguf_writer_append(aq__gguf_writer *w, const struct ArrowSchema *schema,
                                 const struct ArrowArray *rows, aq_error *err)
{
    if (w->out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_writer_append: the writer is closed or failed");
    }
    bool ok = strcmp(schema->format, "+s") == 0 && schema->n_children == GW_NCOLS &&
              rows->n_children == GW_NCOLS;
    for (int c = 0; ok && c < GW_NCOLS; c++) {
        const struct ArrowSchema *f = schema->children[c];
        ok = f->name != NULL && strcmp(f->name, gw_col_names[c]) == 0 &&
             strcmp(f->format, gw_col_formats[c]) == 0;
    }
    if (!ok) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: the columns of GGUF rows (layer_name, gguf_type, data, "
                             "sqnr_db, cosine, checksum) were expected, not '%s' with %lld",
                             schema->format, (long long)schema->n_children);
    }
    aq_status st = aq__rows_no_nulls(rows, gw_col_names, GW_NCOLS, err);
    for (int64_t k = 0; k < rows->length && st == AQ_OK; k++) {
        st = gw_append_row(w, rows, k, err);
    }
    return st;
}

aq_status aq__gguf_writer_close(aq__gguf_writer *w, aq_model_summary *summary,
                                aq_gguf_write_summary *gguf_summary, aq_error *err)
{
    if (w->out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_writer_close: the writer is closed or failed");
    }
    if (w->next < w->plan->n) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: %zu of the plan's %zu tensors were appended; the first "
                             "missing is '%s'; nothing written",
                             w->next, w->plan->n, w->plan->t[w->next].name);
    }
    const size_t written = (size_t)w->out->written;
    aq_status st = aq__outfile_commit(w->out, err);
    aq__outfile_free(w->out);
    w->out = NULL;
    if (st == AQ_OK) {
        w->tot.sum.bytes_out = written;
        aq__model_totals_finish(&w->tot, 0, summary);
        w->gsum.bytes_out = written;
        if (gguf_summary != NULL) {
            *gguf_summary = w->gsum;
        }
    }
    return st;
}

void aq__gguf_writer_free(aq__gguf_writer *w)
{
    if (w == NULL) {
        return;
    }
    aq__outfile_free(w->out);
    free(w);
}

/* ---- the three steps in one process ---- */

/* Tensors of `plan` (a GGUF plan matched against `model`) executed and written one at a time;
 * opts already read and checked. */
static aq_status gw_run(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan,
                        const char *out_path, const aq_gguf_write_options *opts,
                        aq_gguf_write_summary *summary, aq_error *err)
{
    aq__gguf_writer *w = NULL;
    gw_exec x;
    memset(&x, 0, sizeof x);
    uint8_t *buf = NULL;
    size_t cap = 0;
    aq_status st =
        aq__gguf_writer_open(plan, out_path, opts->on_tensor, opts->on_tensor_user, &w, err);
    if (st != AQ_OK) {
        goto done;
    }
    gw_exec_init(&x, ctx, model, plan, opts->calib);
    for (size_t i = 0; i < plan->n; i++) {
        const aq__plan_tensor *e = &plan->t[i];
        double sqnr_db, cosine;
        if (opts->cancel != NULL && *opts->cancel) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled after %zu of %zu tensors", i, plan->n);
            goto done;
        }
        if ((st = gw_grow((void **)&buf, &cap, e->gguf_bytes + 1, 1, e->name, err)) != AQ_OK ||
            (st = gw_exec_tensor(&x, i, buf, &sqnr_db, &cosine, err)) != AQ_OK ||
            (st = gw_put_tensor(w, i, buf, sqnr_db, cosine, err)) != AQ_OK) {
            goto done;
        }
    }
    st = aq__gguf_writer_close(w, NULL, summary, err);
done:
    aq__gguf_writer_free(w);
    gw_exec_free(&x);
    free(buf);
    return st;
}

aq_status aq_model_to_gguf(aq_ctx *ctx, aq_model *model, const char *out_path,
                           const aq_gguf_write_options *opts, aq_gguf_write_summary *summary,
                           aq_error *err)
{
    if (ctx == NULL || model == NULL || out_path == NULL || opts == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_to_gguf: NULL argument");
    }
    aq_gguf_write_options own;
    aq_status st = AQ__OPTS_READ(aq_gguf_write_options, cancel, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    opts = &own;
    /* Before any work: the output is none of the inputs, the calibration's included. */
    if ((st = aq__io_model_check_output(model, out_path, err)) != AQ_OK ||
        (st = aq__io_calib_check_output(opts->calib, out_path, err)) != AQ_OK) {
        return st;
    }
    aq_model_plan *plan = NULL;
    if ((st = aq__gguf_plan_make(ctx, model, opts, &plan, err)) == AQ_OK) {
        st = gw_run(ctx, model, plan, out_path, opts, summary, err);
    }
    aq_model_plan_free(plan);
    return st;
}

aq_status aq_model_to_gguf_plan(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan,
                                const char *out_path, const aq_gguf_write_options *opts,
                                aq_gguf_write_summary *summary, aq_error *err)
{
    if (ctx == NULL || model == NULL || plan == NULL || out_path == NULL || opts == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_to_gguf_plan: NULL argument");
    }
    aq_gguf_write_options own;
    aq_status st = AQ__OPTS_READ(aq_gguf_write_options, cancel, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    opts = &own;
    if (plan->format != AQ__PLAN_GGUF) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_to_gguf_plan: the plan is a model file's "
                             "(aq_model_plan_create), not a GGUF file's "
                             "(aq_model_plan_create_gguf)");
    }
    aq__pool *pool;
    if ((st = aq__model_plan_follow_check("aq_model_to_gguf_plan", plan, model, opts->calib,
                                          out_path, err)) != AQ_OK ||
        (st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
        return st;
    }
    return gw_run(ctx, model, plan, out_path, opts, summary, err);
}
