/* Helpers shared by the Arrow C tests: reading result rows and comparing them with the tensor
 * API (aq_quantize) on the same values. */
#ifndef AQ_ARROW_TEST_UTIL_H
#define AQ_ARROW_TEST_UTIL_H

#include "aq_common.h"
#include "aq_test.h"
#include "arrow_builder.h"

#include <stdlib.h>
#include <string.h>

typedef struct rr_row {
    const char *name;
    size_t name_len;
    const uint8_t *packed;
    size_t packed_len;
    const float *scales;
    const float *zps;
    size_t groups;
    const int64_t *shape;
    size_t ndim;
    unsigned bits;
} rr_row;

/* Row i of a result array (the library's own export: offsets start at the child's offset 0,
 * quantized_data is binary unless large). */
static inline void rr_get(const struct ArrowArray *a, bool large, int64_t i, rr_row *r)
{
    const struct ArrowArray *const *c = (const struct ArrowArray *const *)a->children;
    const int32_t *no = c[0]->buffers[1];
    r->name = (const char *)c[0]->buffers[2] + no[i];
    r->name_len = (size_t)(no[i + 1] - no[i]);
    if (large) {
        const int64_t *po = c[1]->buffers[1];
        r->packed = (const uint8_t *)c[1]->buffers[2] + po[i];
        r->packed_len = (size_t)(po[i + 1] - po[i]);
    } else {
        const int32_t *po = c[1]->buffers[1];
        r->packed = (const uint8_t *)c[1]->buffers[2] + po[i];
        r->packed_len = (size_t)(po[i + 1] - po[i]);
    }
    const int32_t *so = c[2]->buffers[1];
    r->scales = (const float *)c[2]->children[0]->buffers[1] + so[i];
    r->groups = (size_t)(so[i + 1] - so[i]);
    const int32_t *zo = c[3]->buffers[1];
    r->zps = (const float *)c[3]->children[0]->buffers[1] + zo[i];
    const int32_t *ho = c[4]->buffers[1];
    r->shape = (const int64_t *)c[4]->children[0]->buffers[1] + ho[i];
    r->ndim = (size_t)(ho[i + 1] - ho[i]);
    r->bits = ((const uint8_t *)c[5]->buffers[1])[i];
}

/* Nonzero (and a test failure message) when row r differs from aq_quantize on t. */
static inline int rr_matches(aq_ctx *ctx, const rr_row *r, const aq_tensor *t)
{
    aq_error err;
    aq_layout l;
    if (aq_quantize_bound(ctx, t, &l, &err) != AQ_OK) {
        return 0;
    }
    uint8_t *packed = malloc(l.packed_bytes);
    float *s = malloc(l.groups * sizeof *s), *z = malloc(l.groups * sizeof *z);
    aq_qbuffers qb = {packed, l.packed_bytes, s, z, l.groups};
    int ok = aq_quantize(ctx, t, &qb, &err) == AQ_OK && r->packed_len == l.packed_bytes &&
             r->groups == l.groups && memcmp(r->packed, packed, l.packed_bytes) == 0 &&
             memcmp(r->scales, s, l.groups * sizeof *s) == 0 &&
             memcmp(r->zps, z, l.groups * sizeof *z) == 0 && r->bits == l.bit_width &&
             r->ndim == t->ndim &&
             (t->ndim == 0 || memcmp(r->shape, t->shape, t->ndim * sizeof(int64_t)) == 0) &&
             strlen(t->name) == r->name_len && memcmp(r->name, t->name, r->name_len) == 0;
    free(packed);
    free(s);
    free(z);
    return ok;
}

/* Deterministic N(0,1) float32 values. */
static inline float *au_normal(size_t n, uint64_t seed)
{
    float *v = malloc((n > 0 ? n : 1) * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = (float)aq_test_rand_normal(&seed);
    }
    return v;
}

static inline aq_ctx *au_ctx(unsigned bits, size_t group)
{
    aq_ctx *ctx = NULL;
    aq_error err;
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)group, &err) != AQ_OK) {
        aq_ctx_free(ctx);
        return NULL;
    }
    return ctx;
}

/* The value of key in Arrow schema metadata m (the C Data Interface's encoding), copied into
 * buf; NULL when absent or longer than size - 1. */
static inline const char *meta_get(const char *m, const char *key, char *buf, size_t size)
{
    int32_t n, kl, vl;
    memcpy(&n, m, 4);
    m += 4;
    for (int32_t i = 0; i < n; i++) {
        memcpy(&kl, m, 4);
        const char *k = m + 4;
        memcpy(&vl, k + kl, 4);
        const char *v = k + kl + 4;
        m = v + vl;
        if ((size_t)kl == strlen(key) && memcmp(k, key, (size_t)kl) == 0 && (size_t)vl < size) {
            memcpy(buf, v, (size_t)vl);
            buf[vl] = '\0';
            return buf;
        }
    }
    return NULL;
}

#endif /* AQ_ARROW_TEST_UTIL_H */
