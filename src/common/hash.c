/*
 * XXH64, the 64-bit xxHash (the algorithm of the xxHash specification, also used by zstd for
 * its content checksums), written from the specification. Model files carry one per row.
 */
#include "aq_common.h"

#include <string.h>

#define P1 UINT64_C(0x9E3779B185EBCA87)
#define P2 UINT64_C(0xC2B2AE3D27D4EB4F)
#define P3 UINT64_C(0x165667B19E3779F9)
#define P4 UINT64_C(0x85EBCA77C2B2AE63)
#define P5 UINT64_C(0x27D4EB2F165667C5)

static uint64_t h_rotl(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

/* Little-endian loads, whatever the alignment. */
static uint64_t h_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

static uint32_t h_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t h_round(uint64_t acc, uint64_t lane)
{
    acc += lane * P2;
    acc = h_rotl(acc, 31);
    return acc * P1;
}

static uint64_t h_merge(uint64_t acc, uint64_t v)
{
    acc ^= h_round(0, v);
    return acc * P1 + P4;
}

uint64_t aq__xxh64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = n > 0 ? data : (const void *)"";
    const uint8_t *end = p + n;
    uint64_t acc;
    if (n >= 32) {
        uint64_t v[4] = {seed + P1 + P2, seed + P2, seed, seed - P1};
        const uint8_t *limit = end - 32;
        do {
            for (int k = 0; k < 4; k++) {
                v[k] = h_round(v[k], h_le64(p + 8 * k));
            }
            p += 32;
        } while (p <= limit);
        acc = h_rotl(v[0], 1) + h_rotl(v[1], 7) + h_rotl(v[2], 12) + h_rotl(v[3], 18);
        for (int k = 0; k < 4; k++) {
            acc = h_merge(acc, v[k]);
        }
    } else {
        acc = seed + P5;
    }
    acc += (uint64_t)n;
    for (; end - p >= 8; p += 8) {
        acc ^= h_round(0, h_le64(p));
        acc = h_rotl(acc, 27) * P1 + P4;
    }
    if (end - p >= 4) {
        acc ^= (uint64_t)h_le32(p) * P1;
        acc = h_rotl(acc, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; p++) {
        acc ^= (uint64_t)*p * P5;
        acc = h_rotl(acc, 11) * P1;
    }
    acc ^= acc >> 33;
    acc *= P2;
    acc ^= acc >> 29;
    acc *= P3;
    acc ^= acc >> 32;
    return acc;
}

uint64_t aq__row_checksum(const aq__row_bytes *r)
{
    uint8_t fixed[5];
    fixed[0] = r->bit_width;
    for (int i = 0; i < 4; i++) {
        fixed[1 + i] = (uint8_t)(r->group_size >> (8 * i));
    }
    uint64_t h = aq__xxh64(r->name, r->name_len, 0);
    h = aq__xxh64(r->data, r->data_len, h);
    h = aq__xxh64(r->scales, r->scales_len, h);
    h = aq__xxh64(r->zero_points, r->zero_points_len, h);
    h = aq__xxh64(r->shape, r->shape_len, h);
    h = aq__xxh64(fixed, sizeof fixed, h);
    h = aq__xxh64(r->scheme, r->scheme_len, h);
    return aq__xxh64(r->source_dtype, r->source_dtype_len, h);
}
