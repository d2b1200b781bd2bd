/*
 * The affine kernels written once over a small vector vocabulary. Each SIMD translation unit
 * (kernels_avx2.c, kernels_avx512.c, kernels_neon.c) defines the primitives listed below for its
 * instruction set, then includes this file, which defines the kernels and the const table
 * SIMD_TABLE_NAME. Nothing here is compiled on its own.
 *
 * Primitives (static inline, SIMD_VL lanes of float32):
 *   simd_v                     the float vector type
 *   simd_v simd_load(src, dtype, i)            elements i .. i+VL-1 as float32
 *   simd_v simd_load_part(src, dtype, i, cnt)  elements i .. i+cnt-1 (0 < cnt < VL); the other
 *                                              lanes hold a copy of element i
 *   simd_v simd_set1(float), simd_min, simd_max, simd_zero(void)
 *   simd_v simd_bad_acc(acc, x)   accumulates x * 0 bitwise: NaN bits iff x is not finite
 *   bool simd_bad_any(acc)        true when some lane has all exponent bits set
 *   void simd_store(float *dst, simd_v)        VL floats (dst aligned to the vector size)
 *   void simd_params(pmin, pmax, count, bits, scales, zero_points, lo, inv, bool *bounded)
 *                                              for each group k < count: min and max over the
 *                                              partials simd_keep stored for k, then
 *                                              exactly aq__affine_params, lo normalised
 *                                              (+ 0.0f); lo and inv have room for
 *                                              SIMD_BATCH floats, past count too;
 *                                              *bounded: whether hi - lo is finite in float32
 *                                              for every group (may say false)
 *   void simd_codes(uint8_t *dst, x, lo, inv, qmax, simd_v *flag)  VL codes
 *                                              cvt(min((x-lo)*inv, qmax)), one byte each (dst
 *                                              has room for VL bytes); flags non-finite x
 *   bool simd_flag_any(flag)       whether simd_codes flagged a non-finite input
 *   void simd_block(src, dtype, i, lo, inv, qmax, bits, clamp, uint8_t *out, simd_v *flag)
 *                                              SIMD_BLOCK elements from i quantized as
 *                                              simd_codes does and packed straight to out;
 *                                              with clamp false it may leave out min(qmax, .)
 *                                              (only asked of bounded batches, see below)
 *   size_t simd_pack(codes, nbytes, bits, out)  packs codes into the first bytes of out and
 *                                              returns how many it wrote (a multiple of its
 *                                              block, at most nbytes); the rest is done here
 *   size_t simd_unpack(packed, nbytes, bits, codes)  the inverse; returns bytes consumed
 *   void simd_dequant(codes, zp, scale, finite, out_dtype, dst, i, cnt)  cnt <= SIMD_DQ_W
 *                                              codes (SIMD_DQ_W readable; SIMD_VL unless the
 *                                              instruction set defines it) to
 *                                              ((float)q - zp) * scale, stored at dst[i..];
 *                                              finite: zp and scale are finite, so no result
 *                                              is NaN
 * and optionally (SIMD_HAVE_KQ_DEQUANT, kquant's dequantize, docs/format.md 5.2):
 *   void simd_kq_dequant(codes, a, b, shift, finite, out_dtype, dst, i, cnt)  cnt <=
 *                                              SIMD_KQ_W codes (SIMD_KQ_W readable; SIMD_DQ_W
 *                                              unless the instruction set defines it) to
 *                                              a * (float)q - b (a float32 multiplication,
 *                                              then a subtraction), stored at dst[i..]; code t
 *                                              of the step is in sub-block t >> shift: its
 *                                              a and b are a[t >> shift], b[t >> shift] (a
 *                                              sub-block holds a whole number of vectors);
 *                                              finite as for simd_dequant
 * and optionally (SIMD_HAVE_LUT, dequantize by table):
 *   simd_lut                                   a table of the 16 outputs of codes 0..15
 *   simd_lut simd_lut_make(zp, scale, finite, out_dtype)  as simd_dequant computes them
 *   void simd_lut_apply(t, codes, dst, i, cnt) cnt <= SIMD_LUT_W codes (each < 16) looked up
 *   bool simd_lut_use(bits, out_dtype)         whether the table pays for this output
 * and optionally (SIMD_HAVE_KQ_LUT, kquant's dequantize by table, 2 and 4 bits):
 *   simd_lut simd_kq_lut_make(a, b, bits, finite, out_dtype)  the outputs a[s] * q - b[s]
 *                                              of sub-block 0 (4 bits) or 0..3 (2 bits), as
 *                                              simd_kq_dequant computes them
 *   void simd_kq_lut_apply(t, codes, bits, half, dst, i, cnt)  cnt <= SIMD_LUT_W codes looked
 *                                              up (at 2 bits, of sub-blocks 2 half, 2 half + 1)
 *   bool simd_kq_lut_use(bits, out_dtype)      whether the table pays (2 or 4 bits only)
 * An instruction set may instead define simd_reduce(pmin, pmax, count, lo, hi) (the batched
 * min/max only) and leave SIMD_HAVE_PARAMS undefined, or leave SIMD_HAVE_BLOCK undefined:
 * generic versions below then do the rest. It may define SIMD_HAVE_MINMAX_BLOCK and
 *   void simd_minmax_block(src, dtype, i, *mn0, *mn1, *mx0, *mx1)  SIMD_BLOCK elements from i
 *                                              folded into the min/max partials, in any lanes
 * (the generic one loads with simd_load). It may define SIMD_HAVE_KEEP and
 *   void simd_keep(float *p, size_t k, simd_v v, bool is_min)  stores group k's min (or max)
 *                                              partials v into p (SIMD_BATCH * SIMD_VL floats,
 *                                              vector-aligned) in the form its simd_params
 *                                              reads; the generic one stores all VL lanes at
 *                                              p + k*VL.
 *
 * Non-finite inputs are caught in the second pass, for free on x86: a NaN or infinite element
 * always makes u = (x - lo) * inv NaN (NaN - lo; Inf - lo times inv = 1/Inf = 0; -Inf - -Inf),
 * min(qmax, u) keeps the NaN, and converting NaN gives the "integer indefinite" 0x80000000,
 * whose sign bit no valid code has.
 *
 * Bounded batches skip the clamp. When hi - lo is finite in float32, every u is at most
 * qmax * (1 + 2^-21) < qmax + 1/2: x - lo <= hi - lo rounds monotonically, scale is at least
 * (hi - lo) / qmax less two roundings (or FLT_MIN, larger), inv = 1 / scale and the product
 * are each one rounding, so round-to-nearest gives at most qmax and the clamp changes
 * nothing. A non-finite x still gives NaN or +-Inf, which converts to 0x80000000 and is
 * flagged; a non-finite hi or lo makes the batch unbounded.
 *
 * Bit-exactness with kernels_ref.c (docs/format.md): min/max are exact whatever the order (a
 * signed zero is normalised by + 0.0f afterwards); per element the work is the same float32
 * subtraction and multiplication; rounding min(u, qmax) to nearest-even equals rounding u and
 * clamping, since qmax is an integer and u >= 0 for finite inputs; the per-group parameters
 * are aq__affine_params itself.
 */
#ifndef SIMD_TABLE_NAME
#    error "define the primitives and SIMD_TABLE_NAME before including kernels_simd.h"
#endif

#include "kernels_stats.h"

#include <math.h>

/* Codes simd_dequant takes at a time: SIMD_VL unless the instruction set says otherwise. */
#ifndef SIMD_DQ_W
#    define SIMD_DQ_W SIMD_VL
#endif

#if defined(__GNUC__)
#    define SIMD_INLINE static inline __attribute__((always_inline))
#    define SIMD_ALIGN __attribute__((aligned(64)))
#else
#    define SIMD_INLINE static inline
#    define SIMD_ALIGN
#endif

/* Codes staged between the quantize pass and packing (and between unpacking and dequantize):
 * small enough for L1, large enough that packing runs in long loops. */
#define SIMD_STAGE 4096
/* Groups whose min and max are reduced together (one vector of results). */
#define SIMD_BATCH SIMD_VL
/* A batch holds at most this many elements (unless a single group is larger), so that the
 * second pass over the batch reads from L1. */
#define SIMD_BATCH_ELEMS 2048
/* Software prefetch of the data the code pass will need two batches on: into L1 for 2-byte
 * inputs, into L2 for wider ones, which measured better with bench_kernels on Zen 4. */
#define SIMD_PF(p, es)                     \
    do {                                   \
        if ((es) >= 4) {                   \
            __builtin_prefetch((p), 0, 2); \
        } else {                           \
            __builtin_prefetch((p), 0, 3); \
        }                                  \
    } while (0)
/* Elements quantized and packed together on the direct path. */
#define SIMD_BLOCK (4 * SIMD_VL)
/* Fused passes (simd_fused); -DSIMD_FUSE=0 builds the unfused pipeline, for comparison. */
#ifndef SIMD_FUSE
#    define SIMD_FUSE 1
#endif
/* How many batches ahead of its loads simd_fused prefetches: 2-byte inputs one (into L1),
 * wider ones four (into L2: 16 KiB of float32 at group size 64, 32 KiB at 128), which
 * measured best with bench_kernels on Zen 4 (docs/decisions.md, "Prefetch distance"). */
#ifndef SIMD_FUSE_AHEAD
#    define SIMD_FUSE_AHEAD 1
#endif
#ifndef SIMD_FUSE_AHEAD_WIDE
#    define SIMD_FUSE_AHEAD_WIDE 4
#endif

static float simd_scalar(const void *src, aq_dtype dtype, size_t i)
{
    switch (dtype) {
    case AQ_DTYPE_F32:
        return ((const float *)src)[i];
    case AQ_DTYPE_F16:
        return aq__f16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_BF16:
        return aq__bf16_to_f32(((const uint16_t *)src)[i]);
    case AQ_DTYPE_F64:
        return (float)((const double *)src)[i];
    case AQ_DTYPE_COUNT:
        break;
    }
    return NAN;
}

/* Packs whole bytes of codes (nbytes of output) with the vector routine, then the rest. */
static void simd_pack_all(const uint8_t *codes, size_t nbytes, unsigned bits, uint8_t *out)
{
    size_t done = simd_pack(codes, nbytes, bits, out);
    const size_t per_byte = 8 / bits;
    for (size_t b = done; b < nbytes; b++) {
        unsigned v = 0;
        for (size_t j = 0; j < per_byte; j++) {
            v |= (unsigned)codes[b * per_byte + j] << (j * bits);
        }
        out[b] = (uint8_t)v;
    }
}

static void simd_unpack_all(const uint8_t *packed, size_t nbytes, unsigned bits, uint8_t *codes)
{
    size_t done = simd_unpack(packed, nbytes, bits, codes);
    const size_t per_byte = 8 / bits;
    const unsigned mask = (1u << bits) - 1u;
    for (size_t b = done; b < nbytes; b++) {
        for (size_t j = 0; j < per_byte; j++) {
            codes[b * per_byte + j] = (uint8_t)((packed[b] >> (j * bits)) & mask);
        }
    }
}

#ifndef SIMD_HAVE_PARAMS
/* Parameters one group at a time, after the instruction set's batched min/max reduction
 * simd_reduce(pmin, pmax, count, lo, hi). */
static inline void simd_params(float *pmin, float *pmax, size_t count, unsigned bits, float *scales,
                               float *zero_points, float *lo, float *inv, bool *bounded)
{
    float hi[SIMD_BATCH];
    *bounded = false; /* this generic path always clamps */
    simd_reduce(pmin, pmax, count, lo, hi);
    for (size_t k = 0; k < count; k++) {
        aq__affine_params(lo[k], hi[k], bits, &scales[k], &inv[k], &zero_points[k]);
        lo[k] = lo[k] + 0.0f;
    }
}
#endif

#ifndef SIMD_HAVE_BLOCK
/* A block through simd_codes and the packer, for instruction sets without a fused version. */
static inline void simd_block(const void *src, aq_dtype dtype, size_t i, simd_v lo, simd_v inv,
                              simd_v qmax, unsigned bits, bool clamp, uint8_t *out, simd_v *flag)
{
    uint8_t tmp[SIMD_BLOCK];
    (void)clamp; /* simd_codes always clamps */
    for (size_t j = 0; j < SIMD_BLOCK; j += SIMD_VL) {
        simd_codes(tmp + j, simd_load(src, dtype, i + j), lo, inv, qmax, flag);
    }
    simd_pack_all(tmp, SIMD_BLOCK * bits / 8, bits, out);
}
#endif

#ifndef SIMD_HAVE_KEEP
SIMD_INLINE void simd_keep(float *p, size_t k, simd_v v, bool is_min)
{
    (void)is_min;
    simd_store(p + k * SIMD_VL, v);
}
#endif

#ifndef SIMD_HAVE_MINMAX_BLOCK
/* Min and max of the SIMD_BLOCK elements from i folded into two pairs of partials (any
 * lanes: min and max are the same over any arrangement of the same elements). */
SIMD_INLINE void simd_minmax_block(const void *src, aq_dtype dtype, size_t i, simd_v *mn0,
                                   simd_v *mn1, simd_v *mx0, simd_v *mx1)
{
    const simd_v x0 = simd_load(src, dtype, i);
    const simd_v x1 = simd_load(src, dtype, i + SIMD_VL);
    const simd_v x2 = simd_load(src, dtype, i + 2 * SIMD_VL);
    const simd_v x3 = simd_load(src, dtype, i + 3 * SIMD_VL);
    *mn0 = simd_min(*mn0, simd_min(x0, x2));
    *mx0 = simd_max(*mx0, simd_max(x0, x2));
    *mn1 = simd_min(*mn1, simd_min(x1, x3));
    *mx1 = simd_max(*mx1, simd_max(x1, x3));
}
#endif

/* The length of the group that starts at column col, cut at the span's end. */
SIMD_INLINE size_t simd_group_len(const aq__span *s, size_t col, size_t done)
{
    size_t len = s->cols - col < s->group_size ? s->cols - col : s->group_size;
    return len < s->n - done ? len : s->n - done;
}

/* A batch of consecutive groups, from its min/max pass to its code pass. */
typedef struct simd_batch {
    size_t count, total;
    bool regular; /* whole groups, a multiple of the vector length each */
    bool bounded; /* hi - lo finite for every group: codes need no clamp (see above) */
    size_t start[SIMD_BATCH], len[SIMD_BATCH];
    float lo[SIMD_BATCH], inv[SIMD_BATCH];
} simd_batch;

/* Collects the next batch of groups from element *e: where each group starts, how long. */
SIMD_INLINE void simd_collect(const aq__span *s, size_t *e_io, size_t *col_io, simd_batch *bt)
{
    size_t e = *e_io, col = *col_io;
    size_t count = 0, total = 0;
    const size_t g = s->group_size;
    /* The common case without the loop below: a row of whole groups (a multiple of the
     * vector length each) with a full batch of them left before the row's end and the
     * span's. The loop would collect exactly these groups. */
    if (g % SIMD_VL == 0 && SIMD_BATCH * g <= SIMD_BATCH_ELEMS && s->cols - col >= SIMD_BATCH * g &&
        s->n - e >= SIMD_BATCH * g) {
        for (size_t k = 0; k < SIMD_BATCH; k++) {
            bt->start[k] = e + k * g;
            bt->len[k] = g;
        }
        col += SIMD_BATCH * g;
        *e_io = e + SIMD_BATCH * g;
        *col_io = col == s->cols ? 0 : col;
        bt->count = SIMD_BATCH;
        bt->total = SIMD_BATCH * g;
        bt->regular = true;
        return;
    }
    while (count < SIMD_BATCH && e < s->n) {
        size_t len = simd_group_len(s, col, e);
        if (count > 0 && total + len > SIMD_BATCH_ELEMS) {
            break;
        }
        bt->start[count] = e;
        bt->len[count] = len;
        count++;
        total += len;
        e += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
    *e_io = e;
    *col_io = col;
    bt->count = count;
    bt->total = total;
    bt->regular = s->group_size % SIMD_VL == 0 && total == count * s->group_size;
}

/* The first pass over a batch: vertical min/max per group, then the parameters of the whole
 * batch (written to scales and zero_points). */
SIMD_INLINE void simd_quantize_pass1(const void *src, aq_dtype dtype, const aq__span *s,
                                     simd_batch *bt, float *scales, float *zero_points)
{
    SIMD_ALIGN float pmin[SIMD_BATCH * SIMD_VL];
    SIMD_ALIGN float pmax[SIMD_BATCH * SIMD_VL];
    /* count <= SIMD_BATCH always; said again for the compiler's bounds analysis. */
    const size_t count = bt->count < SIMD_BATCH ? bt->count : SIMD_BATCH;

    /* Regular batches run 8 groups side by side, so that the loop overhead is paid once per
     * 8 groups and 16 independent min/max chains keep the vector units busy. */
    size_t k0 = 0;
    if (bt->regular) {
        const size_t g = s->group_size;
        for (; k0 + 8 <= count; k0 += 8) { /* the rest of the batch, if any, below */
            const size_t b = bt->start[k0];
            simd_v vmin[8], vmax[8];
#if defined(__GNUC__) && !defined(__clang__)
#    pragma GCC unroll 8
#endif
            for (size_t k = 0; k < 8; k++) {
                vmin[k] = vmax[k] = simd_load(src, dtype, b + k * g);
            }
            for (size_t i = SIMD_VL; i < g; i += SIMD_VL) {
#if defined(__GNUC__) && !defined(__clang__)
#    pragma GCC unroll 8
#endif
                for (size_t k = 0; k < 8; k++) {
                    simd_v x = simd_load(src, dtype, b + k * g + i);
                    vmin[k] = simd_min(vmin[k], x);
                    vmax[k] = simd_max(vmax[k], x);
                }
            }
            for (size_t k = 0; k < 8; k++) {
                simd_keep(pmin, k0 + k, vmin[k], true);
                simd_keep(pmax, k0 + k, vmax[k], false);
            }
        }
    }
    for (size_t k = k0; k < count; k++) {
        const size_t b = bt->start[k], len = bt->len[k];
        simd_v x = len >= SIMD_VL ? simd_load(src, dtype, b) : simd_load_part(src, dtype, b, len);
        simd_v vmin = x, vmax = x;
        size_t i = SIMD_VL;
        for (; i + SIMD_VL <= len; i += SIMD_VL) {
            x = simd_load(src, dtype, b + i);
            vmin = simd_min(vmin, x);
            vmax = simd_max(vmax, x);
        }
        if (i < len) {
            x = simd_load_part(src, dtype, b + i, len - i);
            vmin = simd_min(vmin, x);
            vmax = simd_max(vmax, x);
        }
        simd_keep(pmin, k, vmin, true);
        simd_keep(pmax, k, vmax, false);
    }
    simd_params(pmin, pmax, count, s->bits, scales, zero_points, bt->lo, bt->inv, &bt->bounded);
}

/* Packs the whole bytes of the staged codes and keeps the (fewer than 4) codes left over. */
SIMD_INLINE void simd_flush(uint8_t *codes, size_t *staged, unsigned bits, uint8_t **out)
{
    const size_t per_byte = 8 / bits;
    size_t whole = *staged / per_byte;
    simd_pack_all(codes, whole, bits, *out);
    *out += whole;
    size_t rest = *staged - whole * per_byte;
    memmove(codes, codes + whole * per_byte, rest);
    *staged = rest;
}

/* The second pass over a batch (read again from L1): codes, packed. `ahead` elements past a
 * group's data are prefetched: memory keeps streaming while this pass computes. */
SIMD_INLINE void simd_quantize_pass2(const void *src, aq_dtype dtype, const aq__span *s,
                                     const simd_batch *bt, size_t ahead, uint8_t *packed,
                                     uint8_t *codes, size_t *staged_io, uint8_t **out_io,
                                     simd_v *flag)
{
    const unsigned bits = s->bits;
    const size_t es = dtype == AQ_DTYPE_F64 ? 8 : dtype == AQ_DTYPE_F32 ? 4 : 2;
    const simd_v qmax = simd_set1((float)((1u << bits) - 1u));
    size_t staged = *staged_io;

    /* Direct: nothing staged and a regular batch of whole groups that are a multiple of the
     * block: codes go straight to their packed bytes, a block at a time. */
    if (bt->regular && staged == 0 && s->group_size % SIMD_BLOCK == 0) {
        for (size_t k = 0; k < bt->count; k++) {
            const size_t b = bt->start[k], len = bt->len[k];
            const simd_v lo = simd_set1(bt->lo[k]), inv = simd_set1(bt->inv[k]);
            for (size_t i = 0; i < len; i += SIMD_BLOCK) {
                /* Every cache line of the block's counterpart `ahead` elements on. A
                 * prefetch never faults, even past the end of the data. */
                const char *next = (const char *)src + (b + i + ahead) * es;
                for (size_t line = 0; line < SIMD_BLOCK * es; line += 64) {
                    SIMD_PF(next + line, es);
                }
                simd_block(src, dtype, b + i, lo, inv, qmax, bits, true,
                           packed + (b + i) * bits / 8, flag);
            }
        }
        *out_io = packed + (bt->start[0] + bt->total) * bits / 8;
        return;
    }

    if (staged + bt->total + SIMD_VL > SIMD_STAGE) {
        simd_flush(codes, &staged, bits, out_io);
    }
    if (staged + bt->total + SIMD_VL <= SIMD_STAGE) {
        /* The usual case: the whole batch fits the staging buffer. */
        for (size_t k = 0; k < bt->count; k++) {
            const size_t b = bt->start[k], len = bt->len[k];
            const simd_v lo = simd_set1(bt->lo[k]), inv = simd_set1(bt->inv[k]);
            uint8_t *c = codes + staged;
            size_t i = 0;
            for (; i + SIMD_VL <= len; i += SIMD_VL) {
                SIMD_PF((const char *)src + (b + i + ahead) * es, es);
                simd_codes(c + i, simd_load(src, dtype, b + i), lo, inv, qmax, flag);
            }
            if (i < len) {
                simd_codes(c + i, simd_load_part(src, dtype, b + i, len - i), lo, inv, qmax, flag);
            }
            staged += len;
        }
    } else {
        /* One group larger than the staging buffer: in pieces. */
        const size_t b = bt->start[0], len = bt->len[0];
        const simd_v lo = simd_set1(bt->lo[0]), inv = simd_set1(bt->inv[0]);
        for (size_t i = 0; i < len;) {
            if (staged + SIMD_VL > SIMD_STAGE) {
                simd_flush(codes, &staged, bits, out_io);
            }
            size_t room = (SIMD_STAGE - staged) / SIMD_VL * SIMD_VL;
            size_t end = len - i <= room ? len : i + room;
            for (; i + SIMD_VL <= end; i += SIMD_VL) {
                simd_codes(codes + staged, simd_load(src, dtype, b + i), lo, inv, qmax, flag);
                staged += SIMD_VL;
            }
            if (i < end) {
                simd_codes(codes + staged, simd_load_part(src, dtype, b + i, end - i), lo, inv,
                           qmax, flag);
                staged += end - i;
                i = end;
            }
        }
    }
    *staged_io = staged;
}

/* Whether the second pass of prev can run fused with the first pass of cur (simd_fused). */
SIMD_INLINE bool simd_fusable(const aq__span *s, const simd_batch *prev, const simd_batch *cur,
                              size_t staged)
{
    return SIMD_FUSE && staged == 0 && prev->regular && cur->regular && prev->count == cur->count &&
           s->group_size % SIMD_BLOCK == 0;
}

/* The second pass of batch prev (codes straight to their packed bytes, as the direct path of
 * simd_quantize_pass2) interleaved block by block with the min/max loads of batch cur, then
 * cur's parameters: the loads that go to memory and the arithmetic on data already in L1 are
 * then in flight together, instead of one pass waiting for memory while the other computes.
 * Min and max are exact in any order, so the parameters are those of simd_quantize_pass1. */
SIMD_INLINE void simd_fused_gb(const void *src, aq_dtype dtype, const simd_batch *prev,
                               simd_batch *cur, uint8_t *packed, float *scales, float *zero_points,
                               simd_v *flag, const size_t g, const unsigned bits, const bool clamp)
{
    SIMD_ALIGN float pmin[SIMD_BATCH * SIMD_VL];
    SIMD_ALIGN float pmax[SIMD_BATCH * SIMD_VL];
    const simd_v qmax = simd_set1((float)((1u << bits) - 1u));
    const simd_v pinf = simd_set1(INFINITY), ninf = simd_set1(-INFINITY);
    const size_t es = dtype == AQ_DTYPE_F64 ? 8 : dtype == AQ_DTYPE_F32 ? 4 : 2;
    const size_t ahead = (es >= 4 ? SIMD_FUSE_AHEAD_WIDE : SIMD_FUSE_AHEAD) * cur->total;
    /* count <= SIMD_BATCH always; said again for the compiler's bounds analysis. */
    const size_t count = prev->count < SIMD_BATCH ? prev->count : SIMD_BATCH;
    for (size_t k = 0; k < count; k++) {
        const size_t b2 = prev->start[k], b1 = cur->start[k];
        const simd_v lo = simd_set1(prev->lo[k]), inv = simd_set1(prev->inv[k]);
        simd_v mn0 = pinf, mn1 = pinf, mx0 = ninf, mx1 = ninf;
        for (size_t i = 0; i < g; i += SIMD_BLOCK) {
            /* The batch after cur, a batch ahead of the loads below. */
            const char *next = (const char *)src + (b1 + i + ahead) * es;
            for (size_t line = 0; line < SIMD_BLOCK * es; line += 64) {
                SIMD_PF(next + line, es);
            }
            simd_block(src, dtype, b2 + i, lo, inv, qmax, bits, clamp, packed + (b2 + i) * bits / 8,
                       flag);
            simd_minmax_block(src, dtype, b1 + i, &mn0, &mn1, &mx0, &mx1);
        }
        simd_keep(pmin, k, simd_min(mn0, mn1), true);
        simd_keep(pmax, k, simd_max(mx0, mx1), false);
    }
    simd_params(pmin, pmax, cur->count, bits, scales, zero_points, cur->lo, cur->inv,
                &cur->bounded);
}

/* simd_fused_gb with the bit width a constant (no per-block branch on it), and group size 64
 * a constant too, so that the compiler drops the one-iteration block loop of every group.
 * Group size 128 as a constant measured slower from memory (the unrolled loop of two blocks
 * issued its loads worse for float32), so it stays on the general path (docs/decisions.md,
 * "Kernel constants"). */
#define SIMD_FUSED_CALL(gc, bc, cl) \
    simd_fused_gb(src, dtype, prev, cur, packed, scales, zero_points, flag, (gc), (bc), (cl))
#define SIMD_FUSED_BITS(gc, cl)                \
    do {                                       \
        if (bits == 4) {                       \
            SIMD_FUSED_CALL((gc), 4, (cl));    \
        } else if (bits == 2) {                \
            SIMD_FUSED_CALL((gc), 2, (cl));    \
        } else {                               \
            SIMD_FUSED_CALL((gc), bits, (cl)); \
        }                                      \
    } while (0)
SIMD_INLINE void simd_fused(const void *src, aq_dtype dtype, const aq__span *s,
                            const simd_batch *prev, simd_batch *cur, uint8_t *packed, float *scales,
                            float *zero_points, simd_v *flag)
{
    const unsigned bits = s->bits;
    if (s->group_size == 64 && prev->bounded) {
        SIMD_FUSED_BITS(64, false);
    } else if (s->group_size == 64) {
        SIMD_FUSED_BITS(64, true);
    } else if (prev->bounded) {
        SIMD_FUSED_BITS(s->group_size, false);
    } else {
        SIMD_FUSED_BITS(s->group_size, true);
    }
}
#undef SIMD_FUSED_BITS
#undef SIMD_FUSED_CALL

/* Software-pipelined over batches: the first pass of batch n+1 (memory-bound loads, and the
 * long-latency divisions of its parameters) is issued before the second pass of batch n
 * (arithmetic from L1), so each hides the other's latency. */
SIMD_INLINE bool simd_quantize(const void *src, aq_dtype dtype, const aq__span *s, uint8_t *packed,
                               float *scales, float *zero_points)
{
    const size_t per_byte = 8 / s->bits;
    SIMD_ALIGN uint8_t codes[SIMD_STAGE + 2 * SIMD_VL];
    simd_batch bt[2];
    size_t staged = 0, e = 0, col = s->col0, group = 0, nb = 0;
    uint8_t *out = packed;
    simd_v flag = simd_zero();
    for (;;) {
        const bool more = e < s->n;
        simd_batch *cur = &bt[nb & 1];
        const size_t g0 = group;
        if (more) {
            simd_collect(s, &e, &col, cur);
            group += cur->count;
        }
        if (nb > 0) {
            const simd_batch *prev = &bt[(nb - 1) & 1];
            if (more && simd_fusable(s, prev, cur, staged)) {
                simd_fused(src, dtype, s, prev, cur, packed, scales + g0, zero_points + g0, &flag);
                out = packed + (prev->start[0] + prev->total) * s->bits / 8;
            } else {
                if (more) {
                    simd_quantize_pass1(src, dtype, s, cur, scales + g0, zero_points + g0);
                }
                size_t ahead = prev->total + (more ? cur->total : 0);
                simd_quantize_pass2(src, dtype, s, prev, ahead, packed, codes, &staged, &out,
                                    &flag);
            }
            if (simd_flag_any(flag)) {
                return false;
            }
        } else if (more) {
            simd_quantize_pass1(src, dtype, s, cur, scales + g0, zero_points + g0);
        }
        if (!more) {
            break;
        }
        nb++;
    }
    /* The last byte is zero-padded. */
    memset(codes + staged, 0, per_byte);
    simd_pack_all(codes, (staged + per_byte - 1) / per_byte, s->bits, out);
    return true;
}

/* The codes of one group piece (staged at codes) to dst[e..e+piece): by the arithmetic of
 * simd_dequant, or, where the instruction set has a table lookup (SIMD_HAVE_LUT) and
 * simd_lut_use says it pays, by looking each code up in the group's table of its 2^bits
 * outputs. simd_lut_make computes that table with the same float32 operations and the same
 * conversion as simd_dequant, one lane per code, so both give the same bits. */
SIMD_INLINE void simd_dequant_piece(const uint8_t *codes, float zero_point, float scale,
                                    unsigned bits, aq_dtype out_dtype, void *dst, size_t e,
                                    size_t piece)
{
    const simd_v zp = simd_set1(zero_point);
    const simd_v sc = simd_set1(scale);
    /* ((float)q - zp) * scale is NaN only if zp or scale is (or is infinite): q - zp cannot
     * overflow for a finite zp and q < 256, and a product of finite numbers is never NaN.
     * The NaN fix-ups of the conversions are then compiled out of the usual loops. */
    const bool finite = isfinite(zero_point) && isfinite(scale);
#ifdef SIMD_HAVE_LUT
    if (simd_lut_use(bits, out_dtype)) {
        const simd_lut t = finite ? simd_lut_make(zp, sc, true, out_dtype)
                                  : simd_lut_make(zp, sc, false, out_dtype);
        for (size_t i = 0; i < piece; i += SIMD_LUT_W) {
            size_t cnt = piece - i < SIMD_LUT_W ? piece - i : SIMD_LUT_W;
            simd_lut_apply(t, codes + i, dst, e + i, cnt);
        }
        return;
    }
#else
    (void)bits;
#endif
    /* Whole steps read the codes in place; a last partial one reads a copy, since 8-bit
     * codes are read straight from the packed input, whose end may be the caller's. */
    size_t i = 0;
    if (finite) {
        for (; i + SIMD_DQ_W <= piece; i += SIMD_DQ_W) {
            simd_dequant(codes + i, zp, sc, true, out_dtype, dst, e + i, SIMD_DQ_W);
        }
    } else {
        for (; i + SIMD_DQ_W <= piece; i += SIMD_DQ_W) {
            simd_dequant(codes + i, zp, sc, false, out_dtype, dst, e + i, SIMD_DQ_W);
        }
    }
    if (i < piece) {
        SIMD_ALIGN uint8_t tail[SIMD_DQ_W] = {0};
        memcpy(tail, codes + i, piece - i);
        simd_dequant(tail, zp, sc, finite, out_dtype, dst, e + i, piece - i);
    }
}

/* Room past the staged codes for the full-width reads of the last vector (or table lookup). */
#define SIMD_STAGE_PAD 64

SIMD_INLINE void simd_dequantize(const uint8_t *packed, const float *scales,
                                 const float *zero_points, const aq__span *s, aq_dtype out_dtype,
                                 void *dst)
{
    const unsigned bits = s->bits;
    const size_t per_byte = 8 / bits;
    SIMD_ALIGN uint8_t codes[SIMD_STAGE + SIMD_STAGE_PAD];
    size_t col = s->col0;
    size_t group = 0;
    size_t left = simd_group_len(s, col, 0); /* elements left in the current group */

    /* 8-bit codes are the packed bytes: read in place, in one chunk. Narrower ones are
     * unpacked in chunks of SIMD_STAGE codes, which start on byte boundaries; groups run
     * across chunks. */
    const size_t chunk = bits == 8 ? s->n : SIMD_STAGE;
    for (size_t c0 = 0; c0 < s->n; c0 += chunk) {
        size_t c1 = s->n - c0 < chunk ? s->n : c0 + chunk;
        const uint8_t *staged = codes;
        if (bits == 8) {
            staged = packed + c0;
        } else {
            size_t byte0 = c0 / per_byte;
            size_t byte1 = (c1 + per_byte - 1) / per_byte;
            simd_unpack_all(packed + byte0, byte1 - byte0, bits, codes);
        }
        for (size_t e = c0; e < c1;) {
            if (left == 0) {
                group++;
                left = simd_group_len(s, col, e);
            }
            size_t piece = left < c1 - e ? left : c1 - e;
            simd_dequant_piece(staged + (e - c0), zero_points[group], scales[group], bits,
                               out_dtype, dst, e, piece);
            e += piece;
            left -= piece;
            col += piece;
            if (col == s->cols) {
                col = 0;
            }
        }
    }
}

#ifdef SIMD_HAVE_KQ_DEQUANT
/* Codes simd_kq_dequant takes at a time: SIMD_DQ_W unless the instruction set says otherwise. */
#    ifndef SIMD_KQ_W
#        define SIMD_KQ_W SIMD_DQ_W
#    endif

/* a_j = d * (float)sc_j and b_j = dmin * (float)mc_j of the nsub sub-blocks of a super-block
 * (float32 multiplications, as the reference), from its packed parameters (docs/format.md 5.2;
 * reads exactly aq__kq_meta_bytes of them). Returns whether every a_j and b_j is finite, so
 * that no output is NaN (it may say false when they all are). */
SIMD_INLINE bool simd_kq_params(const uint8_t *meta, unsigned pbits, size_t nsub, float d,
                                float dmin, float *A, float *B)
{
    static const float val[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                  16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                  32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                  48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
    if (pbits == 4) {
        /* One byte per sub-block: sc in the low nibble, mc in the high one. */
        for (size_t j = 0; j < nsub; j++) {
            A[j] = d * val[meta[j] & 15u];
            B[j] = dmin * val[meta[j] >> 4];
        }
    } else {
        /* Three bytes per two sub-blocks: sc, mc, sc, mc of 6 bits each; an odd last sub-block
         * has two bytes. */
        for (size_t j = 0; j < nsub; j += 2) {
            const uint8_t *p = meta + 3 * (j / 2);
            uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8;
            if (j + 1 < nsub) {
                v |= (uint32_t)p[2] << 16;
                A[j + 1] = d * val[(v >> 12) & 63u];
                B[j + 1] = dmin * val[v >> 18];
            }
            A[j] = d * val[v & 63u];
            B[j] = dmin * val[(v >> 6) & 63u];
        }
    }
    /* |d * sc| <= |d * K| (rounding is monotonic): a finite d * K bounds every a_j. */
    const float k = val[(1u << pbits) - 1u];
    return isfinite(d * k) && isfinite(dmin * k);
}

/* kquant's dequantize (docs/format.md 5.2), bit-identical to kernels_ref_kquant.c: per
 * sub-block a = d * (float)sc and b = dmin * (float)mc in scalar float32 as the reference
 * computes them, then a * (float)q - b per element, SIMD_KQ_W codes at a time. A super-block's
 * codes are unpacked into a zero-padded stage (read in place for whole 8-bit super-blocks);
 * one that starts inside a byte (rows of kquant_rows whose length is not a multiple of the
 * codes per byte) is unpacked code by code. */
SIMD_INLINE void simd_kq_dequantize(const uint8_t *packed, const uint8_t *meta, const float *scales,
                                    const float *mins, const aq__span *s, aq_dtype out_dtype,
                                    void *dst)
{
    const unsigned bits = s->bits;
    const size_t sub = aq__kq_sub(bits);
    const unsigned pbits = aq__kq_param_bits(bits);
    const unsigned mask = (1u << bits) - 1u;
    /* Room for the sub-block parameters of the lanes past a super-block's end in its last
     * step. */
    enum { KQ_NSUB = AQ__KQ_SUPER / 16 + SIMD_KQ_W / 16 + 4 };
    SIMD_ALIGN uint8_t codes[AQ__KQ_SUPER + SIMD_STAGE_PAD];
    float A[KQ_NSUB], B[KQ_NSUB];
    const unsigned sub_shift = sub == 16 ? 4u : 5u;
    memset(codes, 0, sizeof codes);
    memset(A, 0, sizeof A);
    memset(B, 0, sizeof B);
    size_t col = s->col0;
    size_t group = 0;
    for (size_t start = 0; start < s->n; group++) {
        size_t len = simd_group_len(s, col, start);
        const size_t bit0 = start * bits;
#    ifdef SIMD_HAVE_KQ_SUPER16
        /* |d * sc| <= |d * K| (rounding is monotonic): a finite d * K bounds every a_j. */
        const float kmax = (float)((1u << pbits) - 1u);
        if (len == AQ__KQ_SUPER && bit0 % 8 == 0 && simd_kq_super16_use(bits, out_dtype) &&
            isfinite(scales[group] * kmax) && isfinite(mins[group] * kmax)) {
            simd_kq_super16(packed + bit0 / 8, meta, scales[group], mins[group], bits, out_dtype,
                            dst, start);
        } else
#    endif
        {
            const size_t nsub = (len + sub - 1) / sub;
            const bool finite = simd_kq_params(meta, pbits, nsub, scales[group], mins[group], A, B);
            for (size_t j = nsub; j < KQ_NSUB; j++) {
                A[j] = 0.0f;
                B[j] = 0.0f;
            }
            const uint8_t *staged = codes;
            /* Whole 4-bit super-blocks by table read their codes in place. */
            bool in_place = false;
#    ifdef SIMD_HAVE_KQ_LUT_PACKED4
            in_place = bits == 4 && bit0 % 8 == 0 && len == AQ__KQ_SUPER &&
                       simd_kq_lut_use(bits, out_dtype);
#    endif
            if (in_place) {
                /* nothing to stage */
            } else if (bit0 % 8 != 0) {
                size_t bit = bit0;
                for (size_t t = 0; t < len; t++, bit += bits) {
                    codes[t] = (uint8_t)(((unsigned)packed[bit / 8] >> (bit % 8)) & mask);
                }
            } else if (bits == 8) {
                if (len == AQ__KQ_SUPER) {
                    staged = packed + start;
                } else {
                    memcpy(codes, packed + start, len);
                }
            } else {
                simd_unpack_all(packed + bit0 / 8, (len * bits + 7) / 8, bits, codes);
            }
            if (len % SIMD_KQ_W != 0) {
                /* The last step's lanes past len read zeros, not the previous block's codes. */
                memset(codes + len, 0, SIMD_KQ_W - len % SIMD_KQ_W);
            }
#    ifdef SIMD_HAVE_KQ_LUT
            /* By table: one per 32 codes at 4 bits (a sub-block), one per 64 at 2 (four). The
             * stage and A, B have room for the reads past len. */
            if (simd_kq_lut_use(bits, out_dtype)) {
                const size_t step = bits == 2 ? 2 * SIMD_LUT_W : SIMD_LUT_W;
                for (size_t o = 0; o < len; o += step) {
                    const size_t j = o >> sub_shift;
                    const simd_lut t = finite
                                           ? simd_kq_lut_make(A + j, B + j, bits, true, out_dtype)
                                           : simd_kq_lut_make(A + j, B + j, bits, false, out_dtype);
#        ifdef SIMD_HAVE_KQ_LUT_PACKED4
                    if (in_place) {
                        simd_kq_lut_apply_packed4(t, packed + bit0 / 8 + o / 2, dst, start + o);
                        continue;
                    }
#        endif
                    for (size_t h = 0; h < step && o + h < len; h += SIMD_LUT_W) {
                        const size_t cnt = len - o - h < SIMD_LUT_W ? len - o - h : SIMD_LUT_W;
                        simd_kq_lut_apply(t, staged + o + h, bits, (unsigned)(h / SIMD_LUT_W), dst,
                                          start + o + h, cnt);
                    }
                }
            } else
#    endif
                if (finite) {
                for (size_t o = 0; o < len; o += SIMD_KQ_W) {
                    const size_t cnt = len - o < SIMD_KQ_W ? len - o : SIMD_KQ_W;
                    simd_kq_dequant(staged + o, A + (o >> sub_shift), B + (o >> sub_shift),
                                    sub_shift, true, out_dtype, dst, start + o, cnt);
                }
            } else {
                for (size_t o = 0; o < len; o += SIMD_KQ_W) {
                    const size_t cnt = len - o < SIMD_KQ_W ? len - o : SIMD_KQ_W;
                    simd_kq_dequant(staged + o, A + (o >> sub_shift), B + (o >> sub_shift),
                                    sub_shift, false, out_dtype, dst, start + o, cnt);
                }
            }
        }
        meta += aq__kq_meta_bytes(bits, len);
        start += len;
        col += len;
        if (col == s->cols) {
            col = 0;
        }
    }
}

#    define SIMD_KQ_DEQUANT(suffix, dtype)                                                  \
        static void simd_kq_dequantize_##suffix(const uint8_t *packed, const uint8_t *meta, \
                                                const float *scales, const float *mins,     \
                                                const aq__span *s, void *dst)               \
        {                                                                                   \
            simd_kq_dequantize(packed, meta, scales, mins, s, dtype, dst);                  \
        }

SIMD_KQ_DEQUANT(f32, AQ_DTYPE_F32)
SIMD_KQ_DEQUANT(f16, AQ_DTYPE_F16)
SIMD_KQ_DEQUANT(bf16, AQ_DTYPE_BF16)
#endif

SIMD_INLINE size_t simd_find_nonfinite(const void *src, aq_dtype dtype, size_t n)
{
    size_t i = 0;
    for (; i + SIMD_VL <= n; i += SIMD_VL) {
        if (simd_bad_any(simd_bad_acc(simd_zero(), simd_load(src, dtype, i)))) {
            break;
        }
    }
    for (; i < n; i++) {
        if (!isfinite(simd_scalar(src, dtype, i))) {
            return i;
        }
    }
    return n;
}

/* Error statistics: kernels_stats.h, the same sums on every table; 2-byte sources are
 * widened with this instruction set's loads. */
SIMD_INLINE void simd_widen(const void *src, aq_dtype dtype, size_t i, size_t cnt, float *out)
{
    size_t k = 0;
    for (; k + SIMD_VL <= cnt; k += SIMD_VL) {
        simd_v v = simd_load(src, dtype, i + k);
        memcpy(out + k, &v, sizeof v);
    }
    for (; k < cnt; k++) {
        out[k] = simd_scalar(src, dtype, i + k);
    }
}

STATS_DEFINE(simd_error_stats, simd_widen)

#define SIMD_STATS(suffix, dtype)                                                    \
    static void simd_error_stats_##suffix(const void *src, const float *y, size_t n, \
                                          double acc[5])                             \
    {                                                                                \
        simd_error_stats(src, dtype, y, n, acc);                                     \
    }

SIMD_STATS(f32, AQ_DTYPE_F32)
SIMD_STATS(f16, AQ_DTYPE_F16)
SIMD_STATS(bf16, AQ_DTYPE_BF16)

#define SIMD_ADAPTERS(suffix, dtype)                                                        \
    static bool simd_quantize_##suffix(const void *src, const aq__span *s, uint8_t *packed, \
                                       float *scales, float *zero_points)                   \
    {                                                                                       \
        return simd_quantize(src, dtype, s, packed, scales, zero_points);                   \
    }                                                                                       \
    static size_t simd_find_nonfinite_##suffix(const void *src, size_t n)                   \
    {                                                                                       \
        return simd_find_nonfinite(src, dtype, n);                                          \
    }

SIMD_ADAPTERS(f32, AQ_DTYPE_F32)
SIMD_ADAPTERS(f16, AQ_DTYPE_F16)
SIMD_ADAPTERS(bf16, AQ_DTYPE_BF16)
SIMD_ADAPTERS(f64, AQ_DTYPE_F64)

#define SIMD_DEQUANT(suffix, dtype)                                                              \
    static void simd_dequantize_##suffix(const uint8_t *packed, const float *scales,             \
                                         const float *zero_points, const aq__span *s, void *dst) \
    {                                                                                            \
        simd_dequantize(packed, scales, zero_points, s, dtype, dst);                             \
    }

SIMD_DEQUANT(f32, AQ_DTYPE_F32)
SIMD_DEQUANT(f16, AQ_DTYPE_F16)
SIMD_DEQUANT(bf16, AQ_DTYPE_BF16)

const aq__kernel_table SIMD_TABLE_NAME = {
    .name = SIMD_NAME,
    .quantize_affine = {simd_quantize_f32, simd_quantize_f16, simd_quantize_bf16,
                        simd_quantize_f64},
    .dequantize_affine = {simd_dequantize_f32, simd_dequantize_f16, simd_dequantize_bf16, NULL},
    .find_nonfinite = {simd_find_nonfinite_f32, simd_find_nonfinite_f16, simd_find_nonfinite_bf16,
                       simd_find_nonfinite_f64},
    .error_stats = {simd_error_stats_f32, simd_error_stats_f16, simd_error_stats_bf16, NULL},
#ifdef SIMD_SEARCH_QUANTIZE
    .quantize_search = SIMD_SEARCH_QUANTIZE,
#endif
#ifdef SIMD_KQUANT_QUANTIZE
    .quantize_kquant = SIMD_KQUANT_QUANTIZE,
#endif
#ifdef SIMD_HAVE_KQ_DEQUANT
    .dequantize_kquant = {simd_kq_dequantize_f32, simd_kq_dequantize_f16, simd_kq_dequantize_bf16,
                          NULL},
#endif
#ifdef SIMD_GGML
    .ggml = SIMD_GGML,
#endif
};
