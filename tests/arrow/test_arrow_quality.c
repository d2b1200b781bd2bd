/* The Arrow batch path with the quality options (min_cosine, target_bpw, budget schemes) and
 * cancellation through the progress callback, for batches, tensor lists and streams. */
#include "arrow_test_util.h"

#include <errno.h>
#include <math.h>

/* Stops (returns nonzero) on call number stop_at; counts every call. */
typedef struct stopper {
    size_t calls, stop_at, last_rows;
} stopper;

static int stop_progress(void *user, size_t rows, size_t elements)
{
    stopper *s = user;
    (void)elements;
    s->calls++;
    s->last_rows = rows;
    return s->calls == s->stop_at;
}

enum { N100 = 100, PER = 256 };

static aq_tensor *tensors_100(float **w, int64_t *shape)
{
    *w = au_normal((size_t)N100 * PER, 3);
    *shape = PER;
    aq_tensor *t = calloc(N100, sizeof *t);
    for (size_t i = 0; i < N100; i++) {
        t[i] = (aq_tensor){"layer", AQ_DTYPE_F32, *w + i * PER, shape, 1};
    }
    return t;
}

static void check_cancelled(aq_ctx *ctx, const aq_tensor *t, aq_batch_options *opts, stopper *s)
{
    aq_error err;
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    out_s.release = NULL;
    out_a.release = NULL;
    opts->progress = stop_progress;
    opts->progress_user = s;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, N100, opts, &out_s, &out_a, &err), AQ_CANCELLED,
                "cancelled by the progress callback after 2 rows");
    CHECK_MSG(s->calls == 2, "%zu calls", s->calls);
    CHECK(out_s.release == NULL && out_a.release == NULL);
}

TEST(cancel_on_row_2_of_100_stops_early)
{
    aq_ctx *ctx = au_ctx(4, 64);
    float *w;
    int64_t shape;
    aq_tensor *t = tensors_100(&w, &shape);
    stopper s = {0, 2, 0};
    aq_batch_options opts = AQ_SIZED_INIT(aq_batch_options);
    check_cancelled(ctx, t, &opts, &s);
    /* With a floor (each row through the quality driver) and with a budget (rows reported as
     * they are measured) the same. */
    stopper f = {0, 2, 0};
    aq_batch_options fo = {.size = sizeof(aq_batch_options), .min_cosine = 0.9};
    check_cancelled(ctx, t, &fo, &f);
    stopper b = {0, 2, 0};
    aq_batch_options bo = {.size = sizeof(aq_batch_options), .target_bpw = 5.0};
    check_cancelled(ctx, t, &bo, &b);
    free(t);
    free(w);
    aq_ctx_free(ctx);
}

TEST(cancel_batch_dequantize_and_stream)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 64);
    float *w = au_normal(10 * 64, 5);
    tb_row rows[10];
    for (int i = 0; i < 10; i++) {
        rows[i] = (tb_row){"r", w + i * 64, 64, NULL, 0, false};
    }
    tb_node b = tb_batch(rows, 10);
    stopper s = {0, 3, 0};
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .progress = stop_progress, .progress_user = &s};
    struct ArrowSchema out_s, q_s;
    struct ArrowArray out_a, q_a;
    out_s.release = NULL;
    CHECK_FAILS(aq_batch_quantize(ctx, b.s, b.a, &opts, &out_s, &out_a, &err), AQ_CANCELLED,
                "after 3 rows");
    CHECK(s.calls == 3 && out_s.release == NULL);

    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, NULL, &q_s, &q_a, &err));
    stopper d = {0, 4, 0};
    aq_batch_options dopts = {
        .size = sizeof(aq_batch_options), .progress = stop_progress, .progress_user = &d};
    CHECK_FAILS(aq_batch_dequantize(ctx, &q_s, &q_a, &dopts, &out_s, &out_a, &err), AQ_CANCELLED,
                "after 4 rows");
    CHECK(d.calls == 4);
    q_s.release(&q_s);
    q_a.release(&q_a);

    /* A stream: get_next fails with ECANCELED, the message says why, and it stays failed. */
    tb_node batches[2] = {tb_batch(rows, 5), tb_batch(rows + 5, 5)};
    struct ArrowArrayStream in, out;
    tb_stream(&in, tb_batch(rows, 0), batches, 2, -1, NULL);
    stopper st = {0, 7, 0};
    aq_batch_options sopts = {
        .size = sizeof(aq_batch_options), .progress = stop_progress, .progress_user = &st};
    CHECK_OK(aq_stream_quantize(ctx, &in, &sopts, &out, &err));
    struct ArrowArray a;
    CHECK(out.get_next(&out, &a) == 0 && a.release != NULL);
    a.release(&a);
    CHECK(out.get_next(&out, &a) == ECANCELED);
    CHECK(strstr(out.get_last_error(&out), "cancelled by the progress callback after 7 rows"));
    CHECK(out.get_next(&out, &a) == ECANCELED && st.calls == 7);
    out.release(&out);
    tb_free(b);
    free(w);
    aq_ctx_free(ctx);
}

/* An easy row (four levels per group: exact at 2 bits) and a hard one (Gaussian: cosine about
 * 0.94 at 2 bits). */
static float *easy_hard(size_t n)
{
    float *w = au_normal(2 * n, 11);
    for (size_t i = 0; i < n; i++) {
        w[i] = 0.5f * (float)(i % 4);
    }
    return w;
}

TEST(min_cosine_moves_the_hard_row_to_more_bits)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 64);
    enum { N = 4096 };
    float *w = easy_hard(N);
    int64_t shape[2] = {64, 64};
    aq_tensor t[2] = {{"easy", AQ_DTYPE_F32, w, shape, 2}, {"hard", AQ_DTYPE_F32, w + N, shape, 2}};
    struct ArrowSchema ps, qs;
    struct ArrowArray pa, qa;
    CHECK_OK(aq_tensors_quantize(ctx, t, 2, NULL, &ps, &pa, &err));
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .report = rep, .min_cosine = 0.99};
    CHECK_OK(aq_tensors_quantize(ctx, t, 2, &opts, &qs, &qa, &err));
    rr_row p0, p1, q0, q1;
    rr_get(&pa, false, 0, &p0);
    rr_get(&pa, false, 1, &p1);
    rr_get(&qa, false, 0, &q0);
    rr_get(&qa, false, 1, &q1);
    /* The easy row is untouched, bit for bit; the hard one has more bits and other bytes. */
    CHECK(q0.bits == 2 && q0.packed_len == p0.packed_len &&
          memcmp(q0.packed, p0.packed, p0.packed_len) == 0);
    CHECK_MSG(q1.bits == 4 || q1.bits == 8, "hard row at %u bits", q1.bits);
    CHECK(q1.packed_len == (size_t)N * q1.bits / 8 && q1.packed_len != p1.packed_len);
    CHECK(aq_report_choice_count(rep) == 2);
    size_t row;
    const char *name;
    aq_qset_choice c0, c1;
    CHECK_OK(aq_report_choice_get(rep, 0, &row, &name, &c0, &err));
    CHECK(row == 0 && strcmp(name, "easy") == 0 && !c0.moved && c0.bit_width == 2);
    CHECK_OK(aq_report_choice_get(rep, 1, &row, &name, &c1, &err));
    CHECK(row == 1 && strcmp(name, "hard") == 0 && c1.moved && c1.initial_bit_width == 2 &&
          c1.bit_width == q1.bits && c1.metrics.cosine >= 0.99);
    CHECK_FAILS(aq_report_choice_get(rep, 2, NULL, NULL, NULL, &err), AQ_INVALID_ARGUMENT,
                "out of range");
    /* One scheme and group size: no row_schemes; the result restores within its bits. */
    CHECK(strstr(qs.metadata + 4, "row_schemes") == NULL);
    struct ArrowSchema ds;
    struct ArrowArray da;
    CHECK_OK(aq_batch_dequantize(ctx, &qs, &qa, NULL, &ds, &da, &err));
    const float *back = (const float *)da.children[1]->children[0]->buffers[1];
    double dot = 0, na = 0, nb = 0;
    for (size_t i = 0; i < N; i++) {
        dot += (double)w[N + i] * (double)back[N + i];
        na += (double)w[N + i] * (double)w[N + i];
        nb += (double)back[N + i] * (double)back[N + i];
    }
    CHECK(dot / sqrt(na * nb) >= 0.99);
    ds.release(&ds);
    da.release(&da);
    ps.release(&ps);
    pa.release(&pa);
    qs.release(&qs);
    qa.release(&qa);
    aq_report_free(rep);
    free(w);
    aq_ctx_free(ctx);
}

/* True bits per weight of a result: every byte of quantized_data, scales and zero points. */
static double true_bpw(const struct ArrowArray *a, size_t *elements)
{
    size_t bytes = 0, n = 0;
    for (int64_t i = 0; i < a->length; i++) {
        rr_row r;
        rr_get(a, false, i, &r);
        bytes += r.packed_len + 8 * r.groups;
        size_t e = 1;
        for (size_t d = 0; d < r.ndim; d++) {
            e *= (size_t)r.shape[d];
        }
        n += e;
    }
    *elements = n;
    return (double)bytes * 8.0 / (double)n;
}

TEST(target_bpw_stays_within_the_budget_with_mixed_rows)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 64);
    enum { L = 6, E = 2048 };
    float *w = au_normal(L * E, 21);
    for (size_t i = 0; i < E; i++) { /* one row with outliers: worth more bits */
        w[i] *= (i % 97 == 0) ? 40.0f : 1.0f;
    }
    int64_t shape[2] = {32, 64};
    aq_tensor t[L];
    for (size_t i = 0; i < L; i++) {
        t[i] = (aq_tensor){"t", AQ_DTYPE_F32, w + i * E, shape, 2};
    }
    const double targets[3] = {3.5, 4.5, 7.0};
    for (int k = 0; k < 3; k++) {
        aq_report *rep;
        CHECK_OK(aq_report_create(&rep, &err));
        aq_batch_options opts = {
            .size = sizeof(aq_batch_options), .report = rep, .target_bpw = targets[k]};
        struct ArrowSchema s;
        struct ArrowArray a;
        CHECK_OK(aq_tensors_quantize(ctx, t, L, &opts, &s, &a, &err));
        size_t n;
        double bpw = true_bpw(&a, &n);
        CHECK_MSG(bpw <= targets[k] && n == (size_t)L * E, "target %g: %g bpw", targets[k], bpw);
        CHECK_MSG(bpw > targets[k] - 2.5, "target %g: only %g bpw used", targets[k], bpw);
        unsigned seen = 0;
        for (int64_t i = 0; i < a.length; i++) {
            rr_row r;
            rr_get(&a, false, i, &r);
            seen |= 1u << r.bits;
        }
        CHECK_MSG((seen & (seen - 1)) != 0, "target %g: every row at one bit width", targets[k]);
        CHECK(aq_report_choice_count(rep) == L);
        aq_report_free(rep);
        s.release(&s);
        a.release(&a);
    }
    /* Below the smallest allocation: refused, with the figure. */
    aq_batch_options tight = {.size = sizeof(aq_batch_options), .target_bpw = 1.0};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, L, &tight, &s, &a, &err), AQ_INVALID_PARAMETER,
                "Invalid target_bpw: 1");
    free(w);
    aq_ctx_free(ctx);
}

TEST(budget_schemes_write_row_schemes_that_dequantize)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 256); /* affine at 2 bits: 2.25 bpw, below kquant's 2.625 */
    enum { L = 4, E = 4096 };
    float *w = au_normal(L * E, 31);
    for (size_t i = 0; i < E; i++) {
        w[i] = 0.25f * (float)(i % 4); /* exact with affine at 2 bits */
    }
    int64_t shape[2] = {8, 512};
    aq_tensor t[L];
    for (size_t i = 0; i < L; i++) {
        t[i] = (aq_tensor){"t", AQ_DTYPE_F32, w + i * E, shape, 2};
    }
    aq_scheme schemes[2] = {AQ_SCHEME_AFFINE, AQ_SCHEME_KQUANT};
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    aq_batch_options opts = {.size = sizeof(aq_batch_options),
                             .report = rep,
                             .target_bpw = 4.5,
                             .budget_schemes = schemes,
                             .n_budget_schemes = 2};
    struct ArrowSchema s, ds;
    struct ArrowArray a, da;
    CHECK_OK(aq_tensors_quantize(ctx, t, L, &opts, &s, &a, &err));
    size_t n;
    CHECK(true_bpw(&a, &n) <= 4.5);
    bool kq = false, af = false;
    for (size_t i = 0; i < L; i++) {
        aq_qset_choice c;
        CHECK_OK(aq_report_choice_get(rep, i, NULL, NULL, &c, &err));
        kq = kq || c.scheme == AQ_SCHEME_KQUANT;
        af = af || c.scheme == AQ_SCHEME_AFFINE;
    }
    CHECK_MSG(kq && af, "schemes chosen: kquant %d affine %d", kq, af);
    /* Rows differ: arrowquant.row_schemes names each row's scheme and group size. */
    const char *m = s.metadata;
    bool found = false;
    int32_t count;
    memcpy(&count, m, 4);
    m += 4;
    for (int32_t i = 0; i < count; i++) {
        int32_t kl, vl;
        memcpy(&kl, m, 4);
        memcpy(&vl, m + 4 + kl, 4);
        if (kl == 22 && memcmp(m + 4, "arrowquant.row_schemes", 22) == 0) {
            found = true;
            CHECK(memchr(m + 8 + kl, '[', (size_t)vl) == m + 8 + kl);
            CHECK(strstr(m + 8 + kl, "{\"scheme\":\"kquant\",\"group_size\":512}") != NULL);
            CHECK(strstr(m + 8 + kl, "{\"scheme\":\"affine\",\"group_size\":256}") != NULL);
        }
        m += 8 + kl + vl;
    }
    CHECK(found);
    CHECK_OK(aq_batch_dequantize(ctx, &s, &a, NULL, &ds, &da, &err));
    const float *back = (const float *)da.children[1]->children[0]->buffers[1];
    for (size_t i = 0; i < E; i++) {
        CHECK_MSG(fabsf(back[i] - w[i]) < 1e-6f, "row 0 element %zu: %g vs %g", i, (double)back[i],
                  (double)w[i]);
    }
    ds.release(&ds);
    da.release(&da);
    s.release(&s);
    a.release(&a);
    /* A stream cannot carry row_schemes: several schemes are refused there. */
    tb_row row = {"x", w, 64, NULL, 0, false};
    tb_node batches[1] = {tb_batch(&row, 1)};
    struct ArrowArrayStream in, out;
    tb_stream(&in, tb_batch(&row, 0), batches, 1, -1, NULL);
    CHECK_FAILS(aq_stream_quantize(ctx, &in, &opts, &out, &err), AQ_UNSUPPORTED,
                "needs aq_batch_quantize");
    CHECK(in.release == NULL);
    aq_report_free(rep);
    free(w);
    aq_ctx_free(ctx);
}

TEST(quality_in_a_stream_and_continue_on_error)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 64);
    enum { E = 1024 };
    float *w = easy_hard(E);
    float bad[64];
    memcpy(bad, w + E, sizeof bad);
    bad[10] = NAN;
    tb_row rows[3] = {{"easy", w, E, NULL, 0, false},
                      {"nan", bad, 64, NULL, 0, false},
                      {"hard", w + E, E, NULL, 0, false}};
    for (int budget = 0; budget < 2; budget++) {
        aq_report *rep;
        CHECK_OK(aq_report_create(&rep, &err));
        aq_batch_options opts = {
            .size = sizeof(aq_batch_options), .continue_on_error = 1, .report = rep};
        if (budget) {
            opts.target_bpw = 5.0;
        } else {
            opts.min_cosine = 0.99;
        }
        tb_node batches[2] = {tb_batch(rows, 2), tb_batch(rows + 2, 1)};
        struct ArrowArrayStream in, out;
        tb_stream(&in, tb_batch(rows, 0), batches, 2, -1, NULL);
        CHECK_OK(aq_stream_quantize(ctx, &in, &opts, &out, &err));
        struct ArrowArray a;
        unsigned bits[2];
        size_t got = 0;
        while (out.get_next(&out, &a) == 0 && a.release != NULL) {
            for (int64_t i = 0; i < a.length && got < 2; i++) {
                rr_row r;
                rr_get(&a, false, i, &r);
                bits[got++] = r.bits;
            }
            a.release(&a);
        }
        out.release(&out);
        CHECK(got == 2 && bits[1] > 2);
        CHECK(budget || bits[0] == 2);
        CHECK(aq_report_count(rep) == 1 && aq_report_choice_count(rep) == 2);
        size_t row;
        CHECK_OK(aq_report_get(rep, 0, &row, NULL, NULL, NULL, &err));
        CHECK(row == 1);
        CHECK_OK(aq_report_choice_get(rep, 1, &row, NULL, NULL, &err));
        CHECK(row == 2);
        aq_report_free(rep);
    }
    free(w);
    aq_ctx_free(ctx);
}

TEST(invalid_quality_options_are_refused_even_when_empty)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 64);
    struct ArrowSchema s;
    struct ArrowArray a;
    aq_batch_options o1 = {.size = sizeof(aq_batch_options), .min_cosine = 1.5};
    CHECK_FAILS(aq_tensors_quantize(ctx, NULL, 0, &o1, &s, &a, &err), AQ_INVALID_PARAMETER,
                "Invalid min_cosine: 1.5");
    aq_batch_options o2 = {.size = sizeof(aq_batch_options),
                           .target_bpw = -2}; /* -1 is AQ_TARGET_BPW_PROFILE */
    CHECK_FAILS(aq_tensors_quantize(ctx, NULL, 0, &o2, &s, &a, &err), AQ_INVALID_PARAMETER,
                "Invalid target_bpw: -2");
    aq_batch_options o3 = {.size = sizeof(aq_batch_options), .min_cosine = (double)NAN};
    CHECK_FAILS(aq_tensors_quantize(ctx, NULL, 0, &o3, &s, &a, &err), AQ_INVALID_PARAMETER,
                "Invalid min_cosine");
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(AQ_CASE(cancel_on_row_2_of_100_stops_early),
             AQ_CASE(cancel_batch_dequantize_and_stream),
             AQ_CASE(min_cosine_moves_the_hard_row_to_more_bits),
             AQ_CASE(target_bpw_stays_within_the_budget_with_mixed_rows),
             AQ_CASE(budget_schemes_write_row_schemes_that_dequantize),
             AQ_CASE(quality_in_a_stream_and_continue_on_error),
             AQ_CASE(invalid_quality_options_are_refused_even_when_empty))
