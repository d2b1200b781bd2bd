/* GGUF output through the model pipeline's three steps (aq_model_plan_create_gguf,
 * aq_model_execute, aq_model_writer): a GGUF file assembled from rows executed in any division
 * of the tensors, through a serialised plan, on another context, has the bytes of
 * aq_model_to_gguf's; the plan says each tensor's type and why; rows that do not fit the plan
 * are refused with messages naming what is wrong, and leave no file. */
#include "aq_common.h"
#include "aq_test.h"
#include "arrow_builder.h"
#include "model_plan.h"
#include "plan_steps.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensors that take every path of the planner: the options' type, 1-D, the rules' 8 bits
 * (the timestep embedding),
 * rows that are not whole blocks (F16, or Q8_0 for a K type), more than 4 dimensions, values
 * beyond float16, a scalar. */
enum { N_T = 9, CAL_CH = 512 };
static const char *const names[N_T] = {"double_blocks.0.img_attn.proj.weight",
                                       "double_blocks.0.img_attn.proj.bias",
                                       "time_embedding.linear_1.weight",
                                       "odd.weight",
                                       "narrow.weight",
                                       "video.weight",
                                       "big.weight",
                                       "scalar",
                                       "final_layer.linear.weight"};
static int64_t sh_proj[2] = {64, 512}, sh_bias[1] = {64}, sh_in[2] = {96, 256},
               sh_odd[2] = {48, 100}, sh_narrow[2] = {40, 96}, sh_video[5] = {4, 2, 2, 2, 256},
               sh_big[2] = {4, 100}, sh_final[2] = {16, 768};
static char dir[256];

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static aq_status write_source(const char *path, aq_error *err)
{
    const aq_st_spec specs[N_T] = {
        {names[0], AQ_ST_F32, NULL, sh_proj, 2, 64 * 512 * 4},
        {names[1], AQ_ST_BF16, NULL, sh_bias, 1, 64 * 2},
        {names[2], AQ_ST_F32, NULL, sh_in, 2, 96 * 256 * 4},
        {names[3], AQ_ST_F32, NULL, sh_odd, 2, 48 * 100 * 4},
        {names[4], AQ_ST_F32, NULL, sh_narrow, 2, 40 * 96 * 4},
        {names[5], AQ_ST_F32, NULL, sh_video, 5, 32 * 256 * 4},
        {names[6], AQ_ST_F32, NULL, sh_big, 2, 4 * 100 * 4},
        {names[7], AQ_ST_F32, NULL, NULL, 0, 4},
        {names[8], AQ_ST_F32, NULL, sh_final, 2, 16 * 768 * 4},
    };
    const char *keys[2] = {"format", "source"}, *values[2] = {"pt", "unit test"};
    aq_st_writer *w;
    aq_status st = aq_st_writer_open(path, specs, N_T, keys, values, 2, &w, err);
    uint64_t seed = 5;
    for (size_t i = 0; st == AQ_OK && i < N_T; i++) {
        const size_t elem = specs[i].dtype == AQ_ST_BF16 ? 2 : 4;
        for (size_t k = 0; st == AQ_OK && k < specs[i].nbytes / elem; k++) {
            float x = i == 6 ? 1e6f : (float)(aq_test_rand_normal(&seed) * 0.02);
            uint16_t b = aq__f32_to_bf16(x);
            st = aq_st_writer_write(w, elem == 2 ? (const void *)&b : (const void *)&x, elem, err);
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

/* Statistics for the attention projection (its 512 input channels, two timestep groups). */
/* A fresh temporary directory (dir) with the test checkpoint in it, at src. */
static aq_status make_source(char *src, size_t n, aq_error *err)
{
    snprintf(dir, sizeof dir, "/tmp/aq_gguf_plan_test_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        return aq__error_set(err, AQ_IO, "mkdtemp %s: %s", dir, strerror(errno));
    }
    path_in(src, n, "src.safetensors");
    return write_source(src, err);
}

static aq_status make_calib(aq_calib **out, aq_error *err)
{
    const char *layer[2] = {"double_blocks.0.img_attn.proj", "double_blocks.0.img_attn.proj"};
    int64_t groups[2] = {0, 1}, lens[2] = {CAL_CH, CAL_CH};
    double ms[2 * CAL_CH];
    for (int g = 0; g < 2; g++) {
        for (int c = 0; c < CAL_CH; c++) {
            ms[g * CAL_CH + c] = (c + g) % 8 == 0 ? 400.0 : 1.0 + 0.01 * c;
        }
    }
    tb_node cols[3];
    cols[0] = tb_strings("u", "layer_name", layer, NULL, 2);
    cols[1] = tb_prim("l", "timestep_group", groups, 8, 2, NULL);
    cols[2] =
        tb_list("+l", "mean_square", tb_prim("g", "item", ms, 8, 2 * CAL_CH, NULL), lens, 2, NULL);
    tb_node batch = tb_struct("", cols, 3, 2);
    aq_calib *c = NULL;
    aq_status st = aq_calib_create(&c, err);
    if (st == AQ_OK && (st = aq_calib_add_batch(c, batch.s, batch.a, err)) == AQ_OK) {
        st = aq_calib_finish(c, AQ_CALIB_COMBINE_MAX, err);
    }
    tb_free(batch);
    if (st != AQ_OK) {
        aq_calib_free(c);
        return st;
    }
    *out = c;
    return AQ_OK;
}

/* One run's set-up: the model, the planning context (gguf_search as given), the options. */
typedef struct run {
    aq_ctx *ctx;
    aq_model *m;
    aq_rules *rules;
    aq_calib *calib;
    aq_gguf_write_options o;
} run;

static void run_open(run *r, const char *src, aq_gguf_type type, bool ruled, int search)
{
    aq_error err;
    memset(r, 0, sizeof *r);
    CHECK_OK(aq_ctx_create(&r->ctx, &err));
    CHECK_OK(aq_ctx_set_param(r->ctx, AQ_PARAM_GGUF_SEARCH, search, &err));
    CHECK_OK(aq_model_open(src, &r->m, &err));
    CHECK_OK(make_calib(&r->calib, &err));
    aq_gguf_write_options o = AQ_SIZED_INIT(aq_gguf_write_options);
    r->o = o;
    r->o.type = type;
    r->o.calib = r->calib;
    r->o.name = "split test";
    if (ruled) {
        aq_profile p;
        CHECK_OK(aq_profile_get("local", &p, &err));
        CHECK_OK(aq_rules_create(AQ_FAMILY_AUTO, &p, names, N_T, &r->rules, &err));
        r->o.rules = r->rules;
    }
}

static void run_close(run *r)
{
    aq_rules_free(r->rules);
    aq_calib_free(r->calib);
    aq_model_free(r->m);
    aq_ctx_free(r->ctx);
}

/* Executes [cuts[k], cuts[k+1]) for each k on another context (two threads, gguf_search at
 * its default) and another opening of the model, from the plan read back from bytes, and
 * writes the rows in order into out. */
static void split_run(run *r, const char *src, const char *out, const size_t *cuts, size_t n_cuts)
{
    aq_error err;
    aq_model_plan *plan;
    CHECK_OK(aq_model_plan_create_gguf(r->ctx, r->m, &r->o, &plan, &err));
    CHECK(aq_model_plan_count(plan) == N_T);
    aq_model_plan *back;
    CHECK_OK(plan_read_back(plan, &back, &err));
    aq_ctx *wctx;
    CHECK_OK(aq_ctx_create(&wctx, &err));
    CHECK_OK(aq_ctx_set_param(wctx, AQ_PARAM_THREADS, 2, &err));
    aq_model *wm;
    CHECK_OK(aq_model_open(src, &wm, &err));
    aq_model_execute_options eo = AQ_SIZED_INIT(aq_model_execute_options);
    eo.calib = r->calib;
    aq_model_writer *w;
    CHECK_OK(aq_model_writer_open(plan, out, NULL, &w, &err));
    CHECK_OK(ranges_append(wctx, wm, back, cuts, n_cuts, &eo, w, &err));
    aq_model_summary s;
    CHECK_OK(aq_model_writer_close(w, &s, &err));
    struct stat sb;
    CHECK(stat(out, &sb) == 0 && s.bytes_out == (size_t)sb.st_size);
    CHECK(s.tensors == N_T && s.kept + s.quantized == N_T && s.quantized >= 3);
    aq_model_writer_free(w);
    aq_model_plan_free(back);
    aq_model_plan_free(plan);
    aq_model_free(wm);
    aq_ctx_free(wctx);
}

static void check_split(aq_gguf_type type, bool ruled, int search)
{
    aq_error err;
    char src[300], whole[300], split[300], single[300], each[300];
    CHECK_OK(make_source(src, sizeof src, &err));
    path_in(whole, sizeof whole, "whole.gguf");
    path_in(split, sizeof split, "split.gguf");
    path_in(single, sizeof single, "single.gguf");
    path_in(each, sizeof each, "each.gguf");
    run r;
    run_open(&r, src, type, ruled, search);
    aq_gguf_write_summary gs;
    CHECK_OK(aq_model_to_gguf(r.ctx, r.m, whole, &r.o, &gs, &err));
    CHECK(gs.tensors == N_T);
    /* Uneven ranges, the whole model in one, every tensor alone. */
    static const size_t cuts[] = {0, 3, 4, 7, N_T};
    split_run(&r, src, split, cuts, sizeof cuts / sizeof cuts[0]);
    CHECK_SAME_FILE(whole, split);
    static const size_t all[] = {0, N_T};
    split_run(&r, src, single, all, 2);
    CHECK_SAME_FILE(whole, single);
    size_t ones[N_T + 1];
    for (size_t i = 0; i <= N_T; i++) {
        ones[i] = i;
    }
    split_run(&r, src, each, ones, N_T + 1);
    CHECK_SAME_FILE(whole, each);
    run_close(&r);
    const char *files[] = {src, whole, split, single, each};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        unlink(files[i]);
    }
    rmdir(dir);
}

TEST(split_rows_give_the_same_gguf)
{
    check_split(AQ_GGUF_Q4_K, false, 1);
}

TEST(split_rows_give_the_same_gguf_with_rules_and_no_search)
{
    /* The rules' 8 bits give Q8_0, which gguf_search none rounds as ggml does: the executors'
     * context searches, so the bytes hold only if the plan carries gguf_search. */
    check_split(AQ_GGUF_Q3_K, true, 0);
}

/* Each tensor's report, kept to compare two runs. */
typedef struct reports {
    size_t n;
    aq_gguf_tensor_result r[N_T];
    char names[N_T][64];
    char reasons[N_T][32];
} reports;

static void keep_report(void *user, const aq_gguf_tensor_result *res)
{
    reports *k = user;
    CHECK(k->n < N_T);
    k->r[k->n] = *res;
    snprintf(k->names[k->n], sizeof k->names[k->n], "%s", res->name);
    snprintf(k->reasons[k->n], sizeof k->reasons[k->n], "%s", res->reason);
    k->n++;
}

static bool same_double(double a, double b)
{
    return memcmp(&a, &b, sizeof a) == 0;
}

/* What a writer's on_tensor and progress say of each row (aq_model_writer_options). */
typedef struct model_reports {
    size_t n, progress;
    aq_model_tensor_result r[N_T];
    aq_model_progress last;
    bool in_order;
} model_reports;

static void keep_model_report(void *user, const aq_model_tensor_result *res)
{
    model_reports *k = user;
    CHECK(k->n < N_T);
    k->r[k->n++] = *res;
}

static void keep_progress(void *user, const aq_model_progress *p)
{
    model_reports *k = user;
    k->in_order = k->in_order && p->tensors_done == k->progress + 1 && p->current != NULL;
    k->progress++;
    k->last = *p;
}

/* The writer's model-file reports of a GGUF file's rows agree with its GGUF reports g. */
static void same_model_reports(const model_reports *m, const reports *g)
{
    CHECK(m->n == N_T && m->progress == N_T && m->in_order);
    CHECK(m->last.tensors_done == N_T && m->last.tensors_total == N_T);
    CHECK(m->last.bytes_done == m->last.bytes_total && m->last.bytes_total > 0);
    for (size_t i = 0; i < N_T; i++) {
        const aq_model_tensor_result *r = &m->r[i];
        const bool is_float = g->r[i].type == AQ_GGUF_F32 || g->r[i].type == AQ_GGUF_F16 ||
                              g->r[i].type == AQ_GGUF_BF16;
        CHECK(r->index == i && strcmp(r->name, g->names[i]) == 0);
        CHECK(r->kept == (is_float ? 1 : 0) && r->elements == g->r[i].elements);
        CHECK(r->bytes == g->r[i].bytes && same_double(r->sqnr_db, g->r[i].sqnr_db));
        CHECK(same_double(r->cosine, g->r[i].cosine) && !r->moved);
    }
}

static void same_reports(const reports *a, const reports *b)
{
    CHECK(a->n == N_T && b->n == N_T);
    for (size_t i = 0; i < N_T; i++) {
        CHECK(a->r[i].index == b->r[i].index && a->r[i].type == b->r[i].type);
        CHECK(a->r[i].elements == b->r[i].elements && a->r[i].bytes == b->r[i].bytes);
        CHECK(same_double(a->r[i].sqnr_db, b->r[i].sqnr_db));
        CHECK(same_double(a->r[i].cosine, b->r[i].cosine));
        CHECK(strcmp(a->names[i], b->names[i]) == 0 && strcmp(a->reasons[i], b->reasons[i]) == 0);
    }
}

/* aq_model_to_gguf_plan from a plan read back from bytes, on another context and another
 * opening of the model: the bytes, reports and summary of aq_model_to_gguf. */
static void check_follow(aq_gguf_type type, bool ruled, int search)
{
    aq_error err;
    char src[300], whole[300], followed[300];
    CHECK_OK(make_source(src, sizeof src, &err));
    path_in(whole, sizeof whole, "whole.gguf");
    path_in(followed, sizeof followed, "followed.gguf");
    run r;
    run_open(&r, src, type, ruled, search);
    reports a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    r.o.on_tensor = keep_report;
    r.o.on_tensor_user = &a;
    aq_gguf_write_summary sa, sb;
    CHECK_OK(aq_model_to_gguf(r.ctx, r.m, whole, &r.o, &sa, &err));
    r.o.on_tensor = NULL;
    aq_model_plan *plan;
    CHECK_OK(aq_model_plan_create_gguf(r.ctx, r.m, &r.o, &plan, &err));
    aq_model_plan *back;
    CHECK_OK(plan_read_back(plan, &back, &err));
    aq_model_plan_free(plan);
    aq_ctx *wctx;
    CHECK_OK(aq_ctx_create(&wctx, &err));
    CHECK_OK(aq_ctx_set_param(wctx, AQ_PARAM_THREADS, 2, &err));
    aq_model *wm;
    CHECK_OK(aq_model_open(src, &wm, &err));
    /* Only the callbacks and the calibration are read: another type and no rules change
     * nothing. */
    aq_gguf_write_options wo = AQ_SIZED_INIT(aq_gguf_write_options);
    wo.type = AQ_GGUF_Q8_0;
    wo.calib = r.calib;
    wo.on_tensor = keep_report;
    wo.on_tensor_user = &b;
    CHECK_OK(aq_model_to_gguf_plan(wctx, wm, back, followed, &wo, &sb, &err));
    CHECK_SAME_FILE(whole, followed);
    CHECK(memcmp(&sa, &sb, sizeof sa) == 0);
    same_reports(&a, &b);
    /* The writer from rows executed in two ranges: the same bytes, reports and summary. */
    reports c;
    memset(&c, 0, sizeof c);
    model_reports mr;
    memset(&mr, 0, sizeof mr);
    mr.in_order = true;
    aq_model_writer_options mo = AQ_SIZED_INIT(aq_model_writer_options);
    mo.on_gguf_tensor = keep_report;
    mo.on_gguf_tensor_user = &c;
    mo.on_tensor = keep_model_report;
    mo.on_tensor_user = &mr;
    mo.progress = keep_progress;
    mo.progress_user = &mr;
    aq_model_execute_options eo = AQ_SIZED_INIT(aq_model_execute_options);
    eo.calib = r.calib;
    aq_model_writer *w;
    char rowed[300];
    path_in(rowed, sizeof rowed, "rowed.gguf");
    CHECK_OK(aq_model_writer_open(back, rowed, &mo, &w, &err));
    static const size_t cuts[] = {0, 5, N_T};
    for (size_t k = 0; k + 1 < 3; k++) {
        struct ArrowSchema sc;
        struct ArrowArray rows;
        CHECK_OK(aq_model_execute(wctx, wm, back, cuts[k], cuts[k + 1], &eo, &sc, &rows, &err));
        CHECK_OK(aq_model_writer_append(w, &sc, &rows, &err));
        rows.release(&rows);
        sc.release(&sc);
    }
    aq_gguf_write_summary sw;
    CHECK_OK(aq_model_writer_close_gguf(w, &sw, &err));
    aq_model_writer_free(w);
    CHECK_SAME_FILE(whole, rowed);
    CHECK(memcmp(&sa, &sw, sizeof sa) == 0);
    same_reports(&a, &c);
    /* on_tensor and progress report every row as a model file's writer does. */
    same_model_reports(&mr, &c);
    unlink(rowed);
    /* Without the calibration the plan was made with: refused, nothing written. */
    unlink(followed);
    wo.calib = NULL;
    CHECK(aq_model_to_gguf_plan(wctx, wm, back, followed, &wo, NULL, &err) == AQ_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "calibration") != NULL);
    struct stat st;
    CHECK(stat(followed, &st) != 0);
    /* A model file's plan is refused here, a GGUF plan by aq_model_quantize_plan. */
    aq_model_plan *mplan;
    CHECK_OK(aq_model_plan_create(r.ctx, r.m, NULL, &mplan, &err));
    wo.calib = r.calib;
    CHECK(aq_model_to_gguf_plan(wctx, wm, mplan, followed, &wo, NULL, &err) == AQ_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "model file's") != NULL);
    char arrow_out[300];
    path_in(arrow_out, sizeof arrow_out, "out.arrow");
    aq_model_quantize_options qo = AQ_SIZED_INIT(aq_model_quantize_options);
    qo.calib = r.calib;
    CHECK(aq_model_quantize_plan(wctx, wm, back, arrow_out, &qo, NULL, &err) ==
          AQ_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "GGUF file's") != NULL);
    CHECK(stat(arrow_out, &st) != 0 && stat(followed, &st) != 0);
    /* The GGUF reports and summary are a GGUF writer's only. */
    CHECK(aq_model_writer_open(mplan, arrow_out, &mo, &w, &err) == AQ_INVALID_ARGUMENT);
    CHECK_OK(aq_model_writer_open(mplan, arrow_out, NULL, &w, &err));
    CHECK(aq_model_writer_close_gguf(w, &sw, &err) == AQ_INVALID_ARGUMENT);
    aq_model_writer_free(w);
    CHECK(stat(arrow_out, &st) != 0);
    aq_model_plan_free(mplan);
    aq_model_plan_free(back);
    aq_model_free(wm);
    aq_ctx_free(wctx);
    run_close(&r);
    unlink(src);
    unlink(whole);
    rmdir(dir);
}

TEST(a_followed_plan_gives_the_same_gguf_and_reports)
{
    check_follow(AQ_GGUF_Q4_K, false, 1);
}

TEST(a_followed_plan_gives_the_same_gguf_with_rules_and_no_search)
{
    check_follow(AQ_GGUF_Q3_K, true, 0);
}

/* The plan's decisions, as aq_model_plan_tensor_get gives them. */
TEST(the_plan_says_each_type_and_why)
{
    aq_error err;
    char src[300];
    CHECK_OK(make_source(src, sizeof src, &err));
    run r;
    run_open(&r, src, AQ_GGUF_Q4_K, true, 1);
    aq_model_plan *plan;
    CHECK_OK(aq_model_plan_create_gguf(r.ctx, r.m, &r.o, &plan, &err));
    static const struct {
        aq_gguf_type type;
        const char *reason;
    } want[N_T] = {
        {AQ_GGUF_Q4_K, "profile"}, {AQ_GGUF_F32, "1-D"},    {AQ_GGUF_Q8_0, "time_embedding"},
        {AQ_GGUF_F16, "block"},    {AQ_GGUF_Q8_0, "block"}, {AQ_GGUF_Q4_K, "profile"},
        {AQ_GGUF_F32, "range"},    {AQ_GGUF_F32, "1-D"},    {AQ_GGUF_Q4_K, "profile"}};
    for (size_t i = 0; i < N_T; i++) {
        aq_model_plan_tensor t = AQ_SIZED_INIT(aq_model_plan_tensor);
        CHECK_OK(aq_model_plan_tensor_get(plan, i, &t, &err));
        CHECK_MSG(t.gguf_type == (int)want[i].type && strcmp(t.gguf_reason, want[i].reason) == 0,
                  "%s: %s (%s), expected %s (%s)", t.name, aq_gguf_type_name(t.gguf_type),
                  t.gguf_reason, aq_gguf_type_name(want[i].type), want[i].reason);
        size_t block, bytes;
        CHECK_OK(aq_gguf_type_info(want[i].type, &block, &bytes, NULL, &err));
        CHECK(t.gguf_bytes == t.elements / block * bytes);
        CHECK(t.kept == (want[i].type == AQ_GGUF_F32 || want[i].type == AQ_GGUF_F16));
    }
    /* A model file's plan says no GGUF type. */
    aq_model_plan *mp;
    CHECK_OK(aq_model_plan_create(r.ctx, r.m, NULL, &mp, &err));
    aq_model_plan_tensor t = AQ_SIZED_INIT(aq_model_plan_tensor);
    CHECK_OK(aq_model_plan_tensor_get(mp, 0, &t, &err));
    CHECK(t.gguf_type == -1 && t.gguf_reason == NULL);
    aq_model_plan_free(mp);
    aq_model_plan_free(plan);
    run_close(&r);
    unlink(src);
    rmdir(dir);
}

/* Rows out of order, missing, damaged, of another type or of the other kind of plan. */
TEST(bad_gguf_rows_are_refused)
{
    aq_error err;
    char src[300], out[300];
    CHECK_OK(make_source(src, sizeof src, &err));
    path_in(out, sizeof out, "out.gguf");
    run r;
    run_open(&r, src, AQ_GGUF_Q4_K, false, 1);
    aq_model_plan *plan, *plan5, *mplan;
    CHECK_OK(aq_model_plan_create_gguf(r.ctx, r.m, &r.o, &plan, &err));
    r.o.type = AQ_GGUF_Q5_K;
    CHECK_OK(aq_model_plan_create_gguf(r.ctx, r.m, &r.o, &plan5, &err));
    CHECK_OK(aq_model_plan_create(r.ctx, r.m, NULL, &mplan, &err));
    aq_model_execute_options eo = AQ_SIZED_INIT(aq_model_execute_options);
    eo.calib = r.calib;
    struct ArrowSchema sc;
    struct ArrowArray rows;
    /* Execute needs the plan's calibration. */
    CHECK_FAILS(aq_model_execute(r.ctx, r.m, plan, 0, 1, NULL, &sc, &rows, &err),
                AQ_INVALID_ARGUMENT, "the plan was made with a calibration");
    aq_model_writer *w;
    CHECK_OK(aq_model_writer_open(plan, out, NULL, &w, &err));
    /* Out of order. */
    CHECK_OK(aq_model_execute(r.ctx, r.m, plan, 1, 3, &eo, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "'double_blocks.0.img_attn.proj.bias' came where tensor 0 of the plan, "
                "'double_blocks.0.img_attn.proj.weight', was expected");
    rows.release(&rows);
    sc.release(&sc);
    /* Another type's rows. */
    CHECK_OK(aq_model_execute(r.ctx, r.m, plan5, 0, 1, &eo, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "tensor 'double_blocks.0.img_attn.proj.weight' is Q4_K of 18432 bytes in the "
                "plan: its row is Q5_K of 22528 bytes");
    rows.release(&rows);
    sc.release(&sc);
    /* Damaged on the way. */
    CHECK_OK(aq_model_execute(r.ctx, r.m, plan, 0, 1, &eo, &sc, &rows, &err));
    uint8_t *data = (uint8_t *)rows.children[2]->buffers[2];
    data[100] ^= 1;
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "its checksum does not match its bytes");
    data[100] ^= 1;
    CHECK_OK(aq_model_writer_append(w, &sc, &rows, &err));
    rows.release(&rows);
    sc.release(&sc);
    /* A model file's rows. */
    CHECK_OK(aq_model_execute(r.ctx, r.m, mplan, 1, 2, NULL, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "the columns of GGUF rows");
    rows.release(&rows);
    sc.release(&sc);
    /* One missing at close: nothing under the name. */
    aq_model_summary s;
    CHECK_FAILS(aq_model_writer_close(w, &s, &err), AQ_INVALID_DATA,
                "1 of the plan's 9 tensors were appended; the first missing is "
                "'double_blocks.0.img_attn.proj.bias'");
    aq_model_writer_free(w);
    CHECK_MSG(!aq_test_exists(out), "%s exists after a writer that was never complete", out);
    /* GGUF rows to a model file's writer. */
    CHECK_OK(aq_model_writer_open(mplan, out, NULL, &w, &err));
    CHECK_OK(aq_model_execute(r.ctx, r.m, plan, 0, 1, &eo, &sc, &rows, &err));
    CHECK_FAILS(aq_model_writer_append(w, &sc, &rows, &err), AQ_INVALID_DATA,
                "a struct of the model file's 13 columns (then 'initial_cosine', optionally) "
                "was expected");
    rows.release(&rows);
    sc.release(&sc);
    aq_model_writer_free(w);
    CHECK(!aq_test_exists(out));
    aq_model_plan_free(mplan);
    aq_model_plan_free(plan5);
    aq_model_plan_free(plan);
    run_close(&r);
    unlink(src);
    rmdir(dir);
}

/* A GGUF plan read back keeps its decisions; bytes whose decisions the planner would not make
 * (a size that is not the type's, a type that cannot be written) are refused by tensor. */
TEST(gguf_plans_read_back_checked)
{
    aq_error err;
    char src[300];
    CHECK_OK(make_source(src, sizeof src, &err));
    run r;
    run_open(&r, src, AQ_GGUF_Q5_0, false, 0);
    aq_model_plan *plan, *back;
    CHECK_OK(aq_model_plan_create_gguf(r.ctx, r.m, &r.o, &plan, &err));
    CHECK_OK(plan_read_back(plan, &back, &err));
    CHECK(back->format == AQ__PLAN_GGUF && back->gguf_type == AQ_GGUF_Q5_0 &&
          back->gguf_search == 0 && back->calibrated == 1 && back->n_meta == 2 &&
          strcmp(back->meta_keys[1], "source") == 0 && strcmp(back->gguf_name, "split test") == 0 &&
          back->arch != NULL && strcmp(back->arch, "flux") == 0);
    for (size_t i = 0; i < N_T; i++) {
        CHECK(back->t[i].gguf_type == plan->t[i].gguf_type &&
              back->t[i].gguf_bytes == plan->t[i].gguf_bytes &&
              strcmp(back->t[i].reason, plan->t[i].reason) == 0);
    }
    aq_model_plan_free(back);
    void *bytes;
    size_t len;
    plan->t[3].gguf_bytes += 2;
    CHECK_OK(aq_model_plan_serialize(plan, &bytes, &len, &err));
    CHECK_FAILS(aq_model_plan_deserialize(bytes, len, &back, &err), AQ_INVALID_DATA,
                "tensor 3 ('odd.weight')");
    aq_model_plan_bytes_free(bytes);
    plan->t[3].gguf_bytes -= 2;
    plan->t[0].gguf_type = AQ_GGUF_Q4_1; /* read, never written */
    CHECK_OK(aq_model_plan_serialize(plan, &bytes, &len, &err));
    CHECK_FAILS(aq_model_plan_deserialize(bytes, len, &back, &err), AQ_INVALID_DATA,
                "is not a decision the planner makes");
    aq_model_plan_bytes_free(bytes);
    aq_model_plan_free(plan);
    run_close(&r);
    unlink(src);
    rmdir(dir);
}

AQ_TEST_MAIN(AQ_CASE(split_rows_give_the_same_gguf),
             AQ_CASE(split_rows_give_the_same_gguf_with_rules_and_no_search),
             AQ_CASE(a_followed_plan_gives_the_same_gguf_and_reports),
             AQ_CASE(a_followed_plan_gives_the_same_gguf_with_rules_and_no_search),
             AQ_CASE(the_plan_says_each_type_and_why), AQ_CASE(bad_gguf_rows_are_refused),
             AQ_CASE(gguf_plans_read_back_checked))
