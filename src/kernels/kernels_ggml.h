/*
 * Kernels of ggml's block formats (docs/gguf.md): one encoder and one decoder per block type,
 * over whole blocks of float32. Like every kernel they are pure: no allocation, no failure, no
 * file format (the GGUF container lives in src/io). The encoders expect finite input; the
 * driver checks first.
 */
#ifndef AQ_KERNELS_GGML_H
#define AQ_KERNELS_GGML_H

#include "aq_common.h"

/* Slots of the per-type tables: ggml's type ids (aq_gguf_type) are small integers. */
#define AQ__GGML_SLOTS 31u

/* Encodes nblocks consecutive blocks of x (nblocks * block elements) into out (nblocks *
 * block bytes). w is NULL (every weight 1) or one importance weight (finite, >= 0) per
 * element: the encoder minimises sum w (x - x_hat)^2. */
typedef void (*aq__ggml_encode_fn)(const float *x, const float *w, size_t nblocks, uint8_t *out);

/* ggml's rounding, no search (Q8_0, Q4_0, Q5_0: 32-element blocks): encodes nblocks blocks of
 * x into out as aq__ggml_encode_fn does, without importance, and takes any floats: it returns
 * the index of the first element of x that is NaN or +-Inf, or nblocks * 32 when every one is
 * finite (then, and only then, the bytes are defined). Checking as they encode keeps these
 * encoders at one pass over their input. */
typedef size_t (*aq__ggml_round_fn)(const float *x, size_t nblocks, uint8_t *out);

/* Decodes nblocks blocks into float32, with the arithmetic of ggml's reference decoder (and
 * gguf-py's), so that the floats are the same bit for bit. */
typedef void (*aq__ggml_decode_fn)(const uint8_t *in, size_t nblocks, float *out);

/* Static facts about one block type. */
typedef struct aq__ggml_traits {
    aq_gguf_type type;
    const char *name;              /* ggml's name: "Q4_K", "F16", ... */
    uint32_t block;                /* elements per block (1 for F32, F16, BF16) */
    uint32_t bytes;                /* bytes per block */
    aq__ggml_encode_fn encode_ref; /* NULL: the type is read only */
    aq__ggml_decode_fn decode_ref;
    /* ggml's own rounding, no search (Q8_0, Q4_0, Q5_0; else NULL): ggml's reference
     * quantizer's bytes, for AQ_PARAM_GGUF_SEARCH 0. */
    aq__ggml_round_fn encode_round_ref;
} aq__ggml_traits;

/* The encoders and decoders of one instruction set, by type id (NULL: the type has none). */
typedef struct aq__ggml_kernels {
    const char *name;
    aq__ggml_encode_fn encode[AQ__GGML_SLOTS];
    aq__ggml_decode_fn decode[AQ__GGML_SLOTS];
    aq__ggml_round_fn encode_round[AQ__GGML_SLOTS]; /* as the traits' encode_round_ref */
} aq__ggml_kernels;

extern const aq__ggml_kernels aq__ggml_kernels_ref;
/* Defined only in x86 builds; the AVX2 and AVX-512 kernel tables point at it. */
extern const aq__ggml_kernels aq__ggml_kernels_avx2;

/* The traits of a type, or NULL for a type this library does not know. */
const aq__ggml_traits *aq__ggml_traits_of(uint32_t type);

/* Every known type, in id order (for listings and error messages). */
const aq__ggml_traits *aq__ggml_traits_at(size_t i);
size_t aq__ggml_traits_count(void);

#endif /* AQ_KERNELS_GGML_H */
