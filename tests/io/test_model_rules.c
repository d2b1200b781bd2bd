/* The diffusion layer rules in the model pipeline (aq_model_quantize_options.rules): each
 * tensor kept, at 8 bits or at the profile's bits as aq_rules_decide says, the rule reported per
 * tensor, and the refusals (contradictory overrides, an impossible budget) leaving no file.
 * Runs under ASan/UBSan in scripts/test. */
#include "aq_common.h"
#include "aq_test.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MR_N = 6 };
static int64_t mr_in[4] = {64, 4, 3, 3};
static int64_t mr_vec[1] = {64};
static int64_t mr_sq[2] = {64, 64};
static int64_t mr_out[4] = {4, 64, 3, 3};
static int64_t mr_steps[1] = {4};

static aq_status mr_source(const char *path, aq_error *err)
{
    aq_st_spec specs[MR_N] = {
        {"conv_in.weight", AQ_ST_F32, NULL, mr_in, 4, 64 * 36 * 4},
        {"conv_in.bias", AQ_ST_F32, NULL, mr_vec, 1, 64 * 4},
        {"time_embedding.linear_1.weight", AQ_ST_F32, NULL, mr_sq, 2, 64 * 64 * 4},
        {"down_blocks.0.resnets.0.conv1.weight", AQ_ST_F32, NULL, mr_sq, 2, 64 * 64 * 4},
        {"conv_out.weight", AQ_ST_F32, NULL, mr_out, 4, 4 * 576 * 4},
        {"steps", AQ_ST_I64, NULL, mr_steps, 1, 4 * 8},
    };
    aq_st_writer *w = NULL;
    aq_status st = aq_st_writer_open(path, specs, MR_N, NULL, NULL, 0, &w, err);
    uint64_t seed = 11;
    for (size_t k = 0; st == AQ_OK && k < MR_N - 1; k++) {
        for (size_t i = 0; st == AQ_OK && i < specs[k].nbytes / 4; i++) {
            float x = (float)aq_test_rand_normal(&seed);
            st = aq_st_writer_write(w, &x, 4, err);
        }
    }
    for (int64_t i = 0; st == AQ_OK && i < 4; i++) {
        st = aq_st_writer_write(w, &i, 8, err);
    }
    if (st == AQ_OK) {
        st = aq_st_writer_finish(w, err);
    }
    if (w != NULL) {
        aq_st_writer_free(w);
    }
    return st;
}

typedef struct mr_seen {
    aq_model_tensor_result r[MR_N];
    size_t n;
} mr_seen;

static void mr_on_tensor(void *user, const aq_model_tensor_result *r)
{
    mr_seen *s = user;
    if (s->n < MR_N) {
        s->r[s->n++] = *r;
    }
}

static aq_rules *mr_rules(aq_model *m, const char *profile)
{
    const char *names[MR_N];
    for (size_t i = 0; i < MR_N; i++) {
        names[i] = aq_model_tensor(m, i)->name;
    }
    aq_profile p;
    aq_rules *r = NULL;
    aq_error err;
    if (aq_profile_get(profile, &p, &err) != AQ_OK ||
        aq_rules_create(AQ_FAMILY_AUTO, &p, names, MR_N, &r, &err) != AQ_OK) {
        abort();
    }
    return r;
}

TEST(rules_decide_every_tensor)
{
    aq_error err;
    char dir[64] = "/tmp/aq_model_rules_XXXXXX", src[320], arrow[320];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(src, sizeof src, "%s/src.safetensors", dir);
    snprintf(arrow, sizeof arrow, "%s/m.arrow", dir);
    CHECK_OK(mr_source(src, &err));
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    aq_model *m;
    CHECK_OK(aq_model_open(src, &m, &err));
    aq_rules *rules = mr_rules(m, "edge");
    mr_seen seen;
    memset(&seen, 0, sizeof seen);
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.rules = rules;
    o.profile = "edge";
    o.on_tensor = mr_on_tensor;
    o.on_tensor_user = &seen;
    aq_model_summary s;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(s.quantized == 4 && s.kept == 2 && seen.n == MR_N);
    static const char *rule[MR_N] = {"first_layer", "bias",       "time_embedding",
                                     "profile",     "last_layer", "not float"};
    static const unsigned bits[MR_N] = {8, 0, 8, 2, 8, 0};
    for (size_t i = 0; i < MR_N; i++) {
        CHECK(seen.r[i].rule != NULL && strcmp(seen.r[i].rule, rule[i]) == 0);
        CHECK(seen.r[i].kept == (bits[i] == 0));
        CHECK(seen.r[i].kept ||
              (seen.r[i].bit_width == bits[i] && seen.r[i].scheme == AQ_SCHEME_KQUANT));
    }
    aq_qmodel *qm;
    CHECK_OK(aq_qmodel_open(arrow, &qm, &err));
    CHECK(strcmp(aq_qmodel_metadata(qm, "arrowquant.profile"), "edge") == 0);
    const aq_qmodel_row *r;
    for (size_t i = 0; i < MR_N; i++) {
        CHECK_OK(aq_qmodel_next(qm, &r, &err));
        CHECK(r != NULL);
        CHECK(bits[i] == 0 ? r->raw != 0 : (r->bit_width == bits[i] && !r->raw));
    }
    aq_qmodel_free(qm);
    unlink(arrow);

    /* Overrides that disagree about one tensor: refused before the file is opened. */
    CHECK_OK(aq_rules_add_override(rules, "conv_*", AQ_RULES_KEEP, &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "*.weight=4", &err));
    CHECK(aq_model_quantize(ctx, m, arrow, &o, &s, &err) == AQ_INVALID_ARGUMENT);
    CHECK(strstr(err.message, "conv_in.weight") != NULL);
    CHECK(access(arrow, F_OK) != 0);
    /* A budget with rules chooses only for the profile tensors (test_model_calib.c); one
     * below their smallest layout is refused, leaving no file. */
    aq_rules_free(rules);
    o.rules = rules = mr_rules(m, "local");
    o.target_bpw = 1.0;
    CHECK(aq_model_quantize(ctx, m, arrow, &o, &s, &err) == AQ_INVALID_PARAMETER);
    CHECK(access(arrow, F_OK) != 0);
    /* Without rules nothing reports a rule. */
    memset(&seen, 0, sizeof seen);
    o.rules = NULL;
    o.target_bpw = 0.0;
    o.min_elements = 100;
    CHECK_OK(aq_model_quantize(ctx, m, arrow, &o, &s, &err));
    CHECK(seen.n == MR_N && seen.r[0].rule == NULL);
    aq_rules_free(rules);
    aq_model_free(m);
    aq_ctx_free(ctx);
    unlink(arrow);
    unlink(src);
    rmdir(dir);
}

AQ_TEST_MAIN(AQ_CASE(rules_decide_every_tensor))
