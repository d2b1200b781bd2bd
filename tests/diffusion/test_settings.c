/* The settings table and the scheme table (arrowquant.h, experimental part): settings set and read
 * by name, bounds errors that name the setting, profiles applied by one call, the scheme table
 * against what the library does with each scheme. */
#define AQ_EXPERIMENTAL
#include "aq_test.h"

#include <arrowquant.h>

#include <math.h>
#include <string.h>

TEST(table_is_consistent)
{
    aq_error err;
    size_t n = aq_setting_count();
    CHECK(n >= 14);
    aq_settings *s;
    CHECK_OK(aq_settings_create(&s, &err));
    for (size_t i = 0; i < n; i++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        CHECK_OK(aq_setting_at(i, &info, &err));
        CHECK(info.name != NULL && info.help != NULL && info.help[0] != '\0');
        CHECK(info.default_value != NULL);
        /* The default reads back as itself, and is accepted when set. */
        const char *text;
        CHECK_OK(aq_settings_get_text(s, info.name, &text, &err));
        CHECK_MSG(strcmp(text, info.default_value) == 0, "%s: default '%s' reads '%s'", info.name,
                  info.default_value, text);
        CHECK_OK(aq_settings_set_text(s, info.name, info.default_value, &err));
        aq_setting_info again = AQ_SIZED_INIT(aq_setting_info);
        CHECK_OK(aq_setting_find(info.name, &again, &err));
        CHECK(again.type == info.type && strcmp(again.name, info.name) == 0);
        for (size_t j = 0; j < i; j++) {
            aq_setting_info other = AQ_SIZED_INIT(aq_setting_info);
            CHECK_OK(aq_setting_at(j, &other, &err));
            CHECK_MSG(strcmp(other.name, info.name) != 0, "%s twice", info.name);
            CHECK(info.flag == NULL || other.flag == NULL || strcmp(info.flag, other.flag) != 0);
        }
    }
    aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
    CHECK_FAILS(aq_setting_at(n, &info, &err), AQ_INVALID_ARGUMENT, "settings");
    CHECK_FAILS(aq_setting_find("bits", &info, &err), AQ_INVALID_PARAMETER,
                "Unknown setting 'bits'. Known settings: profile, bit_width");
    info.size = 8;
    CHECK_FAILS(aq_setting_at(0, &info, &err), AQ_INVALID_ARGUMENT, "size");
    aq_settings_free(s);
}

TEST(set_and_get_by_name)
{
    aq_error err;
    aq_settings *s;
    CHECK_OK(aq_settings_create(&s, &err));
    int64_t i = 0;
    double x = 0;
    const char *t = NULL;
    int set = 1;
    CHECK_OK(aq_settings_is_set(s, "bit_width", &set, &err));
    CHECK(set == 0);
    CHECK_OK(aq_settings_set_text(s, "bit_width", "8", &err));
    CHECK_OK(aq_settings_get_int(s, "bit_width", &i, &err));
    CHECK(i == 8);
    CHECK_OK(aq_settings_is_set(s, "bit_width", &set, &err));
    CHECK(set == 1);
    CHECK_OK(aq_settings_set_int(s, "group_size", 64, &err));
    CHECK_OK(aq_settings_get_text(s, "group_size", &t, &err));
    CHECK(strcmp(t, "64") == 0);
    CHECK_OK(aq_settings_set_float(s, "min_cosine", 0.995, &err));
    CHECK_OK(aq_settings_get_float(s, "min_cosine", &x, &err));
    CHECK(x == 0.995);
    CHECK_OK(aq_settings_set_text(s, "target_bpw", "4.5", &err));
    CHECK_OK(aq_settings_get_float(s, "target_bpw", &x, &err));
    CHECK(x == 4.5);
    CHECK_OK(aq_settings_set_text(s, "calibration_combine", "mean", &err));
    CHECK_OK(aq_settings_get_int(s, "calibration_combine", &i, &err));
    CHECK(i == AQ_CALIB_COMBINE_MEAN);
    CHECK_OK(aq_settings_set_text(s, "compression", "zstd", &err));
    CHECK_OK(aq_settings_get_int(s, "compression", &i, &err));
    CHECK(i == AQ_IPC_COMPRESSION_ZSTD);
    CHECK_OK(aq_settings_set_int(s, "budget_scope", AQ_BUDGET_SCOPE_MODEL, &err));
    CHECK_OK(aq_settings_get_text(s, "budget_scope", &t, &err));
    CHECK(strcmp(t, "model") == 0);
    CHECK_OK(aq_settings_set_text(s, "family", "flux", &err));
    CHECK_OK(aq_settings_get_int(s, "family", &i, &err));
    aq_family fam;
    CHECK_OK(aq_family_from_name("flux", &fam, &err));
    CHECK(i == (int64_t)fam); /* the choices follow aq_family, "auto" first */
    CHECK_OK(aq_settings_set_text(s, "preserve_moments", "yes", &err));
    CHECK_OK(aq_settings_get_int(s, "preserve_moments", &i, &err));
    CHECK(i == 1);
    CHECK_FAILS(aq_settings_get_int(s, "target_bpw", &i, &err), AQ_INVALID_ARGUMENT, "target_bpw");
    CHECK_FAILS(aq_settings_set_text(s, "nope", "1", &err), AQ_INVALID_PARAMETER,
                "Unknown setting 'nope'");
    aq_settings_free(s);
}

TEST(bounds_errors_name_the_setting)
{
    aq_error err;
    aq_settings *s;
    CHECK_OK(aq_settings_create(&s, &err));
    CHECK_FAILS(aq_settings_set_text(s, "bit_width", "3", &err), AQ_INVALID_PARAMETER,
                "Invalid bit_width: 3. Must be 2, 4, or 8");
    CHECK_FAILS(aq_settings_set_int(s, "group_size", 4, &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: 4. Must be between 8 and 4294967295");
    CHECK_FAILS(aq_settings_set_text(s, "group_size", "12x", &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: '12x' is not an integer");
    CHECK_FAILS(aq_settings_set_text(s, "threads", "1025", &err), AQ_INVALID_PARAMETER,
                "Invalid threads: 1025. Must be between 0 and 1024");
    CHECK_FAILS(aq_settings_set_text(s, "min_cosine", "1.0", &err), AQ_INVALID_PARAMETER,
                "Invalid min_cosine: 1.0. Must be in [0, 1)");
    CHECK_FAILS(aq_settings_set_float(s, "min_cosine", NAN, &err), AQ_INVALID_PARAMETER,
                "Invalid min_cosine: nan. Must be finite");
    CHECK_FAILS(aq_settings_set_text(s, "target_bpw", "1.5", &err), AQ_INVALID_PARAMETER,
                "Invalid target_bpw: 1.5. Must be 0 (off) or between 2 and 32");
    CHECK_FAILS(aq_settings_set_text(s, "scheme", "gptq", &err), AQ_INVALID_PARAMETER,
                "Invalid scheme 'gptq'. Must be one of: affine, affine_search, kquant");
    CHECK_FAILS(aq_settings_set_text(s, "scheme", "kquant_rows", &err), AQ_INVALID_PARAMETER,
                "Invalid scheme 'kquant_rows'");
    CHECK_FAILS(aq_settings_set_text(s, "calibration_combine", "min", &err), AQ_INVALID_PARAMETER,
                "Invalid calibration_combine 'min'. Must be one of: max");
    CHECK_FAILS(aq_settings_set_int(s, "budget_scope", 2, &err), AQ_INVALID_PARAMETER,
                "Invalid budget_scope: 2");
    CHECK_FAILS(aq_settings_set_text(s, "preserve_moments", "2", &err), AQ_INVALID_PARAMETER,
                "Invalid preserve_moments: 2");
    CHECK_FAILS(aq_settings_set_float(s, "scheme", 1.0, &err), AQ_INVALID_PARAMETER,
                "Invalid scheme");
    /* A refused value leaves the old one. */
    int64_t bits = 0;
    CHECK_OK(aq_settings_get_int(s, "bit_width", &bits, &err));
    CHECK(bits == AQ_DEFAULT_BIT_WIDTH);
    /* Settings checked together. */
    CHECK_OK(aq_settings_set_text(s, "scheme", "kquant", &err));
    CHECK_OK(aq_settings_set_int(s, "group_size", 128, &err));
    CHECK_FAILS(aq_settings_check(s, &err), AQ_INVALID_PARAMETER,
                "Invalid group_size: 128. The kquant scheme always uses 512");
    aq_settings_free(s);
    CHECK_OK(aq_settings_create(&s, &err));
    CHECK_OK(aq_settings_set_text(s, "scheme", "kquant", &err));
    CHECK_OK(aq_settings_set_text(s, "preserve_moments", "1", &err));
    CHECK_FAILS(aq_settings_check(s, &err), AQ_INVALID_PARAMETER,
                "Invalid preserve_moments: 1. The kquant scheme does not support it");
    aq_settings_free(s);
}

TEST(profiles_in_one_call)
{
    aq_error err;
    for (size_t k = 0; k < AQ_PROFILE_COUNT; k++) {
        aq_profile p;
        CHECK_OK(aq_profile_at(k, &p, &err));
        aq_settings *s;
        CHECK_OK(aq_settings_create(&s, &err));
        CHECK_OK(aq_settings_apply_profile(s, p.name, &err));
        int64_t bits, group;
        double cos, bpw;
        const char *scheme, *name;
        CHECK_OK(aq_settings_get_int(s, "bit_width", &bits, &err));
        CHECK_OK(aq_settings_get_int(s, "group_size", &group, &err));
        CHECK_OK(aq_settings_get_float(s, "min_cosine", &cos, &err));
        CHECK_OK(aq_settings_get_float(s, "target_bpw", &bpw, &err));
        CHECK_OK(aq_settings_get_text(s, "scheme", &scheme, &err));
        CHECK_OK(aq_settings_get_text(s, "profile", &name, &err));
        CHECK((unsigned)bits == p.bit_width && (size_t)group == p.group_size);
        CHECK(cos == p.min_cosine && bpw == p.target_bpw);
        CHECK(strcmp(scheme, aq_scheme_name(p.scheme)) == 0 && strcmp(name, p.name) == 0);
        /* The settings fill a context. */
        aq_ctx *ctx;
        CHECK_OK(aq_ctx_create(&ctx, &err));
        CHECK_OK(aq_settings_apply_ctx(s, ctx, &err));
        int64_t v;
        CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_BIT_WIDTH, &v, &err));
        CHECK(v == bits);
        CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_SCHEME, &v, &err));
        CHECK(v == p.scheme);
        aq_ctx_free(ctx);
        aq_settings_free(s);
    }
    /* Explicit settings win over the profile, before or after it. */
    aq_settings *s;
    CHECK_OK(aq_settings_create(&s, &err));
    CHECK_OK(aq_settings_set_text(s, "bit_width", "8", &err));
    CHECK_OK(aq_settings_set_text(s, "scheme", "affine", &err));
    CHECK_OK(aq_settings_apply_profile(s, "edge", &err));
    int64_t bits, group;
    double cos;
    CHECK_OK(aq_settings_get_int(s, "bit_width", &bits, &err));
    CHECK_OK(aq_settings_get_int(s, "group_size", &group, &err));
    CHECK_OK(aq_settings_get_float(s, "min_cosine", &cos, &err));
    CHECK(bits == 8 && group == AQ_DEFAULT_GROUP_SIZE && cos == 0.90);
    CHECK_OK(aq_settings_set_text(s, "min_cosine", "0", &err));
    CHECK_OK(aq_settings_get_float(s, "min_cosine", &cos, &err));
    CHECK(cos == 0.0);
    CHECK_FAILS(aq_settings_apply_profile(s, "mobile", &err), AQ_INVALID_PARAMETER,
                "Unknown profile 'mobile'. Known profiles: edge, local, cloud");
    aq_settings_free(s);
}

/* Each row of the scheme table against what the library does with the scheme. */
TEST(scheme_table)
{
    aq_error err;
    int64_t shape[2] = {3, 700};
    char choices[128] = "";
    for (int k = 0; k < AQ_SCHEME_COUNT; k++) {
        aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
        CHECK_OK(aq_scheme_get_info((aq_scheme)k, &info, &err));
        CHECK(info.scheme == (aq_scheme)k && strcmp(info.name, aq_scheme_name(info.scheme)) == 0);
        aq_scheme back;
        CHECK_OK(aq_scheme_from_name(info.name, &back, &err));
        CHECK(back == info.scheme);
        CHECK(!!aq_scheme_is_kquant(info.scheme) == info.sub_block_params);
        CHECK(info.sub_block_params == (info.fixed_group_size != 0));
        for (unsigned b = 2; b <= 8; b++) {
            aq_layout l;
            aq_status st = aq_layout_compute_scheme(info.scheme, shape, 2, b, 64, &l, &err);
            CHECK_MSG((st == AQ_OK) == ((info.bits_mask >> b) & 1u), "%s at %u bits", info.name, b);
            if (st != AQ_OK) {
                continue;
            }
            CHECK(l.group_size == (info.fixed_group_size != 0 ? info.fixed_group_size : 64));
            CHECK(l.rows == (info.flattened ? 1u : 3u));
            size_t codes = (l.elements * b + 7) / 8;
            CHECK((l.packed_bytes > codes) == (info.sub_block_params != 0));
            if (info.gguf_type[b] >= 0) {
                CHECK(strcmp(aq_gguf_type_name((aq_gguf_type)info.gguf_type[b]), "unknown") != 0);
            }
        }
        /* Moment correction: allowed exactly where the table says. */
        aq_ctx *ctx;
        CHECK_OK(aq_ctx_create(&ctx, &err));
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, info.scheme, &err));
        CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, 1, &err));
        float w[2 * 512];
        for (size_t i = 0; i < 2 * 512; i++) {
            w[i] = (float)sin(0.1 * (double)i) * 3.0f;
        }
        int64_t ws[2] = {2, 512};
        aq_tensor t = {"w", AQ_DTYPE_F32, w, ws, 2};
        aq_layout l;
        CHECK_OK(aq_quantize_bound(ctx, &t, &l, &err));
        uint8_t packed[2 * 512 + 256];
        float sc[64], zp[64];
        aq_qbuffers out = {packed, sizeof packed, sc, zp, 64};
        aq_status st = aq_quantize_ex(ctx, &t, NULL, &out, NULL, &err);
        CHECK_MSG((st == AQ_OK) == (info.preserve_moments != 0), "%s: moments %d", info.name,
                  (int)st);
        aq_ctx_free(ctx);
        if (info.selectable) {
            size_t at = strlen(choices);
            snprintf(choices + at, sizeof choices - at, "%s%s", at > 0 ? "," : "", info.name);
        }
    }
    /* The "scheme" setting offers exactly the selectable schemes. */
    aq_setting_info si = AQ_SIZED_INIT(aq_setting_info);
    CHECK_OK(aq_setting_find("scheme", &si, &err));
    CHECK_MSG(strcmp(si.choices, choices) == 0, "'%s' vs '%s'", si.choices, choices);
    /* Version-1 data: the flattened layout's name meant the row layout. */
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_KQUANT, 1) == AQ_SCHEME_KQUANT_ROWS);
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_KQUANT, 2) == AQ_SCHEME_KQUANT);
    CHECK(aq_scheme_for_format_version(AQ_SCHEME_AFFINE, 1) == AQ_SCHEME_AFFINE);
    aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
    CHECK_FAILS(aq_scheme_get_info(AQ_SCHEME_COUNT, &info, &err), AQ_INVALID_PARAMETER,
                "Invalid scheme");
    info.size = 4;
    CHECK_FAILS(aq_scheme_get_info(AQ_SCHEME_AFFINE, &info, &err), AQ_INVALID_ARGUMENT, "size");
}

/* The context's parameters are settings of the same name and bounds. */
TEST(context_parameters_are_settings)
{
    aq_error err;
    for (int p = 0; p < AQ_PARAM_COUNT; p++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        CHECK_OK(aq_setting_find(aq_param_name((aq_param)p), &info, &err));
        if (info.type == AQ_SETTING_CHOICE) {
            continue; /* the scheme: by name */
        }
        int64_t lo, hi;
        CHECK_OK(aq_param_bounds((aq_param)p, &lo, &hi, &err));
        CHECK_MSG((double)lo == info.lower && (double)hi == info.upper,
                  "%s: [%lld, %lld] vs "
                  "[%g, %g]",
                  info.name, (long long)lo, (long long)hi, info.lower, info.upper);
    }
    /* gguf_search: the choice's index is the parameter (none 0, full 1, the default). */
    aq_settings *s;
    aq_ctx *ctx;
    int64_t v = -1;
    CHECK_OK(aq_settings_create(&s, &err));
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_GGUF_SEARCH, &v, &err));
    CHECK(v == 1);
    CHECK_OK(aq_settings_set_text(s, "gguf_search", "none", &err));
    CHECK_OK(aq_settings_apply_ctx(s, ctx, &err));
    CHECK_OK(aq_ctx_get_param(ctx, AQ_PARAM_GGUF_SEARCH, &v, &err));
    CHECK(v == 0);
    CHECK_FAILS(aq_settings_set_text(s, "gguf_search", "some", &err), AQ_INVALID_PARAMETER,
                "gguf_search");
    CHECK_FAILS(aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, 2, &err), AQ_INVALID_PARAMETER,
                "Invalid gguf_search: 2");
    aq_ctx_free(ctx);
    aq_settings_free(s);
}

AQ_TEST_MAIN({"table_is_consistent", table_is_consistent},
             {"context_parameters_are_settings", context_parameters_are_settings},
             {"set_and_get_by_name", set_and_get_by_name},
             {"bounds_errors_name_the_setting", bounds_errors_name_the_setting},
             {"profiles_in_one_call", profiles_in_one_call}, {"scheme_table", scheme_table})
