/*
 * Conversion of a model (safetensors, sharded, diffusers folder) to a GGUF file (docs/gguf.md).
 *
 * GGUF puts every tensor's type, shape and offset in the header, before the data, and every
 * size follows from the types: so the types are chosen first (the plan), the header is written,
 * then the tensors one at a time, each encoded into a buffer of its own size and its source
 * pages released. Memory stays near the largest tensor.
 */
#include "gguf_internal.h"
#include "io_internal.h"
#include "kernels_ggml.h"
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

static bool gw_has(const aq_model *m, const char *suffix)
{
    const size_t ls = strlen(suffix);
    for (size_t i = 0; i < aq_model_count(m); i++) {
        const char *n = aq_model_tensor(m, i)->name;
        const size_t ln = strlen(n);
        if (ln >= ls && strcmp(n + ln - ls, suffix) == 0 &&
            (ln == ls || n[ln - ls - 1] == '.' || n[ln - ls - 1] == '/')) {
            return true;
        }
    }
    return false;
}

/* general.architecture from the tensor names, with the signatures ComfyUI-GGUF's loader
 * recognises (original Flux names; diffusers SD3 and UNet names); NULL when none fits. */
static const char *gw_detect_arch(const aq_model *m)
{
    if (gw_has(m, "double_blocks.0.img_attn.proj.weight")) {
        return "flux";
    }
    if (gw_has(m, "transformer_blocks.0.attn.add_q_proj.weight") &&
        !gw_has(m, "single_transformer_blocks.0.attn.to_q.weight")) {
        return "sd3";
    }
    if (gw_has(m, "down_blocks.0.downsamplers.0.conv.weight") ||
        gw_has(m, "down_blocks.0.resnets.0.conv1.weight")) {
        return gw_has(m, "add_embedding.linear_1.weight") ? "sdxl" : "sd1";
    }
    return NULL;
}

typedef struct gw_plan {
    aq_gguf_type type;
    const char *reason;
    size_t nbytes;
    uint64_t offset;
    uint64_t ne[GW_MAX_DIMS];
    uint32_t nd;
} gw_plan;

/* The type of tensor t. */
static aq_status gw_choose(const aq_gguf_write_options *o, const aq_st_tensor *t, gw_plan *p,
                           aq_error *err)
{
    aq_dtype d;
    if (!aq_st_dtype_to_aq(t->dtype, &d)) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "tensor '%s' has dtype %s: GGUF files written by this library hold "
                             "float tensors only",
                             t->name, t->dtype_name != NULL ? t->dtype_name : "?");
    }
    p->type = o->type;
    p->reason = "type";
    if (o->rules != NULL) {
        aq_rule_decision dec;
        aq_status st = aq_rules_decide(o->rules, t->name, t->shape, t->ndim, d, &dec, err);
        if (st != AQ_OK) {
            return st;
        }
        p->reason = aq_rule_name(dec.rule);
        if (dec.keep) {
            p->type = dec.bit_width == 32 ? AQ_GGUF_F32 : AQ_GGUF_F16;
        } else if (dec.rule != AQ_RULE_PROFILE) {
            /* The rules' fixed widths (8 bits for sensitive layers, user overrides). */
            p->type = (aq_gguf_type)aq__scheme_gguf_type(dec.bit_width);
        }
    }
    if (t->ndim <= 1) {
        p->type = AQ_GGUF_F32;
        p->reason = "1-D";
    }
    const aq__ggml_traits *tr = aq__gguf_traits((uint32_t)p->type);
    const uint64_t inner = (uint64_t)t->shape[t->ndim - 1];
    if (tr->block > 1 && inner % tr->block != 0) {
        /* As llama.cpp's quantize tool: a K type falls back to a 32-element block type (Q8_0,
         * the one that never costs accuracy); anything else to F16. */
        p->type = tr->block > 32 && inner % 32 == 0 ? AQ_GGUF_Q8_0 : AQ_GGUF_F16;
        p->reason = "block";
    }
    return AQ_OK;
}

/* Whether every value of tensor i fits float16 (read once; its pages released after). A
 * tensor the writer chose to keep as F16 becomes F32 when not, rather than holding Inf. */
static aq_status gw_fits_f16(aq_model *model, size_t i, bool *fits, aq_error *err)
{
    aq_tensor v;
    aq_status st = aq_model_tensor_view(model, i, &v, err);
    if (st != AQ_OK) {
        return st;
    }
    const aq_st_tensor *t = aq_model_tensor(model, i);
    const uint8_t *p = v.data;
    *fits = true;
    for (size_t k = 0; k < t->elements && *fits; k++) {
        double x;
        if (v.dtype == AQ_DTYPE_F32) {
            float f;
            memcpy(&f, p + 4 * k, 4);
            x = (double)f;
        } else if (v.dtype == AQ_DTYPE_F64) {
            memcpy(&x, p + 8 * k, 8);
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            x = (double)aq__bf16_to_f32(h);
        }
        *fits = fabs(x) < 65520.0;
    }
    aq_model_release(model, i);
    return AQ_OK;
}

typedef struct gw_state {
    aq_ctx *ctx;
    aq_model *model;
    const aq_gguf_write_options *o;
    gw_plan *plan;
    size_t n;
    aq__outfile *out;
    uint8_t *enc;
    size_t enc_cap;
    float *dec;
    size_t dec_cap;
    float *imp;
    size_t imp_cap;
} gw_state;

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

static aq_status gw_tensor(gw_state *s, size_t i, aq_gguf_write_summary *sum, aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(s->model, i);
    const gw_plan *p = &s->plan[i];
    aq_tensor src;
    aq_status st = aq_model_tensor_view(s->model, i, &src, err);
    if (st != AQ_OK) {
        return st;
    }
    const float *imp = NULL;
    if (s->o->calib != NULL && t->ndim >= 2 && p->type != AQ_GGUF_F32 && p->type != AQ_GGUF_F16 &&
        p->type != AQ_GGUF_BF16) {
        int found = 0;
        if ((st = gw_grow((void **)&s->imp, &s->imp_cap, t->elements, sizeof(float), t->name,
                          err)) != AQ_OK ||
            (st = aq_calib_importance(s->o->calib, t->name, t->shape, t->ndim, s->imp, t->elements,
                                      &found, err)) != AQ_OK) {
            return st;
        }
        imp = found ? s->imp : NULL;
    }
    if ((st = gw_grow((void **)&s->enc, &s->enc_cap, p->nbytes + GW_ALIGN, 1, t->name, err)) !=
            AQ_OK ||
        (st = gw_grow((void **)&s->dec, &s->dec_cap, t->elements, sizeof(float), t->name, err)) !=
            AQ_OK) {
        return st;
    }
    if ((st = aq_gguf_encode(s->ctx, p->type, &src, imp, s->enc, p->nbytes, err)) != AQ_OK ||
        (st = aq_gguf_decode(s->ctx, p->type, s->enc, p->nbytes, t->elements, s->dec, err)) !=
            AQ_OK) {
        return st;
    }
    /* The quality of what was written, as a reader will decode it. */
    const int64_t flat = (int64_t)t->elements;
    aq_tensor ref = src, approx = {.name = t->name,
                                   .dtype = AQ_DTYPE_F32,
                                   .data = s->dec,
                                   .shape = &flat,
                                   .ndim = 1};
    ref.shape = &flat;
    ref.ndim = 1;
    aq_metrics m = {.sqnr_db = (double)INFINITY, .cosine = 1.0};
    if (t->elements > 0 && (st = aq_metrics_compute(&ref, &approx, &m, err)) != AQ_OK) {
        return st;
    }
    size_t pad = (GW_ALIGN - p->nbytes % GW_ALIGN) % GW_ALIGN;
    if (i + 1 == s->n) {
        pad = 0;
    }
    memset(s->enc + p->nbytes, 0, pad);
    if ((st = aq__outfile_write(s->out, s->enc, p->nbytes + pad, err)) != AQ_OK) {
        return st;
    }
    aq_model_release(s->model, i);
    if (sum != NULL) {
        sum->tensors++;
        sum->bytes_in += t->nbytes;
        sum->count_by_type[p->type]++;
        if (p->type != AQ_GGUF_F32 && p->type != AQ_GGUF_F16 && p->type != AQ_GGUF_BF16) {
            sum->quantized++;
        }
    }
    if (s->o->on_tensor != NULL) {
        aq_gguf_tensor_result r = {.index = i,
                                   .name = t->name,
                                   .type = p->type,
                                   .reason = p->reason,
                                   .elements = t->elements,
                                   .bytes = p->nbytes,
                                   .sqnr_db = m.sqnr_db,
                                   .cosine = m.cosine};
        s->o->on_tensor(s->o->on_tensor_user, &r);
    }
    return AQ_OK;
}

/* The plan: every tensor's type, its ggml shape (innermost first; more than 4 dimensions
 * fold the outer ones, with the true shape in comfy.gguf.orig_shape.NAME), size, offset.
 * *n_extra: the tensors of more than 4 dimensions. */
static aq_status gw_plan_tensors(gw_state *s, size_t *n_extra, aq_error *err)
{
    uint64_t offset = 0;
    *n_extra = 0;
    aq_status st;
    for (size_t i = 0; i < s->n; i++) {
        const aq_st_tensor *t = aq_model_tensor(s->model, i);
        gw_plan *p = &s->plan[i];
        if ((st = gw_choose(s->o, t, p, err)) != AQ_OK) {
            return st;
        }
        bool fits = true;
        if (p->type == AQ_GGUF_F16 && strcmp(p->reason, "type") != 0 && t->dtype != AQ_ST_F16 &&
            (st = gw_fits_f16(s->model, i, &fits, err)) != AQ_OK) {
            return st;
        }
        if (!fits) {
            p->type = AQ_GGUF_F32;
            p->reason = "range";
        }
        const aq__ggml_traits *tr = aq__gguf_traits((uint32_t)p->type);
        p->nd = t->ndim == 0 ? 1 : (uint32_t)(t->ndim < GW_MAX_DIMS ? t->ndim : GW_MAX_DIMS);
        for (uint32_t d = 0; d < GW_MAX_DIMS; d++) {
            p->ne[d] = 1;
        }
        for (size_t d = 0; d < t->ndim; d++) {
            size_t ggml_dim = t->ndim - 1 - d;
            if (ggml_dim >= GW_MAX_DIMS) {
                ggml_dim = GW_MAX_DIMS - 1;
            }
            p->ne[ggml_dim] *= (uint64_t)t->shape[d];
        }
        if (t->ndim > GW_MAX_DIMS) {
            (*n_extra)++;
        }
        p->nbytes = t->elements / tr->block * tr->bytes;
        p->offset = offset;
        offset += p->nbytes + (GW_ALIGN - p->nbytes % GW_ALIGN) % GW_ALIGN;
    }
    return AQ_OK;
}

/* The header: the key/values (architecture, name, versions, alignment, the source's metadata,
 * the true shapes of tensors of more than 4 dimensions, their keys kept in shape_keys) and the
 * tensor infos of the plan, into h. */
static aq_status gw_header(gw_state *s, gw_buf *h, size_t n_extra, char **shape_keys, aq_error *err)
{
    const char *arch = s->o->architecture != NULL ? s->o->architecture : gw_detect_arch(s->model);
    const size_t n_meta = aq_model_metadata_count(s->model);
    size_t n_kv = 4 + n_extra + n_meta + (arch != NULL && arch[0] != '\0') + (s->o->name != NULL);
    gw_put(h, "GGUF", 4);
    gw_u32(h, 3);
    gw_u64(h, s->n);
    gw_u64(h, n_kv);
    if (arch != NULL && arch[0] != '\0') {
        gw_kv_str(h, "general.architecture", arch);
    }
    if (s->o->name != NULL) {
        gw_kv_str(h, "general.name", s->o->name);
    }
    gw_kv_u32(h, "general.quantization_version", 2);
    gw_kv_u32(h, "general.file_type", gw_file_type(s->o->type));
    gw_kv_u32(h, "general.alignment", GW_ALIGN);
    gw_kv_str(h, "arrowquant.version", aq_version_string());
    for (size_t i = 0; i < n_meta; i++) {
        const char *k, *v;
        aq_status mst = aq_model_metadata_get(s->model, i, &k, &v, err);
        if (mst != AQ_OK) {
            return mst;
        }
        char key[512];
        snprintf(key, sizeof key, "arrowquant.meta.%s", k);
        gw_kv_str(h, key, v);
    }
    for (size_t i = 0; i < s->n; i++) {
        const aq_st_tensor *t = aq_model_tensor(s->model, i);
        if (t->ndim <= GW_MAX_DIMS) {
            continue;
        }
        size_t len = strlen(t->name) + 32;
        if ((shape_keys[i] = malloc(len)) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory for the GGUF header");
        }
        snprintf(shape_keys[i], len, "comfy.gguf.orig_shape.%s", t->name);
        gw_str(h, shape_keys[i]);
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
    for (size_t i = 0; i < s->n; i++) {
        const gw_plan *p = &s->plan[i];
        gw_str(h, aq_model_tensor(s->model, i)->name);
        gw_u32(h, p->nd);
        for (uint32_t d = 0; d < p->nd; d++) {
            gw_u64(h, p->ne[d]);
        }
        gw_u32(h, (uint32_t)p->type);
        gw_u64(h, p->offset);
    }
    return AQ_OK;
}

aq_status aq_model_to_gguf(aq_ctx *ctx, aq_model *model, const char *out_path,
                           const aq_gguf_write_options *opts, aq_gguf_write_summary *summary,
                           aq_error *err)
{
    if (ctx == NULL || model == NULL || out_path == NULL || opts == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_to_gguf: NULL argument");
    }
    aq_gguf_write_options own;
    aq_status ost = AQ__OPTS_READ(aq_gguf_write_options, cancel, own, opts, err);
    if (ost != AQ_OK) {
        return ost;
    }
    opts = &own;
    /* Before any work: the output is none of the inputs, the calibration's included. */
    aq_status cst = aq__io_model_check_output(model, out_path, err);
    if (cst != AQ_OK || (cst = aq__io_calib_check_output(opts->calib, out_path, err)) != AQ_OK) {
        return cst;
    }
    const aq__ggml_traits *tt = aq__gguf_traits((uint32_t)opts->type);
    if (tt == NULL || tt->encode_ref == NULL) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "GGUF type %s cannot be written",
                             aq_gguf_type_name(opts->type));
    }
    gw_state s = {.ctx = ctx, .model = model, .o = opts, .n = aq_model_count(model)};
    gw_buf h = {0};
    aq_gguf_write_summary sum;
    memset(&sum, 0, sizeof sum);
    char **shape_keys = NULL;
    aq_status st = AQ_OK;
    if ((s.plan = calloc(s.n + 1, sizeof *s.plan)) == NULL ||
        (shape_keys = calloc(s.n + 1, sizeof *shape_keys)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", out_path);
        goto done;
    }
    size_t n_extra = 0;
    if ((st = gw_plan_tensors(&s, &n_extra, err)) != AQ_OK ||
        (st = gw_header(&s, &h, n_extra, shape_keys, err)) != AQ_OK) {
        goto done;
    }
    static const uint8_t zeros[GW_ALIGN];
    gw_put(&h, zeros, (GW_ALIGN - h.len % GW_ALIGN) % GW_ALIGN);
    if (h.failed) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory for the header", out_path);
        goto done;
    }
    if ((st = aq__outfile_open(out_path, &s.out, err)) != AQ_OK ||
        (st = aq__outfile_write(s.out, h.p, h.len, err)) != AQ_OK) {
        goto done;
    }
    for (size_t i = 0; i < s.n; i++) {
        if (opts->cancel != NULL && *opts->cancel) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled after %zu of %zu tensors", i, s.n);
            goto done;
        }
        if ((st = gw_tensor(&s, i, &sum, err)) != AQ_OK) {
            goto done;
        }
    }
    sum.bytes_out = (size_t)s.out->written;
    if ((st = aq__outfile_commit(s.out, err)) != AQ_OK) {
        goto done;
    }
    if (summary != NULL) {
        *summary = sum;
    }
done:
    aq__outfile_free(s.out);
    for (size_t i = 0; shape_keys != NULL && i < s.n; i++) {
        free(shape_keys[i]);
    }
    free(shape_keys);
    free(h.p);
    free(s.plan);
    free(s.enc);
    free(s.dec);
    free(s.imp);
    return st;
}
