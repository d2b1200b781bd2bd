/*
 * Reference kernels of ggml's block formats (docs/gguf.md). The decoders follow the
 * arithmetic of ggml's reference dequantizers operation by operation (float32 products, no
 * contraction), so the floats are the same bits as ggml's and gguf-py's. The encoders are our
 * own searches, not ggml's quantizers: they write the same bytes layout, choosing the block
 * parameters that minimise the (importance-weighted) squared error as the decoder will see it,
 * the stored binary16 scales included.
 *
 * Layouts, per block (the bit positions are those of ggml-common.h):
 *   Q8_0   32: d f16, q int8[32]                                  x = d q
 *   Q4_0   32: d f16, qs[16] (element i low nibble, i+16 high)    x = d (q - 8)
 *   Q4_1   32: d f16, m f16, qs[16]                               x = d q + m
 *   Q5_0   32: d f16, qh u32 (bit i: 5th bit of i), qs[16]        x = d (q - 16)
 *   Q5_1   32: d f16, m f16, qh u32, qs[16]                       x = d q + m
 *   IQ4_NL 32: d f16, qs[16]                                      x = d kvalues[q]
 *   Q2_K  256: scales[16] (sc | mc << 4), qs[64], d, dmin         x = (d sc) q - dmin mc
 *   Q3_K  256: hmask[32], qs[64], scales[12] (6-bit, +32), d      x = (d (sc - 32)) q, q -4..3
 *   Q4_K  256: d, dmin, scales[12] (8 x 6-bit sc, mc), qs[128]    x = (d sc) q - dmin mc
 *   Q5_K  256: d, dmin, scales[12], qh[32], qs[128]               as Q4_K, 5-bit q
 *   Q6_K  256: ql[128], qh[64], scales int8[16], d                x = (d sc) (q - 32)
 *   IQ4_XS256: d, scales_h u16, scales_l[4], qs[128]              x = (d (ls - 32)) kvalues[q]
 */
#include "kernels_ggml_body.h"

static const aq__ggml_traits gg_traits[] = {
    {AQ_GGUF_F32, "F32", 1, 4, gg_encode_f32, gg_decode_f32, NULL},
    {AQ_GGUF_F16, "F16", 1, 2, gg_encode_f16, gg_decode_f16, NULL},
    {AQ_GGUF_Q4_0, "Q4_0", 32, 18, gg_encode_q4_0, gg_decode_q4_0, gg_round_q4_0},
    {AQ_GGUF_Q4_1, "Q4_1", 32, 20, NULL, gg_decode_q4_1, NULL},
    {AQ_GGUF_Q5_0, "Q5_0", 32, 22, gg_encode_q5_0, gg_decode_q5_0, gg_round_q5_0},
    {AQ_GGUF_Q5_1, "Q5_1", 32, 24, NULL, gg_decode_q5_1, NULL},
    {AQ_GGUF_Q8_0, "Q8_0", 32, 34, gg_encode_q8_0, gg_decode_q8_0, gg_round_q8_0},
    {AQ_GGUF_Q2_K, "Q2_K", 256, 84, gg_encode_q2_k, gg_decode_q2_k, NULL},
    {AQ_GGUF_Q3_K, "Q3_K", 256, 110, gg_encode_q3_k, gg_decode_q3_k, NULL},
    {AQ_GGUF_Q4_K, "Q4_K", 256, 144, gg_encode_q4_k, gg_decode_q4_k, NULL},
    {AQ_GGUF_Q5_K, "Q5_K", 256, 176, gg_encode_q5_k, gg_decode_q5_k, NULL},
    {AQ_GGUF_Q6_K, "Q6_K", 256, 210, gg_encode_q6_k, gg_decode_q6_k, NULL},
    {AQ_GGUF_IQ4_NL, "IQ4_NL", 32, 18, NULL, gg_decode_iq4_nl, NULL},
    {AQ_GGUF_IQ4_XS, "IQ4_XS", 256, 136, NULL, gg_decode_iq4_xs, NULL},
    {AQ_GGUF_BF16, "BF16", 1, 2, gg_encode_bf16, gg_decode_bf16, NULL},
};

#define GG_NTRAITS (sizeof gg_traits / sizeof gg_traits[0])

const aq__ggml_kernels aq__ggml_kernels_ref = GG_KERNELS_TABLE("ref");

const aq__ggml_traits *aq__ggml_traits_of(uint32_t type)
{
    for (size_t i = 0; i < GG_NTRAITS; i++) {
        if ((uint32_t)gg_traits[i].type == type) {
            return &gg_traits[i];
        }
    }
    return NULL;
}

const aq__ggml_traits *aq__ggml_traits_at(size_t i)
{
    return i < GG_NTRAITS ? &gg_traits[i] : NULL;
}

size_t aq__ggml_traits_count(void)
{
    return GG_NTRAITS;
}
