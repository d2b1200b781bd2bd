/* The library against the golden vectors of tests/data/golden_*.bin, written by an independent
 * numpy implementation of docs/format.md (tests/data/golden.py, which documents the layout):
 * packed bytes, scales, zero points and restored floats must be identical, bit for bit, for
 * every kernel set this build and CPU have. */
#define _POSIX_C_SOURCE 200809L /* opendir, setenv */

#include "test_util.h"

#include <dirent.h>
#include <stdarg.h>

#define GD_MSG 512

/* One case, with pointers into the file's bytes (not aligned: copied before use). */
typedef struct gd_case {
    char name[256];
    aq_dtype dtype;
    unsigned bits;
    int expect_error;
    size_t group_size;
    size_t ndim;
    int64_t shape[AQ_MAX_NDIM];
    size_t elements;
    const uint8_t *input;
    size_t packed_bytes;
    const uint8_t *packed;
    size_t groups;
    const uint8_t *scales;
    const uint8_t *zero_points;
    const uint8_t *restored;      /* float32 */
    const uint8_t *restored_f16;  /* float16 bits */
    const uint8_t *restored_bf16; /* bfloat16 bits */
    size_t bad_index;
} gd_case;

typedef struct gd_reader {
    const uint8_t *data;
    size_t size;
    size_t pos;
    const char *what; /* file name, for messages */
    char *msg;
} gd_reader;

static void gd_fmt(char *msg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gd_fmt(char *msg, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, GD_MSG, fmt, ap);
    va_end(ap);
}

/* Takes n bytes for `field`; false with a message naming the byte offset if fewer are left. */
static bool gd_take(gd_reader *r, size_t n, const char *field, const uint8_t **out)
{
    if (n > r->size - r->pos) {
        gd_fmt(r->msg, "%s: byte offset %zu: truncated: %s needs %zu bytes, %zu left", r->what,
               r->pos, field, n, r->size - r->pos);
        return false;
    }
    *out = r->data + r->pos;
    r->pos += n;
    return true;
}

static bool gd_uint(gd_reader *r, size_t width, const char *field, uint64_t *out)
{
    const uint8_t *p;
    if (!gd_take(r, width, field, &p)) {
        return false;
    }
    uint64_t v = 0;
    for (size_t i = width; i-- > 0;) {
        v = (v << 8) | p[i];
    }
    *out = v;
    return true;
}

/* Takes count items of `size` bytes, refusing a count whose byte size overflows. */
static bool gd_array(gd_reader *r, uint64_t count, size_t size, const char *field,
                     const uint8_t **out)
{
    if (count > (uint64_t)(SIZE_MAX / size)) {
        gd_fmt(r->msg, "%s: byte offset %zu: %s: %llu items overflow", r->what, r->pos, field,
               (unsigned long long)count);
        return false;
    }
    return gd_take(r, (size_t)count * size, field, out);
}

/* Fails the read with "FILE: byte offset AT: case 'NAME': DETAIL". */
static bool gd_bad(gd_reader *r, size_t at, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static bool gd_bad(gd_reader *r, size_t at, const char *name, const char *fmt, ...)
{
    char detail[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    gd_fmt(r->msg, "%s: byte offset %zu: case '%s': %s", r->what, at, name, detail);
    return false;
}

static bool gd_read_case(gd_reader *r, gd_case *c)
{
    uint64_t v, dtype, bits, ndim, expect, n;
    const uint8_t *p;
    memset(c, 0, sizeof *c);
    size_t at = r->pos;
    if (!gd_uint(r, 4, "name length", &v)) {
        return false;
    }
    if (v == 0 || v >= sizeof c->name) {
        return gd_bad(r, at, "?", "name length %llu, expected 1..255", (unsigned long long)v);
    }
    if (!gd_take(r, (size_t)v, "name", &p)) {
        return false;
    }
    memcpy(c->name, p, (size_t)v);
    at = r->pos;
    if (!gd_uint(r, 1, "dtype", &dtype) || !gd_uint(r, 1, "bit width", &bits) ||
        !gd_uint(r, 1, "ndim", &ndim) || !gd_uint(r, 1, "expect", &expect) ||
        !gd_uint(r, 8, "group size", &v)) {
        return false;
    }
    if (dtype >= AQ_DTYPE_COUNT) {
        return gd_bad(r, at, c->name, "dtype %llu, expected 0..3", (unsigned long long)dtype);
    }
    if (bits != 2 && bits != 4 && bits != 8) {
        return gd_bad(r, at + 1, c->name, "bit width %llu, expected 2, 4 or 8",
                      (unsigned long long)bits);
    }
    if (ndim > AQ_MAX_NDIM) {
        return gd_bad(r, at + 2, c->name, "ndim %llu, expected at most 16",
                      (unsigned long long)ndim);
    }
    if (expect > 1) {
        return gd_bad(r, at + 3, c->name, "expect %llu, expected 0 or 1",
                      (unsigned long long)expect);
    }
    if ((uint64_t)(size_t)v != v) {
        return gd_bad(r, at + 4, c->name, "group size %llu does not fit size_t",
                      (unsigned long long)v);
    }
    c->dtype = (aq_dtype)dtype;
    c->bits = (unsigned)bits;
    c->ndim = (size_t)ndim;
    c->expect_error = (int)expect;
    c->group_size = (size_t)v;
    uint64_t product = 1;
    for (size_t i = 0; i < c->ndim; i++) {
        at = r->pos;
        if (!gd_uint(r, 8, "shape", &v)) {
            return false;
        }
        if (v > INT64_MAX || (v != 0 && product > UINT64_MAX / v)) {
            return gd_bad(r, at, c->name, "dimension %llu is negative or overflows",
                          (unsigned long long)v);
        }
        c->shape[i] = (int64_t)v;
        product *= v;
    }
    at = r->pos;
    if (!gd_uint(r, 8, "element count", &n)) {
        return false;
    }
    if (n != product || n == 0) {
        return gd_bad(r, at, c->name, "element count %llu does not match the shape",
                      (unsigned long long)n);
    }
    c->elements = (size_t)n;
    if (!gd_array(r, n, aq_dtype_size(c->dtype), "input", &c->input)) {
        return false;
    }
    if (c->expect_error) {
        if (!gd_uint(r, 8, "bad index", &v)) {
            return false;
        }
        if (v >= n) {
            return gd_bad(r, r->pos - 8, c->name, "bad index %llu beyond the tensor",
                          (unsigned long long)v);
        }
        c->bad_index = (size_t)v;
        return true;
    }
    if (!gd_uint(r, 8, "packed size", &v) || !gd_array(r, v, 1, "packed", &c->packed)) {
        return false;
    }
    c->packed_bytes = (size_t)v;
    if (!gd_uint(r, 8, "group count", &v) || !gd_array(r, v, 4, "scales", &c->scales) ||
        !gd_array(r, v, 4, "zero points", &c->zero_points) ||
        !gd_array(r, n, 4, "restored", &c->restored) ||
        !gd_array(r, n, 2, "restored f16", &c->restored_f16) ||
        !gd_array(r, n, 2, "restored bf16", &c->restored_bf16)) {
        return false;
    }
    c->groups = (size_t)v;
    return true;
}

/* Parses a whole golden file. On success *cases (malloc'd) holds *count cases pointing into
 * data; on failure msg says where and why. */
static bool gd_parse(const uint8_t *data, size_t size, const char *what, gd_case **cases,
                     size_t *count, char *msg)
{
    gd_reader r = {data, size, 0, what, msg};
    const uint8_t *magic;
    uint64_t version, n;
    if (!gd_take(&r, 8, "magic", &magic) || !gd_uint(&r, 4, "version", &version) ||
        !gd_uint(&r, 4, "case count", &n)) {
        return false;
    }
    if (memcmp(magic, "AQGOLDEN", 8) != 0 || version != 1) {
        gd_fmt(msg, "%s: not a version 1 golden file (magic AQGOLDEN)", what);
        return false;
    }
    /* Every case takes at least 32 bytes: a count beyond that is a corrupt header. */
    if (n == 0 || n > size / 32) {
        gd_fmt(msg, "%s: case count %llu impossible for %zu bytes", what, (unsigned long long)n,
               size);
        return false;
    }
    gd_case *out = calloc((size_t)n, sizeof *out);
    if (out == NULL) {
        gd_fmt(msg, "%s: out of memory", what);
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!gd_read_case(&r, &out[i])) {
            free(out);
            return false;
        }
    }
    if (r.pos != size) {
        gd_fmt(msg, "%s: byte offset %zu: %zu bytes after the last case", what, r.pos,
               size - r.pos);
        free(out);
        return false;
    }
    *cases = out;
    *count = (size_t)n;
    return true;
}

static uint8_t *gd_load(const char *path, size_t *size, char *msg)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data = NULL;
    long len;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        gd_fmt(msg, "%s: cannot open or size the file", path);
        goto done;
    }
    data = malloc((size_t)len + 1);
    if (data == NULL || fread(data, 1, (size_t)len, f) != (size_t)len) {
        gd_fmt(msg, "%s: cannot read %ld bytes", path, len);
        free(data);
        data = NULL;
        goto done;
    }
    *size = (size_t)len;
done:
    if (f != NULL) {
        fclose(f);
    }
    return data;
}

/* Index of the first differing item of two arrays of n items of `width` bytes, or n. */
static size_t gd_first_diff(const void *a, const void *b, size_t n, size_t width)
{
    for (size_t i = 0; i < n; i++) {
        if (memcmp((const uint8_t *)a + width * i, (const uint8_t *)b + width * i, width) != 0) {
            return i;
        }
    }
    return n;
}

static unsigned gd_u16(const void *p, size_t i)
{
    uint16_t v;
    memcpy(&v, (const uint8_t *)p + 2 * i, 2);
    return v;
}

static float gd_f32(const void *p, size_t i)
{
    float v;
    memcpy(&v, (const uint8_t *)p + 4 * i, 4);
    return v;
}

/* Runs one case through aq_quantize and aq_dequantize with ctx; true when everything matches,
 * otherwise msg names the case, the part and the first differing index. */
static bool gd_run_case(aq_ctx *ctx, const gd_case *c, char *msg)
{
    aq_error err;
    bool ok = false;
    size_t in_bytes = c->elements * aq_dtype_size(c->dtype);
    void *input = malloc(in_bytes);
    uint8_t *packed = NULL, *gpacked = NULL;
    float *scales = NULL, *zps = NULL, *gscales = NULL, *gzps = NULL, *restored = NULL;
    size_t i;
    if (input == NULL) {
        gd_fmt(msg, "case '%s': out of memory", c->name);
        goto done;
    }
    memcpy(input, c->input, in_bytes);
    if (aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, c->bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)c->group_size, &err) != AQ_OK) {
        gd_fmt(msg, "case '%s': %s", c->name, err.message);
        goto done;
    }
    aq_tensor t = {c->name, c->dtype, input, c->shape, c->ndim};
    aq_layout l;
    if (aq_quantize_bound(ctx, &t, &l, &err) != AQ_OK) {
        gd_fmt(msg, "case '%s': aq_quantize_bound: %s", c->name, err.message);
        goto done;
    }
    size_t pcap = c->expect_error ? l.packed_bytes : c->packed_bytes;
    size_t gcap = c->expect_error ? l.groups : c->groups;
    packed = malloc(pcap + 1);
    scales = malloc(gcap * sizeof(float) + 1);
    zps = malloc(gcap * sizeof(float) + 1);
    if (packed == NULL || scales == NULL || zps == NULL) {
        gd_fmt(msg, "case '%s': out of memory", c->name);
        goto done;
    }
    aq_qbuffers b = {packed, pcap, scales, zps, gcap};
    aq_status st = aq_quantize(ctx, &t, &b, &err);
    if (c->expect_error) {
        char needle[64];
        snprintf(needle, sizeof needle, "at index %zu", c->bad_index);
        size_t first_bad = SIZE_MAX;
        aq_error err2;
        aq_status st2 = aq_tensor_check_finite(&t, &first_bad, &err2);
        if (st != AQ_NON_FINITE || strstr(err.message, needle) == NULL || st2 != AQ_NON_FINITE ||
            first_bad != c->bad_index) {
            gd_fmt(msg, "case '%s': expected AQ_NON_FINITE %s, got %s (\"%s\"), first_bad %zu",
                   c->name, needle, aq_status_name(st), st == AQ_OK ? "" : err.message, first_bad);
            goto done;
        }
        ok = true;
        goto done;
    }
    if (st != AQ_OK) {
        gd_fmt(msg, "case '%s': aq_quantize: %s", c->name, err.message);
        goto done;
    }
    if (l.packed_bytes != c->packed_bytes || l.groups != c->groups) {
        gd_fmt(msg, "case '%s': layout %zu packed bytes, %zu groups; golden %zu, %zu", c->name,
               l.packed_bytes, l.groups, c->packed_bytes, c->groups);
        goto done;
    }
    for (i = 0; i < c->packed_bytes && packed[i] == c->packed[i]; i++) {
    }
    if (i < c->packed_bytes) {
        gd_fmt(msg, "case '%s': packed byte %zu differs: library 0x%02x, golden 0x%02x", c->name, i,
               packed[i], c->packed[i]);
        goto done;
    }
    if ((i = gd_first_diff(scales, c->scales, c->groups, 4)) < c->groups) {
        gd_fmt(msg, "case '%s': scale %zu differs: library %a, golden %a", c->name, i,
               (double)scales[i], (double)gd_f32(c->scales, i));
        goto done;
    }
    if ((i = gd_first_diff(zps, c->zero_points, c->groups, 4)) < c->groups) {
        gd_fmt(msg, "case '%s': zero point %zu differs: library %a, golden %a", c->name, i,
               (double)zps[i], (double)gd_f32(c->zero_points, i));
        goto done;
    }
    /* Dequantize the golden codes, scales and zero points (not the library's own). */
    gpacked = malloc(c->packed_bytes + 1);
    gscales = malloc(c->groups * sizeof(float) + 1);
    gzps = malloc(c->groups * sizeof(float) + 1);
    restored = malloc(c->elements * sizeof(float));
    if (gpacked == NULL || gscales == NULL || gzps == NULL || restored == NULL) {
        gd_fmt(msg, "case '%s': out of memory", c->name);
        goto done;
    }
    memcpy(gpacked, c->packed, c->packed_bytes);
    memcpy(gscales, c->scales, c->groups * sizeof(float));
    memcpy(gzps, c->zero_points, c->groups * sizeof(float));
    aq_qtensor q = {.name = c->name,
                    .scheme = AQ_SCHEME_AFFINE,
                    .bit_width = c->bits,
                    .group_size = c->group_size,
                    .shape = c->shape,
                    .ndim = c->ndim,
                    .packed = gpacked,
                    .packed_size = c->packed_bytes,
                    .scales = gscales,
                    .zero_points = gzps,
                    .groups = c->groups};
    if (aq_dequantize(ctx, &q, AQ_DTYPE_F32, restored, c->elements, &err) != AQ_OK) {
        gd_fmt(msg, "case '%s': aq_dequantize: %s", c->name, err.message);
        goto done;
    }
    if ((i = gd_first_diff(restored, c->restored, c->elements, 4)) < c->elements) {
        gd_fmt(msg, "case '%s': restored value %zu differs: library %a, golden %a", c->name, i,
               (double)restored[i], (double)gd_f32(c->restored, i));
        goto done;
    }
    /* The same values written as float16 and bfloat16 (into the float buffer: half the size). */
    const aq_dtype half[2] = {AQ_DTYPE_F16, AQ_DTYPE_BF16};
    const uint8_t *expected[2] = {c->restored_f16, c->restored_bf16};
    for (size_t h = 0; h < 2; h++) {
        if (aq_dequantize(ctx, &q, half[h], restored, c->elements, &err) != AQ_OK) {
            gd_fmt(msg, "case '%s': aq_dequantize to %s: %s", c->name, aq_dtype_name(half[h]),
                   err.message);
            goto done;
        }
        if ((i = gd_first_diff(restored, expected[h], c->elements, 2)) < c->elements) {
            gd_fmt(msg, "case '%s': restored %s value %zu differs: library 0x%04x, golden 0x%04x",
                   c->name, aq_dtype_name(half[h]), i, gd_u16(restored, i), gd_u16(expected[h], i));
            goto done;
        }
    }
    ok = true;
done:
    free(input);
    free(packed);
    free(scales);
    free(zps);
    free(gpacked);
    free(gscales);
    free(gzps);
    free(restored);
    return ok;
}

static int gd_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The golden_*.bin names in the data directory, sorted; NULL-terminated, malloc'd. */
static char **gd_list(size_t *count)
{
    DIR *dir = opendir(aq_test_data_dir());
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    if (dir == NULL) {
        *count = 0;
        return NULL;
    }
    while ((e = readdir(dir)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "golden_", 7) != 0 || len < 11 ||
            strcmp(e->d_name + len - 4, ".bin") != 0) {
            continue;
        }
        char **grown = realloc(names, (n + 2) * sizeof *names);
        if (grown == NULL) {
            break;
        }
        names = grown;
        names[n] = malloc(len + 1);
        if (names[n] == NULL) {
            break;
        }
        memcpy(names[n++], e->d_name, len + 1);
        names[n] = NULL;
    }
    closedir(dir);
    if (names != NULL) {
        qsort(names, n, sizeof *names, gd_name_cmp);
    }
    *count = n;
    return names;
}

static void gd_free_list(char **names)
{
    for (size_t i = 0; names != NULL && names[i] != NULL; i++) {
        free(names[i]);
    }
    free(names);
}

/* Loads and parses one golden file of the data directory. */
static bool gd_open(const char *name, uint8_t **data, size_t *size, gd_case **cases, size_t *count,
                    char *msg)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", aq_test_data_dir(), name);
    *data = gd_load(path, size, msg);
    if (*data == NULL) {
        return false;
    }
    if (!gd_parse(*data, *size, name, cases, count, msg)) {
        free(*data);
        *data = NULL;
        return false;
    }
    return true;
}

static const char *const gd_kernel_sets[] = {"ref", "avx2", "avx512", "neon"};

TEST(golden_vectors)
{
    char msg[GD_MSG];
    size_t nfiles = 0, total = 0, kernel_sets = 0;
    char **names = gd_list(&nfiles);
    const uint16_t one = 1;
    uint8_t little;
    memcpy(&little, &one, 1);
    CHECK_MSG(little == 1, "golden files are little-endian; this host is not");
    CHECK_MSG(nfiles >= 3, "expected golden_*.bin files in %s, found %zu", aq_test_data_dir(),
              nfiles);
    for (size_t k = 0; k < sizeof gd_kernel_sets / sizeof gd_kernel_sets[0]; k++) {
        aq_ctx *ctx = NULL;
        aq_error err;
        setenv("AQ_KERNELS", gd_kernel_sets[k], 1);
        aq_status st = aq_ctx_create(&ctx, &err);
        unsetenv("AQ_KERNELS");
        if (st == AQ_UNSUPPORTED) {
            continue; /* not in this build or not on this CPU */
        }
        CHECK_MSG(st == AQ_OK, "aq_ctx_create with AQ_KERNELS=%s: %s", gd_kernel_sets[k],
                  err.message);
        kernel_sets++;
        for (size_t f = 0; f < nfiles; f++) {
            uint8_t *data;
            size_t size, count;
            gd_case *cases;
            if (!gd_open(names[f], &data, &size, &cases, &count, msg)) {
                aq_test_fail(__FILE__, __LINE__, "%s", msg);
                continue;
            }
            for (size_t i = 0; i < count; i++) {
                if (!gd_run_case(ctx, &cases[i], msg)) {
                    aq_test_fail(__FILE__, __LINE__, "kernels %s, %s: %s", aq_ctx_kernels(ctx),
                                 names[f], msg);
                }
            }
            total += count;
            free(cases);
            free(data);
        }
        aq_ctx_free(ctx);
    }
    gd_free_list(names);
    printf("%zu golden cases checked over %zu kernel set(s)\n", total, kernel_sets);
    CHECK(kernel_sets >= 1);
}

/* The comparison can fail: one flipped byte of a case's expected packed data is reported with
 * the case name and the byte's index. */
TEST(golden_flipped_byte_detected)
{
    char msg[GD_MSG];
    uint8_t *data;
    size_t size, count;
    gd_case *cases;
    CHECK_MSG(gd_open("golden_grid.bin", &data, &size, &cases, &count, msg), "%s", msg);
    aq_ctx *ctx = NULL;
    aq_error err;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    size_t tried = 0;
    for (size_t i = 0; i < count; i++) {
        gd_case *c = &cases[i];
        if (c->expect_error || c->packed_bytes < 3) {
            continue;
        }
        CHECK_MSG(gd_run_case(ctx, c, msg), "%s", msg);
        size_t at = c->packed_bytes / 2;
        uint8_t *byte = data + (size_t)(c->packed - data) + at;
        *byte ^= 0x10;
        bool same = gd_run_case(ctx, c, msg);
        *byte ^= 0x10;
        char needle[GD_MSG];
        snprintf(needle, sizeof needle, "case '%s': packed byte %zu differs", c->name, at);
        CHECK_MSG(!same && strstr(msg, needle) != NULL, "flip not reported: \"%s\"", msg);
        /* A flipped restored float is reported too. */
        byte = data + (size_t)(c->restored - data) + 4 * (c->elements - 1);
        *byte ^= 0x01;
        same = gd_run_case(ctx, c, msg);
        *byte ^= 0x01;
        snprintf(needle, sizeof needle, "restored value %zu differs", c->elements - 1);
        CHECK_MSG(!same && strstr(msg, needle) != NULL, "flip not reported: \"%s\"", msg);
        byte = data + (size_t)(c->restored_bf16 - data);
        *byte ^= 0x01;
        same = gd_run_case(ctx, c, msg);
        *byte ^= 0x01;
        CHECK_MSG(!same && strstr(msg, "restored bf16 value 0 differs") != NULL,
                  "flip not reported: \"%s\"", msg);
        tried++;
    }
    CHECK(tried >= 10);
    aq_ctx_free(ctx);
    free(cases);
    free(data);
}

static bool gd_parse_copy(const uint8_t *data, size_t size, char *msg)
{
    /* An exactly sized copy, so that the sanitizers catch any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    gd_case *cases = NULL;
    size_t count;
    if (copy == NULL) {
        gd_fmt(msg, "out of memory");
        return false;
    }
    memcpy(copy, data, size);
    bool ok = gd_parse(copy, size, "golden_dtypes.bin", &cases, &count, msg);
    free(cases);
    free(copy);
    return ok;
}

/* Every truncation of a golden file, and corrupt headers, are reported with a message. */
TEST(golden_reader_rejects_bad_files)
{
    char msg[GD_MSG];
    uint8_t *data;
    size_t size, count;
    gd_case *cases;
    CHECK_MSG(gd_open("golden_dtypes.bin", &data, &size, &cases, &count, msg), "%s", msg);
    for (size_t len = 0; len < size; len++) {
        msg[0] = '\0';
        CHECK_MSG(!gd_parse_copy(data, len, msg), "prefix of %zu bytes accepted", len);
        CHECK_MSG(strstr(msg, "golden_dtypes.bin: ") == msg &&
                      (strstr(msg, "truncated") != NULL || strstr(msg, "case count") != NULL),
                  "prefix of %zu bytes: unexpected message \"%s\"", len, msg);
    }
    CHECK(gd_parse_copy(data, size, msg));

    uint8_t *bad = malloc(size + 1);
    CHECK(bad != NULL);
    memcpy(bad, data, size);
    bad[size] = 0;
    CHECK(!gd_parse_copy(bad, size + 1, msg) && strstr(msg, "after the last case") != NULL);
    bad[0] = 'X';
    CHECK(!gd_parse_copy(bad, size, msg) && strstr(msg, "not a version 1") != NULL);
    bad[0] = data[0];
    bad[15] = 0xff; /* the case count's high byte */
    CHECK(!gd_parse_copy(bad, size, msg) && strstr(msg, "case count") != NULL);
    memcpy(bad, data, size);
    size_t first = 16 + 4 + strlen(cases[0].name); /* the first case's dtype byte */
    bad[first + 1] = 3;                            /* bit width of the first case */
    CHECK(!gd_parse_copy(bad, size, msg) && strstr(msg, "bit width 3") != NULL);
    memcpy(bad, data, size);
    bad[first + 2] = 200; /* ndim */
    CHECK(!gd_parse_copy(bad, size, msg) && strstr(msg, "ndim 200") != NULL);
    memcpy(bad, data, size);
    bad[first + 12] ^= 1; /* first dimension: the element count no longer matches */
    CHECK(!gd_parse_copy(bad, size, msg) && strstr(msg, "does not match the shape") != NULL);
    free(bad);
    free(cases);
    free(data);
}

AQ_TEST_MAIN(AQ_CASE(golden_vectors), AQ_CASE(golden_flipped_byte_detected),
             AQ_CASE(golden_reader_rejects_bad_files))
