/*
 * Kernel interface of the quality schemes (docs/format.md sections 5.1 and 5.2): searched
 * scales ("affine_search") and the two-level scheme ("kquant"). Included by kernels.h; the
 * kernels follow the same rules (pure, no allocation, no failure). Unlike the affine kernels,
 * they expect finite input: the driver checks first.
 */
#ifndef AQ_KERNELS_QUALITY_H
#define AQ_KERNELS_QUALITY_H

/* Quantizes a span with the searched-scale scheme. importance is NULL (all weights 1) or
 * points at the span's first importance weight (finite, >= 0). Output as the affine kernel. */
typedef void (*aq__quantize_search_fn)(const void *src, const float *importance,
                                       const aq__span *s, uint8_t *packed, float *scales,
                                       float *zero_points);

/* Quantizes a span with the two-level scheme: s->group_size is the super-block size
 * (AQ__KQ_SUPER). Writes the span's codes at packed (ceil(n * bits / 8) bytes, the last byte
 * zero-padded), the packed sub-block parameters of its super-blocks at meta (see
 * aq__kq_meta_bytes), and one d and dmin per super-block at scales and mins. */
typedef void (*aq__quantize_kquant_fn)(const void *src, const float *importance,
                                       const aq__span *s, uint8_t *packed, uint8_t *meta,
                                       float *scales, float *mins);

/* Dequantizes a span of the two-level scheme into the function's output dtype. */
typedef void (*aq__dequantize_kquant_fn)(const uint8_t *packed, const uint8_t *meta,
                                         const float *scales, const float *mins,
                                         const aq__span *s, void *dst);

/* Geometry of the two-level scheme (docs/format.md section 5.2). */
#define AQ__KQ_SUPER 512u

/* Sub-block size: 16 elements at 2 bits, 32 at 4 and 8 bits. */
static inline size_t aq__kq_sub(unsigned bits)
{
    return bits == 2 ? 16u : 32u;
}

/* Bits of each quantized sub-block scale and min: 4 at 2 bits, 6 at 4 and 8 bits. */
static inline unsigned aq__kq_param_bits(unsigned bits)
{
    return bits == 2 ? 4u : 6u;
}

/* Bytes of packed sub-block parameters of a super-block of len elements. */
static inline size_t aq__kq_meta_bytes(unsigned bits, size_t len)
{
    size_t sub = aq__kq_sub(bits);
    size_t nsub = len / sub + (len % sub != 0);
    return (nsub * 2u * aq__kq_param_bits(bits) + 7u) / 8u;
}

/* The least-squares fit of one kquant sub-block (docs/format.md 5.2 step 1, with the search of
 * 5.1 anchored at lo): on return *scale > 0 and *offset <= 0 give x ~ scale * q + offset, or
 * the function returns false when no candidate was valid. x and w (NULL = all 1) hold n
 * finite values; lo = min(min x, 0) and hi = max x. */
bool aq__search_fit_kquant(const float *x, const float *w, size_t n, unsigned bits, float lo,
                           float hi, double *scale, double *offset);

/* The reference kernels, by dtype, for the reference table (kernels_ref.c). */
void aq__quantize_search_ref_f32(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_f16(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_bf16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_search_ref_f64(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, float *scales, float *zero_points);
void aq__quantize_kquant_ref_f32(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_f16(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_bf16(const void *src, const float *importance, const aq__span *s,
                                  uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__quantize_kquant_ref_f64(const void *src, const float *importance, const aq__span *s,
                                 uint8_t *packed, uint8_t *meta, float *scales, float *mins);
void aq__dequantize_kquant_ref_f32(const uint8_t *packed, const uint8_t *meta,
                                   const float *scales, const float *mins, const aq__span *s,
                                   void *dst);
void aq__dequantize_kquant_ref_f16(const uint8_t *packed, const uint8_t *meta,
                                   const float *scales, const float *mins, const aq__span *s,
                                   void *dst);
void aq__dequantize_kquant_ref_bf16(const uint8_t *packed, const uint8_t *meta,
                                    const float *scales, const float *mins, const aq__span *s,
                                    void *dst);

#endif /* AQ_KERNELS_QUALITY_H */
