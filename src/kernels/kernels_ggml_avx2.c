/*
 * The ggml block encoders and decoders compiled for AVX2 (sources.cmake): the same code as the
 * reference (kernels_ggml_body.h), whose fixed-lane sums the compiler then runs eight at a time.
 * Same bits as the reference on every input (tests/kernels/test_ggml_kernels.c checks). The only
 * symbol is the table aq__ggml_kernels_avx2, handed out with the AVX2 and AVX-512 kernel
 * tables.
 */
#include "kernels_ggml_body.h"

const aq__ggml_kernels aq__ggml_kernels_avx2 = {
    .name = "avx2",
    .encode = {[AQ_GGUF_F32] = gg_encode_f32,
               [AQ_GGUF_F16] = gg_encode_f16,
               [AQ_GGUF_Q4_0] = gg_encode_q4_0,
               [AQ_GGUF_Q5_0] = gg_encode_q5_0,
               [AQ_GGUF_Q8_0] = gg_encode_q8_0,
               [AQ_GGUF_Q2_K] = gg_encode_q2_k,
               [AQ_GGUF_Q3_K] = gg_encode_q3_k,
               [AQ_GGUF_Q4_K] = gg_encode_q4_k,
               [AQ_GGUF_Q5_K] = gg_encode_q5_k,
               [AQ_GGUF_Q6_K] = gg_encode_q6_k,
               [AQ_GGUF_BF16] = gg_encode_bf16},
    .decode = {[AQ_GGUF_F32] = gg_decode_f32,
               [AQ_GGUF_F16] = gg_decode_f16,
               [AQ_GGUF_Q4_0] = gg_decode_q4_0,
               [AQ_GGUF_Q4_1] = gg_decode_q4_1,
               [AQ_GGUF_Q5_0] = gg_decode_q5_0,
               [AQ_GGUF_Q5_1] = gg_decode_q5_1,
               [AQ_GGUF_Q8_0] = gg_decode_q8_0,
               [AQ_GGUF_Q2_K] = gg_decode_q2_k,
               [AQ_GGUF_Q3_K] = gg_decode_q3_k,
               [AQ_GGUF_Q4_K] = gg_decode_q4_k,
               [AQ_GGUF_Q5_K] = gg_decode_q5_k,
               [AQ_GGUF_Q6_K] = gg_decode_q6_k,
               [AQ_GGUF_IQ4_NL] = gg_decode_iq4_nl,
               [AQ_GGUF_IQ4_XS] = gg_decode_iq4_xs,
               [AQ_GGUF_BF16] = gg_decode_bf16},
};
