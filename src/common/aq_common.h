/*
 * Internal helpers shared by every module: error reporting, checked size arithmetic and the
 * float16/bfloat16 conversions. Depends on nothing but the public header and libc.
 */
#ifndef AQ_COMMON_H
#define AQ_COMMON_H

#ifndef AQ_EXPERIMENTAL
#    define AQ_EXPERIMENTAL
#endif
#include "arrowquant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__)
#    define AQ__PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#    define AQ__LIKELY(x) __builtin_expect(!!(x), 1)
#    define AQ__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#    define AQ__PRINTF(fmt, args)
#    define AQ__LIKELY(x) (x)
#    define AQ__UNLIKELY(x) (x)
#endif

/* Fills err (if not NULL) with code and a printf-style message, and returns code, so that
 * callers can write `return aq__error_set(err, AQ_INVALID_ARGUMENT, "...", ...);`. */
aq_status aq__error_set(aq_error *err, aq_status code, const char *fmt, ...) AQ__PRINTF(3, 4);

/* Prepends "prefix: " to an error message already set (to add context such as a file name). */
void aq__error_prefix(aq_error *err, const char *fmt, ...) AQ__PRINTF(2, 3);

/* Reads a caller's options struct (first field `size_t size`) into dst, the library's struct
 * of dst_size bytes: zeroes dst, copies min(caller's size, dst_size) bytes, and sets dst's size
 * to dst_size. src NULL gives every default. A caller's size below min_size (the struct as it
 * was first released, AQ__SIZE_UPTO its last field then) is AQ_INVALID_ARGUMENT; a larger
 * size than dst_size is accepted when the extra bytes (fields this library does not know) are
 * zero, else AQ_UNSUPPORTED. `type` names the struct in messages. */
AQ_MUST_CHECK aq_status aq__sized_read(void *dst, size_t dst_size, const void *src, size_t min_size,
                                       const char *type, aq_error *err);
/* The size of a struct up to and including `field`: a struct's size as first released, which
 * later fields (appended) do not change. */
#define AQ__SIZE_UPTO(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))
/* aq__sized_read of `src` (a const type *, may be NULL) into the local `dst` (a type). */
#define AQ__OPTS_READ(type, last_field, dst, src, err) \
    aq__sized_read(&(dst), sizeof(type), (src), AQ__SIZE_UPTO(type, last_field), #type, (err))

/* A printable name for messages: the layer name, or "<unnamed>". */
static inline const char *aq__name_or_unnamed(const char *name)
{
    return name != NULL ? name : "<unnamed>";
}

/* A malloc'ed copy of s (free it with free), or NULL when s is NULL or memory runs out
 * (strings.c). */
char *aq__strdup(const char *s);

/* XXH64 of n bytes with a seed (hash.c). */
uint64_t aq__xxh64(const void *data, size_t n, uint64_t seed);

/* The bytes of one model file row that its checksum covers, as they lie in the file's columns
 * (docs/format.md 6.2); shape is int64 little-endian, group_size the column's uint32. */
typedef struct aq__row_bytes {
    const void *name, *data, *scales, *zero_points, *shape, *scheme, *source_dtype;
    size_t name_len, data_len, scales_len, zero_points_len, shape_len, scheme_len, source_dtype_len;
    uint8_t bit_width;
    uint32_t group_size;
} aq__row_bytes;

/* The row's checksum column value: XXH64 over each part in turn, each seeded with the
 * previous part's hash (hash.c). */
uint64_t aq__row_checksum(const aq__row_bytes *r);

/* Checked size arithmetic: return false (and leave *out unspecified) on overflow. */
static inline bool aq__mul_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}

static inline bool aq__add_size(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Bit-level float views without aliasing problems. */
static inline uint32_t aq__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float aq__f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 is the upper half of a float32: widening is exact. */
static inline float aq__bf16_to_f32(uint16_t h)
{
    return aq__f32_from_bits((uint32_t)h << 16);
}

/* Round-to-nearest-even narrowing to bfloat16; NaN stays a (quiet) NaN. */
static inline uint16_t aq__f32_to_bf16(float f)
{
    uint32_t u = aq__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((u >> 16) | 0x0040u);
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* IEEE binary16 to float32, exact (subnormals, infinities and NaN included). */
static inline float aq__f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        u = sign;
    } else {
        /* Subnormal: mant * 2^-24, exact in float32. */
        float v = (float)mant * 0x1p-24f;
        u = sign | aq__f32_bits(v);
    }
    return aq__f32_from_bits(u);
}

/* float32 to IEEE binary16 with round-to-nearest-even; overflow gives +-Inf, NaN stays NaN. */
static inline uint16_t aq__f32_to_f16(float f)
{
    uint32_t u = aq__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return (uint16_t)(sign | 0x7e00u);
    }
    if (a >= 0x477ff000u) { /* >= 65520: rounds to Inf */
        return (uint16_t)(sign | 0x7c00u);
    }
    if (a < 0x38800000u) { /* below 2^-14: subnormal or zero in binary16 */
        /* Scale so that one binary16 subnormal ulp (2^-24) is 1.0, then round to even. */
        float v = aq__f32_from_bits(a) * 0x1p24f;
        /* v < 1024, so adding 2^23 rounds to an integer with the FPU's ties-to-even. */
        float r = (v + 0x1p23f) - 0x1p23f;
        return (uint16_t)(sign | (uint16_t)r);
    }
    /* Normal: rebias the exponent, then round the 13 dropped mantissa bits to even. */
    uint32_t rebased = a - 0x38000000u; /* exponent bias 127 -> 15 */
    uint32_t round = 0xfffu + ((rebased >> 13) & 1u);
    return (uint16_t)(sign | (uint16_t)((rebased + round) >> 13));
}

/* ---- files (files.c) ---- */
struct stat;

/* "a FIFO", "a character device", ...: what a file of this mode is, for messages. */
const char *aq__file_kind(unsigned int mode);

/* Opens path read-only. Anything but a regular file (a FIFO, a device, a folder) is refused
 * before it is opened, so a FIFO cannot block the caller. Fills *sb when not NULL. */
aq_status aq__file_open_read(const char *path, int *fd, struct stat *sb, aq_error *err);

/* Reads a whole regular file of at most max bytes into a NUL-terminated malloc'ed buffer. */
aq_status aq__file_read_all(const char *path, size_t max, char **out, size_t *len, aq_error *err);

/* Checks that path can receive an output file before any work starts: not empty, its folder
 * exists and is writable, and where something is there already it is a regular file (or a
 * link to one). A folder, a device, a FIFO, a socket or a dangling link is refused. */
aq_status aq__dest_check(const char *path, aq_error *err);

/* Checks the destination (aq__dest_check) and creates "<path>.tmp-<pid>-XXXXXX" beside it,
 * mode 0644; temporaries of the same path whose process has gone are removed first.
 * *tmp is malloc'ed. */
aq_status aq__tmpfile_create(const char *path, char **tmp, int *fd, aq_error *err);
/* Call before a temporary from aq__tmpfile_create is renamed, removed or freed: it leaves the
 * list aq_temporaries_remove works through. */
void aq__tmpfile_forget(const char *tmp);

/* True when every page of [p, p + n) is mapped in this process (memprobe.c): a check before
 * reading memory whose size only a foreign producer vouches for. A range that is mapped but
 * not readable (a guard page), or that belongs to another object, is not detected. */
bool aq__mem_mapped(const void *p, size_t n);

/* Guards a read-only file mapping against SIGBUS (mapped.c): a fault in [addr, addr + size)
 * reads zeros instead, marks the mapping and counts in aq_mapped_faults. label (copied)
 * names the file in messages. Returns the slot for aq__mapped_remove, or -1 (nothing
 * guarded: too many mappings at once). Remove before munmap. */
int aq__mapped_add(const void *addr, size_t size, const char *label);
void aq__mapped_remove(int slot);
bool aq__mapped_faulted(int slot);

#endif /* AQ_COMMON_H */
