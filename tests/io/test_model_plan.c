/* The model pipeline in three steps (aq_model_plan_create, aq_model_execute, aq_model_writer):
 * a file assembled from rows executed in any division of the tensors, through a serialised
 * plan, has the bytes of aq_model_quantize's; plans, rows and ranges that do not fit are
 * refused with messages naming what is wrong, and leave no file. */
#include "aq_common.h"
#include "aq_test.h"
#include "plan_steps.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 6 quantized float32 tensors of 64 x 300, each followed by a kept 1-D bfloat16 one and a
 * kept small float32 one; a model of another tensor set for mismatches. */
enum { N_Q = 6, N_T = 3 * N_Q, ROWS = 64, COLS = 300, N_B = 77, N_S = 5 };
static int64_t sh_q[2] = {ROWS, COLS};
static int64_t sh_b[1] = {N_B};
static int64_t sh_s[1] = {N_S};
static char names[N_T][32];
static char dir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

/* n_q quantized tensors (and their kept neighbours) of seeded normal values. */
static aq_status write_source(const char *path, int n_q, aq_error *err)
{
    aq_st_spec specs[N_T];
    for (int i = 0; i < n_q; i++) {
        snprintf(names[3 * i], sizeof names[0], "blocks.%d.weight", i);
        snprintf(names[3 * i + 1], sizeof names[0], "blocks.%d.norm", i);
        snprintf(names[3 * i + 2], sizeof names[0], "blocks.%d.bias", i);
        specs[3 * i] = (aq_st_spec){names[3 * i], AQ_ST_F32, NULL, sh_q, 2, ROWS * COLS * 4};
        specs[3 * i + 1] = (aq_st_spec){names[3 * i + 1], AQ_ST_BF16, NULL, sh_b, 1, N_B * 2};
        specs[3 * i + 2] = (aq_st_spec){names[3 * i + 2], AQ_ST_F32, NULL, sh_s, 1, N_S * 4};
    }
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, (size_t)(3 * n_q), NULL, NULL, 0, &w, err);
    uint64_t seed = 11;
    for (int i = 0; st == AQ_OK && i < n_q; i++) {
        for (size_t k = 0; st == AQ_OK && k < (size_t)ROWS * COLS; k++) {
            float x = (float)(aq_test_rand_normal(&seed) * (1.0 + i));
            st = aq_st_writer_write(w, &x, 4, err);
        }
        for (size_t k = 0; st == AQ_OK && k < N_B; k++) {
            uint16_t b = aq__f32_to_bf16((float)aq_test_rand_normal(&seed));
            st = aq_st_writer_write(w, &b, 2, err);
        }
        for (size_t k = 0; st == AQ_OK && k < N_S; k++) {
            float x = (float)((size_t)i * N_S + k);
            st = aq_st_writer_write(w, &x, 4, err);
        }
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    if (st == AQ_OK || w != NULL) {
        aq_st_writer_free(w);
    }
    return st;
}

/* The options of a run: a floor, and with `budget` the size budget over two schemes. */
static aq_model_quantize_options options(bool budget, size_t batch_bytes)
{
    static const aq_scheme cands[2] = {AQ_SCHEME_AFFINE, AQ_SCHEME_KQUANT};
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.min_elements = 1000;
    o.batch_bytes = batch_bytes;
    o.min_cosine = 0.995;
    if (budget) {
        o.target_bpw = 5.0;
        o.min_cosine = 0.99;
        o.schemes = cands;
        o.n_schemes = 2;
    }
    return o;
}

/* What a run reports of each tensor (on_tensor), to compare the runs' reports. */
typedef struct report {
    int seen, kept, moved;
    unsigned bits, initial_bits;
    double cosine, initial_cosine, sqnr;
    size_t bytes, elements;
} report;

static void on_tensor(void *user, const aq_model_tensor_result *r)
{
    report *rep = user;
    CHECK(r->index < N_T && strcmp(r->name, names[r->index]) == 0);
    report *x = &rep[r->index];
    x->seen++;
    x->kept = r->kept;
    x->elements = r->elements;
    x->bytes = r->bytes;
    if (!r->kept) {
        x->moved = r->moved;
        x->bits = r->bit_width;
        x->initial_bits = r->initial_bit_width;
        x->cosine = r->cosine;
        x->initial_cosine = r->initial_cosine;
        x->sqnr = r->sqnr_db;
    }
}

/* Every tensor reported once, with the same figures; *moved: how many the floor moved. */
static void same_reports(const report *a, const report *b, size_t *moved)
{
    *moved = 0;
    for (size_t i = 0; i < N_T; i++) {
        CHECK_MSG(a[i].seen == 1 && b[i].seen == 1, "tensor %zu reported %d and %d times", i,
                  a[i].seen, b[i].seen);
        CHECK_MSG(memcmp(&a[i], &b[i], sizeof a[i]) == 0,
                  "tensor %zu: bits %u/%u from %u/%u, cosine %.9g/%.9g from %.9g/%.9g", i,
                  a[i].bits, b[i].bits, a[i].initial_bits, b[i].initial_bits, a[i].cosine,
                  b[i].cosine, a[i].initial_cosine, b[i].initial_cosine);
        *moved += (size_t)a[i].moved;
    }
}

/* Executes [cuts[k], cuts[k+1]) for each k, each range on a plan read back from bytes, and
 * writes the rows in order into out, reporting each tensor into rep. */
static void split_run(const char *src, const char *out, const aq_model_quantize_options *o,
                      const size_t *cuts, size_t n_cuts, unsigned threads, report *rep)
{
    aq_error err;
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_model_plan *plan;
    CHECK_OK(aq_model_plan_create(ctx, m, o, &plan, &err));
    CHECK(aq_model_plan_count(plan) == N_T);
    aq_model_plan *back;
    CHECK_OK(plan_read_back(plan, &back, &err));
    /* The executors: another context, threads of their own, parameters from the plan. */
    aq_ctx *wctx;
    CHECK_OK(aq_ctx_create(&wctx, &err));
    CHECK_OK(aq_ctx_set_param(wctx, AQ_PARAM_THREADS, threads, &err));
    aq_model *wm;
    CHECK_OK(aq_model_open(src, &wm, &err));
    aq_model_writer *w;
    aq_model_writer_options wo = AQ_SIZED_INIT(aq_model_writer_options);
    wo.on_tensor = on_tensor;
    wo.on_tensor_user = rep;
    CHECK_OK(aq_model_writer_open(plan, out, &wo, &w, &err));
    CHECK_OK(ranges_append(wctx, wm, back, cuts, n_cuts, NULL, w, &err));
    aq_model_summary s;
    CHECK_OK(aq_model_writer_close(w, &s, &err));
    CHECK(s.tensors == N_T && s.kept + s.quantized == N_T);
    aq_model_writer_free(w);
    aq_model_plan_free(back);
    aq_model_plan_free(plan);
    aq_model_free(wm);
    aq_model_free(m);
    aq_ctx_free(wctx);
    aq_ctx_free(ctx);
}

/* aq_model_quantize into out, reporting each tensor into rep; with planned, also
 * aq_model_quantize_plan following the same plan read back from bytes into planned. */
static void whole_run(const char *src, const char *out, const aq_model_quantize_options *o,
                      aq_model_summary *s, report *rep, const char *planned, report *prep)
{
    aq_error err;
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_model_quantize_options ro = *o;
    ro.on_tensor = on_tensor;
    ro.on_tensor_user = rep;
    CHECK_OK(aq_model_quantize(ctx, m, out, &ro, s, &err));
    if (planned != NULL) {
        aq_model_plan *plan, *back;
        CHECK_OK(aq_model_plan_create(ctx, m, o, &plan, &err));
        CHECK_OK(plan_read_back(plan, &back, &err));
        aq_model_plan_free(plan);
        /* Another context, of another bit width: the plan's parameters are followed. */
        aq_ctx *other;
        CHECK_OK(aq_ctx_create(&other, &err));
        CHECK_OK(aq_ctx_set_param(other, AQ_PARAM_BIT_WIDTH, 8, &err));
        aq_model *om;
        CHECK_OK(aq_model_open(src, &om, &err));
        ro.on_tensor_user = prep;
        aq_model_summary ps;
        CHECK_OK(aq_model_quantize_plan(other, om, back, planned, &ro, &ps, &err));
        CHECK(ps.tensors == s->tensors && ps.moved == s->moved && ps.bytes_out == s->bytes_out);
        aq_model_plan_free(back);
        aq_model_free(om);
        aq_ctx_free(other);
    }
    aq_model_free(m);
    aq_ctx_free(ctx);
}

static void check_split(bool budget, size_t batch_bytes, unsigned threads)
{
    aq_error err;
    snprintf(dir, sizeof dir, "/tmp/aq_plan_test_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[300], whole[300], split[300], single[300], planned[300];
    path_in(src, sizeof src, "src.safetensors");
    path_in(whole, sizeof whole, "whole.arrow");
    path_in(split, sizeof split, "split.arrow");
    path_in(single, sizeof single, "single.arrow");
    path_in(planned, sizeof planned, "planned.arrow");
    CHECK_OK(write_source(src, N_Q, &err));
    aq_model_quantize_options o = options(budget, batch_bytes);
    aq_model_summary s;
    static report r_whole[N_T], r_planned[N_T], r_split[N_T], r_single[N_T];
    memset(r_whole, 0, sizeof r_whole);
    memset(r_planned, 0, sizeof r_planned);
    memset(r_split, 0, sizeof r_split);
    memset(r_single, 0, sizeof r_single);
    whole_run(src, whole, &o, &s, r_whole, planned, r_planned);
    CHECK_SAME_FILE(whole, planned);
    size_t moved, m_split, m_single;
    same_reports(r_whole, r_planned, &moved);
    /* Uneven ranges, a range of one tensor, ranges that cut batches. */
    static const size_t cuts[] = {0, 4, 5, 11, N_T};
    split_run(src, split, &o, cuts, sizeof cuts / sizeof cuts[0], threads, r_split);
    CHECK_SAME_FILE(whole, split);
    static const size_t all[] = {0, N_T};
    split_run(src, single, &o, all, 2, threads, r_single);
    CHECK_SAME_FILE(whole, single);
    /* The writer reports each row as the run reports its tensor, the cosine before the floor
     * included (the rows carry it). */
    same_reports(r_whole, r_split, &m_split);
    same_reports(r_whole, r_single, &m_single);
    CHECK(m_split == moved && m_single == moved);
    CHECK_MSG(budget || moved > 0, "the floor moved no tensor: the reports of moved tensors "
                                   "are not checked");
    unlink(src);
    unlink(whole);
    unlink(split);
    unlink(single);
    unlink(planned);
    rmdir(dir);
}

TEST(split_rows_give_the_same_file)
{
    check_split(false, 0, 1);
}

TEST(split_rows_give_the_same_file_small_batches_threads)
{
    check_split(false, 20000, 2);
}

TEST(split_rows_give_the_same_file_with_a_budget)
{
    check_split(true, 50000, 1);
}

/* Bad input: a plan of another model, bytes damaged, ranges, rows out of order or missing. */
TEST(bad_plans_rows_and_ranges_are_refused)
{
    aq_error err;
    snprintf(dir, sizeof dir, "/tmp/aq_plan_test_XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    char src[300], other[300], out[300];
    path_in(src, sizeof src, "src.safetensors");
    path_in(other, sizeof other, "other.safetensors");
    path_in(out, sizeof out, "out.arrow");
    CHECK_OK(write_source(other, N_Q - 1, &err));
    CHECK_OK(write_source(src, N_Q, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
    aq_model *m, *om;
    CHECK_OK(aq_model_open(src, &m, &err));
    CHECK_OK(aq_model_open(other, &om, &err));
    aq_model_quantize_options o = options(false, 0);
    o.min_cosine = 0.0; /* no floor: every quantized row has the plan's bits */
    aq_model_plan *plan;
    CHECK_OK(aq_model_plan_create(ctx, m, &o, &plan, &err));
    struct ArrowSchema sc;
    struct ArrowArray rows;
    /* The plan of another model. */
    CHECK_FAILS(aq_model_execute(ctx, om, plan, 0, 3, NULL, &sc, &rows, &err), AQ_SHAPE_MISMATCH,
                "the plan does not match the model: the plan has 18 tensors, the model 15");
    /* Ranges. */
    CHECK_FAILS(aq_model_execute(ctx, m, plan, 3, 3, NULL, &sc, &rows, &err), AQ_INVALID_ARGUMENT,
                "[3, 3) are not a range of the plan's 18");
    CHECK_FAILS(aq_model_execute(ctx, m, plan, 0, 19, NULL, &sc, &rows, &err), AQ_INVALID_ARGUMENT,
                "are not a range");
    /* Damaged and truncated bytes. */
    void *bytes;
    size_t len;
    CHECK_OK(aq_model_plan_serialize(plan, &bytes, &len, &err));
    aq_model_plan *back = NULL;
    ((uint8_t *)bytes)[len / 2] ^= 1;
    CHECK_FAILS(aq_model_plan_deserialize(bytes, len, &back, &err), AQ_INVALID_DATA,
                "checksum mismatch");
    ((uint8_t *)bytes)[len / 2] ^= 1;
    CHECK_FAILS(aq_model_plan_deserialize(bytes, 12, &back, &err), AQ_INVALID_DATA,
                "not a serialised model plan");
    CHECK_FAILS(aq_model_plan_deserialize("AQPLAN\x7f\nxxxxxxxx", 16, &back, &err), AQ_INVALID_DATA,
                "not a serialised model plan");
    CHECK_OK(aq_model_plan_deserialize(bytes, len, &back, &err));
    aq_model_plan_free(back);
    aq_model_plan_bytes_free(bytes);
    /* Rows out of order: tensors 3.. where 0 is expected. */
    aq_model_writer *w;
    CHECK_OK(aq_model_writer_open(plan, out, NULL, &w, &err));
    CHECK_OK(aq_model_execute(ctx, m, plan, 3, 6, NULL, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "'blocks.1.weight' came where tensor 0 of the plan, 'blocks.0.weight', was "
                "expected");
    rows.release(&rows);
    sc.release(&sc);
    /* The right rows, then one range missing. */
    CHECK_OK(aq_model_execute(ctx, m, plan, 0, 3, NULL, &sc, &rows, &err));
    CHECK_OK(aq_model_writer_append(w, &sc, &rows, &err));
    rows.release(&rows);
    sc.release(&sc);
    CHECK_OK(aq_model_execute(ctx, m, plan, 6, N_T, NULL, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "'blocks.2.weight' came where tensor 3 of the plan, 'blocks.1.weight'");
    rows.release(&rows);
    sc.release(&sc);
    aq_model_summary s;
    CHECK_FAILS(aq_model_writer_close(w, &s, &err), AQ_INVALID_DATA,
                "3 of the plan's 18 tensors were appended; the first missing is "
                "'blocks.1.weight'");
    aq_model_writer_free(w);
    CHECK_MSG(!aq_test_exists(out), "%s exists after a writer that was never complete", out);
    /* Rows of a plan with other decisions (4 bits instead of 2). */
    aq_ctx *ctx4;
    CHECK_OK(aq_ctx_create(&ctx4, &err));
    CHECK_OK(aq_ctx_set_param(ctx4, AQ_PARAM_BIT_WIDTH, 4, &err));
    aq_model_plan *plan4;
    CHECK_OK(aq_model_plan_create(ctx4, m, &o, &plan4, &err));
    CHECK_OK(aq_model_writer_open(plan4, out, NULL, &w, &err));
    CHECK_OK(aq_model_execute(ctx, m, plan, 0, 1, NULL, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "tensor 'blocks.0.weight' is affine at 4 bits in the plan: its row (affine, 2 "
                "bits");
    rows.release(&rows);
    sc.release(&sc);
    aq_model_writer_free(w);
    CHECK(!aq_test_exists(out));
    /* A writer told the rows' checkpoint: never over one of its files, nor for another one. */
    aq_model_writer_options wo = AQ_SIZED_INIT(aq_model_writer_options);
    wo.model = m;
    w = NULL;
    CHECK_FAILS(aq_model_writer_open(plan, src, &wo, &w, &err), AQ_INVALID_ARGUMENT,
                "is the input file");
    CHECK(w == NULL);
    wo.model = om;
    CHECK_FAILS(aq_model_writer_open(plan, out, &wo, &w, &err), AQ_SHAPE_MISMATCH,
                "the plan does not match the model");
    CHECK(w == NULL && !aq_test_exists(out));
    wo.model = m;
    CHECK_OK(aq_model_writer_open(plan, out, &wo, &w, &err));
    aq_model_writer_free(w);
    aq_model_plan_free(plan4);
    aq_ctx_free(ctx4);
    aq_model_plan_free(plan);
    aq_model_free(m);
    aq_model_free(om);
    aq_ctx_free(ctx);
    unlink(src);
    unlink(other);
    rmdir(dir);
}

AQ_TEST_MAIN(AQ_CASE(split_rows_give_the_same_file),
             AQ_CASE(split_rows_give_the_same_file_small_batches_threads),
             AQ_CASE(split_rows_give_the_same_file_with_a_budget),
             AQ_CASE(bad_plans_rows_and_ranges_are_refused))
