/* The quality schemes through the Arrow batch API: the result rows hold the same bytes as the
 * tensor API, the metadata names the scheme (and kquant's super-block as the group size), and
 * aq_batch_dequantize restores what aq_dequantize restores. */
#include "arrow_test_util.h"

#include <math.h>

static bool at_meta(const char *m, const char *key, char *buf, size_t size)
{
    /* Arrow metadata: int32 count, then (int32 len, bytes) key and value pairs. */
    int32_t n;
    memcpy(&n, m, 4);
    m += 4;
    for (int32_t i = 0; i < n; i++) {
        int32_t kl, vl;
        memcpy(&kl, m, 4);
        const char *k = m + 4;
        memcpy(&vl, k + kl, 4);
        const char *v = k + kl + 4;
        if ((size_t)kl == strlen(key) && memcmp(k, key, (size_t)kl) == 0 && (size_t)vl < size) {
            memcpy(buf, v, (size_t)vl);
            buf[vl] = '\0';
            return true;
        }
        m = v + vl;
    }
    return false;
}

/* A batch of the row-by-row kquant layout relabelled as format version 1 wrote it (version
 * "1", scheme "kquant") restores the same floats: readers map version 1's "kquant" to the
 * row-by-row layout. */
static void at_read_as_version_1(aq_ctx *ctx, struct ArrowSchema *q_s, struct ArrowArray *q_a,
                                 const struct ArrowArray *want)
{
    static const char *const kv[8] = {
        "arrowquant.format_version", "1",   "arrowquant.scheme",  "kquant",
        "arrowquant.group_size",     "512", "arrowquant.packing", "lsb-first"};
    size_t total = 4;
    for (int i = 0; i < 8; i++) {
        total += 4 + strlen(kv[i]);
    }
    char *m = malloc(total), *p = m;
    int32_t v = 4;
    memcpy(p, &v, 4);
    p += 4;
    for (int i = 0; i < 8; i++) {
        v = (int32_t)strlen(kv[i]);
        memcpy(p, &v, 4);
        memcpy(p + 4, kv[i], (size_t)v);
        p += 4 + v;
    }
    const char *saved = q_s->metadata;
    q_s->metadata = m;
    aq_error err;
    struct ArrowSchema d_s;
    struct ArrowArray d_a;
    CHECK_OK(aq_batch_dequantize(ctx, q_s, q_a, NULL, &d_s, &d_a, &err));
    q_s->metadata = saved;
    free(m);
    const struct ArrowArray *a = d_a.children[1]->children[0], *b = want->children[1]->children[0];
    CHECK(a->length == b->length &&
          memcmp(a->buffers[1], b->buffers[1], (size_t)a->length * sizeof(float)) == 0);
    d_s.release(&d_s);
    d_a.release(&d_a);
}

static void at_roundtrip(aq_scheme scheme, unsigned bits)
{
    aq_error err;
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 64, &err));
    size_t n = 2400;
    float *w = malloc(n * sizeof *w);
    uint64_t seed = 17 + bits;
    for (size_t i = 0; i < n; i++) {
        w[i] = (float)(0.02 * aq_test_rand_normal(&seed));
    }
    int64_t s0[2] = {2, 700}, s1[3] = {2, 5, 100};
    tb_row rows[2] = {{"a", w, 1400, s0, 2, false}, {"b", w + 1400, 1000, s1, 3, false}};
    tb_node b = tb_batch(rows, 2);
    struct ArrowSchema q_s, d_s;
    struct ArrowArray q_a, d_a;
    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, NULL, &q_s, &q_a, &err));
    char buf[64];
    CHECK(at_meta(q_s.metadata, "arrowquant.scheme", buf, sizeof buf));
    CHECK(strcmp(buf, aq_scheme_name(scheme)) == 0);
    CHECK(at_meta(q_s.metadata, "arrowquant.group_size", buf, sizeof buf));
    CHECK(strcmp(buf, aq_scheme_is_kquant(scheme) ? "512" : "64") == 0);
    CHECK_OK(aq_batch_dequantize(ctx, &q_s, &q_a, NULL, &d_s, &d_a, &err));
    const int32_t *wo = d_a.children[1]->buffers[1];
    const float *wv = d_a.children[1]->children[0]->buffers[1];
    for (int i = 0; i < 2; i++) {
        rr_row r;
        rr_get(&q_a, false, i, &r);
        aq_tensor t = {rows[i].name, AQ_DTYPE_F32, rows[i].w, rows[i].shape, (size_t)rows[i].ndim};
        aq_layout l;
        CHECK_OK(aq_quantize_bound(ctx, &t, &l, &err));
        uint8_t *packed = malloc(l.packed_bytes);
        float *sc = malloc(l.groups * 4), *zp = malloc(l.groups * 4);
        float *want = malloc(l.elements * 4);
        aq_qbuffers qb = {packed, l.packed_bytes, sc, zp, l.groups};
        CHECK_OK(aq_quantize(ctx, &t, &qb, &err));
        int same = r.packed_len == l.packed_bytes && r.groups == l.groups &&
                   memcmp(r.packed, packed, l.packed_bytes) == 0 &&
                   memcmp(r.scales, sc, l.groups * 4) == 0 && memcmp(r.zps, zp, l.groups * 4) == 0;
        aq_qtensor q = {t.name, scheme,         bits, l.group_size, t.shape, t.ndim,
                        packed, l.packed_bytes, sc,   zp,           l.groups};
        CHECK_OK(aq_dequantize(ctx, &q, AQ_DTYPE_F32, want, l.elements, &err));
        same = same && memcmp(want, wv + wo[i], l.elements * 4) == 0;
        free(packed);
        free(sc);
        free(zp);
        free(want);
        CHECK_MSG(same, "scheme %s bits %u row %d differs from the tensor API",
                  aq_scheme_name(scheme), bits, i);
    }
    if (scheme == AQ_SCHEME_KQUANT_ROWS) {
        at_read_as_version_1(ctx, &q_s, &q_a, &d_a);
    }
    q_s.release(&q_s);
    q_a.release(&q_a);
    d_s.release(&d_s);
    d_a.release(&d_a);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

TEST(affine_search_batches)
{
    at_roundtrip(AQ_SCHEME_AFFINE_SEARCH, 2);
    at_roundtrip(AQ_SCHEME_AFFINE_SEARCH, 4);
    at_roundtrip(AQ_SCHEME_AFFINE_SEARCH, 8);
}

TEST(kquant_batches)
{
    at_roundtrip(AQ_SCHEME_KQUANT, 2);
    at_roundtrip(AQ_SCHEME_KQUANT, 4);
    at_roundtrip(AQ_SCHEME_KQUANT, 8);
}

TEST(kquant_rows_batches_and_version_1)
{
    at_roundtrip(AQ_SCHEME_KQUANT_ROWS, 2);
    at_roundtrip(AQ_SCHEME_KQUANT_ROWS, 4);
}

AQ_TEST_MAIN(AQ_CASE(affine_search_batches), AQ_CASE(kquant_batches),
             AQ_CASE(kquant_rows_batches_and_version_1))
