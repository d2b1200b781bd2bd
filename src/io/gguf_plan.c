/*
 * The plan of a GGUF file (docs/gguf.md, docs/pipeline.md): every tensor's GGUF type and why,
 * its size in the file, and the header's fields. The writer (gguf_write.c) lays the file out
 * from it alone; execute makes each tensor's blocks as it says.
 */
#include "gguf_internal.h"
#include "io_internal.h"
#include "kernels_ggml.h"
#include "model_plan.h"
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>

static bool gp_has(const aq_model *m, const char *suffix)
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
static const char *gp_detect_arch(const aq_model *m)
{
    if (gp_has(m, "double_blocks.0.img_attn.proj.weight")) {
        return "flux";
    }
    if (gp_has(m, "transformer_blocks.0.attn.add_q_proj.weight") &&
        !gp_has(m, "single_transformer_blocks.0.attn.to_q.weight")) {
        return "sd3";
    }
    if (gp_has(m, "down_blocks.0.downsamplers.0.conv.weight") ||
        gp_has(m, "down_blocks.0.resnets.0.conv1.weight")) {
        return gp_has(m, "add_embedding.linear_1.weight") ? "sdxl" : "sd1";
    }
    return NULL;
}

/* The type of tensor t and why (the rules' decision, the options' type, the fallbacks). */
static aq_status gp_choose(const aq_gguf_write_options *o, const aq_st_tensor *t,
                           aq__plan_tensor *p, aq_error *err)
{
    aq_dtype d;
    if (!aq_st_dtype_to_aq(t->dtype, &d)) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "tensor '%s' has dtype %s: GGUF files written by this library hold "
                             "float tensors only",
                             t->name, t->dtype_name != NULL ? t->dtype_name : "?");
    }
    p->gguf_type = (uint32_t)o->type;
    p->reason = "type";
    if (o->rules != NULL) {
        aq_rule_decision dec;
        aq_status st = aq_rules_decide(o->rules, t->name, t->shape, t->ndim, d, &dec, err);
        if (st != AQ_OK) {
            return st;
        }
        p->reason = p->rule = aq_rule_name(dec.rule);
        if (dec.keep) {
            p->gguf_type = dec.bit_width == 32 ? AQ_GGUF_F32 : AQ_GGUF_F16;
        } else if (dec.rule != AQ_RULE_PROFILE) {
            /* The rules' fixed widths (8 bits for sensitive layers, user overrides). */
            p->gguf_type = (uint32_t)aq__scheme_gguf_type(dec.bit_width);
        }
    }
    if (t->ndim <= 1) {
        p->gguf_type = AQ_GGUF_F32;
        p->reason = "1-D";
    }
    const aq__ggml_traits *tr = aq__gguf_traits(p->gguf_type);
    /* (A type of blocks longer than 1 is never a 1-D tensor's: ndim >= 2 here.) */
    const uint64_t inner = tr->block > 1 ? (uint64_t)t->shape[t->ndim - 1] : 1;
    if (inner % tr->block != 0) {
        /* As llama.cpp's quantize tool: a K type falls back to a 32-element block type (Q8_0,
         * the one that never costs accuracy); anything else to F16. */
        p->gguf_type = tr->block > 32 && inner % 32 == 0 ? AQ_GGUF_Q8_0 : AQ_GGUF_F16;
        p->reason = "block";
    }
    return AQ_OK;
}

/* Whether every value of tensor i fits float16 (read once; its pages released after). A
 * tensor the writer chose to keep as F16 becomes F32 when not, rather than holding Inf. */
static aq_status gp_fits_f16(aq_model *model, size_t i, bool *fits, aq_error *err)
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

static bool gp_is_float(uint32_t type)
{
    return type == AQ_GGUF_F32 || type == AQ_GGUF_F16 || type == AQ_GGUF_BF16;
}

bool aq__gguf_plan_tensor_ok(const aq__plan_tensor *t)
{
    const aq__ggml_traits *tr = aq__gguf_traits(t->gguf_type);
    return tr != NULL && tr->encode_ref != NULL && t->elements % tr->block == 0 &&
           t->gguf_bytes == t->elements / tr->block * tr->bytes &&
           t->kept == (gp_is_float(t->gguf_type) ? 1 : 0);
}

/* Every tensor's type, reason and size into p (its tensors copied from the model). */
static aq_status gp_tensors(aq_model *model, const aq_gguf_write_options *o, aq_model_plan *p,
                            aq_error *err)
{
    aq_status st = aq__model_plan_tensors(p, model, err);
    for (size_t i = 0; i < p->n && st == AQ_OK; i++) {
        const aq_st_tensor *t = aq_model_tensor(model, i);
        aq__plan_tensor *e = &p->t[i];
        if ((st = gp_choose(o, t, e, err)) != AQ_OK) {
            break;
        }
        bool fits = true;
        if (e->gguf_type == AQ_GGUF_F16 && strcmp(e->reason, "type") != 0 &&
            t->dtype != AQ_ST_F16 && (st = gp_fits_f16(model, i, &fits, err)) != AQ_OK) {
            break;
        }
        if (!fits) {
            e->gguf_type = AQ_GGUF_F32;
            e->reason = "range";
        }
        const aq__ggml_traits *tr = aq__gguf_traits(e->gguf_type);
        e->gguf_bytes = t->elements / tr->block * tr->bytes;
        e->kept = gp_is_float(e->gguf_type) ? 1 : 0;
    }
    return st;
}

/* The header's fields: general.architecture, general.name, the source's metadata. */
static aq_status gp_header_fields(aq_ctx *ctx, aq_model *model, const aq_gguf_write_options *o,
                                  aq_model_plan *p, aq_error *err)
{
    p->gguf_type = (uint32_t)o->type;
    p->gguf_search = ctx->gguf_search ? 1 : 0;
    p->calibrated = o->calib != NULL;
    const char *arch = o->architecture != NULL ? o->architecture : gp_detect_arch(model);
    const size_t n_meta = aq_model_metadata_count(model);
    if (!aq__model_plan_dup(&p->arch, arch != NULL && arch[0] != '\0' ? arch : NULL) ||
        !aq__model_plan_dup(&p->gguf_name, o->name) ||
        (n_meta > 0 && ((p->meta_keys = calloc(n_meta, sizeof(char *))) == NULL ||
                        (p->meta_values = calloc(n_meta, sizeof(char *))) == NULL))) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory for a GGUF plan");
    }
    for (size_t i = 0; i < n_meta; i++) {
        const char *k, *v;
        aq_status st = aq_model_metadata_get(model, i, &k, &v, err);
        if (st != AQ_OK) {
            return st;
        }
        p->n_meta = i + 1;
        if (!aq__model_plan_dup(&p->meta_keys[i], k) ||
            !aq__model_plan_dup(&p->meta_values[i], v)) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory for a GGUF plan");
        }
    }
    return AQ_OK;
}

aq_status aq__gguf_plan_make(aq_ctx *ctx, aq_model *model, const aq_gguf_write_options *o,
                             aq_model_plan **out, aq_error *err)
{
    const aq__ggml_traits *tt = aq__gguf_traits((uint32_t)o->type);
    if (tt == NULL || tt->encode_ref == NULL) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "GGUF type %s cannot be written",
                             aq_gguf_type_name(o->type));
    }
    aq_model_plan *p = NULL;
    aq_status st = aq__model_plan_alloc(aq_model_count(model), &p, err);
    if (st != AQ_OK) {
        return st;
    }
    p->format = AQ__PLAN_GGUF;
    if ((st = gp_tensors(model, o, p, err)) != AQ_OK ||
        (st = gp_header_fields(ctx, model, o, p, err)) != AQ_OK) {
        aq_model_plan_free(p);
        return st;
    }
    *out = p;
    return AQ_OK;
}

aq_status aq_model_plan_create_gguf(aq_ctx *ctx, aq_model *model, const aq_gguf_write_options *opts,
                                    aq_model_plan **out, aq_error *err)
{
    if (ctx == NULL || model == NULL || opts == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_plan_create_gguf: NULL argument");
    }
    *out = NULL;
    aq_gguf_write_options own;
    aq_status st = AQ__OPTS_READ(aq_gguf_write_options, cancel, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    return aq__gguf_plan_make(ctx, model, &own, out, err);
}
