/*
 * Layer rules for diffusion models: which tensors stay in 16 bits, which go to 8 bits and which
 * follow the profile, from their names (diffusers and transformers naming) and shapes.
 *
 * Why these layers: a sampler runs the denoiser tens of times, so errors in what every step
 * sees compound. The timestep embedding and the modulation it drives (adaptive-norm scale,
 * shift and gate; a UNet resnet's time projection) set the operating point of whole blocks at
 * each step; the first layer sees every input and the last layer writes the predicted noise
 * directly; a VAE's layers next to the latent carry everything the latent holds. These are a
 * small share of the weights, so 8 bits for them costs little. Norms, biases, embedding and
 * positional tables are tiny or indexed (a quantization error in a row of an embedding table
 * is not averaged away by a matrix product), so they stay in 16 bits.
 */
#define _POSIX_C_SOURCE 200809L

#include "aq_common.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct rl_component {
    char *name; /* "" for names without "/" */
    aq_family family;
} rl_component;

typedef struct rl_override {
    char *pattern;
    unsigned bit_width; /* 2, 4, 8 or AQ_RULES_KEEP */
} rl_override;

struct aq_rules {
    aq_family family; /* as created: AQ_FAMILY_AUTO means per component */
    aq_profile profile;
    rl_component *components;
    size_t n_components;
    rl_override *overrides;
    size_t n_overrides;
};

static const char *const rl_family_names[AQ_FAMILY_COUNT] = {
    "auto", "generic", "unet", "dit", "mmdit", "flux", "vae", "clip_text", "t5_text"};

static const char *const rl_rule_names[AQ_RULE_COUNT] = {
    "profile",    "bias",           "norm",         "embedding",  "positional",
    "vector",     "time_embedding", "conditioning", "modulation", "first_layer",
    "last_layer", "latent",         "override"};

const char *aq_family_name(aq_family family)
{
    return (unsigned)family < AQ_FAMILY_COUNT ? rl_family_names[family] : "unknown";
}

const char *aq_rule_name(aq_rule rule)
{
    return (unsigned)rule < AQ_RULE_COUNT ? rl_rule_names[rule] : "unknown";
}

aq_status aq_family_from_name(const char *name, aq_family *out, aq_error *err)
{
    if (name == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_family_from_name: NULL argument");
    }
    for (unsigned i = 0; i < AQ_FAMILY_COUNT; i++) {
        if (strcmp(name, rl_family_names[i]) == 0) {
            *out = (aq_family)i;
            return AQ_OK;
        }
    }
    return aq__error_set(err, AQ_INVALID_PARAMETER,
                         "Unknown model family '%s'. Known families: auto, generic, unet, dit, "
                         "mmdit, flux, vae, clip_text, t5_text",
                         name);
}

/* ---- name helpers ---- */

static bool rl_starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* s contains ".needle" at a segment boundary or starts with "needle" (needle ends with '.'). */
static bool rl_has_segment(const char *s, const char *needle)
{
    if (rl_starts(s, needle)) {
        return true;
    }
    size_t m = strlen(needle);
    for (const char *p = strchr(s, '.'); p != NULL; p = strchr(p + 1, '.')) {
        if (strncmp(p + 1, needle, m) == 0) {
            return true;
        }
    }
    return false;
}

/* The last segment (the parameter name: "weight", "bias", "pos_embed") and the one before it
 * (the module name), as pointers and lengths into s. */
static void rl_tail(const char *s, const char **param, size_t *param_len, const char **module,
                    size_t *module_len)
{
    const char *last = strrchr(s, '.');
    *param = last != NULL ? last + 1 : s;
    *param_len = strlen(*param);
    *module = "";
    *module_len = 0;
    if (last != NULL) {
        const char *start = last;
        while (start > s && start[-1] != '.') {
            start--;
        }
        *module = start;
        *module_len = (size_t)(last - start);
    }
}

static bool rl_eq(const char *p, size_t len, const char *word)
{
    return strlen(word) == len && memcmp(p, word, len) == 0;
}

static bool rl_in(const char *p, size_t len, const char *const *words)
{
    for (; *words != NULL; words++) {
        if (rl_eq(p, len, *words)) {
            return true;
        }
    }
    return false;
}

/* Some segment of the name (other than the parameter) contains "norm", or is "ln_*". */
static bool rl_in_norm(const char *s)
{
    const char *seg = s;
    while (seg != NULL && *seg != '\0') {
        const char *dot = strchr(seg, '.');
        if (dot == NULL) {
            break; /* the parameter itself */
        }
        size_t len = (size_t)(dot - seg);
        for (size_t i = 0; i + 4 <= len; i++) {
            if (memcmp(seg + i, "norm", 4) == 0) {
                return true;
            }
        }
        if (len >= 3 && memcmp(seg, "ln_", 3) == 0) {
            return true;
        }
        seg = dot + 1;
    }
    return false;
}

/* ---- family detection ---- */

/* names[i] belongs to the component when it starts with prefix (prefix_len bytes, "" = every
 * name when prefix_len is 0 and unprefixed is false). With unprefixed, only names without '/'
 * belong. *local is the name after the prefix. */
static bool rl_member(const char *name, const char *prefix, size_t prefix_len, bool unprefixed,
                      const char **local)
{
    if (unprefixed) {
        *local = name;
        return strchr(name, '/') == NULL;
    }
    if (strncmp(name, prefix, prefix_len) != 0) {
        return false;
    }
    *local = name + prefix_len;
    return true;
}

static aq_family rl_detect(const char *const *names, size_t n, const char *prefix,
                           size_t prefix_len, bool unprefixed)
{
    bool flux = false, mmdit = false, ctx = false, transformer = false, unet = false;
    bool down = false, conv_in = false, vae = false, clip = false, t5 = false;
    for (size_t i = 0; i < n; i++) {
        const char *s;
        if (names[i] == NULL || !rl_member(names[i], prefix, prefix_len, unprefixed, &s)) {
            continue;
        }
        flux |= rl_starts(s, "single_transformer_blocks.") || rl_starts(s, "x_embedder.");
        mmdit |= rl_has_segment(s, "norm1_context.");
        ctx |= rl_starts(s, "context_embedder.");
        transformer |= rl_starts(s, "transformer_blocks.");
        unet |= rl_starts(s, "time_embedding.");
        down |= rl_starts(s, "down_blocks.") || rl_starts(s, "up_blocks.");
        conv_in |= rl_starts(s, "conv_in.");
        vae |= rl_starts(s, "encoder.conv_in.") || rl_starts(s, "decoder.conv_out.") ||
               rl_starts(s, "encoder.down_blocks.");
        clip |= rl_starts(s, "text_model.");
        t5 |= rl_starts(s, "encoder.block.") || strcmp(s, "shared.weight") == 0;
    }
    if (flux) {
        return AQ_FAMILY_FLUX;
    }
    if (transformer && (mmdit || ctx)) {
        return AQ_FAMILY_MMDIT;
    }
    if (transformer) {
        return AQ_FAMILY_DIT;
    }
    if (unet || (down && conv_in)) {
        return AQ_FAMILY_UNET;
    }
    if (vae) {
        return AQ_FAMILY_VAE;
    }
    if (clip) {
        return AQ_FAMILY_CLIP_TEXT;
    }
    if (t5) {
        return AQ_FAMILY_T5_TEXT;
    }
    return AQ_FAMILY_GENERIC;
}

aq_family aq_family_detect(const char *const *names, size_t n)
{
    if (names == NULL) {
        return AQ_FAMILY_GENERIC;
    }
    return rl_detect(names, n, "", 0, false);
}

/* ---- the default rules ---- */

static const char *const rl_positional[] = {"pos_embed",
                                            "position_embedding",
                                            "position_embeddings",
                                            "positional_embedding",
                                            "pos_embedding",
                                            "relative_attention_bias",
                                            NULL};
static const char *const rl_embedding[] = {"token_embedding",
                                           "token_embeddings",
                                           "embed_tokens",
                                           "word_embeddings",
                                           "shared",
                                           "embedding_table",
                                           NULL};

/* Rules every family shares: what is kept. Returns false when none applies. */
static bool rl_generic(const char *s, size_t ndim, aq_rule *rule)
{
    const char *param, *module;
    size_t plen, mlen;
    rl_tail(s, &param, &plen, &module, &mlen);
    if (rl_eq(param, plen, "bias")) {
        *rule = AQ_RULE_BIAS;
        return true;
    }
    /* A parameter that is itself a table (SD3's pos_embed.pos_embed, PixArt's
     * scale_shift_table), or a module that is one. */
    if (rl_in(param, plen, rl_positional) ||
        (rl_eq(param, plen, "weight") && rl_in(module, mlen, rl_positional))) {
        *rule = AQ_RULE_POSITIONAL;
        return true;
    }
    if (rl_eq(param, plen, "scale_shift_table") ||
        (rl_eq(param, plen, "weight") && rl_in(module, mlen, rl_embedding))) {
        *rule = AQ_RULE_EMBEDDING;
        return true;
    }
    /* An nn.Embedding of class labels (UNet num_class_embeds); a TimestepEmbedding under the
     * same name has linear_1/linear_2 children instead. */
    if (rl_eq(param, plen, "weight") && rl_eq(module, mlen, "class_embedding") && ndim == 2 &&
        !rl_starts(s, "class_embedding.linear")) {
        *rule = AQ_RULE_EMBEDDING;
        return true;
    }
    if (ndim < 2) {
        *rule = rl_in_norm(s) ? AQ_RULE_NORM : AQ_RULE_VECTOR;
        return true;
    }
    return false;
}

static bool rl_unet(const char *s, aq_rule *rule)
{
    if (rl_starts(s, "time_embedding.")) {
        *rule = AQ_RULE_TIME_EMBEDDING;
    } else if (rl_starts(s, "class_embedding.") || rl_starts(s, "add_embedding.") ||
               rl_starts(s, "encoder_hid_proj.")) {
        *rule = AQ_RULE_CONDITIONING;
    } else if (rl_has_segment(s, "time_emb_proj.")) {
        *rule = AQ_RULE_MODULATION;
    } else if (rl_starts(s, "conv_in.")) {
        *rule = AQ_RULE_FIRST_LAYER;
    } else if (rl_starts(s, "conv_out.")) {
        *rule = AQ_RULE_LAST_LAYER;
    } else {
        return false;
    }
    return true;
}

/* "...normX.linear.weight": the modulation projection of an adaptive norm (AdaLayerNormZero,
 * AdaLayerNormContinuous, ...). */
static bool rl_norm_linear(const char *s)
{
    for (const char *p = strstr(s, ".linear."); p != NULL; p = strstr(p + 1, ".linear.")) {
        const char *start = p;
        while (start > s && start[-1] != '.') {
            start--;
        }
        if (rl_starts(start, "norm")) {
            return true;
        }
    }
    return false;
}

/* DiT, PixArt, SD3 and Flux share their embedder and modulation names. */
static bool rl_transformer(const char *s, aq_rule *rule)
{
    if (rl_has_segment(s, "timestep_embedder.")) {
        *rule = AQ_RULE_TIME_EMBEDDING;
    } else if (rl_has_segment(s, "text_embedder.") || rl_has_segment(s, "guidance_embedder.") ||
               rl_starts(s, "caption_projection.")) {
        *rule = AQ_RULE_CONDITIONING;
    } else if (rl_norm_linear(s) || rl_starts(s, "adaln_single.linear.") ||
               rl_starts(s, "proj_out_1.")) {
        *rule = AQ_RULE_MODULATION;
    } else if (rl_starts(s, "pos_embed.proj.") || rl_starts(s, "x_embedder.") ||
               rl_starts(s, "context_embedder.") || rl_starts(s, "proj_in.") ||
               rl_starts(s, "latent_image_embedding.")) {
        *rule = AQ_RULE_FIRST_LAYER;
    } else if (rl_starts(s, "proj_out.") || rl_starts(s, "proj_out_2.")) {
        *rule = AQ_RULE_LAST_LAYER;
    } else {
        return false;
    }
    return true;
}

static bool rl_vae(const char *s, aq_rule *rule)
{
    if (rl_starts(s, "encoder.conv_in.")) {
        *rule = AQ_RULE_FIRST_LAYER;
    } else if (rl_starts(s, "decoder.conv_out.")) {
        *rule = AQ_RULE_LAST_LAYER;
    } else if (rl_starts(s, "quant_conv.") || rl_starts(s, "post_quant_conv.") ||
               rl_starts(s, "encoder.conv_out.") || rl_starts(s, "decoder.conv_in.")) {
        *rule = AQ_RULE_LATENT;
    } else {
        return false;
    }
    return true;
}

static bool rl_clip(const char *s, aq_rule *rule)
{
    if (rl_starts(s, "text_projection.") || rl_starts(s, "visual_projection.")) {
        *rule = AQ_RULE_LAST_LAYER;
        return true;
    }
    return false;
}

static aq_rule rl_default(aq_family family, const char *s, size_t ndim)
{
    aq_rule rule = AQ_RULE_PROFILE;
    if (rl_generic(s, ndim, &rule)) {
        return rule;
    }
    switch (family) {
    case AQ_FAMILY_UNET:
        (void)rl_unet(s, &rule);
        break;
    case AQ_FAMILY_DIT:
    case AQ_FAMILY_MMDIT:
    case AQ_FAMILY_FLUX:
        (void)rl_transformer(s, &rule);
        break;
    case AQ_FAMILY_VAE:
        (void)rl_vae(s, &rule);
        break;
    case AQ_FAMILY_CLIP_TEXT:
        (void)rl_clip(s, &rule);
        break;
    default:
        break;
    }
    return rule;
}

/* ---- the rules object ---- */

static char *rl_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

void aq_rules_free(aq_rules *rules)
{
    if (rules == NULL) {
        return;
    }
    for (size_t i = 0; i < rules->n_components; i++) {
        free(rules->components[i].name);
    }
    for (size_t i = 0; i < rules->n_overrides; i++) {
        free(rules->overrides[i].pattern);
    }
    free(rules->components);
    free(rules->overrides);
    free(rules);
}

static const rl_component *rl_find_component(const aq_rules *rules, const char *name, size_t len)
{
    for (size_t i = 0; i < rules->n_components; i++) {
        if (strlen(rules->components[i].name) == len &&
            memcmp(rules->components[i].name, name, len) == 0) {
            return &rules->components[i];
        }
    }
    return NULL;
}

aq_status aq_rules_create(aq_family family, const aq_profile *profile, const char *const *names,
                          size_t n_names, aq_rules **out, aq_error *err)
{
    aq_status st = AQ_OK;
    aq_rules *r = NULL;
    if (out == NULL || (names == NULL && n_names > 0)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_rules_create: NULL argument");
    }
    if ((unsigned)family >= AQ_FAMILY_COUNT) {
        return aq__error_set(err, AQ_INVALID_PARAMETER, "Unknown model family %d", (int)family);
    }
    if (family == AQ_FAMILY_AUTO && n_names == 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Detecting the model family needs the tensor names (none given)");
    }
    r = calloc(1, sizeof *r);
    if (r == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Out of memory creating layer rules");
    }
    r->family = family;
    if (profile != NULL) {
        if (profile->bit_width != 2 && profile->bit_width != 4 && profile->bit_width != 8) {
            st = aq__error_set(err, AQ_INVALID_PARAMETER,
                               "Invalid bit_width: %u. Must be 2, 4, or 8", profile->bit_width);
            goto done;
        }
        if ((unsigned)profile->scheme >= AQ_SCHEME_COUNT) {
            st = aq__error_set(err, AQ_INVALID_PARAMETER, "Unknown scheme %d in the profile",
                               (int)profile->scheme);
            goto done;
        }
        r->profile = *profile;
    } else if ((st = aq_profile_get("local", &r->profile, err)) != AQ_OK) {
        goto done;
    }
    if (family == AQ_FAMILY_AUTO) {
        /* Components in order of first appearance; at most one per name, so n_names bounds
         * the array. */
        r->components = calloc(n_names, sizeof *r->components);
        if (r->components == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "Out of memory creating layer rules");
            goto done;
        }
        for (size_t i = 0; i < n_names; i++) {
            if (names[i] == NULL) {
                st = aq__error_set(err, AQ_INVALID_ARGUMENT, "Tensor name %zu is NULL", i);
                goto done;
            }
            const char *slash = strchr(names[i], '/');
            size_t len = slash != NULL ? (size_t)(slash - names[i]) : 0;
            if (rl_find_component(r, names[i], len) != NULL) {
                continue;
            }
            rl_component *c = &r->components[r->n_components];
            c->name = rl_strndup(names[i], len);
            if (c->name == NULL) {
                st = aq__error_set(err, AQ_NO_MEMORY, "Out of memory creating layer rules");
                goto done;
            }
            r->n_components++;
            if (slash != NULL) {
                c->family = rl_detect(names, n_names, names[i], len + 1, false);
            } else {
                c->family = rl_detect(names, n_names, "", 0, true);
            }
        }
    }
    *out = r;
    r = NULL;
done:
    aq_rules_free(r);
    return st;
}

void aq_rules_profile(const aq_rules *rules, aq_profile *out)
{
    if (rules != NULL && out != NULL) {
        *out = rules->profile;
    }
}

size_t aq_rules_component_count(const aq_rules *rules)
{
    return rules != NULL ? rules->n_components : 0;
}

aq_status aq_rules_component_get(const aq_rules *rules, size_t i, const char **component,
                                 aq_family *family, aq_error *err)
{
    if (rules == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_rules_component_get: NULL rules");
    }
    if (i >= rules->n_components) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Component index %zu out of range (%zu)", i,
                             rules->n_components);
    }
    if (component != NULL) {
        *component = rules->components[i].name;
    }
    if (family != NULL) {
        *family = rules->components[i].family;
    }
    return AQ_OK;
}

static void rl_describe(unsigned bits, char *buf, size_t size)
{
    if (bits == AQ_RULES_KEEP) {
        snprintf(buf, size, "keep");
    } else {
        snprintf(buf, size, "%u bits", bits);
    }
}

aq_status aq_rules_add_override(aq_rules *rules, const char *pattern, unsigned bit_width,
                                aq_error *err)
{
    if (rules == NULL || pattern == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_rules_add_override: NULL argument");
    }
    if (pattern[0] == '\0') {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Override pattern is empty");
    }
    if (bit_width != 2 && bit_width != 4 && bit_width != 8 && bit_width != AQ_RULES_KEEP) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid bit width %u for override '%s'. Must be 2, 4, 8, or "
                             "keep (16)",
                             bit_width, pattern);
    }
    for (size_t i = 0; i < rules->n_overrides; i++) {
        const rl_override *o = &rules->overrides[i];
        if (strcmp(o->pattern, pattern) != 0) {
            continue;
        }
        if (o->bit_width == bit_width) {
            return AQ_OK; /* given twice, same meaning */
        }
        char a[16], b[16];
        rl_describe(o->bit_width, a, sizeof a);
        rl_describe(bit_width, b, sizeof b);
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Contradictory overrides: pattern '%s' is given both %s and %s",
                             pattern, a, b);
    }
    rl_override *grown = realloc(rules->overrides, (rules->n_overrides + 1) * sizeof *grown);
    if (grown == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Out of memory adding an override");
    }
    rules->overrides = grown;
    char *copy = rl_strndup(pattern, strlen(pattern));
    if (copy == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Out of memory adding an override");
    }
    rules->overrides[rules->n_overrides].pattern = copy;
    rules->overrides[rules->n_overrides].bit_width = bit_width;
    rules->n_overrides++;
    return AQ_OK;
}

aq_status aq_rules_add_override_spec(aq_rules *rules, const char *spec, aq_error *err)
{
    if (rules == NULL || spec == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_rules_add_override_spec: NULL argument");
    }
    const char *eq = strrchr(spec, '=');
    if (eq == NULL || eq == spec || eq[1] == '\0') {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Invalid override '%s': expected PATTERN=BITS (BITS 2, 4, 8 or keep)",
                             spec);
    }
    const char *bits = eq + 1;
    unsigned value;
    if (strcmp(bits, "keep") == 0 || strcmp(bits, "16") == 0) {
        value = AQ_RULES_KEEP;
    } else if (strcmp(bits, "2") == 0 || strcmp(bits, "4") == 0 || strcmp(bits, "8") == 0) {
        value = (unsigned)(bits[0] - '0');
    } else {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid bit width '%s' in override '%s'. Must be 2, 4, 8, or keep",
                             bits, spec);
    }
    char *pattern = rl_strndup(spec, (size_t)(eq - spec));
    if (pattern == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Out of memory adding an override");
    }
    aq_status st = aq_rules_add_override(rules, pattern, value, err);
    free(pattern);
    return st;
}

static unsigned rl_keep_bits(aq_dtype dtype)
{
    return dtype == AQ_DTYPE_BF16 ? 32u : 16u;
}

aq_status aq_rules_decide(const aq_rules *rules, const char *name, const int64_t *shape,
                          size_t ndim, aq_dtype dtype, aq_rule_decision *out, aq_error *err)
{
    if (rules == NULL || name == NULL || out == NULL || (shape == NULL && ndim > 0)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_rules_decide: NULL argument");
    }
    if (ndim > AQ_MAX_NDIM) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Tensor '%s' has %zu dimensions (at most %d allowed)", name, ndim,
                             AQ_MAX_NDIM);
    }
    if ((unsigned)dtype >= AQ_DTYPE_COUNT) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Tensor '%s' has an unknown dtype %d", name,
                             (int)dtype);
    }
    aq_rule_decision d;
    memset(&d, 0, sizeof d);
    d.scheme = rules->profile.scheme;
    d.group_size = rules->profile.group_size;

    /* Component and family. */
    const char *slash = strchr(name, '/');
    const char *local = slash != NULL ? slash + 1 : name;
    if (rules->family == AQ_FAMILY_AUTO) {
        size_t len = slash != NULL ? (size_t)(slash - name) : 0;
        const rl_component *c = rl_find_component(rules, name, len);
        if (c == NULL) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Tensor '%s' belongs to component '%.*s', which was not among "
                                 "the tensor names the layer rules were created from",
                                 name, (int)len, name);
        }
        d.family = c->family;
    } else {
        d.family = rules->family;
    }

    /* Overrides: every matching pattern must agree. */
    const rl_override *match = NULL;
    for (size_t i = 0; i < rules->n_overrides; i++) {
        const rl_override *o = &rules->overrides[i];
        if (fnmatch(o->pattern, name, 0) != 0) {
            continue;
        }
        if (match != NULL && match->bit_width != o->bit_width) {
            char a[16], b[16];
            rl_describe(match->bit_width, a, sizeof a);
            rl_describe(o->bit_width, b, sizeof b);
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Contradictory overrides for tensor '%s': '%s' says %s, '%s' "
                                 "says %s",
                                 name, match->pattern, a, o->pattern, b);
        }
        if (match == NULL) {
            match = o;
        }
    }
    if (match != NULL) {
        d.rule = AQ_RULE_OVERRIDE;
        d.pattern = match->pattern;
        d.keep = match->bit_width == AQ_RULES_KEEP;
        d.bit_width = d.keep ? rl_keep_bits(dtype) : match->bit_width;
        *out = d;
        return AQ_OK;
    }

    d.rule = rl_default(d.family, local, ndim);
    if (d.rule == AQ_RULE_EMBEDDING || d.rule == AQ_RULE_VECTOR) {
        /* Token embedding tables and unnamed vectors are kept only while small: a large one
         * (a text encoder's vocabulary, half of a MiniLM's weights; a weight passed flat,
         * without its shape) is quantized like any other large matrix. */
        size_t n = 1;
        for (size_t k = 0; k < ndim; k++) {
            n *= shape[k] > 0 ? (size_t)shape[k] : 0;
        }
        if (n >
            (d.rule == AQ_RULE_EMBEDDING ? AQ_RULES_KEEP_TABLE_MAX : AQ_RULES_KEEP_VECTOR_MAX)) {
            d.rule = AQ_RULE_PROFILE;
        }
    }
    switch (d.rule) {
    case AQ_RULE_PROFILE:
        d.bit_width = rules->profile.bit_width;
        break;
    case AQ_RULE_BIAS:
    case AQ_RULE_NORM:
    case AQ_RULE_EMBEDDING:
    case AQ_RULE_POSITIONAL:
    case AQ_RULE_VECTOR:
        d.keep = 1;
        d.bit_width = rl_keep_bits(dtype);
        break;
    default:
        /* 8 bits, or the profile's width when that is larger (never the case today). */
        d.bit_width = rules->profile.bit_width > 8 ? rules->profile.bit_width : 8;
        break;
    }
    *out = d;
    return AQ_OK;
}
