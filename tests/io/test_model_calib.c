/* Calibration and budgets with layer rules in the model pipeline (aq_model_quantize_options
 * .calib and .budget_scope): importance from a calibration table read from an Arrow IPC file
 * changes what the searched and two-level schemes write and lowers the importance-weighted
 * error; a table for other layers fails before any file exists; a budget with rules, over the
 * profile tensors or over the whole model, stays within its bytes and leaves the rule-fixed
 * tensors at their bits; an impossible budget is a clear error and no file. Runs under
 * ASan/UBSan in scripts/test. */
#include "aq_common.h"
#include "aq_test.h"
#include "arrow_builder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MC_N = 8 };
static int64_t mc_in[4] = {64, 4, 3, 3};
static int64_t mc_vec[1] = {64};
static int64_t mc_sq[2] = {64, 64};
static int64_t mc_conv[4] = {64, 64, 3, 3};
static int64_t mc_lin[2] = {64, 1024};
static int64_t mc_out[4] = {4, 64, 3, 3};

static const aq_st_spec mc_specs[MC_N] = {
    {"conv_in.weight", AQ_ST_F32, NULL, mc_in, 4, 64 * 36 * 4},
    {"conv_in.bias", AQ_ST_F32, NULL, mc_vec, 1, 64 * 4},
    {"time_embedding.linear_1.weight", AQ_ST_F32, NULL, mc_sq, 2, 64 * 64 * 4},
    {"down_blocks.0.resnets.0.conv1.weight", AQ_ST_F32, NULL, mc_conv, 4, 64 * 576 * 4},
    {"down_blocks.0.resnets.0.conv2.weight", AQ_ST_F32, NULL, mc_conv, 4, 64 * 576 * 4},
    {"mid_block.attentions.0.proj.weight", AQ_ST_F32, NULL, mc_lin, 2, 64 * 1024 * 4},
    {"conv_out.weight", AQ_ST_F32, NULL, mc_out, 4, 4 * 576 * 4},
    {"conv_out.bias", AQ_ST_F32, NULL, mc_vec, 1, 64 * 4},
};
#define MC_CONV1 3

/* Gaussian weights, heavy-tailed ones (cubed) in conv2, uniform in the projection. */
static aq_status mc_source(const char *path, aq_error *err)
{
    aq_st_spec specs[MC_N];
    memcpy(specs, mc_specs, sizeof specs);
    aq_st_writer *w = NULL;
    aq_status st = aq_st_writer_open(path, specs, MC_N, NULL, NULL, 0, &w, err);
    uint64_t seed = 5;
    for (size_t k = 0; st == AQ_OK && k < MC_N; k++) {
        for (size_t i = 0; st == AQ_OK && i < specs[k].nbytes / 4; i++) {
            double x = aq_test_rand_normal(&seed);
            if (k == 4) {
                x = x * x * x;
            } else if (k == 5) {
                x = aq_test_rand_uniform(&seed) - 0.5;
            }
            float f = (float)x;
            st = aq_st_writer_write(w, &f, 4, err);
        }
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    aq_st_writer_free(w);
    return st;
}

/* A calibration table with 2 timestep groups for `layer` (channels values each): channel c
 * of group g has mean square 1, or 400 for every 8th channel (shifted by g). Written as an
 * Arrow IPC file. */
static aq_status mc_calib_file(const char *path, const char *layer, int64_t channels, aq_error *err)
{
    const char *names[2] = {layer, layer};
    int64_t groups[2] = {0, 1}, lens[2] = {channels, channels};
    double *ms = malloc((size_t)(2 * channels) * sizeof *ms);
    if (ms == NULL) {
        return AQ_NO_MEMORY;
    }
    for (int64_t g = 0; g < 2; g++) {
        for (int64_t c = 0; c < channels; c++) {
            ms[g * channels + c] = (c + g) % 8 == 0 ? 400.0 : 1.0;
        }
    }
    tb_node cols[3];
    cols[0] = tb_strings("u", "layer_name", names, NULL, 2);
    cols[1] = tb_prim("l", "timestep_group", groups, 8, 2, NULL);
    cols[2] = tb_list("+l", "mean_square", tb_prim("g", "item", ms, 8, 2 * channels, NULL), lens, 2,
                      NULL);
    free(ms);
    tb_node batch = tb_struct("", cols, 3, 2);
    aq_ipc_write_options wo = AQ_SIZED_INIT(aq_ipc_write_options);
    wo.format = AQ_IPC_FORMAT_FILE;
    aq_ipc_writer *w = NULL;
    aq_status st = aq_ipc_writer_open(path, batch.s, &wo, &w, err);
    if (st == AQ_OK) {
        st = aq_ipc_writer_write(w, batch.a, err);
    }
    if (st == AQ_OK) {
        st = aq_ipc_writer_close(w, err);
    }
    aq_ipc_writer_free(w);
    tb_free(batch);
    return st;
}

static aq_status mc_calib_load(const char *path, aq_calib **out, aq_error *err)
{
    aq_calib *c = NULL;
    aq_status st = aq_calib_create(&c, err);
    if (st == AQ_OK) {
        st = aq_calib_add_ipc_file(c, path, err);
    }
    if (st == AQ_OK) {
        st = aq_calib_finish(c, AQ_CALIB_COMBINE_MAX, err);
    }
    if (st != AQ_OK) {
        aq_calib_free(c);
        return st;
    }
    *out = c;
    return AQ_OK;
}

typedef struct mc_dir {
    char dir[64], src[320], arrow[320], table[320];
} mc_dir;

static int mc_setup(mc_dir *d, aq_error *err)
{
    snprintf(d->dir, sizeof d->dir, "/tmp/aq_model_calib_XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        return -1;
    }
    snprintf(d->src, sizeof d->src, "%s/src.safetensors", d->dir);
    snprintf(d->arrow, sizeof d->arrow, "%s/m.arrow", d->dir);
    snprintf(d->table, sizeof d->table, "%s/calib.arrow", d->dir);
    return mc_source(d->src, err) == AQ_OK ? 0 : -1;
}

static void mc_teardown(const mc_dir *d)
{
    unlink(d->arrow);
    unlink(d->src);
    unlink(d->table);
    rmdir(d->dir);
}

/* Row `name` of a model file: a copy of its packed codes, and the importance-weighted squared
 * error of its dequantization against src (importance imp, n elements). */
static aq_status mc_row_error(aq_ctx *ctx, const char *path, const char *name, const float *src,
                              const float *imp, size_t n, uint8_t **packed, size_t *packed_size,
                              double *werr, aq_error *err)
{
    aq_qmodel *qm = NULL;
    aq_status st = aq_qmodel_open(path, &qm, err);
    const aq_qmodel_row *r = NULL;
    float *y = malloc(n * sizeof *y);
    if (y == NULL) {
        st = AQ_NO_MEMORY;
    }
    while (st == AQ_OK) {
        if ((st = aq_qmodel_next(qm, &r, err)) != AQ_OK || r == NULL) {
            break;
        }
        if (strcmp(r->name, name) == 0) {
            break;
        }
    }
    if (st == AQ_OK && r == NULL) {
        st = AQ_INTERNAL;
    }
    if (st == AQ_OK) {
        aq_qtensor q;
        memset(&q, 0, sizeof q);
        aq_scheme sc;
        st = aq_scheme_from_name(r->scheme, &sc, err);
        q.name = r->name;
        q.scheme = sc;
        q.bit_width = r->bit_width;
        q.group_size = r->group_size;
        q.shape = r->shape;
        q.ndim = r->ndim;
        q.packed = r->data;
        q.packed_size = r->data_size;
        q.scales = r->scales;
        q.zero_points = r->zero_points;
        q.groups = r->groups;
        if (st == AQ_OK) {
            st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, y, n, err);
        }
    }
    if (st == AQ_OK) {
        double e = 0.0;
        for (size_t i = 0; i < n; i++) {
            double d = (double)src[i] - (double)y[i];
            e += (double)imp[i] * d * d;
        }
        *werr = e;
        *packed_size = r->data_size;
        if ((*packed = malloc(r->data_size)) == NULL) {
            st = AQ_NO_MEMORY;
        } else {
            memcpy(*packed, r->data, r->data_size);
        }
    }
    free(y);
    aq_qmodel_free(qm);
    return st;
}

TEST(calibration_file_errors_name_the_file)
{
    aq_error err;
    mc_dir d;
    CHECK(mc_setup(&d, &err) == 0);
    aq_calib *c = NULL;
    /* Missing file. */
    CHECK(mc_calib_load(d.table, &c, &err) != AQ_OK);
    CHECK_MSG(strstr(err.message, d.table) != NULL, "%s", err.message);
    /* Not an Arrow file: the safetensors source. */
    CHECK(mc_calib_load(d.src, &c, &err) != AQ_OK);
    CHECK_MSG(strstr(err.message, d.src) != NULL, "%s", err.message);
    /* An Arrow file that is not a calibration table: a model file. */
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(d.src, &m, &err));
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, NULL, NULL, &err));
    CHECK(mc_calib_load(d.arrow, &c, &err) == AQ_INVALID_ARGUMENT);
    CHECK_MSG(strstr(err.message, d.arrow) != NULL && strstr(err.message, "timestep_group"), "%s",
              err.message);
    /* A good one. */
    CHECK_OK(mc_calib_file(d.table, "down_blocks.0.resnets.0.conv1", 64, &err));
    CHECK_OK(mc_calib_load(d.table, &c, &err));
    CHECK(aq_calib_layer_count(c) == 1);
    aq_calib_free(c);
    aq_model_free(m);
    aq_ctx_free(ctx);
    mc_teardown(&d);
}

TEST(importance_changes_bytes_and_lowers_weighted_error)
{
    aq_error err;
    mc_dir d;
    CHECK(mc_setup(&d, &err) == 0);
    CHECK_OK(mc_calib_file(d.table, "down_blocks.0.resnets.0.conv1", 64, &err));
    aq_calib *c = NULL;
    CHECK_OK(mc_calib_load(d.table, &c, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(d.src, &m, &err));
    const size_t n = 64 * 576;
    float *imp = malloc(n * sizeof *imp), *src = malloc(n * sizeof *src);
    CHECK(imp != NULL && src != NULL);
    int found = 0;
    CHECK_OK(aq_calib_importance(c, mc_specs[MC_CONV1].name, mc_conv, 4, imp, n, &found, &err));
    CHECK(found == 1);
    aq_tensor v;
    CHECK_OK(aq_model_tensor_view(m, MC_CONV1, &v, &err));
    memcpy(src, v.data, n * sizeof *src);
    static const aq_scheme schemes[3] = {AQ_SCHEME_AFFINE_SEARCH, AQ_SCHEME_KQUANT,
                                         AQ_SCHEME_AFFINE};
    for (size_t k = 0; k < 3; k++) {
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, (int64_t)schemes[k], &err));
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 2, &err));
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 64, &err));
        uint8_t *p[2] = {NULL, NULL};
        size_t ps[2] = {0, 0};
        double we[2] = {0, 0};
        for (int with = 0; with < 2; with++) {
            aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
            o.calib = with ? c : NULL;
            CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, NULL, &err));
            CHECK_OK(mc_row_error(ctx, d.arrow, mc_specs[MC_CONV1].name, src, imp, n, &p[with],
                                  &ps[with], &we[with], &err));
        }
        bool same = ps[0] == ps[1] && memcmp(p[0], p[1], ps[0]) == 0;
        free(p[0]);
        free(p[1]);
        if (schemes[k] == AQ_SCHEME_AFFINE) {
            /* Plain affine ignores importance. */
            CHECK(same && we[0] == we[1]);
        } else {
            CHECK_MSG(!same, "%s: importance changed nothing", aq_scheme_name(schemes[k]));
            CHECK_MSG(we[1] < 0.95 * we[0], "%s: weighted error %g with, %g without",
                      aq_scheme_name(schemes[k]), we[1], we[0]);
        }
    }
    free(imp);
    free(src);
    aq_calib_free(c);
    aq_model_free(m);
    aq_ctx_free(ctx);
    mc_teardown(&d);
}

TEST(calibration_for_other_layers_fails_before_any_file)
{
    aq_error err;
    mc_dir d;
    CHECK(mc_setup(&d, &err) == 0);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, AQ_SCHEME_KQUANT, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(d.src, &m, &err));
    aq_calib *c = NULL;
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    /* A layer the model lacks. */
    CHECK_OK(mc_calib_file(d.table, "down_blocks.7.resnets.0.conv1", 64, &err));
    CHECK_OK(mc_calib_load(d.table, &c, &err));
    o.calib = c;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, NULL, &err) == AQ_INVALID_ARGUMENT);
    CHECK_MSG(strstr(err.message, "down_blocks.7.resnets.0.conv1") != NULL, "%s", err.message);
    CHECK(access(d.arrow, F_OK) != 0);
    aq_calib_free(c);
    unlink(d.table);
    /* A layer the model has, with a channel count that does not fit its weight. */
    CHECK_OK(mc_calib_file(d.table, "down_blocks.0.resnets.0.conv1", 48, &err));
    CHECK_OK(mc_calib_load(d.table, &c, &err));
    o.calib = c;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, NULL, &err) == AQ_SHAPE_MISMATCH);
    CHECK_MSG(strstr(err.message, "48") != NULL, "%s", err.message);
    CHECK(access(d.arrow, F_OK) != 0);
    aq_calib_free(c);
    /* Unfinished statistics. */
    CHECK_OK(aq_calib_create(&c, &err));
    o.calib = c;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, NULL, &err) == AQ_INVALID_ARGUMENT);
    CHECK(access(d.arrow, F_OK) != 0);
    aq_calib_free(c);
    aq_model_free(m);
    aq_ctx_free(ctx);
    mc_teardown(&d);
}

typedef struct mc_seen {
    aq_model_tensor_result r[MC_N];
    size_t n;
} mc_seen;

static void mc_on_tensor(void *user, const aq_model_tensor_result *r)
{
    mc_seen *s = user;
    if (s->n < MC_N) {
        s->r[s->n++] = *r;
    }
}

static aq_rules *mc_rules(aq_model *m, const char *profile)
{
    const char *names[MC_N];
    for (size_t i = 0; i < MC_N; i++) {
        names[i] = aq_model_tensor(m, i)->name;
    }
    aq_profile p;
    aq_rules *r = NULL;
    aq_error err;
    if (aq_profile_get(profile, &p, &err) != AQ_OK ||
        aq_rules_create(AQ_FAMILY_AUTO, &p, names, MC_N, &r, &err) != AQ_OK) {
        abort();
    }
    return r;
}

/* Bytes and parameters of the profile tensors and of all tensors, from the results; fails the
 * test if a rule-fixed tensor is not at 8 bits kquant or a kept one is not raw. */
static void mc_count(const mc_seen *s, size_t *pbytes, size_t *pparams, size_t *bytes,
                     size_t *params, unsigned *bits_seen)
{
    *pbytes = *pparams = *bytes = *params = 0;
    *bits_seen = 0;
    CHECK(s->n == MC_N);
    for (size_t i = 0; i < MC_N; i++) {
        const aq_model_tensor_result *r = &s->r[i];
        CHECK(r->rule != NULL);
        *bytes += r->bytes;
        *params += r->elements;
        if (strcmp(r->rule, "profile") == 0) {
            CHECK(!r->kept && r->scheme == AQ_SCHEME_KQUANT);
            *pbytes += r->bytes;
            *pparams += r->elements;
            *bits_seen |= 1u << r->bit_width;
        } else if (r->kept) {
            CHECK(r->bytes == r->elements * 4); /* float32 kept as it is */
        } else {
            CHECK_MSG(r->bit_width == 8, "%s at %u bits", r->name, r->bit_width);
        }
    }
}

TEST(rules_with_budget_over_profile_and_model)
{
    aq_error err;
    mc_dir d;
    CHECK(mc_setup(&d, &err) == 0);
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(d.src, &m, &err));
    aq_rules *rules = mc_rules(m, "edge");
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.rules = rules;
    o.on_tensor = mc_on_tensor;
    mc_seen seen;
    size_t pb, pp, b, p;
    unsigned bits_seen;
    aq_model_summary s;

    /* Scope profile: the three profile tensors within 3.6 bits per weight. */
    memset(&seen, 0, sizeof seen);
    o.on_tensor_user = &seen;
    o.target_bpw = 3.6;
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
    mc_count(&seen, &pb, &pp, &b, &p, &bits_seen);
    CHECK(pp == 64 * 576 * 2 + 64 * 1024);
    CHECK_MSG((double)pb * 8.0 <= 3.6 * (double)pp, "%zu bytes for %zu weights", pb, pp);
    /* The budget mixes widths (all at 2 bits is about 2.7, all at 4 about 4.6). */
    CHECK_MSG(bits_seen == ((1u << 2) | (1u << 4)), "bits seen 0x%x", bits_seen);

    /* Scope model: every float parameter counts, the fixed and kept bytes included. */
    memset(&seen, 0, sizeof seen);
    o.budget_scope = AQ_BUDGET_SCOPE_MODEL;
    o.target_bpw = 4.0;
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
    mc_count(&seen, &pb, &pp, &b, &p, &bits_seen);
    CHECK_MSG((double)b * 8.0 <= 4.0 * (double)p, "%zu bytes for %zu weights", b, p);
    CHECK(b == s.bytes_out && p == s.params);
    /* More than a profile-scope 4.0 would leave, less than all at 4 bits. */
    CHECK_MSG((double)pb * 8.0 < 4.0 * (double)pp, "%zu bytes for %zu weights", pb, pp);
    CHECK(bits_seen & (1u << 2));

    /* Impossible over the whole model: a clear error giving the smallest reachable figure,
     * and no file. */
    unlink(d.arrow);
    o.target_bpw = 2.0;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err) == AQ_INVALID_PARAMETER);
    CHECK(access(d.arrow, F_OK) != 0);
    const char *need = strstr(err.message, "needs ");
    CHECK_MSG(need != NULL && strstr(err.message, "whole model") != NULL, "%s", err.message);
    double least = strtod(need + 6, NULL);
    CHECK_MSG(least > 2.0 && least < 4.0, "%s", err.message);
    /* ... and that figure (rounded up) is reachable: every profile tensor at 2 bits. */
    memset(&seen, 0, sizeof seen);
    o.target_bpw = least + 1e-4;
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
    mc_count(&seen, &pb, &pp, &b, &p, &bits_seen);
    CHECK(bits_seen == (1u << 2));
    CHECK((double)b * 8.0 <= o.target_bpw * (double)p);
    unlink(d.arrow);

    /* Impossible over the profile tensors. */
    o.budget_scope = AQ_BUDGET_SCOPE_PROFILE;
    o.target_bpw = 2.0;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err) == AQ_INVALID_PARAMETER);
    CHECK_MSG(strstr(err.message, "smallest allocation needs") != NULL, "%s", err.message);
    CHECK(access(d.arrow, F_OK) != 0);
    /* A bad scope. */
    o.budget_scope = (aq_budget_scope)7;
    CHECK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err) == AQ_INVALID_PARAMETER);
    CHECK(access(d.arrow, F_OK) != 0);

    /* The default budget (AQ_TARGET_BPW_PROFILE): the profile's size (edge: 2.625 bits per
     * weight) over every tensor of two or more dimensions, the rules' tensors included, in
     * either scope and with a floor; the rules' 8 bits are preferences the size may refuse. */
    o.min_cosine = 0.9;
    for (int sc = 0; sc < 2; sc++) {
        memset(&seen, 0, sizeof seen);
        o.budget_scope = sc == 0 ? AQ_BUDGET_SCOPE_PROFILE : AQ_BUDGET_SCOPE_MODEL;
        o.target_bpw = AQ_TARGET_BPW_PROFILE;
        CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
        CHECK(seen.n == MC_N);
        size_t cb = 0, cn = 0;
        for (size_t i = 0; i < seen.n; i++) {
            if (aq_model_tensor(m, seen.r[i].index)->ndim >= 2) {
                cb += seen.r[i].bytes;
                cn += seen.r[i].elements;
            }
        }
        CHECK_MSG((double)cb * 8.0 <= 2.625 * (double)cn, "%zu bytes for %zu weights", cb, cn);
    }
    o.min_cosine = 0.0;

    /* An override fixes a profile tensor: the budget leaves it at its bits. */
    CHECK_OK(aq_rules_add_override_spec(rules, "down_blocks.0.resnets.0.conv2.weight=4", &err));
    memset(&seen, 0, sizeof seen);
    o.budget_scope = AQ_BUDGET_SCOPE_MODEL;
    o.target_bpw = 3.6;
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
    CHECK(seen.n == MC_N && strcmp(seen.r[4].rule, "override") == 0 && seen.r[4].bit_width == 4);
    CHECK((double)s.bytes_out * 8.0 <= 3.6 * (double)s.params);

    /* With a calibration too. */
    aq_calib *c = NULL;
    CHECK_OK(mc_calib_file(d.table, "down_blocks.0.resnets.0.conv1", 64, &err));
    CHECK_OK(mc_calib_load(d.table, &c, &err));
    o.calib = c;
    o.min_cosine = 0.5;
    memset(&seen, 0, sizeof seen);
    CHECK_OK(aq_model_quantize(ctx, m, d.arrow, &o, &s, &err));
    CHECK((double)s.bytes_out * 8.0 <= 3.6 * (double)s.params);
    aq_calib_free(c);
    aq_rules_free(rules);
    aq_model_free(m);
    aq_ctx_free(ctx);
    mc_teardown(&d);
}

AQ_TEST_MAIN(AQ_CASE(calibration_file_errors_name_the_file),
             AQ_CASE(importance_changes_bytes_and_lowers_weighted_error),
             AQ_CASE(calibration_for_other_layers_fails_before_any_file),
             AQ_CASE(rules_with_budget_over_profile_and_model))
