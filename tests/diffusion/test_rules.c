/* Layer rules and profiles (src/diffusion) on the tensor names of real diffusers and
 * transformers models (tests/data/diffusion, written by make_fixtures.py). */
#define _POSIX_C_SOURCE 200809L

#include "aq_test.h"
#include "fixture.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct expect8 {
    const char *pattern; /* fnmatch over the tensor name */
    aq_rule rule;
} expect8;

typedef struct expect_keep {
    const char *name;
    aq_rule rule;
} expect_keep;

static bool is_keep_rule(aq_rule r)
{
    return r == AQ_RULE_BIAS || r == AQ_RULE_NORM || r == AQ_RULE_EMBEDDING ||
           r == AQ_RULE_POSITIONAL || r == AQ_RULE_VECTOR;
}

/* Every tensor of the fixture: those matching an expectation go to 8 bits for that reason,
 * biases and tensors of fewer than 2 dimensions are kept, the named tables are kept for their
 * reason, and everything else follows the profile. n8 is the number of 8-bit tensors. */
static void check_model(const char *stem, aq_family family, const expect8 *e8, size_t ne8,
                        size_t n8, const expect_keep *ek, size_t nek)
{
    aq_error err;
    fx_model m;
    CHECK_MSG(fx_load(stem, &m) == 0, "fixture %s", stem);
    CHECK_MSG(aq_family_detect(m.names, m.n) == family, "%s detected as %s, expected %s", stem,
              aq_family_name(aq_family_detect(m.names, m.n)), aq_family_name(family));
    aq_profile edge;
    CHECK_OK(aq_profile_get("edge", &edge, &err));
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_AUTO, &edge, m.names, m.n, &rules, &err));
    size_t eight = 0, kept = 0, profile = 0;
    for (size_t i = 0; i < m.n; i++) {
        const fx_tensor *t = &m.tensors[i];
        aq_rule_decision d;
        CHECK_OK(aq_rules_decide(rules, t->name, t->shape, t->ndim, t->dtype, &d, &err));
        CHECK(d.family == family);
        const expect8 *want = NULL;
        for (size_t k = 0; k < ne8; k++) {
            if (fnmatch(e8[k].pattern, t->name, 0) == 0) {
                want = &e8[k];
            }
        }
        size_t len = strlen(t->name);
        bool bias = len > 5 && strcmp(t->name + len - 5, ".bias") == 0;
        if (want != NULL) {
            CHECK_MSG(!d.keep && d.bit_width == 8 && d.rule == want->rule,
                      "%s: %s got %s/%u bits, expected %s at 8 bits", stem, t->name,
                      aq_rule_name(d.rule), d.bit_width, aq_rule_name(want->rule));
            eight++;
        } else if (bias || t->ndim < 2) {
            CHECK_MSG(d.keep && d.bit_width == 16 && is_keep_rule(d.rule),
                      "%s: %s (%zu dims) got %s, expected kept", stem, t->name, t->ndim,
                      aq_rule_name(d.rule));
            CHECK_MSG(!bias || d.rule == AQ_RULE_BIAS, "%s: %s is a bias", stem, t->name);
            kept++;
        } else if (d.keep) {
            bool listed = false;
            for (size_t k = 0; k < nek; k++) {
                listed |= strcmp(ek[k].name, t->name) == 0;
            }
            CHECK_MSG(listed, "%s: %s kept (%s) but not expected to be", stem, t->name,
                      aq_rule_name(d.rule));
            kept++;
        } else {
            CHECK_MSG(d.rule == AQ_RULE_PROFILE && d.bit_width == 2 && d.scheme == AQ_SCHEME_KQUANT,
                      "%s: %s got %s/%u bits, expected to follow the profile", stem, t->name,
                      aq_rule_name(d.rule), d.bit_width);
            profile++;
        }
    }
    CHECK_MSG(eight == n8, "%s: %zu tensors at 8 bits, expected %zu", stem, eight, n8);
    CHECK_MSG(profile > 0 && kept > 0, "%s: %zu follow the profile, %zu kept", stem, profile, kept);
    for (size_t k = 0; k < nek; k++) {
        long i = fx_find(&m, ek[k].name);
        CHECK_MSG(i >= 0, "%s: no tensor %s", stem, ek[k].name);
        const fx_tensor *t = &m.tensors[i];
        aq_rule_decision d;
        CHECK_OK(aq_rules_decide(rules, t->name, t->shape, t->ndim, t->dtype, &d, &err));
        CHECK_MSG(d.keep && d.rule == ek[k].rule, "%s: %s got %s, expected kept as %s", stem,
                  t->name, aq_rule_name(d.rule), aq_rule_name(ek[k].rule));
    }
    aq_rules_free(rules);
    fx_free(&m);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

TEST(unet2d)
{
    static const expect8 e8[] = {{"conv_in.weight", AQ_RULE_FIRST_LAYER},
                                 {"time_embedding.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
                                 {"*.time_emb_proj.weight", AQ_RULE_MODULATION},
                                 {"conv_out.weight", AQ_RULE_LAST_LAYER}};
    check_model("unet2d", AQ_FAMILY_UNET, e8, N(e8), 12, NULL, 0);
}

TEST(unet2d_condition)
{
    static const expect8 e8[] = {{"conv_in.weight", AQ_RULE_FIRST_LAYER},
                                 {"time_embedding.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
                                 {"add_embedding.linear_?.weight", AQ_RULE_CONDITIONING},
                                 {"*.time_emb_proj.weight", AQ_RULE_MODULATION},
                                 {"conv_out.weight", AQ_RULE_LAST_LAYER}};
    check_model("unet2d_condition", AQ_FAMILY_UNET, e8, N(e8), 14, NULL, 0);
}

TEST(dit)
{
    static const expect8 e8[] = {{"pos_embed.proj.weight", AQ_RULE_FIRST_LAYER},
                                 {"*.timestep_embedder.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
                                 {"*.norm1.linear.weight", AQ_RULE_MODULATION},
                                 {"proj_out_1.weight", AQ_RULE_MODULATION},
                                 {"proj_out_2.weight", AQ_RULE_LAST_LAYER}};
    static const expect_keep ek[] = {
        {"transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight", AQ_RULE_EMBEDDING},
        {"transformer_blocks.1.norm1.emb.class_embedder.embedding_table.weight",
         AQ_RULE_EMBEDDING}};
    check_model("dit", AQ_FAMILY_DIT, e8, N(e8), 9, ek, N(ek));
}

TEST(pixart)
{
    static const expect8 e8[] = {{"pos_embed.proj.weight", AQ_RULE_FIRST_LAYER},
                                 {"*.timestep_embedder.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
                                 {"adaln_single.linear.weight", AQ_RULE_MODULATION},
                                 {"caption_projection.linear_?.weight", AQ_RULE_CONDITIONING},
                                 {"proj_out.weight", AQ_RULE_LAST_LAYER}};
    static const expect_keep ek[] = {{"scale_shift_table", AQ_RULE_EMBEDDING},
                                     {"transformer_blocks.0.scale_shift_table", AQ_RULE_EMBEDDING},
                                     {"transformer_blocks.1.scale_shift_table", AQ_RULE_EMBEDDING}};
    check_model("pixart", AQ_FAMILY_DIT, e8, N(e8), 7, ek, N(ek));
}

TEST(sd3)
{
    static const expect8 e8[] = {{"pos_embed.proj.weight", AQ_RULE_FIRST_LAYER},
                                 {"*.timestep_embedder.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
                                 {"*.text_embedder.linear_?.weight", AQ_RULE_CONDITIONING},
                                 {"context_embedder.weight", AQ_RULE_FIRST_LAYER},
                                 {"*.norm1.linear.weight", AQ_RULE_MODULATION},
                                 {"*.norm1_context.linear.weight", AQ_RULE_MODULATION},
                                 {"norm_out.linear.weight", AQ_RULE_MODULATION},
                                 {"proj_out.weight", AQ_RULE_LAST_LAYER}};
    static const expect_keep ek[] = {{"pos_embed.pos_embed", AQ_RULE_POSITIONAL}};
    check_model("sd3", AQ_FAMILY_MMDIT, e8, N(e8), 12, ek, N(ek));
}

TEST(flux)
{
    static const expect8 e8[] = {
        {"*.timestep_embedder.linear_?.weight", AQ_RULE_TIME_EMBEDDING},
        {"*.guidance_embedder.linear_?.weight", AQ_RULE_CONDITIONING},
        {"*.text_embedder.linear_?.weight", AQ_RULE_CONDITIONING},
        {"context_embedder.weight", AQ_RULE_FIRST_LAYER},
        {"x_embedder.weight", AQ_RULE_FIRST_LAYER},
        {"*.norm1.linear.weight", AQ_RULE_MODULATION},
        {"*.norm1_context.linear.weight", AQ_RULE_MODULATION},
        {"single_transformer_blocks.*.norm.linear.weight", AQ_RULE_MODULATION},
        {"norm_out.linear.weight", AQ_RULE_MODULATION},
        {"proj_out.weight", AQ_RULE_LAST_LAYER}};
    check_model("flux", AQ_FAMILY_FLUX, e8, N(e8), 14, NULL, 0);
}

TEST(vae)
{
    static const expect8 e8[] = {{"encoder.conv_in.weight", AQ_RULE_FIRST_LAYER},
                                 {"decoder.conv_out.weight", AQ_RULE_LAST_LAYER},
                                 {"quant_conv.weight", AQ_RULE_LATENT},
                                 {"post_quant_conv.weight", AQ_RULE_LATENT},
                                 {"encoder.conv_out.weight", AQ_RULE_LATENT},
                                 {"decoder.conv_in.weight", AQ_RULE_LATENT}};
    check_model("vae", AQ_FAMILY_VAE, e8, N(e8), 6, NULL, 0);
}

TEST(clip_text)
{
    static const expect8 e8[] = {{"text_projection.weight", AQ_RULE_LAST_LAYER}};
    static const expect_keep ek[] = {
        {"text_model.embeddings.token_embedding.weight", AQ_RULE_EMBEDDING},
        {"text_model.embeddings.position_embedding.weight", AQ_RULE_POSITIONAL}};
    check_model("clip_text", AQ_FAMILY_CLIP_TEXT, e8, N(e8), 1, ek, N(ek));
}

TEST(t5_encoder)
{
    static const expect_keep ek[] = {
        {"shared.weight", AQ_RULE_EMBEDDING},
        {"encoder.embed_tokens.weight", AQ_RULE_EMBEDDING},
        {"encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
         AQ_RULE_POSITIONAL}};
    check_model("t5_encoder", AQ_FAMILY_T5_TEXT, NULL, 0, 0, ek, N(ek));
}

/* A diffusers pipeline folder: component-prefixed names, one family per component. */
TEST(pipeline_components)
{
    static const char *const stems[] = {"unet2d_condition", "vae", "clip_text", "t5_encoder"};
    static const char *const comps[] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    static const aq_family fams[] = {AQ_FAMILY_UNET, AQ_FAMILY_VAE, AQ_FAMILY_CLIP_TEXT,
                                     AQ_FAMILY_T5_TEXT};
    aq_error err;
    fx_model m[4];
    char *names[2048];
    size_t n = 0;
    for (size_t c = 0; c < 4; c++) {
        CHECK(fx_load(stems[c], &m[c]) == 0);
        for (size_t i = 0; i < m[c].n && n < 2048; i++) {
            size_t len = strlen(comps[c]) + 1 + strlen(m[c].tensors[i].name) + 1;
            names[n] = malloc(len);
            snprintf(names[n], len, "%s/%s", comps[c], m[c].tensors[i].name);
            n++;
        }
    }
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_AUTO, NULL, (const char *const *)names, n, &rules, &err));
    CHECK(aq_rules_component_count(rules) == 4);
    for (size_t c = 0; c < 4; c++) {
        const char *name;
        aq_family fam;
        CHECK_OK(aq_rules_component_get(rules, c, &name, &fam, &err));
        CHECK(strcmp(name, comps[c]) == 0);
        CHECK_MSG(fam == fams[c], "%s: %s", name, aq_family_name(fam));
    }
    aq_profile local;
    aq_rules_profile(rules, &local);
    CHECK(strcmp(local.name, "local") == 0 && local.bit_width == 4);
    int64_t conv[4] = {16, 4, 3, 3}, mat[2] = {16, 16};
    aq_rule_decision d;
    CHECK_OK(aq_rules_decide(rules, "unet/conv_in.weight", conv, 4, AQ_DTYPE_F16, &d, &err));
    CHECK(d.rule == AQ_RULE_FIRST_LAYER && d.bit_width == 8 && d.family == AQ_FAMILY_UNET);
    CHECK_OK(aq_rules_decide(rules, "vae/decoder.conv_in.weight", conv, 4, AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_LATENT && d.bit_width == 8 && d.family == AQ_FAMILY_VAE);
    CHECK_OK(aq_rules_decide(rules, "text_encoder/text_model.encoder.layers.0.mlp.fc1.weight", mat,
                             2, AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_PROFILE && d.bit_width == 4 && d.family == AQ_FAMILY_CLIP_TEXT);
    /* A component the rules never saw. */
    CHECK_FAILS(
        aq_rules_decide(rules, "transformer/proj_out.weight", mat, 2, AQ_DTYPE_F32, &d, &err),
        AQ_INVALID_ARGUMENT, "component 'transformer'");
    aq_rules_free(rules);
    for (size_t i = 0; i < n; i++) {
        free(names[i]);
    }
    for (size_t c = 0; c < 4; c++) {
        fx_free(&m[c]);
    }
}

TEST(fixed_family_and_dtypes)
{
    aq_error err;
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_UNET, NULL, NULL, 0, &rules, &err));
    int64_t vec[1] = {320};
    aq_rule_decision d;
    CHECK_OK(aq_rules_decide(rules, "down_blocks.0.resnets.0.norm1.weight", vec, 1, AQ_DTYPE_F32,
                             &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_NORM && d.bit_width == 16);
    /* bfloat16 values may exceed float16's range: kept as float32. */
    CHECK_OK(aq_rules_decide(rules, "down_blocks.0.resnets.0.norm1.weight", vec, 1, AQ_DTYPE_BF16,
                             &d, &err));
    CHECK(d.keep && d.bit_width == 32);
    CHECK_OK(aq_rules_decide(rules, "mystery", vec, 1, AQ_DTYPE_F32, &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_VECTOR);
    CHECK_OK(aq_rules_decide(rules, "scalar", NULL, 0, AQ_DTYPE_F32, &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_VECTOR);
    /* Small vectors and embedding tables are kept, large ones follow the profile. */
    int64_t flat[1] = {(int64_t)AQ_RULES_KEEP_VECTOR_MAX}, flat1[1] = {flat[0] + 1};
    CHECK_OK(aq_rules_decide(rules, "mystery", flat, 1, AQ_DTYPE_F32, &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_VECTOR);
    CHECK_OK(aq_rules_decide(rules, "mystery", flat1, 1, AQ_DTYPE_F32, &d, &err));
    CHECK(!d.keep && d.rule == AQ_RULE_PROFILE && d.bit_width == 4);
    CHECK_OK(aq_rules_decide(rules, "norm.weight", flat1, 1, AQ_DTYPE_F32, &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_NORM); /* norms and biases whatever their size */
    int64_t vocab[2] = {30522, 384}, labels[2] = {1000, 384};
    CHECK_OK(aq_rules_decide(rules, "embeddings.word_embeddings.weight", vocab, 2, AQ_DTYPE_F32, &d,
                             &err));
    CHECK(!d.keep && d.rule == AQ_RULE_PROFILE && d.bit_width == 4);
    CHECK_OK(aq_rules_decide(rules, "embeddings.word_embeddings.weight", labels, 2, AQ_DTYPE_F32,
                             &d, &err));
    CHECK(d.keep && d.rule == AQ_RULE_EMBEDDING);
    aq_rules_free(rules);
    /* Auto-detection needs names. */
    CHECK_FAILS(aq_rules_create(AQ_FAMILY_AUTO, NULL, NULL, 0, &rules, &err), AQ_INVALID_ARGUMENT,
                "needs the tensor names");
    CHECK_FAILS(aq_rules_create((aq_family)99, NULL, NULL, 0, &rules, &err), AQ_INVALID_PARAMETER,
                "Unknown model family");
    aq_family fam;
    CHECK_OK(aq_family_from_name("mmdit", &fam, &err));
    CHECK(fam == AQ_FAMILY_MMDIT);
    CHECK_FAILS(aq_family_from_name("sdxl", &fam, &err), AQ_INVALID_PARAMETER,
                "Unknown model family 'sdxl'. Known families: auto");
    const char *none[] = {"a.weight", "b.weight"};
    CHECK(aq_family_detect(none, 2) == AQ_FAMILY_GENERIC);
}

TEST(overrides)
{
    aq_error err;
    fx_model m;
    CHECK(fx_load("unet2d_condition", &m) == 0);
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_AUTO, NULL, m.names, m.n, &rules, &err));
    CHECK_OK(aq_rules_add_override(rules, "*attentions*", AQ_RULES_KEEP, &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "time_embedding.*=4", &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "*.ff.net.2.weight=2", &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "*attentions*=keep", &err)); /* same again */
    int64_t mat[2] = {64, 64};
    aq_rule_decision d;
    CHECK_OK(
        aq_rules_decide(rules, "time_embedding.linear_2.weight", mat, 2, AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_OVERRIDE && d.bit_width == 4 && !d.keep);
    CHECK(strcmp(d.pattern, "time_embedding.*") == 0);
    CHECK_OK(aq_rules_decide(rules, "down_blocks.0.attentions.0.proj_in.weight", mat, 2,
                             AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_OVERRIDE && d.keep && d.bit_width == 16);
    /* Two patterns that disagree about one tensor. */
    CHECK_FAILS(aq_rules_decide(rules,
                                "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight",
                                mat, 2, AQ_DTYPE_F32, &d, &err),
                AQ_INVALID_ARGUMENT,
                "Contradictory overrides for tensor "
                "'down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight': "
                "'*attentions*' says keep, '*.ff.net.2.weight' says 2 bits");
    /* One pattern given two treatments. */
    CHECK_FAILS(aq_rules_add_override_spec(rules, "time_embedding.*=8", &err), AQ_INVALID_ARGUMENT,
                "Contradictory overrides: pattern 'time_embedding.*' is given both 4 bits and "
                "8 bits");
    CHECK_FAILS(aq_rules_add_override(rules, "time_embedding.*", AQ_RULES_KEEP, &err),
                AQ_INVALID_ARGUMENT, "given both 4 bits and keep");
    CHECK_FAILS(aq_rules_add_override_spec(rules, "conv_in.weight=3", &err), AQ_INVALID_PARAMETER,
                "Invalid bit width '3' in override 'conv_in.weight=3'");
    CHECK_FAILS(aq_rules_add_override_spec(rules, "conv_in.weight", &err), AQ_INVALID_ARGUMENT,
                "expected PATTERN=BITS");
    CHECK_FAILS(aq_rules_add_override_spec(rules, "=4", &err), AQ_INVALID_ARGUMENT,
                "expected PATTERN=BITS");
    CHECK_FAILS(aq_rules_add_override(rules, "x", 3, &err), AQ_INVALID_PARAMETER,
                "Invalid bit width 3 for override 'x'");
    CHECK_FAILS(aq_rules_add_override(rules, "", 4, &err), AQ_INVALID_ARGUMENT, "empty");
    /* The failed additions changed nothing. */
    CHECK_OK(aq_rules_decide(rules, "conv_in.weight", mat, 2, AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_FIRST_LAYER && d.bit_width == 8);
    /* A pattern with '=' in it: the last '=' splits. */
    CHECK_OK(aq_rules_add_override_spec(rules, "odd=name=8", &err));
    CHECK_OK(aq_rules_decide(rules, "odd=name", mat, 2, AQ_DTYPE_F32, &d, &err));
    CHECK(d.rule == AQ_RULE_OVERRIDE && d.bit_width == 8);
    aq_rules_free(rules);
    fx_free(&m);
}

TEST(profiles)
{
    aq_error err;
    aq_profile p;
    static const char *const names[] = {"edge", "local", "cloud"};
    static const unsigned bits[] = {2, 4, 8};
    for (size_t i = 0; i < AQ_PROFILE_COUNT; i++) {
        CHECK_OK(aq_profile_get(names[i], &p, &err));
        CHECK(strcmp(p.name, names[i]) == 0 && p.bit_width == bits[i]);
        CHECK(p.scheme == AQ_SCHEME_KQUANT && p.group_size == AQ_KQUANT_SUPER_BLOCK);
        CHECK(p.min_cosine > 0.0 && p.min_cosine < 1.0);
        /* The budget is at least kquant's own size at that width (metadata counted). */
        aq_layout lay;
        int64_t shape[2] = {1, 512};
        CHECK_OK(
            aq_layout_compute_scheme(AQ_SCHEME_KQUANT, shape, 2, p.bit_width, 512, &lay, &err));
        double bpw = (double)(lay.packed_bytes + 8 * lay.groups) * 8.0 / 512.0;
        CHECK_MSG(p.target_bpw >= bpw && p.target_bpw < bpw + 0.5, "%s: %g vs %g", p.name,
                  p.target_bpw, bpw);
        aq_profile q;
        CHECK_OK(aq_profile_at(i, &q, &err));
        CHECK(strcmp(q.name, p.name) == 0);
    }
    CHECK_FAILS(aq_profile_get("mobile", &p, &err), AQ_INVALID_PARAMETER,
                "Unknown profile 'mobile'. Known profiles: edge, local, cloud");
    CHECK_FAILS(aq_profile_at(3, &p, &err), AQ_INVALID_ARGUMENT, "out of range");
    p.bit_width = 3;
    aq_rules *rules;
    CHECK_FAILS(aq_rules_create(AQ_FAMILY_UNET, &p, NULL, 0, &rules, &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 3");
}

AQ_TEST_MAIN({"unet2d", unet2d}, {"unet2d_condition", unet2d_condition}, {"dit", dit},
             {"pixart", pixart}, {"sd3", sd3}, {"flux", flux}, {"vae", vae},
             {"clip_text", clip_text}, {"t5_encoder", t5_encoder},
             {"pipeline_components", pipeline_components},
             {"fixed_family_and_dtypes", fixed_family_and_dtypes}, {"overrides", overrides},
             {"profiles", profiles})
