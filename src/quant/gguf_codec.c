/*
 * The GGUF block codec driver: type names and facts, and the encoding and decoding of whole
 * tensors on the context's threads. Tensors are cut into chunks of a fixed number of elements
 * (whole blocks of every type), so the bytes do not depend on the thread count; each task
 * hands its chunk to the block kernels as float32: aligned float32 where it lies, any other
 * source converted on the task's stack.
 */
#include "kernels_ggml.h"
#include "quant_internal.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* Elements per task: a multiple of every block size (32, 256). */
#define GC_CHUNK 4096u
/* The block of the types with ggml's rounding (aq__ggml_round_fn). */
#define GG_ROUND_BLOCK 32u

const char *aq_gguf_type_name(aq_gguf_type type)
{
    const aq__ggml_traits *t = aq__ggml_traits_of((uint32_t)type);
    return t != NULL ? t->name : "unknown";
}

static size_t gc_list(char *buf, size_t cap, int write)
{
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < aq__ggml_traits_count(); i++) {
        const aq__ggml_traits *t = aq__ggml_traits_at(i);
        if (write && t->encode_ref == NULL) {
            continue;
        }
        int k = snprintf(buf + len, cap - len, "%s%s", len > 0 ? ", " : "", t->name);
        if (k < 0 || (size_t)k >= cap - len) {
            break;
        }
        len += (size_t)k;
    }
    return len;
}

aq_status aq_gguf_type_from_name(const char *name, int write, aq_gguf_type *out, aq_error *err)
{
    for (size_t i = 0; name != NULL && i < aq__ggml_traits_count(); i++) {
        const aq__ggml_traits *t = aq__ggml_traits_at(i);
        size_t k = 0;
        while (name[k] != '\0' && t->name[k] != '\0' &&
               toupper((unsigned char)name[k]) == (unsigned char)t->name[k]) {
            k++;
        }
        if (name[k] == '\0' && t->name[k] == '\0') {
            if (write && t->encode_ref == NULL) {
                break;
            }
            *out = t->type;
            return AQ_OK;
        }
    }
    char list[256];
    gc_list(list, sizeof list, write);
    return aq__error_set(err, AQ_INVALID_PARAMETER, "Unknown GGUF type '%s'. %s types: %s",
                         name != NULL ? name : "(null)", write ? "Writable" : "Known", list);
}

/* The ggml block traits of a type (NULL if unknown) for the GGUF reader and writer, which
 * sit above quant and so do not reach into the kernel tables themselves. */
const aq__ggml_traits *aq__gguf_traits(uint32_t type)
{
    return aq__ggml_traits_of(type);
}

aq_status aq_gguf_type_info(aq_gguf_type type, size_t *block_elements, size_t *block_bytes,
                            int *can_write, aq_error *err)
{
    const aq__ggml_traits *t = aq__ggml_traits_of((uint32_t)type);
    if (t == NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED, "unknown GGUF tensor type %u", (unsigned)type);
    }
    if (block_elements != NULL) {
        *block_elements = t->block;
    }
    if (block_bytes != NULL) {
        *block_bytes = t->bytes;
    }
    if (can_write != NULL) {
        *can_write = t->encode_ref != NULL;
    }
    return AQ_OK;
}

typedef struct gc_job {
    const aq__ggml_traits *t;
    aq__ggml_encode_fn encode;
    aq__ggml_round_fn round; /* ggml's rounding in place of encode (it checks as it goes) */
    aq__ggml_decode_fn decode;
    aq__find_nonfinite_fn find_nonfinite; /* the kernel table's, for float32 */
    aq_dtype dtype;
    const uint8_t *src; /* encode: the source elements; decode: the blocks */
    const float *imp;
    size_t n;
    uint8_t *out_bytes;
    float *out_floats;
    size_t *bad; /* encode: per task, the first non-finite element, or SIZE_MAX */
    size_t *big; /* encode to F16: per task, the first element beyond its range, or SIZE_MAX */
} gc_job;

static float gc_load(const uint8_t *p, aq_dtype d, size_t k)
{
    switch (d) {
    case AQ_DTYPE_F16: {
        uint16_t h;
        memcpy(&h, p + 2 * k, 2);
        return aq__f16_to_f32(h);
    }
    case AQ_DTYPE_BF16: {
        uint16_t h;
        memcpy(&h, p + 2 * k, 2);
        return aq__bf16_to_f32(h);
    }
    case AQ_DTYPE_F64: {
        double v;
        memcpy(&v, p + 8 * k, 8);
        /* Beyond the float32 range is as unusable as Inf. */
        return fabs(v) <= (double)FLT_MAX ? (float)v : (v > 0.0 ? INFINITY : -INFINITY);
    }
    default: {
        float v;
        memcpy(&v, p + 4 * k, 4);
        return v;
    }
    }
}

/* The first of x[0..n) whose magnitude bits are at least lim (0x7f800000: not finite), or n.
 * Whole runs of 64 are tested with a loop the compiler vectorises; from the first run that
 * holds one (or the tail), element by element. */
static size_t gc_first_at_least(const float *x, size_t n, uint32_t lim)
{
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint32_t any = 0;
        for (size_t k = 0; k < 64; k++) {
            uint32_t u;
            memcpy(&u, &x[i + k], 4);
            any |= (uint32_t)((u & 0x7fffffffu) >= lim);
        }
        if (any != 0) {
            break;
        }
    }
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        if ((u & 0x7fffffffu) >= lim) {
            return i;
        }
    }
    return n;
}

static void gc_encode_task(void *arg, size_t task)
{
    const gc_job *j = arg;
    const size_t i0 = task * GC_CHUNK;
    const size_t n = j->n - i0 < GC_CHUNK ? j->n - i0 : GC_CHUNK;
    float buf[GC_CHUNK];
    const float *x = buf;
    j->bad[task] = SIZE_MAX;
    j->big[task] = SIZE_MAX;
    if (j->dtype == AQ_DTYPE_F32 && (uintptr_t)j->src % sizeof(float) == 0) {
        /* Read where it lies: a copy would be one more pass over the input. The rounding
         * encoders check finiteness as they go (one pass); the others after the table's
         * check, which leaves the chunk in the cache. */
        x = (const float *)(const void *)(j->src + 4 * i0);
    } else if (j->dtype == AQ_DTYPE_F32) {
        memcpy(buf, j->src + 4 * i0, 4 * n);
    } else {
        for (size_t k = 0; k < n; k++) {
            buf[k] = gc_load(j->src, j->dtype, i0 + k);
        }
    }
    uint8_t *o = j->out_bytes + i0 / j->t->block * j->t->bytes;
    size_t k = j->round != NULL ? j->round(x, n / GG_ROUND_BLOCK, o) : j->find_nonfinite(x, n);
    if (k < n) {
        j->bad[task] = i0 + k;
        return;
    }
    /* Past 65504 a float16 store is infinite (65520 and up round to Inf): refuse rather than
     * write Inf. */
    if (j->t->type == AQ_GGUF_F16 && (k = gc_first_at_least(x, n, 0x477ff000u)) < n) {
        j->big[task] = i0 + k;
        return;
    }
    if (j->round == NULL) {
        j->encode(x, j->imp != NULL ? j->imp + i0 : NULL, n / j->t->block, o);
    }
}

static void gc_decode_task(void *arg, size_t task)
{
    const gc_job *j = arg;
    const size_t i0 = task * GC_CHUNK;
    const size_t n = j->n - i0 < GC_CHUNK ? j->n - i0 : GC_CHUNK;
    j->decode(j->src + i0 / j->t->block * j->t->bytes, n / j->t->block, j->out_floats + i0);
}

static size_t gc_tasks(size_t n)
{
    return n / GC_CHUNK + (n % GC_CHUNK != 0);
}

aq_status aq_gguf_encode(aq_ctx *ctx, aq_gguf_type type, const aq_tensor *src,
                         const float *importance, void *out, size_t out_size, aq_error *err)
{
    if (ctx == NULL || src == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_encode: NULL argument");
    }
    const char *name = src->name != NULL ? src->name : "(unnamed)";
    const aq__ggml_traits *t = aq__ggml_traits_of((uint32_t)type);
    if (t == NULL || t->encode_ref == NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED, "Layer '%s': GGUF type %s cannot be written",
                             name, aq_gguf_type_name(type));
    }
    if ((unsigned)src->dtype >= AQ_DTYPE_COUNT || src->data == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s': bad dtype or NULL data", name);
    }
    size_t n;
    aq_status st = aq__shape_elements(name, src->shape, src->ndim, &n, err);
    if (st != AQ_OK) {
        return st;
    }
    if (n % t->block != 0) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "Layer '%s': %zu elements are not whole %s blocks of %u", name, n,
                             t->name, t->block);
    }
    const size_t need = n / t->block * t->bytes;
    if (out_size < need) {
        return aq__error_set(err, AQ_BUFFER_TOO_SMALL,
                             "Layer '%s': output of %zu bytes, %s needs %zu", name, out_size,
                             t->name, need);
    }
    if (n == 0) {
        return AQ_OK;
    }
    aq__pool *pool = NULL;
    if ((st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
        return st;
    }
    const size_t ntasks = gc_tasks(n);
    size_t *bad = malloc(2 * ntasks * sizeof *bad);
    if (bad == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
    }
    /* The kernel table's encoder, else the reference's; ggml's rounding where the search is
     * off and the type has one. */
    const aq__ggml_kernels *gk =
        ctx->kernels->ggml != NULL ? ctx->kernels->ggml : &aq__ggml_kernels_ref;
    aq__ggml_encode_fn enc = gk->encode[type] != NULL ? gk->encode[type] : t->encode_ref;
    aq__ggml_round_fn round = NULL;
    if (!ctx->gguf_search && t->encode_round_ref != NULL) {
        round = gk->encode_round[type] != NULL ? gk->encode_round[type] : t->encode_round_ref;
    }
    gc_job job = {.t = t,
                  .encode = enc,
                  .round = round,
                  .find_nonfinite = ctx->kernels->find_nonfinite[AQ_DTYPE_F32],
                  .dtype = src->dtype,
                  .src = src->data,
                  .imp = importance,
                  .n = n,
                  .out_bytes = out,
                  .bad = bad,
                  .big = bad + ntasks};
    aq__pool_run(pool, ntasks, gc_encode_task, &job);
    for (size_t k = 0; k < ntasks; k++) {
        if (bad[k] != SIZE_MAX) {
            st = aq__error_set(err, AQ_NON_FINITE, "Layer '%s' contains NaN or Inf at index %zu",
                               name, bad[k]);
            break;
        }
        if (bad[ntasks + k] != SIZE_MAX) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                               "Layer '%s': the value at index %zu is beyond the float16 range "
                               "(store it as F32 or BF16)",
                               name, bad[ntasks + k]);
            break;
        }
    }
    free(bad);
    return st;
}

aq_status aq_gguf_decode(aq_ctx *ctx, aq_gguf_type type, const void *data, size_t size, size_t n,
                         float *out, aq_error *err)
{
    if (ctx == NULL || (n > 0 && (data == NULL || out == NULL))) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_decode: NULL argument");
    }
    const aq__ggml_traits *t = aq__ggml_traits_of((uint32_t)type);
    if (t == NULL) {
        return aq__error_set(err, AQ_UNSUPPORTED, "unknown GGUF tensor type %u", (unsigned)type);
    }
    if (n % t->block != 0 || size != n / t->block * t->bytes) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "%zu elements of %s need %zu bytes in whole blocks of %u, not %zu", n,
                             t->name, n / t->block * t->bytes, t->block, size);
    }
    if (n == 0) {
        return AQ_OK;
    }
    aq__pool *pool = NULL;
    aq_status st = aq__ctx_pool(ctx, &pool, err);
    if (st != AQ_OK) {
        return st;
    }
    const aq__ggml_kernels *gk = ctx->kernels->ggml;
    gc_job job = {.t = t,
                  .decode =
                      gk != NULL && gk->decode[type] != NULL ? gk->decode[type] : t->decode_ref,
                  .src = data,
                  .n = n,
                  .out_floats = out};
    aq__pool_run(pool, gc_tasks(n), gc_decode_task, &job);
    return AQ_OK;
}
