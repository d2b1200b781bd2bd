/*
 * The settings table: every choice of a quantization run, with its name, type, bounds, default,
 * command-line flag and help, and an object holding one value of each, set and read by name.
 * The command, the Python module and DiffusionQuantConfig read this table instead of keeping
 * their own checks, so a setting is added here and nowhere else.
 */
#include "aq_common.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ST_TEXT 48

typedef struct st_def {
    const char *name;
    aq_setting_type type;
    double lower, upper;
    int upper_open, off_allowed;
    const char *choices;
    const char *def;
    const char *flag;
    int in_profile;
    const char *help;
    unsigned applies; /* the writers that apply it: ST_MODEL_FILE, ST_GGUF */
} st_def;

/* The writers that apply a setting: the model file's (aq_model_quantize and its callers) and
 * GGUF output's (aq_model_to_gguf and its callers). The command and the Python entry points
 * refuse a value for a setting that their writer does not apply. */
#define ST_MODEL_FILE 1u
#define ST_GGUF 2u
#define ST_BOTH (ST_MODEL_FILE | ST_GGUF)

enum {
    ST_PROFILE,
    ST_BIT_WIDTH,
    ST_GROUP_SIZE,
    ST_SCHEME,
    ST_THREADS,
    ST_PRESERVE_MOMENTS,
    ST_MIN_COSINE,
    ST_TARGET_BPW,
    ST_BUDGET_SCOPE,
    ST_FAMILY,
    ST_CALIBRATION_COMBINE,
    ST_COMPRESSION,
    ST_MIN_ELEMENTS,
    ST_BATCH_BYTES,
    ST_GGUF_SEARCH,
    ST_COUNT
};

/* The choices of "scheme" are the selectable rows of the scheme table, of "family" the
 * aq_family names, of "compression" the aq_ipc_compression values, in enum order. */
static const st_def st_table[ST_COUNT] = {
    [ST_PROFILE] = {"profile", AQ_SETTING_CHOICE, 0, 0, 0, 0, "edge,local,cloud", "local",
                    "--profile", 0,
                    "deployment profile: the bits, scheme, floor and budget of a diffusion run",
                    ST_BOTH},
    [ST_BIT_WIDTH] = {"bit_width", AQ_SETTING_INT, 2, 8, 0, 0, "2,4,8", "4", "--bits", 1,
                      "bits per weight of the tensors that follow the profile", ST_MODEL_FILE},
    [ST_GROUP_SIZE] = {"group_size", AQ_SETTING_INT, AQ_MIN_GROUP_SIZE, AQ_GROUP_SIZE_ROW, 0, 0,
                       NULL, "128", "--group-size", 0,
                       "elements per group (a scheme with a fixed block size uses its own)",
                       ST_MODEL_FILE},
    [ST_SCHEME] = {"scheme", AQ_SETTING_CHOICE, 0, 0, 0, 0, "affine,affine_search,kquant", "affine",
                   "--scheme", 1, "quantization scheme", ST_MODEL_FILE},
    [ST_THREADS] = {"threads", AQ_SETTING_INT, 0, AQ_MAX_THREADS, 0, 0, NULL, "1", "--threads", 0,
                    "worker threads (0: one per CPU); results never depend on it", ST_BOTH},
    [ST_PRESERVE_MOMENTS] = {"preserve_moments", AQ_SETTING_BOOL, 0, 1, 0, 0, NULL, "0", NULL, 0,
                             "correct each row's scales to keep its mean and variance",
                             ST_MODEL_FILE},
    [ST_MIN_COSINE] = {"min_cosine", AQ_SETTING_FLOAT, 0, 1, 1, 1, NULL, "0", "--min-accuracy", 1,
                       "quality floor: a tensor below this cosine similarity gets more bits "
                       "(0: no floor)",
                       ST_MODEL_FILE},
    [ST_TARGET_BPW] = {"target_bpw", AQ_SETTING_FLOAT, 2, 32, 0, 1, NULL, "0", "--target-bpw", 1,
                       "size budget in bits per weight (0: no budget)", ST_MODEL_FILE},
    [ST_BUDGET_SCOPE] = {"budget_scope", AQ_SETTING_CHOICE, 0, 0, 0, 0, "profile,model", "profile",
                         "--budget-scope", 0,
                         "what the budget covers: the tensors that follow the profile, or the "
                         "whole model",
                         ST_MODEL_FILE},
    [ST_FAMILY] = {"family", AQ_SETTING_CHOICE, 0, 0, 0, 0,
                   "auto,generic,unet,dit,mmdit,flux,vae,clip_text,t5_text", "auto", "--family", 0,
                   "model family of the layer rules (auto: from the tensor names)", ST_BOTH},
    [ST_CALIBRATION_COMBINE] = {"calibration_combine", AQ_SETTING_CHOICE, 0, 0, 0, 0, "max,mean",
                                "max", "--calibration-combine", 0,
                                "how a calibration's timestep groups are combined", ST_BOTH},
    [ST_COMPRESSION] = {"compression", AQ_SETTING_CHOICE, 0, 0, 0, 0, "none,lz4,zstd", "zstd",
                        "--compression", 0, "compression of the output file's record batches",
                        ST_MODEL_FILE},
    [ST_MIN_ELEMENTS] = {"min_elements", AQ_SETTING_INT, 1, 4611686018427387904.0, 0, 0, NULL,
                         "16384", "--min-elements", 0,
                         "tensors with fewer elements are kept (without layer rules)",
                         ST_MODEL_FILE},
    [ST_BATCH_BYTES] = {"batch_bytes", AQ_SETTING_INT, 1, 4611686018427387904.0, 0, 0, NULL,
                        "67108864", NULL, 0, "bytes of source tensors per written record batch",
                        ST_MODEL_FILE},
    /* The choice's index is AQ_PARAM_GGUF_SEARCH's value. */
    [ST_GGUF_SEARCH] = {"gguf_search", AQ_SETTING_CHOICE, 0, 0, 0, 0, "none,full", "full",
                        "--gguf-search", 0,
                        "GGUF Q8_0, Q4_0, Q5_0: search each block's scale (full, lower error) or "
                        "round as ggml does (none: ggml's bytes, at memory speed)",
                        ST_GGUF},
};

typedef struct st_value {
    double num;         /* INT, BOOL, FLOAT; CHOICE: the index */
    char text[ST_TEXT]; /* the value as text (aq_settings_get_text) */
    int set;            /* set explicitly */
} st_value;

struct aq_settings {
    st_value v[ST_COUNT];
};

size_t aq_setting_count(void)
{
    return ST_COUNT;
}

static void st_info(size_t i, aq_setting_info *out)
{
    const st_def *d = &st_table[i];
    aq_setting_info info = {sizeof info,
                            d->name,
                            d->type,
                            d->lower,
                            d->upper,
                            d->upper_open,
                            d->off_allowed,
                            d->choices,
                            d->def,
                            d->flag,
                            d->in_profile,
                            d->help,
                            (d->applies & ST_GGUF) != 0,
                            (d->applies & ST_MODEL_FILE) != 0};
    info.size = out->size < sizeof info ? out->size : sizeof info;
    memcpy(out, &info, info.size);
}

/* Callers of the first release pass at least the struct up to help. */
#define ST_INFO_MIN_SIZE (offsetof(aq_setting_info, help) + sizeof(const char *))

aq_status aq_setting_at(size_t i, aq_setting_info *out, aq_error *err)
{
    if (out == NULL || out->size < ST_INFO_MIN_SIZE) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_setting_at: out is NULL or out->size (%zu) is below %zu",
                             out != NULL ? out->size : (size_t)0, ST_INFO_MIN_SIZE);
    }
    if (i >= ST_COUNT) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "setting %zu: there are %d settings", i,
                             ST_COUNT);
    }
    st_info(i, out);
    return AQ_OK;
}

static aq_status st_index(const char *name, size_t *out, aq_error *err)
{
    if (name == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "setting name is NULL");
    }
    for (size_t i = 0; i < ST_COUNT; i++) {
        if (strcmp(st_table[i].name, name) == 0) {
            *out = i;
            return AQ_OK;
        }
    }
    char known[512];
    size_t at = 0;
    for (size_t i = 0; i < ST_COUNT && at < sizeof known; i++) {
        int n =
            snprintf(known + at, sizeof known - at, "%s%s", i > 0 ? ", " : "", st_table[i].name);
        at += n > 0 ? (size_t)n : 0;
    }
    return aq__error_set(err, AQ_INVALID_PARAMETER, "Unknown setting '%s'. Known settings: %s",
                         name, known);
}

aq_status aq_setting_find(const char *name, aq_setting_info *out, aq_error *err)
{
    size_t i;
    aq_status st = st_index(name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    return aq_setting_at(i, out, err);
}

/* "a,b,c" -> "a, b, or c" (or_last) / "a, b, c". */
static void st_list(const char *choices, int or_last, char *out, size_t cap)
{
    size_t n = 1, k = 0, at = 0;
    for (const char *p = choices; *p != '\0'; p++) {
        n += *p == ',';
    }
    out[0] = '\0';
    for (const char *p = choices; *p != '\0' && at + 8 < cap;) {
        const char *e = strchr(p, ',');
        size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
        const char *sep = k == 0 ? "" : (or_last && k == n - 1) ? ", or " : ", ";
        int w = snprintf(out + at, cap - at, "%s%.*s", sep, (int)len, p);
        at += w > 0 ? (size_t)w : 0;
        k++;
        p = e != NULL ? e + 1 : p + len;
    }
}

/* The index of `value` among the comma-separated choices, or -1. */
static long st_choice(const char *choices, const char *value)
{
    size_t len = strlen(value);
    long k = 0;
    for (const char *p = choices; p != NULL; k++) {
        const char *e = strchr(p, ',');
        size_t n = e != NULL ? (size_t)(e - p) : strlen(p);
        if (n == len && strncmp(p, value, n) == 0) {
            return k;
        }
        p = e != NULL ? e + 1 : NULL;
    }
    return -1;
}

/* The k-th choice into out. */
static void st_choice_name(const char *choices, long k, char *out, size_t cap)
{
    const char *p = choices;
    for (long i = 0; i < k && p != NULL; i++) {
        p = strchr(p, ',');
        p = p != NULL ? p + 1 : NULL;
    }
    const char *e = p != NULL ? strchr(p, ',') : NULL;
    size_t n = p == NULL ? 0 : e != NULL ? (size_t)(e - p) : strlen(p);
    snprintf(out, cap, "%.*s", (int)n, p != NULL ? p : "");
}

/* Checks a number against the setting; `shown` is the value as the caller wrote it. */
static aq_status st_check_num(const st_def *d, double x, const char *shown, aq_error *err)
{
    char list[256];
    switch (d->type) {
    case AQ_SETTING_INT:
        if (d->choices != NULL) {
            char buf[32];
            snprintf(buf, sizeof buf, "%.0f", x);
            if (x != floor(x) || st_choice(d->choices, buf) < 0) {
                st_list(d->choices, 1, list, sizeof list);
                return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: %s. Must be %s",
                                     d->name, shown, list);
            }
            return AQ_OK;
        }
        if (x != floor(x) || x < d->lower || x > d->upper) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid %s: %s. Must be between %.0f and %.0f", d->name, shown,
                                 d->lower, d->upper);
        }
        return AQ_OK;
    case AQ_SETTING_BOOL:
        if (x != 0.0 && x != 1.0) {
            return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: %s. Must be 0 or 1",
                                 d->name, shown);
        }
        return AQ_OK;
    case AQ_SETTING_FLOAT: {
        if (!isfinite(x)) {
            return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: %s. Must be finite",
                                 d->name, shown);
        }
        bool in = x >= d->lower && (d->upper_open ? x < d->upper : x <= d->upper);
        if (in || (d->off_allowed && x == 0.0)) {
            return AQ_OK;
        }
        if (d->off_allowed && d->lower > 0.0) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid %s: %s. Must be 0 (off) or between %g and %g", d->name,
                                 shown, d->lower, d->upper);
        }
        return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: %s. Must be in [%g, %g%s",
                             d->name, shown, d->lower, d->upper, d->upper_open ? ")" : "]");
    }
    case AQ_SETTING_CHOICE:
        break;
    }
    return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: not a number setting", d->name);
}

static void st_store_num(const st_def *d, st_value *v, double x)
{
    v->num = x;
    if (d->type == AQ_SETTING_CHOICE) {
        st_choice_name(d->choices, (long)x, v->text, sizeof v->text);
    } else if (d->type == AQ_SETTING_FLOAT) {
        snprintf(v->text, sizeof v->text, "%.17g", x);
    } else {
        snprintf(v->text, sizeof v->text, "%.0f", x);
    }
}

/* Parses text as the setting's type into a number (a CHOICE: its index). */
static aq_status st_parse(const st_def *d, const char *text, double *out, aq_error *err)
{
    char list[256];
    if (d->type == AQ_SETTING_CHOICE) {
        long k = st_choice(d->choices, text);
        if (k < 0) {
            st_list(d->choices, 0, list, sizeof list);
            return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s '%s'. Must be one of: %s",
                                 d->name, text, list);
        }
        *out = (double)k;
        return AQ_OK;
    }
    if (d->type == AQ_SETTING_BOOL) {
        static const char *const yes[] = {"1", "true", "yes", "on"};
        static const char *const no[] = {"0", "false", "no", "off"};
        for (size_t i = 0; i < 4; i++) {
            if (strcmp(text, yes[i]) == 0 || strcmp(text, no[i]) == 0) {
                *out = strcmp(text, yes[i]) == 0 ? 1.0 : 0.0;
                return AQ_OK;
            }
        }
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid %s: %s. Must be 0 or 1 (true/false, yes/no, on/off)", d->name,
                             text);
    }
    char *end = NULL;
    errno = 0;
    double x;
    if (d->type == AQ_SETTING_INT) {
        long long i = strtoll(text, &end, 10);
        /* Bounds compared as integers: past 2^53 a double would round them together. */
        if (d->choices == NULL && errno == 0 && end != text && *end == '\0' &&
            (i < (long long)d->lower || i > (long long)d->upper)) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid %s: %s. Must be between %.0f and %.0f", d->name, text,
                                 d->lower, d->upper);
        }
        x = (double)i;
    } else {
        x = strtod(text, &end);
    }
    if (errno != 0 || end == text || *end != '\0') {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: '%s' is not %s", d->name, text,
                             d->type == AQ_SETTING_INT ? "an integer" : "a number");
    }
    aq_status st = st_check_num(d, x, text, err);
    if (st == AQ_OK) {
        *out = x;
    }
    return st;
}

aq_status aq_settings_create(aq_settings **out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_settings_create: NULL output");
    }
    aq_settings *s = calloc(1, sizeof *s);
    if (s == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "aq_settings_create: out of memory");
    }
    for (size_t i = 0; i < ST_COUNT; i++) {
        double x = 0.0;
        aq_status st = st_parse(&st_table[i], st_table[i].def, &x, err);
        if (st != AQ_OK) { /* a default outside its own bounds: a fault of the table */
            free(s);
            return st;
        }
        st_store_num(&st_table[i], &s->v[i], x);
    }
    *out = s;
    return AQ_OK;
}

void aq_settings_free(aq_settings *s)
{
    free(s);
}

static aq_status st_lookup(const aq_settings *s, const char *name, size_t *i, aq_error *err)
{
    if (s == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "settings are NULL");
    }
    return st_index(name, i, err);
}

aq_status aq_settings_set_text(aq_settings *s, const char *name, const char *value, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    if (value == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Invalid %s: NULL value", name);
    }
    double x;
    if ((st = st_parse(&st_table[i], value, &x, err)) != AQ_OK) {
        return st;
    }
    st_store_num(&st_table[i], &s->v[i], x);
    s->v[i].set = 1;
    return AQ_OK;
}

aq_status aq_settings_set_float(aq_settings *s, const char *name, double value, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    const st_def *d = &st_table[i];
    char shown[64];
    snprintf(shown, sizeof shown, "%g", value);
    if (d->type == AQ_SETTING_CHOICE) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "Invalid %s: %s. It takes a name", d->name,
                             shown);
    }
    if ((st = st_check_num(d, value, shown, err)) != AQ_OK) {
        return st;
    }
    st_store_num(d, &s->v[i], value);
    s->v[i].set = 1;
    return AQ_OK;
}

aq_status aq_settings_set_int(aq_settings *s, const char *name, int64_t value, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    const st_def *d = &st_table[i];
    if (d->type == AQ_SETTING_CHOICE) {
        char buf[ST_TEXT];
        st_choice_name(d->choices, (long)value, buf, sizeof buf);
        if (value < 0 || buf[0] == '\0') {
            char list[256];
            st_list(d->choices, 0, list, sizeof list);
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid %s: %" PRId64 ". Must be the index of one of: %s",
                                 d->name, value, list);
        }
        st_store_num(d, &s->v[i], (double)value);
        s->v[i].set = 1;
        return AQ_OK;
    }
    char shown[32];
    snprintf(shown, sizeof shown, "%" PRId64, value);
    if ((st = st_check_num(d, (double)value, shown, err)) != AQ_OK) {
        return st;
    }
    st_store_num(d, &s->v[i], (double)value);
    s->v[i].set = 1;
    return AQ_OK;
}

aq_status aq_settings_get_int(const aq_settings *s, const char *name, int64_t *out, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    if (out == NULL || st_table[i].type == AQ_SETTING_FLOAT) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_settings_get_int: %s is a number with a fraction, or out is NULL",
                             name);
    }
    *out = (int64_t)s->v[i].num;
    return AQ_OK;
}

aq_status aq_settings_get_float(const aq_settings *s, const char *name, double *out, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_settings_get_float: NULL output");
    }
    *out = s->v[i].num;
    return AQ_OK;
}

aq_status aq_settings_get_text(const aq_settings *s, const char *name, const char **out,
                               aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_settings_get_text: NULL output");
    }
    *out = s->v[i].text;
    return AQ_OK;
}

aq_status aq_settings_is_set(const aq_settings *s, const char *name, int *out, aq_error *err)
{
    size_t i;
    aq_status st = st_lookup(s, name, &i, err);
    if (st != AQ_OK) {
        return st;
    }
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_settings_is_set: NULL output");
    }
    *out = s->v[i].set;
    return AQ_OK;
}

aq_status aq_settings_apply_profile(aq_settings *s, const char *name, aq_error *err)
{
    if (s == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "settings are NULL");
    }
    aq_profile p;
    aq_status st = aq_profile_get(name, &p, err);
    if (st != AQ_OK) {
        return st;
    }
    double k;
    if ((st = st_parse(&st_table[ST_PROFILE], name, &k, err)) != AQ_OK) {
        return st;
    }
    st_store_num(&st_table[ST_PROFILE], &s->v[ST_PROFILE], k);
    s->v[ST_PROFILE].set = 1;
    const double from[ST_COUNT] = {
        [ST_BIT_WIDTH] = p.bit_width,
        [ST_MIN_COSINE] = p.min_cosine,
        [ST_TARGET_BPW] = p.target_bpw,
    };
    for (size_t i = 0; i < ST_COUNT; i++) {
        if (!st_table[i].in_profile || s->v[i].set) {
            continue;
        }
        if (i == ST_SCHEME) {
            long c = st_choice(st_table[i].choices, aq_scheme_name(p.scheme));
            if (c < 0) {
                return aq__error_set(err, AQ_INVALID_PARAMETER,
                                     "Profile '%s': scheme '%s' is not selectable", p.name,
                                     aq_scheme_name(p.scheme));
            }
            st_store_num(&st_table[i], &s->v[i], (double)c);
        } else {
            st_store_num(&st_table[i], &s->v[i], from[i]);
        }
    }
    return aq_settings_check(s, err);
}

aq_status aq_settings_check(aq_settings *s, aq_error *err)
{
    if (s == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "settings are NULL");
    }
    aq_scheme scheme;
    aq_status st = aq_scheme_from_name(s->v[ST_SCHEME].text, &scheme, err);
    if (st != AQ_OK) {
        return st;
    }
    aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
    if ((st = aq_scheme_get_info(scheme, &info, err)) != AQ_OK) {
        return st;
    }
    unsigned bits = (unsigned)s->v[ST_BIT_WIDTH].num;
    if (bits > 8 || (info.bits_mask & (1u << bits)) == 0) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid bit_width: %u. The %s scheme does not take it", bits,
                             info.name);
    }
    st_value *g = &s->v[ST_GROUP_SIZE];
    if (info.fixed_group_size != 0) {
        if (g->set && (size_t)g->num != info.fixed_group_size) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid group_size: %s. The %s scheme always uses %zu", g->text,
                                 info.name, info.fixed_group_size);
        }
        st_store_num(&st_table[ST_GROUP_SIZE], g, (double)info.fixed_group_size);
    } else if (!g->set) {
        double x;
        if ((st = st_parse(&st_table[ST_GROUP_SIZE], st_table[ST_GROUP_SIZE].def, &x, err)) !=
            AQ_OK) {
            return st;
        }
        st_store_num(&st_table[ST_GROUP_SIZE], g, x);
    }
    if (s->v[ST_PRESERVE_MOMENTS].num != 0.0 && !info.preserve_moments) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid preserve_moments: 1. The %s scheme does not support it",
                             info.name);
    }
    return AQ_OK;
}

aq_status aq_settings_apply_ctx(aq_settings *s, aq_ctx *ctx, aq_error *err)
{
    aq_status st = aq_settings_check(s, err);
    if (st != AQ_OK) {
        return st;
    }
    aq_scheme scheme;
    if ((st = aq_scheme_from_name(s->v[ST_SCHEME].text, &scheme, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, (int64_t)s->v[ST_BIT_WIDTH].num, err)) !=
            AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)s->v[ST_GROUP_SIZE].num, err)) !=
            AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, (int64_t)s->v[ST_THREADS].num, err)) !=
            AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS,
                               (int64_t)s->v[ST_PRESERVE_MOMENTS].num, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, (int64_t)s->v[ST_GGUF_SEARCH].num,
                               err)) != AQ_OK) {
        return st;
    }
    return AQ_OK;
}
