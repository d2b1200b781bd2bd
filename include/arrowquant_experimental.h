/*
 * arrowquant_experimental.h - the experimental part of libarrowquant's API.
 *
 * arrowquant.h is the stable surface: what it declares keeps its meaning within a major.minor
 * release. What this header declares may change in any release; new API starts here and moves
 * to arrowquant.h once it has settled. A program opts in by defining AQ_EXPERIMENTAL before
 * including it, so that depending on the unstable part is a visible choice:
 *
 *     #define AQ_EXPERIMENTAL
 *     #include <arrowquant_experimental.h>
 *
 * Structs that a caller fills carry their size as the first field: set it to sizeof the
 * struct as the caller was compiled (AQ_SIZED_INIT, from arrowquant.h, does), so a library with a
 * longer struct reads only the fields the caller knows and leaves the rest at their defaults. The
 * conventions of arrowquant.h hold here too.
 */
#ifndef ARROWQUANT_EXPERIMENTAL_H
#define ARROWQUANT_EXPERIMENTAL_H

#ifndef AQ_EXPERIMENTAL
#    error "arrowquant_experimental.h may change in any release: define AQ_EXPERIMENTAL first"
#endif

#include "arrowquant.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Schemes                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* What a scheme is, from the library's one table of schemes: what callers would otherwise
 * test scheme by scheme. */
typedef struct aq_scheme_info {
    size_t size;             /* sizeof(aq_scheme_info), set by the caller */
    aq_scheme scheme;        /* filled by the library, as every field below */
    const char *name;        /* aq_scheme_name; static storage */
    unsigned bits_mask;      /* bit b set: b bits per weight are allowed (2, 4, 8) */
    size_t fixed_group_size; /* 0: the layout takes the context's group size; else always
                                this one (AQ_KQUANT_SUPER_BLOCK for both kquant layouts) */
    int flattened;           /* 1: blocks laid over the flattened tensor; 0: row by row */
    int sub_block_params;    /* 1: per-sub-block scales and mins follow the codes in the
                                packed data; scales and zero_points hold d and dmin */
    int importance;          /* 1: an importance vector steers the search */
    int preserve_moments;    /* 1: AQ_PARAM_PRESERVE_MOMENTS applies to it */
    int selectable;          /* 0: read only (a layout of older files), never written */
    float max_abs;           /* largest |x| quantized; 0: any finite value */
    /* The GGUF type a tensor of this scheme is written as at b bits (index b), where GGUF has
     * one of the same role; -1 where none does. */
    int gguf_type[9];
} aq_scheme_info;

/* Fills *out (whose size field the caller has set) for `scheme`. AQ_INVALID_PARAMETER for an
 * unknown scheme, AQ_INVALID_ARGUMENT for a size smaller than the first release's struct. */
AQ_API AQ_MUST_CHECK aq_status aq_scheme_get_info(aq_scheme scheme, aq_scheme_info *out,
                                                  aq_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Settings                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Every choice of a quantization run lives in one table, owned by the library: its name, type,
 * bounds, default and help. The command's flags, the Python keywords and DiffusionQuantConfig
 * are read from it, so a setting is added in one place (src/diffusion/settings.c). Values are
 * set and read by name on an aq_settings object, checked when set (the message names the
 * setting and what it accepts); a profile is applied by one call. */

typedef enum aq_setting_type {
    AQ_SETTING_INT = 0,    /* an integer in [lower, upper]; `choices` lists the only values
                              allowed when not every integer in the bounds is */
    AQ_SETTING_FLOAT = 1,  /* a finite number; 0 means "off" when off_allowed, otherwise (and for
                              every other value) it must lie in [lower, upper] (upper excluded
                              when upper_open) */
    AQ_SETTING_BOOL = 2,   /* 0 or 1 ("true"/"false"/"yes"/"no"/"on"/"off" as text) */
    AQ_SETTING_CHOICE = 3, /* one of the comma-separated names in `choices` */
} aq_setting_type;

typedef struct aq_setting_info {
    size_t size; /* sizeof(aq_setting_info), set by the caller */
    const char *name;
    aq_setting_type type;
    double lower, upper;       /* INT and FLOAT bounds (inclusive but see upper_open) */
    int upper_open;            /* FLOAT: upper itself is excluded */
    int off_allowed;           /* FLOAT: 0 is accepted outside the bounds and means "off" */
    const char *choices;       /* CHOICE: "a,b,c"; INT: the allowed values when sparse; else NULL */
    const char *default_value; /* as text, as aq_settings_set_text takes it */
    const char *flag;          /* the command's option ("--bits"); NULL if it has none */
    int in_profile;            /* 1: a profile gives this setting's default */
    const char *help;          /* one line */
} aq_setting_info;

/* The number of settings; aq_setting_at(i) for i below it describes each. */
AQ_API size_t aq_setting_count(void);
AQ_API AQ_MUST_CHECK aq_status aq_setting_at(size_t i, aq_setting_info *out, aq_error *err);
/* AQ_INVALID_PARAMETER naming the known settings for an unknown name. */
AQ_API AQ_MUST_CHECK aq_status aq_setting_find(const char *name, aq_setting_info *out,
                                               aq_error *err);

/* The values of every setting: the defaults until set. One thread at a time. */
typedef struct aq_settings aq_settings;

AQ_API AQ_MUST_CHECK aq_status aq_settings_create(aq_settings **out, aq_error *err);
AQ_API void aq_settings_free(aq_settings *s);

/* Set by name. set_text parses the value as the setting's type (the command's and Python's
 * way in); set_int and set_float take INT/BOOL/CHOICE (the choice's index) and FLOAT values
 * (set_float also INT ones, if integral). A value outside what the setting accepts is
 * AQ_INVALID_PARAMETER, "Invalid NAME: VALUE. Must be ...", and leaves the value as it was. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_text(aq_settings *s, const char *name,
                                                    const char *value, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_int(aq_settings *s, const char *name, int64_t value,
                                                   aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_set_float(aq_settings *s, const char *name, double value,
                                                     aq_error *err);
/* Read by name. get_int: INT, BOOL, CHOICE (the index); get_float: any numeric; get_text: any,
 * as text in storage owned by s, valid until the setting changes or s is freed. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_int(const aq_settings *s, const char *name,
                                                   int64_t *out, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_float(const aq_settings *s, const char *name,
                                                     double *out, aq_error *err);
AQ_API AQ_MUST_CHECK aq_status aq_settings_get_text(const aq_settings *s, const char *name,
                                                    const char **out, aq_error *err);
/* *out = 1 when the setting was set explicitly (not a default, not from a profile). */
AQ_API AQ_MUST_CHECK aq_status aq_settings_is_set(const aq_settings *s, const char *name, int *out,
                                                  aq_error *err);

/* Sets "profile" to `name` and gives every setting the profile covers (in_profile) the
 * profile's value, unless it was set explicitly; settings set later still win. Then applies
 * the scheme's fixed group size (kquant: 512) unless group_size was set explicitly.
 * AQ_INVALID_PARAMETER, naming the known profiles, for an unknown name. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_apply_profile(aq_settings *s, const char *name,
                                                         aq_error *err);

/* Checks the settings together (a group_size that the scheme fixes otherwise, a scheme only
 * readable, bits the scheme does not allow): AQ_INVALID_PARAMETER naming both settings. The
 * group size of a scheme that fixes it follows the scheme unless set explicitly. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_check(aq_settings *s, aq_error *err);

/* aq_settings_check, then the context's parameters (bit_width, group_size, scheme, threads,
 * preserve_moments) from the settings. */
AQ_API AQ_MUST_CHECK aq_status aq_settings_apply_ctx(aq_settings *s, aq_ctx *ctx, aq_error *err);

#ifdef __cplusplus
}
#endif

#endif /* ARROWQUANT_EXPERIMENTAL_H */
