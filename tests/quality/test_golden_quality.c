/* The quality schemes against golden vectors written by an independent numpy implementation
 * of docs/format.md 5.1 and 5.2 (tests/data/quality_golden.py): bytes, scales, zero points and
 * dequantized floats must match bit for bit, for every kernel set this machine has. */
#include "aq_test.h"

#include <stdlib.h>
#include <string.h>

typedef struct gq_case {
    uint32_t scheme, bits, rows, cols, group_size, has_importance;
    float *x, *importance, *scales, *zps, *deq;
    uint8_t *packed;
    uint32_t packed_len, groups;
} gq_case;

static void gq_free(gq_case *c)
{
    free(c->x);
    free(c->importance);
    free(c->scales);
    free(c->zps);
    free(c->deq);
    free(c->packed);
    memset(c, 0, sizeof *c);
}

static bool gq_read(FILE *f, void *p, size_t n)
{
    return fread(p, 1, n, f) == n;
}

static void *gq_alloc_read(FILE *f, size_t n, bool *ok)
{
    void *p = malloc(n > 0 ? n : 1);
    if (p == NULL || !gq_read(f, p, n)) {
        *ok = false;
    }
    return p;
}

static bool gq_load(const char *name, gq_case *c)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", aq_test_data_dir(), name);
    memset(c, 0, sizeof *c);
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "cannot open %s\n", path);
        return false;
    }
    char magic[4];
    uint32_t version;
    bool ok = gq_read(f, magic, 4) && memcmp(magic, "AQGQ", 4) == 0 && gq_read(f, &version, 4) &&
              version == 1 && gq_read(f, &c->scheme, 4) && gq_read(f, &c->bits, 4) &&
              gq_read(f, &c->rows, 4) && gq_read(f, &c->cols, 4) && gq_read(f, &c->group_size, 4) &&
              gq_read(f, &c->has_importance, 4);
    size_t n = (size_t)c->rows * c->cols;
    if (ok) {
        c->x = gq_alloc_read(f, n * 4, &ok);
    }
    if (ok && c->has_importance) {
        c->importance = gq_alloc_read(f, n * 4, &ok);
    }
    if (ok && gq_read(f, &c->packed_len, 4)) {
        c->packed = gq_alloc_read(f, c->packed_len, &ok);
    } else {
        ok = false;
    }
    if (ok && gq_read(f, &c->groups, 4)) {
        c->scales = gq_alloc_read(f, (size_t)c->groups * 4, &ok);
        if (ok) {
            c->zps = gq_alloc_read(f, (size_t)c->groups * 4, &ok);
        }
        if (ok) {
            c->deq = gq_alloc_read(f, n * 4, &ok);
        }
    } else {
        ok = false;
    }
    fclose(f);
    if (!ok) {
        fprintf(stderr, "%s: truncated or malformed\n", path);
        gq_free(c);
    }
    return ok;
}

static void gq_check(const char *name)
{
    gq_case c;
    CHECK_MSG(gq_load(name, &c), "cannot load %s", name);
    aq_error err;
    aq_ctx *ctx = NULL;
    uint8_t *packed = NULL;
    float *scales = NULL, *zps = NULL, *deq = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    int64_t shape[2] = {c.rows, c.cols};
    aq_tensor t = {name, AQ_DTYPE_F32, c.x, shape, 2};
    aq_layout l;
    bool ok = aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, c.scheme, &err) == AQ_OK &&
              aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, c.bits, &err) == AQ_OK &&
              (aq_scheme_is_kquant((aq_scheme)c.scheme) ||
               aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, c.group_size, &err) == AQ_OK) &&
              aq_quantize_bound(ctx, &t, &l, &err) == AQ_OK;
    if (ok) {
        ok = l.packed_bytes == c.packed_len && l.groups == c.groups && l.group_size == c.group_size;
        if (!ok) {
            aq_test_fail(__FILE__, __LINE__, "%s: layout %zu bytes %zu groups, golden %u and %u",
                         name, l.packed_bytes, l.groups, c.packed_len, c.groups);
        }
    } else {
        aq_test_fail(__FILE__, __LINE__, "%s: %s", name, err.message);
    }
    if (ok) {
        size_t n = l.elements;
        packed = malloc(l.packed_bytes);
        scales = malloc(l.groups * 4);
        zps = malloc(l.groups * 4);
        deq = malloc(n * 4);
        aq_qbuffers b = {packed, l.packed_bytes, scales, zps, l.groups};
        aq_quantize_options o = {.size = sizeof(aq_quantize_options), .importance = c.importance};
        aq_qtensor q = {name,     (aq_scheme)c.scheme, c.bits,   l.group_size, shape,   2,
                        c.packed, c.packed_len,        c.scales, c.zps,        c.groups};
        if (aq_quantize_ex(ctx, &t, &o, &b, NULL, &err) != AQ_OK) {
            aq_test_fail(__FILE__, __LINE__, "%s: %s", name, err.message);
        } else if (memcmp(packed, c.packed, l.packed_bytes) != 0) {
            size_t at = 0;
            while (packed[at] == c.packed[at]) {
                at++;
            }
            aq_test_fail(__FILE__, __LINE__, "%s: packed byte %zu is 0x%02x, golden 0x%02x", name,
                         at, packed[at], c.packed[at]);
        } else if (memcmp(scales, c.scales, l.groups * 4) != 0 ||
                   memcmp(zps, c.zps, l.groups * 4) != 0) {
            aq_test_fail(__FILE__, __LINE__, "%s: scales or zero points differ", name);
        } else if (aq_dequantize(ctx, &q, AQ_DTYPE_F32, deq, n, &err) != AQ_OK) {
            aq_test_fail(__FILE__, __LINE__, "%s: %s", name, err.message);
        } else if (memcmp(deq, c.deq, n * 4) != 0) {
            aq_test_fail(__FILE__, __LINE__, "%s: dequantized floats differ", name);
        }
    }
    free(packed);
    free(scales);
    free(zps);
    free(deq);
    aq_ctx_free(ctx);
    gq_free(&c);
}

TEST(search_b2)
{
    gq_check("quality_search_b2_5x200_g64.bin");
}

TEST(search_b4)
{
    gq_check("quality_search_b4_5x200_g64.bin");
}

TEST(search_b8)
{
    gq_check("quality_search_b8_5x200_g64.bin");
}

TEST(search_importance)
{
    gq_check("quality_search_b4_3x37_g16_imp.bin");
    gq_check("quality_search_b2_4x96_g32_imp.bin");
}

TEST(search_huge_values)
{
    gq_check("quality_search_b2_2x64_g32.bin");
}

TEST(kquant_b2)
{
    gq_check("quality_kquant_b2_3x1100_g512.bin");
    gq_check("quality_kquant_b2_3x7_g512.bin");
}

TEST(kquant_b4)
{
    gq_check("quality_kquant_b4_3x1100_g512.bin");
}

TEST(kquant_b8)
{
    gq_check("quality_kquant_b8_3x1100_g512.bin");
}

TEST(kquant_importance)
{
    gq_check("quality_kquant_b4_2x600_g512_imp.bin");
}

TEST(kquant_whole_super_blocks)
{
    gq_check("quality_kquant_b4_1x2048_g512.bin");
}

/* The row-by-row layout of format version 1, still read and written as "kquant_rows". */
TEST(kquant_rows)
{
    gq_check("quality_kquant_rows_b2_3x1100_g512.bin");
    gq_check("quality_kquant_rows_b4_3x1100_g512.bin");
    gq_check("quality_kquant_rows_b4_2x600_g512_imp.bin");
}

AQ_TEST_MAIN(AQ_CASE(search_b2), AQ_CASE(search_b4), AQ_CASE(search_b8), AQ_CASE(search_importance),
             AQ_CASE(search_huge_values), AQ_CASE(kquant_b2), AQ_CASE(kquant_b4),
             AQ_CASE(kquant_b8), AQ_CASE(kquant_importance), AQ_CASE(kquant_whole_super_blocks),
             AQ_CASE(kquant_rows))
