/* aq_model_compare and aq_model_default_floor: the statuses of every kind of tensor pair, the
 * totals, a model file as one side, the floor a file records, cancellation and errors. Runs
 * under ASan/UBSan in scripts/test. */
#include "aq_common.h"
#include "aq_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[256];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/aq_compare_test_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        abort();
    }
}

static void rm(const char *name)
{
    char p[400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

/* One tensor of a test checkpoint: F32 values (or raw I32 bytes). */
typedef struct src_tensor {
    const char *name;
    aq_st_dtype dtype;
    int64_t shape[2];
    size_t ndim;
    const void *data;
} src_tensor;

static aq_status write_st(const char *file, const src_tensor *t, size_t n, aq_error *err)
{
    char path[400];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    aq_st_spec specs[8];
    for (size_t i = 0; i < n; i++) {
        size_t el = 1;
        for (size_t d = 0; d < t[i].ndim; d++) {
            el *= (size_t)t[i].shape[d];
        }
        specs[i] = (aq_st_spec){t[i].name,  t[i].dtype, NULL,
                                t[i].shape, t[i].ndim,  el * aq_st_dtype_size(t[i].dtype)};
    }
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, n, NULL, NULL, 0, &w, err);
    for (size_t i = 0; st == AQ_OK && i < n; i++) {
        st = aq_st_writer_write(w, t[i].data, specs[i].nbytes, err);
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

enum { W_N = 64 * 128 };
static float w_a[W_N], w_b[W_N], v_a[W_N];
static int32_t ids[4] = {1, 2, 3, 4};
static int32_t ids2[4] = {1, 2, 3, 5};

static void fill(void)
{
    uint64_t seed = 9;
    for (size_t i = 0; i < W_N; i++) {
        w_a[i] = (float)aq_test_rand_normal(&seed);
        w_b[i] = w_a[i] + 0.01f * (float)aq_test_rand_normal(&seed);
        v_a[i] = (float)aq_test_rand_normal(&seed);
    }
}

typedef struct seen {
    char names[8][32];
    aq_compare_status status[8];
    aq_metrics metrics[8];
    int below[8];
    size_t n;
    size_t stop_after; /* 0: never */
} seen;

static int on_tensor(void *user, const aq_compare_tensor *t)
{
    seen *s = user;
    if (s->n < 8) {
        snprintf(s->names[s->n], 32, "%s", t->name);
        s->status[s->n] = t->status;
        s->metrics[s->n] = t->metrics;
        s->below[s->n] = t->below_min_cosine;
    }
    s->n++;
    return s->stop_after != 0 && s->n >= s->stop_after;
}

static int find(const seen *s, const char *name)
{
    for (size_t i = 0; i < s->n && i < 8; i++) {
        if (strcmp(s->names[i], name) == 0) {
            return (int)i;
        }
    }
    return -1;
}

TEST(every_status)
{
    aq_error err;
    make_dir();
    fill();
    src_tensor a[5] = {{"w", AQ_ST_F32, {64, 128}, 2, w_a},
                       {"v", AQ_ST_F32, {64, 128}, 2, v_a},
                       {"ids", AQ_ST_I32, {4, 0}, 1, ids},
                       {"ids2", AQ_ST_I32, {4, 0}, 1, ids},
                       {"only_a", AQ_ST_F32, {16, 0}, 1, w_a}};
    src_tensor b[5] = {{"only_b", AQ_ST_F32, {8, 0}, 1, w_a},
                       {"ids2", AQ_ST_I32, {4, 0}, 1, ids2},
                       {"v", AQ_ST_F32, {128, 64}, 2, v_a},
                       {"w", AQ_ST_F32, {64, 128}, 2, w_b},
                       {"ids", AQ_ST_I32, {4, 0}, 1, ids}};
    CHECK_OK(write_st("a.safetensors", a, 5, &err));
    CHECK_OK(write_st("b.safetensors", b, 5, &err));
    char pa[400], pb[400];
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b.safetensors", dir);
    seen s;
    memset(&s, 0, sizeof s);
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.on_tensor = on_tensor;
    o.on_tensor_user = &s;
    o.min_cosine = 0.99999;
    aq_model_compare_summary sum;
    CHECK_OK(aq_model_compare(pa, pb, &o, &sum, &err));
    CHECK(s.n == 6 && sum.tensors == 6);
    /* A's order, then B's extra tensor. */
    CHECK(strcmp(s.names[0], "w") == 0 && strcmp(s.names[5], "only_b") == 0);
    int iw = find(&s, "w");
    CHECK(s.status[iw] == AQ_COMPARE_COMPARED);
    CHECK(s.metrics[iw].cosine > 0.999 && s.metrics[iw].cosine < 0.99999 && s.below[iw]);
    /* SQNR from the definition: noise 0.01 on unit normals is about 40 dB. */
    CHECK(fabs(s.metrics[iw].sqnr_db - 40.0) < 0.5);
    CHECK(s.status[find(&s, "v")] == AQ_COMPARE_SHAPE_MISMATCH);
    CHECK(s.status[find(&s, "ids")] == AQ_COMPARE_SAME_BYTES);
    CHECK(s.status[find(&s, "ids2")] == AQ_COMPARE_BYTES_DIFFER);
    CHECK(s.status[find(&s, "only_a")] == AQ_COMPARE_MISSING_IN_B);
    CHECK(s.status[find(&s, "only_b")] == AQ_COMPARE_MISSING_IN_A);
    CHECK(sum.compared == 1 && sum.missing_in_a == 1 && sum.missing_in_b == 1);
    CHECK(sum.mismatched == 2 && sum.below_min_cosine == 1);
    CHECK(sum.worst != NULL && strcmp(sum.worst, "w") == 0);
    CHECK(sum.min_cosine == s.metrics[iw].cosine && sum.mean_cosine == s.metrics[iw].cosine);
    CHECK(sum.min_sqnr_db == s.metrics[iw].sqnr_db);
    aq_model_compare_summary_reset(&sum);
    CHECK(sum.worst == NULL && sum.tensors == 0);

    /* a_only: the compare command's view, without B's extra tensors. */
    memset(&s, 0, sizeof s);
    o.a_only = 1;
    o.min_cosine = 0.0;
    CHECK_OK(aq_model_compare(pa, pb, &o, &sum, &err));
    CHECK(s.n == 5 && sum.missing_in_a == 0 && sum.below_min_cosine == 0);
    aq_model_compare_summary_reset(&sum);

    /* A model against itself: all compared or identical, exact. */
    CHECK_OK(aq_model_compare(pa, pa, NULL, &sum, &err));
    CHECK(sum.compared == 3 && sum.mismatched == 0 && sum.min_cosine > 0.999999999);
    CHECK(isinf(sum.min_sqnr_db));
    aq_model_compare_summary_reset(&sum);
    rm("a.safetensors");
    rm("b.safetensors");
    rmdir(dir);
}

TEST(model_file_side_and_floor)
{
    aq_error err;
    make_dir();
    fill();
    src_tensor a[3] = {{"w", AQ_ST_F32, {64, 128}, 2, w_a},
                       {"v", AQ_ST_F32, {64, 128}, 2, v_a},
                       {"ids", AQ_ST_I32, {4, 0}, 1, ids}};
    CHECK_OK(write_st("a.safetensors", a, 3, &err));
    char pa[400], pq[400], pq2[400];
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pq, sizeof pq, "%s/q.arrow", dir);
    snprintf(pq2, sizeof pq2, "%s/q2.arrow", dir);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(pa, &m, &err));
    aq_model_quantize_options qo = AQ_SIZED_INIT(aq_model_quantize_options);
    qo.min_elements = 16;
    qo.min_cosine = 0.95;
    qo.profile = "edge";
    CHECK_OK(aq_model_quantize(ctx, m, pq, &qo, NULL, &err));
    qo.min_cosine = 0.0;
    CHECK_OK(aq_model_quantize(ctx, m, pq2, &qo, NULL, &err));
    aq_model_free(m);

    seen s;
    memset(&s, 0, sizeof s);
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.on_tensor = on_tensor;
    o.on_tensor_user = &s;
    aq_model_compare_summary sum;
    CHECK_OK(aq_model_compare(pa, pq, &o, &sum, &err));
    CHECK(sum.compared == 2 && sum.tensors == 3 && sum.mismatched == 0);
    CHECK(s.status[find(&s, "ids")] == AQ_COMPARE_SAME_BYTES);
    /* The comparison's figures are those the file recorded while quantizing. */
    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(pq, &qm, &err));
    const aq_qmodel_row *r;
    for (;;) {
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        if (r == NULL) {
            break;
        }
        int i = find(&s, r->name);
        CHECK(i >= 0);
        if (!r->raw) {
            CHECK(fabs(s.metrics[i].cosine - r->cosine) < 1e-9);
            CHECK(fabs(s.metrics[i].sqnr_db - r->sqnr_db) < 1e-6);
        }
    }
    aq_qmodel_free(qm);
    aq_model_compare_summary_reset(&sum);

    /* The model file on the A side works as well. */
    CHECK_OK(aq_model_compare(pq, pa, NULL, &sum, &err));
    CHECK(sum.compared == 2 && sum.missing_in_a == 0 && sum.missing_in_b == 0);
    aq_model_compare_summary_reset(&sum);

    aq_model_floor f;
    CHECK_OK(aq_model_default_floor(pq, &f, &err));
    CHECK(f.min_cosine == 0.95 && strcmp(f.source, "file") == 0 && f.profile == NULL);
    CHECK_OK(aq_model_default_floor(pq2, &f, &err));
    CHECK(strcmp(f.source, "profile") == 0 && strcmp(f.profile, "edge") == 0);
    aq_profile edge;
    CHECK_OK(aq_profile_get("edge", &edge, &err));
    CHECK(f.min_cosine == edge.min_cosine);
    CHECK_OK(aq_model_default_floor(pa, &f, &err));
    CHECK(strcmp(f.source, "default") == 0 && strcmp(f.profile, "local") == 0);
    aq_ctx_free(ctx);
    rm("a.safetensors");
    rm("q.arrow");
    rm("q2.arrow");
    rmdir(dir);
}

TEST(cancel_and_errors)
{
    aq_error err;
    make_dir();
    fill();
    src_tensor a[2] = {{"w", AQ_ST_F32, {64, 128}, 2, w_a}, {"v", AQ_ST_F32, {64, 128}, 2, v_a}};
    CHECK_OK(write_st("a.safetensors", a, 2, &err));
    float bad[W_N];
    memcpy(bad, v_a, sizeof bad);
    bad[77] = NAN;
    src_tensor b[2] = {{"w", AQ_ST_F32, {64, 128}, 2, w_a}, {"v", AQ_ST_F32, {64, 128}, 2, bad}};
    CHECK_OK(write_st("b.safetensors", b, 2, &err));
    char pa[400], pb[400], missing[400];
    snprintf(pa, sizeof pa, "%s/a.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b.safetensors", dir);
    snprintf(missing, sizeof missing, "%s/none.safetensors", dir);

    seen s;
    memset(&s, 0, sizeof s);
    s.stop_after = 1;
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.on_tensor = on_tensor;
    o.on_tensor_user = &s;
    aq_model_compare_summary sum;
    memset(&sum, 0, sizeof sum);
    sum.tensors = 77;
    CHECK(aq_model_compare(pa, pa, &o, &sum, &err) == AQ_CANCELLED);
    CHECK(s.n == 1 && sum.tensors == 77); /* the summary is written only on success */
    volatile int cancel = 1;
    o = AQ_SIZED_INIT(aq_model_compare_options);
    o.cancel = &cancel;
    CHECK(aq_model_compare(pa, pa, &o, &sum, &err) == AQ_CANCELLED);

    CHECK(aq_model_compare(pa, pb, NULL, &sum, &err) == AQ_NON_FINITE);
    CHECK(strstr(err.message, "'v'") != NULL && strstr(err.message, "77") != NULL);
    CHECK(aq_model_compare(pa, missing, NULL, &sum, &err) != AQ_OK);
    CHECK(strstr(err.message, "none.safetensors") != NULL);
    o = AQ_SIZED_INIT(aq_model_compare_options);
    o.min_cosine = 1.5;
    CHECK(aq_model_compare(pa, pa, &o, &sum, &err) == AQ_INVALID_PARAMETER);
    CHECK(aq_model_compare(NULL, pa, NULL, &sum, &err) == AQ_INVALID_ARGUMENT);
    CHECK(sum.tensors == 77);
    rm("a.safetensors");
    rm("b.safetensors");
    rmdir(dir);
}

AQ_TEST_MAIN(AQ_CASE(every_status), AQ_CASE(model_file_side_and_floor), AQ_CASE(cancel_and_errors))
