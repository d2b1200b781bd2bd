/* The quantization pipeline's stages on their own, without Arrow or files (pipeline.h): the
 * floor's widths (aq__floor_run), a set of tensors decided, executed and skipped through its
 * hooks (aq__pipe), and an explicit budget over tensors read one at a time (aq__budget_over),
 * refused before any tensor is read when even the smallest layouts do not fit. */
#include "aq_test.h"
#include "pipeline.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the floor ---- */

typedef struct fl_fake {
    double cosine[9]; /* by bit width */
    unsigned tried[4];
    size_t n;
} fl_fake;

static aq_status fl_attempt(void *user, unsigned bits, double *cosine, aq_error *err)
{
    (void)err;
    fl_fake *f = user;
    f->tried[f->n++] = bits;
    *cosine = f->cosine[bits];
    return AQ_OK;
}

static void fl_run(unsigned first, double min_cosine, bool fixed, unsigned want_bits,
                   size_t want_tries)
{
    aq_error err;
    fl_fake f = {{0, 0, 0.9, 0, 0.995, 0, 0, 0, 0.99999}, {0}, 0};
    unsigned bits = first;
    double initial = -1.0;
    CHECK_OK(aq__floor_run(&bits, min_cosine, fixed, fl_attempt, &f, &initial, &err));
    CHECK_MSG(bits == want_bits && f.n == want_tries, "from %u at %g: %u after %zu tries", first,
              min_cosine, bits, f.n);
    CHECK(f.tried[0] == first && initial == f.cosine[first]);
    for (size_t k = 1; k < f.n; k++) {
        CHECK(f.tried[k] == (f.tried[k - 1] == 2 ? 4u : 8u));
    }
}

TEST(floor_tries_the_next_width_until_it_is_met)
{
    fl_run(2, 0.0, false, 2, 1);      /* no floor */
    fl_run(2, 0.99, false, 4, 2);     /* met at 4 */
    fl_run(2, 0.9999, false, 8, 3);   /* met at 8 */
    fl_run(2, 0.999999, false, 8, 3); /* never met: 8 is the last */
    fl_run(4, 0.9, false, 4, 1);      /* met at once */
    fl_run(2, 0.99, true, 2, 1);      /* a budget's choice is not raised */
}

/* ---- a set in memory ---- */

#define PS_ROWS 8
#define PS_COLS 600

typedef struct ps_log {
    size_t decided, skipped, skipped_row, progress;
    char message[256];
} ps_log;

/* Row 0 follows the profile (kquant, 4 bits), row 1 is kept in float16, row 2 is an override
 * at 2 bits affine. */
static aq_status ps_decide(void *user, const aq_tensor *t, aq_rule_decision *d, bool *ruled,
                           aq_error *err)
{
    (void)err;
    ps_log *log = user;
    memset(d, 0, sizeof *d);
    *ruled = true;
    if (strcmp(t->name, "kept") == 0) {
        d->keep = 1;
        d->bit_width = 16;
        d->rule = AQ_RULE_VECTOR;
    } else if (strcmp(t->name, "override") == 0) {
        d->bit_width = 2;
        d->scheme = AQ_SCHEME_AFFINE;
        d->rule = AQ_RULE_OVERRIDE;
    } else {
        d->bit_width = 4;
        d->scheme = AQ_SCHEME_KQUANT;
        d->rule = AQ_RULE_PROFILE;
    }
    log->decided++;
    return AQ_OK;
}

static aq_status ps_no_importance(void *user, const aq_tensor *t, size_t elements, float **out,
                                  aq_error *err)
{
    (void)user;
    (void)t;
    (void)elements;
    (void)err;
    *out = NULL;
    return AQ_OK;
}

static aq_status ps_row_error(void *user, char **message, aq_status *status,
                              const aq_error *row_err, aq_error *err)
{
    (void)user;
    (void)message;
    (void)status;
    *err = *row_err;
    return row_err->code;
}

/* Continue mode: the row is left out, its reason kept. */
static aq_status ps_row_skip(void *user, size_t i, const char *name, aq_status code,
                             const char *message, aq_error *err)
{
    (void)name;
    (void)code;
    (void)err;
    ps_log *log = user;
    log->skipped++;
    log->skipped_row = i;
    snprintf(log->message, sizeof log->message, "%s", message);
    return AQ_OK;
}

static aq_status ps_progress(void *user, size_t elements, aq_error *err)
{
    (void)elements;
    (void)err;
    ((ps_log *)user)->progress++;
    return AQ_OK;
}

static aq_status ps_choice(void *user, size_t i, const char *name, const aq_qset_choice *c,
                           aq_error *err)
{
    (void)user;
    (void)i;
    (void)name;
    (void)c;
    (void)err;
    return AQ_OK;
}

TEST(a_set_is_decided_and_executed_through_its_hooks)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    uint64_t seed = 7;
    static float x[4][PS_ROWS * PS_COLS];
    for (size_t k = 0; k < 4; k++) {
        for (size_t i = 0; i < PS_ROWS * PS_COLS; i++) {
            x[k][i] = (float)aq_test_rand_normal(&seed);
        }
    }
    x[3][17] = NAN;
    int64_t shape[2] = {PS_ROWS, PS_COLS};
    int64_t vec[1] = {PS_COLS};
    const aq_tensor t[4] = {{"profile", AQ_DTYPE_F32, x[0], shape, 2},
                            {"kept", AQ_DTYPE_F32, x[1], vec, 1},
                            {"override", AQ_DTYPE_F32, x[2], shape, 2},
                            {"bad", AQ_DTYPE_F32, x[3], shape, 2}};
    ps_log log;
    memset(&log, 0, sizeof log);
    const aq__pipe_hooks hooks = {&log,        ps_decide,   ps_no_importance, ps_row_error,
                                  ps_row_skip, ps_progress, ps_choice};
    aq__pipe_quality q;
    memset(&q, 0, sizeof q);
    aq__pipe p;
    CHECK_OK(aq__pipe_alloc(&p, ctx, 4, 1, &q, &hooks, &err));
    CHECK_OK(aq__pipe_from_tensors(&p, ctx, t, &err));
    CHECK(log.decided == 4);
    CHECK(p.items[0].scheme == AQ_SCHEME_KQUANT && p.items[0].layout.bit_width == 4 &&
          !p.items[0].fixed && p.items[0].role == AQ__PLAN_CHOSEN);
    CHECK(p.items[1].kept && p.items[1].layout.bit_width == 16 &&
          p.items[1].layout.packed_bytes == PS_COLS * 2 && p.items[1].role == AQ__PLAN_OUTSIDE);
    CHECK(p.items[2].scheme == AQ_SCHEME_AFFINE && p.items[2].layout.bit_width == 2 &&
          p.items[2].fixed && p.items[2].role == AQ__PLAN_FIXED);
    CHECK_OK(aq__pipe_choose(&p, ctx, &err));
    for (size_t i = 0; i < 4; i++) {
        const aq_layout *l = &p.items[i].layout;
        uint8_t *packed = malloc(l->packed_bytes + 1);
        float *sc = malloc((l->groups + 1) * sizeof(float)),
              *zp = malloc((l->groups + 1) * sizeof(float));
        bool skipped = false;
        CHECK_OK(aq__pipe_encode(&p, ctx, i, packed, sc, zp, &skipped, &err));
        CHECK(skipped == (i == 3));
        if (i == 1) {
            for (size_t k = 0; k < PS_COLS; k++) {
                uint16_t h;
                memcpy(&h, packed + 2 * k, 2);
                CHECK(h == aq__f32_to_f16(x[1][k]));
            }
        } else if (!skipped) {
            /* The kernels' bytes for the decided scheme and bits. */
            aq_ctx c = aq__ctx_with(ctx, p.items[i].scheme, l->bit_width, l->group_size);
            uint8_t *ref = malloc(l->packed_bytes + 1);
            float *rs = malloc((l->groups + 1) * sizeof(float)),
                  *rz = malloc((l->groups + 1) * sizeof(float));
            aq_qbuffers qb = {ref, l->packed_bytes, rs, rz, l->groups};
            CHECK_OK(aq_quantize(&c, &t[i], &qb, &err));
            CHECK(memcmp(ref, packed, l->packed_bytes) == 0);
            CHECK(memcmp(rs, sc, l->groups * sizeof(float)) == 0);
            CHECK(memcmp(rz, zp, l->groups * sizeof(float)) == 0);
            free(ref);
            free(rs);
            free(rz);
        }
        CHECK_OK(aq__pipe_progress_to(&p, i, &err));
        free(packed);
        free(sc);
        free(zp);
    }
    /* The bad row went to row_skip, by its index, with the kernels' message. */
    CHECK(log.skipped == 1 && log.skipped_row == 3 && p.items[3].status == AQ_NON_FINITE);
    CHECK_MSG(strstr(log.message, "index 17") != NULL, "%s", log.message);
    CHECK(log.progress == 4 && p.reported == 4);
    aq__pipe_free(&p);
    aq_ctx_free(ctx);
}

/* ---- an explicit budget over tensors read one at a time ---- */

#define BG_N 3

typedef struct bg_src {
    aq_tensor t[BG_N];
    size_t views, releases, measured;
} bg_src;

static aq__plan_role bg_role(void *user, size_t i)
{
    (void)user;
    return i == 1 ? AQ__PLAN_FIXED : AQ__PLAN_CHOSEN;
}

static void bg_shape(void *user, size_t i, const int64_t **shape, size_t *ndim, size_t *elements)
{
    const aq_tensor *t = &((bg_src *)user)->t[i];
    *shape = t->shape;
    *ndim = t->ndim;
    *elements = (size_t)(t->shape[0] * t->shape[1]);
}

static aq_status bg_fixed(void *user, size_t i, size_t *bytes, aq_error *err)
{
    (void)err;
    *bytes = (size_t)(((bg_src *)user)->t[i].shape[0] * ((bg_src *)user)->t[i].shape[1]);
    return AQ_OK;
}

static aq_status bg_view(void *user, size_t i, aq_tensor *t, const float **imp, aq_error *err)
{
    (void)err;
    bg_src *s = user;
    s->views++;
    *t = s->t[i];
    *imp = NULL;
    return AQ_OK;
}

static void bg_release(void *user, size_t i)
{
    (void)i;
    ((bg_src *)user)->releases++;
}

static void bg_measured(void *user, size_t i)
{
    (void)i;
    ((bg_src *)user)->measured++;
}

TEST(an_explicit_budget_reads_each_tensor_once_or_refuses_before)
{
    aq_error err;
    aq_ctx *ctx = NULL;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq__pool *pool;
    CHECK_OK(aq__ctx_pool(ctx, &pool, &err));
    uint64_t seed = 11;
    static float x[BG_N][PS_ROWS * PS_COLS];
    for (size_t k = 0; k < BG_N; k++) {
        for (size_t i = 0; i < PS_ROWS * PS_COLS; i++) {
            x[k][i] = (float)(aq_test_rand_normal(&seed) * (double)(k + 1));
        }
    }
    int64_t shape[2] = {PS_ROWS, PS_COLS};
    bg_src src = {{{"a", AQ_DTYPE_F32, x[0], shape, 2},
                   {"b", AQ_DTYPE_F32, x[1], shape, 2},
                   {"c", AQ_DTYPE_F32, x[2], shape, 2}},
                  0,
                  0,
                  0};
    const aq__budget_source bs = {&src,     BG_N,    bg_role,    bg_shape,
                                  bg_fixed, bg_view, bg_release, bg_measured};
    const aq_scheme schemes[1] = {AQ_SCHEME_AFFINE};
    aq__budget_params bp;
    memset(&bp, 0, sizeof bp);
    bp.schemes = schemes;
    bp.n_schemes = 1;
    bp.own_scheme = AQ_SCHEME_AFFINE;
    bp.own_bits = 4;
    aq__budget_option plan[BG_N];
    memset(plan, 0, sizeof plan);
    /* Affine 2 bits in groups of 128 takes 2.5 bits per weight: 2.2 cannot fit. */
    bp.target_bpw = 2.2;
    CHECK_FAILS(aq__budget_over(ctx, &bs, &bp, plan, &err), AQ_INVALID_PARAMETER,
                "The smallest allocation needs 2.5");
    CHECK(src.views == 0 && plan[0].bits == 0);
    /* Over the whole model the fixed tensor's bytes count too (8 bits per weight here). */
    bp.whole = true;
    bp.target_bpw = 4.0;
    CHECK_FAILS(aq__budget_over(ctx, &bs, &bp, plan, &err), AQ_INVALID_PARAMETER,
                "over the whole model");
    CHECK(src.views == 0);
    bp.whole = false;
    bp.target_bpw = 5.0;
    CHECK_OK(aq__budget_over(ctx, &bs, &bp, plan, &err));
    CHECK(src.views == 2 && src.releases == 2 && src.measured == 2);
    CHECK(plan[1].bits == 0 && plan[0].bits != 0 && plan[2].bits != 0);
    const size_t elements = 2 * PS_ROWS * PS_COLS;
    CHECK(plan[0].bytes + plan[2].bytes <= (size_t)(5.0 * (double)elements / 8.0));
    /* The larger tensor (c, three times a's spread at the same shape) is not given fewer bits. */
    CHECK(plan[2].bits >= plan[0].bits);
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(AQ_CASE(floor_tries_the_next_width_until_it_is_met),
             AQ_CASE(a_set_is_decided_and_executed_through_its_hooks),
             AQ_CASE(an_explicit_budget_reads_each_tensor_once_or_refuses_before))
