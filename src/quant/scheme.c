/* The table of schemes: what each scheme is, in one place, for the code that would otherwise
 * test scheme by scheme (layouts, checks, the command, the bindings). */
#include "quant_internal.h"

#include "kernels_quality.h"

#define SCHEME_BITS_248 ((1u << 2) | (1u << 4) | (1u << 8))

/* The entry points of the table: each scheme's kernels behind one signature
 * (aq__scheme_quantize_fn, aq__scheme_dequantize_fn). */
static bool scheme_quantize_affine(const aq__kernel_table *k, aq_dtype dt, const void *src,
                                   const float *importance, const aq__span *s, uint8_t *codes,
                                   uint8_t *sub, float *scales, float *zero_points)
{
    (void)importance;
    (void)sub;
    return k->quantize_affine[dt](src, s, codes, scales, zero_points);
}

static bool scheme_quantize_search(const aq__kernel_table *k, aq_dtype dt, const void *src,
                                   const float *importance, const aq__span *s, uint8_t *codes,
                                   uint8_t *sub, float *scales, float *zero_points)
{
    (void)sub;
    aq__quantize_search_fn fn = k->quantize_search[dt] != NULL
                                    ? k->quantize_search[dt]
                                    : aq__kernels_ref.quantize_search[dt];
    fn(src, importance, s, codes, scales, zero_points);
    return true;
}

static bool scheme_quantize_kquant(const aq__kernel_table *k, aq_dtype dt, const void *src,
                                   const float *importance, const aq__span *s, uint8_t *codes,
                                   uint8_t *sub, float *scales, float *zero_points)
{
    aq__quantize_kquant_fn fn = k->quantize_kquant[dt] != NULL
                                    ? k->quantize_kquant[dt]
                                    : aq__kernels_ref.quantize_kquant[dt];
    fn(src, importance, s, codes, sub, scales, zero_points);
    return true;
}

static void scheme_dequantize_affine(const aq__kernel_table *k, aq_dtype dt, const uint8_t *codes,
                                     const uint8_t *sub, const float *scales,
                                     const float *zero_points, const aq__span *s, void *out)
{
    (void)sub;
    k->dequantize_affine[dt](codes, scales, zero_points, s, out);
}

static void scheme_dequantize_kquant(const aq__kernel_table *k, aq_dtype dt, const uint8_t *codes,
                                     const uint8_t *sub, const float *scales,
                                     const float *zero_points, const aq__span *s, void *out)
{
    aq__dequantize_kquant_fn fn = k->dequantize_kquant[dt] != NULL
                                      ? k->dequantize_kquant[dt]
                                      : aq__kernels_ref.dequantize_kquant[dt];
    fn(codes, sub, scales, zero_points, s, out);
}

static const aq__scheme_traits scheme_table[AQ_SCHEME_COUNT] = {
    [AQ_SCHEME_AFFINE] =
        {
            .scheme = AQ_SCHEME_AFFINE,
            .name = "affine",
            .bits_mask = SCHEME_BITS_248,
            .moments = true,
            .selectable = true,
            .gguf = {-1, -1, -1, -1, -1, -1, -1, -1, -1},
            .quantize = scheme_quantize_affine,
            .dequantize = scheme_dequantize_affine,
            .kernel_checks = true,
        },
    [AQ_SCHEME_AFFINE_SEARCH] =
        {
            .scheme = AQ_SCHEME_AFFINE_SEARCH,
            .name = "affine_search",
            .bits_mask = SCHEME_BITS_248,
            .importance = true,
            .moments = true,
            .selectable = true,
            .gguf = {-1, -1, -1, -1, -1, -1, -1, -1, -1},
            .quantize = scheme_quantize_search,
            .dequantize = scheme_dequantize_affine,
        },
    /* The K types at 2 and 4 bits; at 8 bits Q8_0, as llama.cpp writes 8-bit tensors. The
     * range limit keeps a * q - b within float32 (docs/format.md 5.2). */
    [AQ_SCHEME_KQUANT] =
        {
            .scheme = AQ_SCHEME_KQUANT,
            .name = "kquant",
            .bits_mask = SCHEME_BITS_248,
            .fixed_group = AQ__KQ_SUPER,
            .flattened = true,
            .two_level = true,
            .importance = true,
            .selectable = true,
            .max_abs = 0x1p125f,
            .gguf = {-1, -1, AQ_GGUF_Q2_K, -1, AQ_GGUF_Q4_K, -1, -1, -1, AQ_GGUF_Q8_0},
            .quantize = scheme_quantize_kquant,
            .dequantize = scheme_dequantize_kquant,
        },
    /* The row-by-row layout of format version 1: read, never written. */
    [AQ_SCHEME_KQUANT_ROWS] =
        {
            .scheme = AQ_SCHEME_KQUANT_ROWS,
            .name = "kquant_rows",
            .bits_mask = SCHEME_BITS_248,
            .fixed_group = AQ__KQ_SUPER,
            .two_level = true,
            .importance = true,
            .max_abs = 0x1p125f,
            .gguf = {-1, -1, AQ_GGUF_Q2_K, -1, AQ_GGUF_Q4_K, -1, -1, -1, AQ_GGUF_Q8_0},
            .quantize = scheme_quantize_kquant,
            .dequantize = scheme_dequantize_kquant,
        },
};

const aq__scheme_traits *aq__scheme_traits_of(aq_scheme scheme)
{
    return (unsigned)scheme < AQ_SCHEME_COUNT ? &scheme_table[scheme] : NULL;
}

size_t aq__scheme_group(aq_scheme scheme, size_t group_size)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    return t != NULL && t->fixed_group != 0 ? t->fixed_group : group_size;
}

aq_scheme aq__scheme_widest(void)
{
    /* Two-level parameters cost more than one scale and offset a group, and a layout padded
     * row by row more than one padded once: the first scheme with the most of both. */
    aq_scheme best = AQ_SCHEME_AFFINE;
    int best_rank = -1;
    for (unsigned i = 0; i < AQ_SCHEME_COUNT; i++) {
        const aq__scheme_traits *t = &scheme_table[i];
        const int rank = 2 * (int)t->two_level + (int)!t->flattened;
        if (rank > best_rank) {
            best = t->scheme;
            best_rank = rank;
        }
    }
    return best;
}

int aq__scheme_gguf_type(unsigned bit_width)
{
    for (unsigned i = 0; i < AQ_SCHEME_COUNT; i++) {
        const aq__scheme_traits *t = &scheme_table[i];
        if (!t->selectable) {
            continue;
        }
        const unsigned n = (unsigned)(sizeof t->gguf / sizeof t->gguf[0]);
        int smallest = -1;
        for (unsigned b = n; b-- > 0;) {
            if (t->gguf[b] >= 0) {
                if (b <= bit_width) {
                    return t->gguf[b];
                }
                smallest = t->gguf[b];
            }
        }
        if (smallest >= 0) {
            return smallest;
        }
    }
    return -1;
}

const char *aq_scheme_name(aq_scheme scheme)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    return t != NULL ? t->name : "unknown";
}

aq_status aq_scheme_from_name(const char *name, aq_scheme *out, aq_error *err)
{
    if (name == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_scheme_from_name: NULL argument");
    }
    for (unsigned i = 0; i < AQ_SCHEME_COUNT; i++) {
        if (strcmp(name, scheme_table[i].name) == 0) {
            *out = (aq_scheme)i;
            return AQ_OK;
        }
    }
    return aq__error_set(err, AQ_INVALID_PARAMETER,
                         "Invalid scheme: '%s'. Must be one of: affine, affine_search, kquant, "
                         "kquant_rows",
                         name);
}

aq_scheme aq_scheme_for_format_version(aq_scheme scheme, int format_version)
{
    /* Version 1 had only the row-by-row layout, under the flattened layout's name. */
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    if (t != NULL && t->flattened && format_version < 2) {
        for (unsigned i = 0; i < AQ_SCHEME_COUNT; i++) {
            const aq__scheme_traits *r = &scheme_table[i];
            if (!r->flattened && r->two_level == t->two_level && !r->selectable) {
                return r->scheme;
            }
        }
    }
    return scheme;
}

/* The first release's aq_scheme_info ends after gguf_type: callers never pass less. */
#define SCHEME_INFO_MIN_SIZE (offsetof(aq_scheme_info, gguf_type) + sizeof(int[9]))

aq_status aq_scheme_get_info(aq_scheme scheme, aq_scheme_info *out, aq_error *err)
{
    if (out == NULL || out->size < SCHEME_INFO_MIN_SIZE) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_scheme_get_info: out is NULL or out->size (%zu) is below %zu",
                             out != NULL ? out->size : (size_t)0, SCHEME_INFO_MIN_SIZE);
    }
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    if (t == NULL) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid scheme: %d. Must be between 0 and %d", (int)scheme,
                             AQ_SCHEME_COUNT - 1);
    }
    aq_scheme_info info;
    memset(&info, 0, sizeof info);
    info.size = out->size < sizeof info ? out->size : sizeof info;
    info.scheme = t->scheme;
    info.name = t->name;
    info.bits_mask = t->bits_mask;
    info.fixed_group_size = t->fixed_group;
    info.flattened = t->flattened;
    info.sub_block_params = t->two_level;
    info.importance = t->importance;
    info.preserve_moments = t->moments;
    info.selectable = t->selectable;
    info.max_abs = t->max_abs;
    for (size_t b = 0; b < 9; b++) {
        info.gguf_type[b] = t->gguf[b];
    }
    memcpy(out, &info, info.size);
    return AQ_OK;
}

int aq_scheme_is_kquant(aq_scheme scheme)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    return t != NULL && t->two_level;
}
