/* Diffusion layer rules and calibration in the Arrow batch path (aq_batch_options.rules and
 * .calib): decisions per row, kept rows stored raw and restored exactly, overrides and their
 * refusals, importance from a calibration table, quality options beside the rules, and the
 * same bytes through a batch, a stream and tensor views. */
#include "arrow_test_util.h"

#include <math.h>
#include <stdio.h>

/* A small UNet2DModel-like set of tensors (diffusers names) and what the "local" profile's
 * rules give each: 16 = kept as float16, else the bits (8: a rule; 4: the profile). */
typedef struct ut {
    const char *name;
    int64_t shape[4];
    size_t ndim;
    unsigned bits;
    const char *rule;
} ut;

enum { NU = 8 };

static const ut g_unet[NU] = {
    {"conv_in.weight", {16, 4, 3, 3}, 4, 8, "first_layer"},
    {"conv_in.bias", {16}, 1, 16, "bias"},
    {"time_embedding.linear_1.weight", {64, 16}, 2, 8, "time_embedding"},
    {"down_blocks.0.resnets.0.norm1.weight", {16}, 1, 16, "norm"},
    {"down_blocks.0.resnets.0.conv1.weight", {16, 16, 3, 3}, 4, 4, "profile"},
    {"down_blocks.0.resnets.0.time_emb_proj.weight", {16, 64}, 2, 8, "modulation"},
    {"down_blocks.0.attentions.0.proj_in.weight", {16, 16}, 2, 4, "profile"},
    {"conv_out.weight", {4, 16, 3, 3}, 4, 8, "last_layer"},
};

static size_t ut_elements(const ut *u)
{
    size_t n = 1;
    for (size_t d = 0; d < u->ndim; d++) {
        n *= (size_t)u->shape[d];
    }
    return n;
}

/* The model's weights, one block per tensor, and tensor views over them. */
typedef struct umodel {
    float *w;
    size_t off[NU + 1];
    aq_tensor t[NU];
    const char *names[NU];
} umodel;

static void um_init(umodel *m, uint64_t seed)
{
    m->off[0] = 0;
    for (size_t i = 0; i < NU; i++) {
        m->off[i + 1] = m->off[i] + ut_elements(&g_unet[i]);
    }
    m->w = au_normal(m->off[NU], seed);
    for (size_t i = 0; i < NU; i++) {
        m->names[i] = g_unet[i].name;
        m->t[i] = (aq_tensor){g_unet[i].name, AQ_DTYPE_F32, m->w + m->off[i], g_unet[i].shape,
                              g_unet[i].ndim};
    }
}

/* Rows [first, first + count) as a record batch. */
static tb_node um_batch(const umodel *m, size_t first, size_t count)
{
    tb_row rows[NU];
    for (size_t k = 0; k < count; k++) {
        size_t i = first + k;
        rows[k] =
            (tb_row){g_unet[i].name,  m->w + m->off[i],        (int64_t)(m->off[i + 1] - m->off[i]),
                     g_unet[i].shape, (int64_t)g_unet[i].ndim, false};
    }
    return tb_batch(rows, (int64_t)count);
}

static aq_rules *unet_rules(const umodel *m)
{
    aq_error err;
    aq_profile local;
    aq_rules *r = NULL;
    if (aq_profile_get("local", &local, &err) != AQ_OK ||
        aq_rules_create(AQ_FAMILY_AUTO, &local, m->names, NU, &r, &err) != AQ_OK) {
        return NULL;
    }
    return r;
}

/* Nonzero when result row r is the float16 (bits 16) or float32 (bits 32) of t's values. */
static int kept_row_is(const rr_row *r, const aq_tensor *t, size_t n, unsigned bits)
{
    if (r->bits != bits || r->groups != 0 || r->packed_len != n * bits / 8) {
        return 0;
    }
    for (size_t k = 0; k < n; k++) {
        float x;
        switch (t->dtype) {
        case AQ_DTYPE_F16:
            x = aq__f16_to_f32(((const uint16_t *)t->data)[k]);
            break;
        case AQ_DTYPE_BF16:
            x = aq__bf16_to_f32(((const uint16_t *)t->data)[k]);
            break;
        case AQ_DTYPE_F64:
            x = (float)((const double *)t->data)[k];
            break;
        default:
            x = ((const float *)t->data)[k];
            break;
        }
        if (bits == 16) {
            uint16_t h, want = aq__f32_to_f16(x);
            memcpy(&h, r->packed + 2 * k, 2);
            if (h != want) {
                return 0;
            }
        } else {
            float f;
            memcpy(&f, r->packed + 4 * k, 4);
            if (aq__f32_bits(f) != aq__f32_bits(x)) {
                return 0;
            }
        }
    }
    return 1;
}

TEST(unet_rules_keep_biases_norms_and_give_8_bits_to_time_embeddings)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 64); /* not used with rules: the profile decides */
    umodel m;
    um_init(&m, 11);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    aq_ctx *kq = au_ctx(4, 128);
    CHECK_OK(aq_ctx_set_param(kq, AQ_PARAM_SCHEME, AQ_SCHEME_KQUANT, &err));
    tb_node b = um_batch(&m, 0, NU);
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .rules = rules};
    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, &opts, &out_s, &out_a, &err));
    CHECK(out_a.length == NU);
    char buf[64];
    CHECK(meta_get(out_s.metadata, "arrowquant.scheme", buf, sizeof buf) &&
          strcmp(buf, "kquant") == 0);
    CHECK(meta_get(out_s.metadata, "arrowquant.group_size", buf, sizeof buf) &&
          strcmp(buf, "512") == 0);
    /* Every quantized row is kquant at the profile's group size: no per-row schemes. */
    CHECK(meta_get(out_s.metadata, "arrowquant.row_schemes", buf, sizeof buf) == NULL);
    for (size_t i = 0; i < NU; i++) {
        rr_row r;
        rr_get(&out_a, false, (int64_t)i, &r);
        CHECK_MSG(r.bits == g_unet[i].bits, "%s: %u bits, expected %u (%s)", g_unet[i].name, r.bits,
                  g_unet[i].bits, g_unet[i].rule);
        if (g_unet[i].bits == 16) {
            CHECK_MSG(kept_row_is(&r, &m.t[i], ut_elements(&g_unet[i]), 16),
                      "%s is not the float16 of its weights", g_unet[i].name);
        } else {
            CHECK_OK(aq_ctx_set_param(kq, AQ_PARAM_BIT_WIDTH, g_unet[i].bits, &err));
            CHECK_MSG(rr_matches(kq, &r, &m.t[i]), "%s differs from kquant at %u bits",
                      g_unet[i].name, g_unet[i].bits);
        }
    }
    out_s.release(&out_s);
    out_a.release(&out_a);
    tb_free(b);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(kq);
    aq_ctx_free(ctx);
}

TEST(overrides_change_bits_or_keep)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    umodel m;
    um_init(&m, 12);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    CHECK_OK(aq_rules_add_override_spec(rules, "*.conv1.weight=2", &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "time_embedding.*=keep", &err));
    CHECK_OK(aq_rules_add_override(rules, "conv_in.bias", 8, &err)); /* quantize a bias */
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .rules = rules};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    static const unsigned want[NU] = {8, 8, 16, 16, 2, 8, 4, 8};
    for (size_t i = 0; i < NU; i++) {
        rr_row r;
        rr_get(&a, false, (int64_t)i, &r);
        CHECK_MSG(r.bits == want[i], "%s: %u bits, expected %u", g_unet[i].name, r.bits, want[i]);
    }
    rr_row r;
    rr_get(&a, false, 2, &r);
    CHECK(kept_row_is(&r, &m.t[2], ut_elements(&g_unet[2]), 16));
    s.release(&s);
    a.release(&a);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(contradictory_overrides_name_the_tensor)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    umodel m;
    um_init(&m, 13);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    CHECK_OK(aq_rules_add_override_spec(rules, "down_blocks.*=2", &err));
    CHECK_OK(aq_rules_add_override_spec(rules, "*.conv1.weight=8", &err));
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .rules = rules};
    struct ArrowSchema s;
    struct ArrowArray a;
    s.release = NULL;
    a.release = NULL;
    tb_node b = um_batch(&m, 0, NU);
    CHECK_FAILS(aq_batch_quantize(ctx, b.s, b.a, &opts, &s, &a, &err), AQ_INVALID_ARGUMENT,
                "Contradictory overrides for tensor 'down_blocks.0.resnets.0.conv1.weight': "
                "'down_blocks.*' says 2 bits, '*.conv1.weight' says 8 bits");
    CHECK(s.release == NULL && a.release == NULL);
    /* Continue mode: that row is skipped and reported, the others are written. */
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    opts.continue_on_error = 1;
    opts.report = rep;
    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, &opts, &s, &a, &err));
    CHECK(a.length == NU - 1 && aq_report_count(rep) == 1);
    size_t row;
    const char *name, *msg;
    aq_status code;
    CHECK_OK(aq_report_get(rep, 0, &row, &name, &code, &msg, &err));
    CHECK(row == 4 && code == AQ_INVALID_ARGUMENT && strstr(msg, "Contradictory") != NULL &&
          strcmp(name, g_unet[4].name) == 0);
    s.release(&s);
    a.release(&a);
    aq_report_free(rep);
    tb_free(b);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(a_component_the_rules_do_not_know_is_an_error)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    float w[64];
    for (int i = 0; i < 64; i++) {
        w[i] = (float)i / 8.0f;
    }
    const char *known[3] = {"unet/conv_in.weight", "unet/time_embedding.linear_1.weight",
                            "unet/down_blocks.0.resnets.0.conv1.weight"};
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_AUTO, NULL, known, 3, &rules, &err));
    int64_t shape[2] = {8, 8};
    aq_tensor t[2] = {{"unet/conv_in.weight", AQ_DTYPE_F32, w, shape, 2},
                      {"vae/decoder.conv_out.weight", AQ_DTYPE_F32, w, shape, 2}};
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .rules = rules};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, 2, &opts, &s, &a, &err), AQ_INVALID_ARGUMENT,
                "Tensor 'vae/decoder.conv_out.weight' belongs to component 'vae'");
    aq_rules_free(rules);
    aq_ctx_free(ctx);
}

TEST(kept_rows_round_trip_exactly)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    /* Kept whatever the profile: every tensor is 1-D (biases, norms, other vectors). */
    float f32[8] = {1.0f, -0.333333f, 65504.0f, 1e-6f, -0.0f, 3.14159f, 7.0e-8f, -2.5f};
    float big[4] = {1.0f, 1.0e5f, -2.0f, 0.1f}; /* beyond float16: kept as float32 */
    uint16_t f16[4], bf16[4];
    double f64[4] = {0.1, -1.0e-3, 12345.678, 2.0};
    for (int i = 0; i < 4; i++) {
        f16[i] = aq__f32_to_f16(f32[i + 1]);
        bf16[i] = aq__f32_to_bf16(big[i] * 3.0f);
    }
    int64_t s8 = 8, s4 = 4;
    aq_tensor t[5] = {{"a.bias", AQ_DTYPE_F32, f32, &s8, 1},
                      {"b.bias", AQ_DTYPE_F32, big, &s4, 1},
                      {"c.norm.weight", AQ_DTYPE_F16, f16, &s4, 1},
                      {"d.norm.weight", AQ_DTYPE_BF16, bf16, &s4, 1},
                      {"e.bias", AQ_DTYPE_F64, f64, &s4, 1}};
    size_t n[5] = {8, 4, 4, 4, 4};
    unsigned bits[5] = {16, 32, 16, 32, 16};
    aq_rules *rules;
    CHECK_OK(aq_rules_create(AQ_FAMILY_GENERIC, NULL, NULL, 0, &rules, &err));
    aq_batch_options opts = {.size = sizeof(aq_batch_options), .rules = rules};
    struct ArrowSchema s, ds;
    struct ArrowArray a, da;
    CHECK_OK(aq_tensors_quantize(ctx, t, 5, &opts, &s, &a, &err));
    for (int i = 0; i < 5; i++) {
        rr_row r;
        rr_get(&a, false, i, &r);
        CHECK_MSG(kept_row_is(&r, &t[i], n[i], bits[i]), "row %d (%s): %u bits", i, t[i].name,
                  r.bits);
    }
    /* float16 input kept as float16: the very bytes. */
    rr_row r;
    rr_get(&a, false, 2, &r);
    CHECK(memcmp(r.packed, f16, sizeof f16) == 0);
    CHECK_OK(aq_batch_dequantize(ctx, &s, &a, NULL, &ds, &da, &err));
    const float *back = da.children[1]->children[0]->buffers[1];
    size_t at = 0;
    for (int i = 0; i < 5; i++) {
        rr_get(&a, false, i, &r);
        for (size_t k = 0; k < n[i]; k++, at++) {
            float want;
            if (bits[i] == 16) {
                uint16_t h;
                memcpy(&h, r.packed + 2 * k, 2);
                want = aq__f16_to_f32(h);
            } else {
                memcpy(&want, r.packed + 4 * k, 4);
            }
            CHECK_MSG(aq__f32_bits(back[at]) == aq__f32_bits(want), "row %d element %zu", i, k);
        }
    }
    CHECK(back[8 + 1] == 1.0e5f && back[16 + 1] == aq__bf16_to_f32(bf16[1]));
    ds.release(&ds);
    da.release(&da);
    s.release(&s);
    a.release(&a);
    /* A kept row is still checked for NaN and Inf. */
    f32[5] = NAN;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, 5, &opts, &s, &a, &err), AQ_NON_FINITE,
                "Layer 'a.bias' contains NaN or Inf at index 5");
    aq_rules_free(rules);
    aq_ctx_free(ctx);
}

/* {layer_name, timestep_group, mean_square: list<float32>}, groups 0 and 1 per layer. */
static aq_calib *make_calib(const char *const *layers, const float *const *ms, const size_t *chans,
                            size_t n, bool finish)
{
    aq_error err;
    const char *names[8];
    int64_t groups[8], lens[8], total = 0;
    float values[2048];
    for (size_t i = 0; i < 2 * n; i++) {
        names[i] = layers[i / 2];
        groups[i] = (int64_t)(i % 2);
        lens[i] = (int64_t)chans[i / 2];
        for (size_t c = 0; c < chans[i / 2]; c++) {
            /* Group 1 at a ten times larger scale: normalisation makes it count the same. */
            values[total + (int64_t)c] = ms[i / 2][c] * (i % 2 ? 10.0f : 1.0f);
        }
        total += lens[i];
    }
    tb_node cols[3];
    cols[0] = tb_strings("u", "layer_name", names, NULL, (int64_t)(2 * n));
    cols[1] = tb_prim("l", "timestep_group", groups, 8, (int64_t)(2 * n), NULL);
    cols[2] = tb_list("+l", "mean_square", tb_prim("f", "item", values, 4, total, NULL), lens,
                      (int64_t)(2 * n), NULL);
    tb_node b = tb_struct("", cols, 3, (int64_t)(2 * n));
    aq_calib *c = NULL;
    if (aq_calib_create(&c, &err) != AQ_OK || aq_calib_add_batch(c, b.s, b.a, &err) != AQ_OK ||
        (finish && aq_calib_finish(c, AQ_CALIB_COMBINE_MAX, &err) != AQ_OK)) {
        aq_calib_free(c);
        c = NULL;
    }
    tb_free(b);
    return c;
}

/* Sum over the elements of imp * (x - x_hat)^2 for tensor t and its restored values. */
static double weighted_error(const float *x, const float *xh, const float *imp, size_t n)
{
    double s = 0;
    for (size_t k = 0; k < n; k++) {
        double e = (double)x[k] - (double)xh[k];
        s += (double)imp[k] * e * e;
    }
    return s;
}

TEST(importance_changes_bytes_and_lowers_the_weighted_error)
{
    aq_error err;
    enum { OUT = 32, IN = 64, N = OUT * IN };
    static const aq_scheme schemes[2] = {AQ_SCHEME_KQUANT, AQ_SCHEME_AFFINE_SEARCH};
    float *w = au_normal(2 * N, 21);
    float ms[IN];
    for (int c = 0; c < IN; c++) {
        ms[c] = c % 8 == 0 ? 50.0f : 0.02f; /* a few channels carry the activations */
    }
    const char *layers[1] = {"proj"};
    const float *mss[1] = {ms};
    size_t chans[1] = {IN};
    aq_calib *calib = make_calib(layers, mss, chans, 1, true);
    CHECK(calib != NULL);
    int64_t shape[2] = {OUT, IN};
    aq_tensor t[2] = {{"proj.weight", AQ_DTYPE_F32, w, shape, 2},
                      {"other.weight", AQ_DTYPE_F32, w + N, shape, 2}};
    float *imp = malloc(N * sizeof *imp);
    int found = 0;
    CHECK_OK(aq_calib_importance(calib, "proj.weight", shape, 2, imp, N, &found, &err));
    CHECK(found == 1);
    for (int si = 0; si < 2; si++) {
        aq_ctx *ctx = au_ctx(2, 32);
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, schemes[si], &err));
        aq_batch_options plain = AQ_SIZED_INIT(aq_batch_options),
                         cal = {.size = sizeof(aq_batch_options), .calib = calib};
        struct ArrowSchema s0, s1, d0s, d1s;
        struct ArrowArray a0, a1, d0a, d1a;
        CHECK_OK(aq_tensors_quantize(ctx, t, 2, &plain, &s0, &a0, &err));
        CHECK_OK(aq_tensors_quantize(ctx, t, 2, &cal, &s1, &a1, &err));
        rr_row r0, r1;
        rr_get(&a0, false, 0, &r0);
        rr_get(&a1, false, 0, &r1);
        CHECK_MSG(r0.packed_len == r1.packed_len &&
                      (memcmp(r0.packed, r1.packed, r0.packed_len) != 0 ||
                       memcmp(r0.scales, r1.scales, r0.groups * 4) != 0),
                  "%s: importance changed nothing", aq_scheme_name(schemes[si]));
        /* Without statistics, a row is quantized as without calib. */
        rr_get(&a0, false, 1, &r0);
        rr_get(&a1, false, 1, &r1);
        CHECK(r0.packed_len == r1.packed_len && memcmp(r0.packed, r1.packed, r0.packed_len) == 0 &&
              memcmp(r0.scales, r1.scales, r0.groups * 4) == 0);
        CHECK_OK(aq_batch_dequantize(ctx, &s0, &a0, NULL, &d0s, &d0a, &err));
        CHECK_OK(aq_batch_dequantize(ctx, &s1, &a1, NULL, &d1s, &d1a, &err));
        const float *x0 = d0a.children[1]->children[0]->buffers[1];
        const float *x1 = d1a.children[1]->children[0]->buffers[1];
        double e0 = weighted_error(w, x0, imp, N), e1 = weighted_error(w, x1, imp, N);
        CHECK_MSG(e1 < 0.9 * e0, "%s: weighted error %g with importance, %g without",
                  aq_scheme_name(schemes[si]), e1, e0);
        d0s.release(&d0s);
        d0a.release(&d0a);
        d1s.release(&d1s);
        d1a.release(&d1a);
        s0.release(&s0);
        a0.release(&a0);
        s1.release(&s1);
        a1.release(&a1);
        aq_ctx_free(ctx);
    }
    /* Statistics that do not fit the tensor's shape name both. */
    float small_ms[3] = {1, 2, 3};
    const float *smss[1] = {small_ms};
    size_t small_chans[1] = {3};
    aq_calib *bad = make_calib(layers, smss, small_chans, 1, true);
    aq_ctx *ctx = au_ctx(2, 32);
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, AQ_SCHEME_KQUANT, &err));
    aq_batch_options ob = {.size = sizeof(aq_batch_options), .calib = bad};
    struct ArrowSchema s;
    struct ArrowArray a;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, 2, &ob, &s, &a, &err), AQ_SHAPE_MISMATCH,
                "Calibration layer 'proj' has 3 input channels, which does not fit tensor "
                "'proj.weight'");
    /* Statistics must be finished before use. */
    aq_calib *open = make_calib(layers, mss, chans, 1, false);
    CHECK(open != NULL);
    ob.calib = open;
    CHECK_FAILS(aq_tensors_quantize(ctx, t, 2, &ob, &s, &a, &err), AQ_INVALID_ARGUMENT,
                "not finished");
    aq_calib_free(open);
    aq_calib_free(bad);
    aq_ctx_free(ctx);
    aq_calib_free(calib);
    free(imp);
    free(w);
}

/* A growing concatenation of result rows. */
typedef struct cat {
    uint8_t *bytes;
    size_t len, cap;
    int64_t rows;
} cat;

static void cat_put(cat *c, const void *p, size_t n)
{
    if (c->len + n > c->cap) {
        c->cap = (c->len + n) * 2;
        c->bytes = realloc(c->bytes, c->cap);
    }
    memcpy(c->bytes + c->len, p, n);
    c->len += n;
}

static void cat_add(cat *c, const struct ArrowArray *a)
{
    for (int64_t i = 0; i < a->length; i++) {
        rr_row r;
        rr_get(a, false, i, &r);
        cat_put(c, r.name, r.name_len);
        cat_put(c, &r.bits, sizeof r.bits);
        cat_put(c, r.packed, r.packed_len);
        cat_put(c, r.scales, r.groups * 4);
        cat_put(c, r.zps, r.groups * 4);
        cat_put(c, r.shape, r.ndim * 8);
        c->rows++;
    }
}

TEST(same_bytes_from_a_batch_a_stream_and_tensor_views)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    umodel m;
    um_init(&m, 14);
    aq_rules *rules = unet_rules(&m);
    float ms1[16], ms2[16];
    for (int c = 0; c < 16; c++) {
        ms1[c] = (float)(c + 1);
        ms2[c] = c == 3 ? 40.0f : 0.5f;
    }
    const char *layers[2] = {"down_blocks.0.resnets.0.conv1", "down_blocks.0.attentions.0.proj_in"};
    const float *mss[2] = {ms1, ms2};
    size_t chans[2] = {16, 16};
    aq_calib *calib = make_calib(layers, mss, chans, 2, true);
    CHECK(ctx != NULL && rules != NULL && calib != NULL);
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .rules = rules, .calib = calib, .min_cosine = 0.9};
    cat one = {0}, tens = {0}, str = {0};
    struct ArrowSchema s;
    struct ArrowArray a;
    tb_node b = um_batch(&m, 0, NU);
    CHECK_OK(aq_batch_quantize(ctx, b.s, b.a, &opts, &s, &a, &err));
    cat_add(&one, &a);
    s.release(&s);
    a.release(&a);
    tb_free(b);
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    cat_add(&tens, &a);
    s.release(&s);
    a.release(&a);
    /* Batches of 3, 0, 1 and 4 rows. */
    tb_node batches[4] = {um_batch(&m, 0, 3), um_batch(&m, 3, 0), um_batch(&m, 3, 1),
                          um_batch(&m, 4, 4)};
    struct ArrowArrayStream in, out;
    tb_stream(&in, um_batch(&m, 0, 0), batches, 4, -1, NULL);
    CHECK_OK(aq_stream_quantize(ctx, &in, &opts, &out, &err));
    struct ArrowSchema ss;
    CHECK(out.get_schema(&out, &ss) == 0);
    char buf[64];
    CHECK(meta_get(ss.metadata, "arrowquant.scheme", buf, sizeof buf) &&
          strcmp(buf, "kquant") == 0);
    ss.release(&ss);
    for (;;) {
        CHECK(out.get_next(&out, &a) == 0);
        if (a.release == NULL) {
            break;
        }
        cat_add(&str, &a);
        a.release(&a);
    }
    out.release(&out);
    CHECK(one.rows == NU && tens.rows == NU && str.rows == NU);
    CHECK(one.len == tens.len && memcmp(one.bytes, tens.bytes, one.len) == 0);
    CHECK(one.len == str.len && memcmp(one.bytes, str.bytes, one.len) == 0);
    /* Rows quantize through copies of the context: threads change nothing (and under ASan,
     * leak nothing). */
    cat threaded = {0};
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 3, &err));
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    cat_add(&threaded, &a);
    s.release(&s);
    a.release(&a);
    CHECK(threaded.len == one.len && memcmp(threaded.bytes, one.bytes, one.len) == 0);
    free(threaded.bytes);
    /* The calibration did reach the rows: without it the bytes differ. */
    cat nocal = {0};
    opts.calib = NULL;
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    cat_add(&nocal, &a);
    s.release(&s);
    a.release(&a);
    CHECK(nocal.len == one.len && memcmp(nocal.bytes, one.bytes, one.len) != 0);
    free(one.bytes);
    free(tens.bytes);
    free(str.bytes);
    free(nocal.bytes);
    aq_calib_free(calib);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(min_cosine_and_target_bpw_beside_the_rules)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    umodel m;
    um_init(&m, 15);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    struct ArrowSchema s;
    struct ArrowArray a;
    aq_report *rep;
    /* A floor above kquant's 4-bit cosine moves the profile's rows to 8 bits; kept rows stay. */
    CHECK_OK(aq_report_create(&rep, &err));
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .rules = rules, .min_cosine = 0.9995, .report = rep};
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    for (size_t i = 0; i < NU; i++) {
        rr_row r;
        rr_get(&a, false, (int64_t)i, &r);
        unsigned want = g_unet[i].bits == 16 ? 16 : 8;
        CHECK_MSG(r.bits == want, "%s: %u bits", g_unet[i].name, r.bits);
    }
    CHECK(aq_report_choice_count(rep) == NU - 2); /* the quantized rows */
    size_t moved = 0;
    for (size_t i = 0; i < NU - 2; i++) {
        aq_qset_choice c;
        CHECK_OK(aq_report_choice_get(rep, i, NULL, NULL, &c, &err));
        moved += (size_t)c.moved;
    }
    CHECK_MSG(moved == 2, "%zu rows moved", moved);
    s.release(&s);
    a.release(&a);
    aq_report_free(rep);

    /* A budget covers the rows that follow the profile; the others keep their decision. */
    aq_batch_options budget = {.size = sizeof(aq_batch_options), .rules = rules, .target_bpw = 3.5};
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &budget, &s, &a, &err));
    size_t bytes = 0, elements = 0;
    bool below4 = false;
    for (size_t i = 0; i < NU; i++) {
        rr_row r;
        rr_get(&a, false, (int64_t)i, &r);
        if (strcmp(g_unet[i].rule, "profile") == 0) {
            bytes += r.packed_len + 8 * r.groups;
            elements += ut_elements(&g_unet[i]);
            below4 = below4 || r.bits < 4;
        } else {
            CHECK_MSG(r.bits == g_unet[i].bits, "%s: %u bits", g_unet[i].name, r.bits);
        }
    }
    CHECK_MSG((double)bytes * 8.0 / (double)elements <= 3.5 && below4, "%g bpw",
              (double)bytes * 8.0 / (double)elements);
    s.release(&s);
    a.release(&a);

    /* AQ_TARGET_BPW_PROFILE: one size over every row of two or more dimensions, the rule
     * rows included (local: 4.5 bits per weight); the rules' 8 bits are preferences within it,
     * with or without a floor. Kept vectors stay as they are, outside the size. */
    for (int f = 0; f < 2; f++) {
        double floor = f ? 0.9995 : 0.0;
        aq_batch_options plain = {
            .size = sizeof(aq_batch_options), .rules = rules, .min_cosine = floor};
        aq_batch_options self = {.size = sizeof(aq_batch_options),
                                 .rules = rules,
                                 .min_cosine = floor,
                                 .target_bpw = AQ_TARGET_BPW_PROFILE};
        size_t got = 0, counted = 0;
        bool eight = false;
        struct ArrowSchema s2;
        struct ArrowArray a2;
        CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &plain, &s, &a, &err));
        CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &self, &s2, &a2, &err));
        for (size_t i = 0; i < NU; i++) {
            rr_row r, r2;
            rr_get(&a, false, (int64_t)i, &r);
            rr_get(&a2, false, (int64_t)i, &r2);
            if (g_unet[i].ndim >= 2) {
                got += r2.packed_len + 8 * r2.groups;
                counted += ut_elements(&g_unet[i]);
                eight = eight || (strcmp(g_unet[i].rule, "profile") != 0 && r2.bits == 8);
            } else {
                CHECK(r.bits == r2.bits && r.packed_len == r2.packed_len &&
                      memcmp(r.packed, r2.packed, r.packed_len) == 0);
            }
        }
        CHECK_MSG(got * 8 <= (size_t)(4.5 * (double)counted), "floor %g: %zu bytes for %zu weights",
                  floor, got, counted);
        /* Without a floor the rules' preferences come first; with one, the floor's wishes
         * compete with them for the same bytes. */
        CHECK_MSG(eight || f, "no rule row kept its 8 bits");
        s.release(&s);
        a.release(&a);
        s2.release(&s2);
        a2.release(&a2);
    }
    /* Nothing follows the profile: nothing to choose, no error. */
    aq_batch_options self = {
        .size = sizeof(aq_batch_options), .rules = rules, .target_bpw = AQ_TARGET_BPW_PROFILE};
    CHECK_OK(aq_tensors_quantize(ctx, m.t, 4, &self, &s, &a, &err));
    CHECK(a.length == 4);
    s.release(&s);
    a.release(&a);
    self.target_bpw = -2.0;
    CHECK_FAILS(aq_tensors_quantize(ctx, m.t, 4, &self, &s, &a, &err), AQ_INVALID_PARAMETER,
                "Invalid target_bpw: -2");
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(budget_schemes_with_kept_rows_write_raw_row_schemes)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 256); /* affine's group size, with rules too */
    umodel m;
    um_init(&m, 16);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    /* affine at 2 bits in 256-element groups (the context's group size: one per row of 144)
     * is the smallest option of conv1 (2.44 bpw against kquant's 2.64), and within 2.6 bits
     * per weight over conv1 and proj_in (2560 weights, 832 bytes) only conv1 in affine (704
     * bytes) with proj_in in kquant (88) fits: the rows then differ. */
    static const aq_scheme schemes[2] = {AQ_SCHEME_AFFINE, AQ_SCHEME_KQUANT};
    aq_batch_options opts = {.size = sizeof(aq_batch_options),
                             .rules = rules,
                             .target_bpw = 2.6,
                             .budget_schemes = schemes,
                             .n_budget_schemes = 2};
    struct ArrowSchema s, ds;
    struct ArrowArray a, da;
    CHECK_OK(aq_tensors_quantize(ctx, m.t, NU, &opts, &s, &a, &err));
    char buf[1024];
    CHECK(meta_get(s.metadata, "arrowquant.row_schemes", buf, sizeof buf) != NULL);
    static const char head[] = "[{\"scheme\":\"kquant\",\"group_size\":512},"
                               "{\"scheme\":\"raw\",\"group_size\":0},"
                               "{\"scheme\":\"kquant\",\"group_size\":512},"
                               "{\"scheme\":\"raw\",\"group_size\":0},"
                               "{\"scheme\":\"affine\",\"group_size\":256},"
                               "{\"scheme\":\"kquant\",\"group_size\":512},";
    static const char tail[] = ",{\"scheme\":\"kquant\",\"group_size\":512}]";
    CHECK_MSG(strncmp(buf, head, strlen(head)) == 0 &&
                  strcmp(buf + strlen(buf) - strlen(tail), tail) == 0,
              "%s", buf);
    CHECK_OK(aq_batch_dequantize(ctx, &s, &a, NULL, &ds, &da, &err));
    CHECK(da.length == NU);
    const float *back = da.children[1]->children[0]->buffers[1];
    rr_row r;
    rr_get(&a, false, 1, &r);
    uint16_t h;
    memcpy(&h, r.packed, 2);
    CHECK(back[m.off[1]] == aq__f16_to_f32(h));
    ds.release(&ds);
    da.release(&da);
    /* Readers refuse a "raw" entry on a quantized row, and a "raw" group size other than 0. */
    const char *own = s.metadata;
    static const char *const bad[2] = {
        "[{\"scheme\":\"raw\",\"group_size\":0}]",
        "[{\"scheme\":\"kquant\",\"group_size\":512},{\"scheme\":\"raw\",\"group_size\":64}]"};
    static const char *const want[2] = {"says \"raw\" (a kept row) but bit_width is 8",
                                        "a \"raw\" entry with a group size other than 0"};
    for (int k = 0; k < 2; k++) {
        char meta[512];
        const char *keys[3] = {"arrowquant.format_version", "arrowquant.packing",
                               "arrowquant.row_schemes"};
        const char *vals[3] = {"1", "lsb-first", bad[k]};
        int32_t n = 3, at = 4;
        memcpy(meta, &n, 4);
        for (int j = 0; j < 3; j++) {
            int32_t kl = (int32_t)strlen(keys[j]), vl = (int32_t)strlen(vals[j]);
            memcpy(meta + at, &kl, 4);
            memcpy(meta + at + 4, keys[j], (size_t)kl);
            memcpy(meta + at + 4 + kl, &vl, 4);
            memcpy(meta + at + 8 + kl, vals[j], (size_t)vl);
            at += 8 + kl + vl;
        }
        s.metadata = meta;
        CHECK_FAILS(aq_batch_dequantize(ctx, &s, &a, NULL, &ds, &da, &err), AQ_INVALID_DATA,
                    want[k]);
        s.metadata = own;
    }
    /* A raw float16 value that is Inf is refused. */
    const uint16_t inf = 0x7c00u; /* the row's bytes need not be 2-byte aligned */
    memcpy((void *)(uintptr_t)r.packed, &inf, sizeof inf);
    CHECK_FAILS(aq_batch_dequantize(ctx, &s, &a, NULL, &ds, &da, &err), AQ_INVALID_DATA,
                "Layer 'conv_in.bias': raw float16 data has NaN or Inf at index 0");
    s.release(&s);
    a.release(&a);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(streams_with_rules_refuse_what_their_schema_cannot_say)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 128);
    umodel m;
    um_init(&m, 17);
    aq_rules *rules = unet_rules(&m);
    CHECK(ctx != NULL && rules != NULL);
    struct ArrowArrayStream in, out;
    /* Several budget schemes would need per-row schemes, which a stream cannot declare. */
    static const aq_scheme schemes[2] = {AQ_SCHEME_AFFINE, AQ_SCHEME_KQUANT};
    aq_batch_options opts = {.size = sizeof(aq_batch_options),
                             .rules = rules,
                             .target_bpw = 3.5,
                             .budget_schemes = schemes,
                             .n_budget_schemes = 2};
    tb_node batches[1] = {um_batch(&m, 0, NU)};
    tb_stream(&in, um_batch(&m, 0, 0), batches, 1, -1, NULL);
    CHECK_FAILS(aq_stream_quantize(ctx, &in, &opts, &out, &err), AQ_UNSUPPORTED,
                "budget schemes other than kquant (the rules' profile's scheme)");
    CHECK(in.release == NULL);
    /* The profile's own scheme alone is fine, even when the context says otherwise. */
    opts.budget_schemes = schemes + 1;
    opts.n_budget_schemes = 1;
    batches[0] = um_batch(&m, 0, NU);
    tb_stream(&in, um_batch(&m, 0, 0), batches, 1, -1, NULL);
    CHECK_OK(aq_stream_quantize(ctx, &in, &opts, &out, &err));
    struct ArrowArray a;
    CHECK(out.get_next(&out, &a) == 0 && a.release != NULL && a.length == NU);
    a.release(&a);
    out.release(&out);
    /* Unfinished statistics are refused when the stream opens. */
    const char *layers[1] = {"x"};
    float ms[2] = {1, 2};
    const float *mss[1] = {ms};
    size_t chans[1] = {2};
    aq_calib *open = make_calib(layers, mss, chans, 1, false);
    aq_batch_options oc = {.size = sizeof(aq_batch_options), .calib = open};
    batches[0] = um_batch(&m, 0, NU);
    tb_stream(&in, um_batch(&m, 0, 0), batches, 1, -1, NULL);
    CHECK_FAILS(aq_stream_quantize(ctx, &in, &oc, &out, &err), AQ_INVALID_ARGUMENT, "not finished");
    CHECK(in.release == NULL);
    aq_calib_free(open);
    aq_rules_free(rules);
    free(m.w);
    aq_ctx_free(ctx);
}

TEST(threads_share_the_context_pool_without_rules_too)
{
    /* Rows quantize through copies of the context whether or not rules are given; with
     * several threads the copies must share the context's pool (ASan: nothing leaks). */
    aq_error err;
    umodel m;
    um_init(&m, 18);
    aq_ctx *one = au_ctx(4, 32), *three = au_ctx(4, 32);
    CHECK(one != NULL && three != NULL);
    CHECK_OK(aq_ctx_set_param(three, AQ_PARAM_THREADS, 3, &err));
    CHECK_OK(aq_ctx_set_param(one, AQ_PARAM_SCHEME, AQ_SCHEME_AFFINE_SEARCH, &err));
    CHECK_OK(aq_ctx_set_param(three, AQ_PARAM_SCHEME, AQ_SCHEME_AFFINE_SEARCH, &err));
    aq_batch_options floor = {.size = sizeof(aq_batch_options), .min_cosine = 0.99},
                     budget = {.size = sizeof(aq_batch_options), .target_bpw = 5.0};
    const aq_batch_options *all[3] = {NULL, &floor, &budget};
    for (int k = 0; k < 3; k++) {
        cat c1 = {0}, c3 = {0};
        struct ArrowSchema s;
        struct ArrowArray a;
        CHECK_OK(aq_tensors_quantize(one, m.t, NU, all[k], &s, &a, &err));
        cat_add(&c1, &a);
        s.release(&s);
        a.release(&a);
        CHECK_OK(aq_tensors_quantize(three, m.t, NU, all[k], &s, &a, &err));
        cat_add(&c3, &a);
        s.release(&s);
        a.release(&a);
        CHECK_MSG(c1.len == c3.len && memcmp(c1.bytes, c3.bytes, c1.len) == 0, "options %d", k);
        free(c1.bytes);
        free(c3.bytes);
    }
    free(m.w);
    aq_ctx_free(one);
    aq_ctx_free(three);
}

AQ_TEST_MAIN(AQ_CASE(unet_rules_keep_biases_norms_and_give_8_bits_to_time_embeddings),
             AQ_CASE(overrides_change_bits_or_keep),
             AQ_CASE(contradictory_overrides_name_the_tensor),
             AQ_CASE(a_component_the_rules_do_not_know_is_an_error),
             AQ_CASE(kept_rows_round_trip_exactly),
             AQ_CASE(importance_changes_bytes_and_lowers_the_weighted_error),
             AQ_CASE(same_bytes_from_a_batch_a_stream_and_tensor_views),
             AQ_CASE(min_cosine_and_target_bpw_beside_the_rules),
             AQ_CASE(budget_schemes_with_kept_rows_write_raw_row_schemes),
             AQ_CASE(streams_with_rules_refuse_what_their_schema_cannot_say),
             AQ_CASE(threads_share_the_context_pool_without_rules_too))
