/* A bounds-checked FlatBuffers reader and a front-to-back writer (see flatbuf.h). */
#include "flatbuf.h"

#include <stdlib.h>

static uint16_t fb_get_u16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t fb_get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t fb_get_u64(const uint8_t *p)
{
    return (uint64_t)fb_get_u32(p) | ((uint64_t)fb_get_u32(p + 4) << 32);
}

/* True when [pos, pos + n) lies inside a buffer of `size` bytes. */
static bool fb_in(size_t size, size_t pos, size_t n)
{
    return pos <= size && n <= size - pos;
}

static int fb_table_at(const uint8_t *buf, size_t size, size_t pos, aq__fbt *out)
{
    if (!fb_in(size, pos, 4)) {
        return AQ__FB_BAD;
    }
    int32_t soff = (int32_t)fb_get_u32(buf + pos);
    int64_t vt = (int64_t)pos - (int64_t)soff;
    if (vt < 0 || !fb_in(size, (size_t)vt, 4)) {
        return AQ__FB_BAD;
    }
    size_t vt_size = fb_get_u16(buf + vt);
    size_t tbl_size = fb_get_u16(buf + vt + 2);
    if (vt_size < 4 || (vt_size & 1) != 0 || !fb_in(size, (size_t)vt, vt_size) || tbl_size < 4 ||
        !fb_in(size, pos, tbl_size)) {
        return AQ__FB_BAD;
    }
    out->buf = buf;
    out->size = size;
    out->pos = pos;
    out->vtable = (size_t)vt;
    out->vt_size = vt_size;
    out->tbl_size = tbl_size;
    return AQ__FB_OK;
}

int aq__fb_root(const uint8_t *buf, size_t size, aq__fbt *out)
{
    if (!fb_in(size, 0, 4)) {
        return AQ__FB_BAD;
    }
    return fb_table_at(buf, size, fb_get_u32(buf), out);
}

/* The position of a field of `width` bytes, or ABSENT / BAD. */
static int fb_field(const aq__fbt *t, unsigned slot, size_t width, size_t *pos)
{
    size_t entry = 4 + 2 * (size_t)slot;
    if (entry + 2 > t->vt_size) {
        return AQ__FB_ABSENT;
    }
    size_t off = fb_get_u16(t->buf + t->vtable + entry);
    if (off == 0) {
        return AQ__FB_ABSENT;
    }
    if (off < 4 || off > t->tbl_size || width > t->tbl_size - off) {
        return AQ__FB_BAD;
    }
    *pos = t->pos + off;
    return AQ__FB_OK;
}

static int fb_scalar(const aq__fbt *t, unsigned slot, size_t width, uint64_t *out)
{
    size_t pos;
    int r = fb_field(t, slot, width, &pos);
    if (r != AQ__FB_OK) {
        return r;
    }
    const uint8_t *p = t->buf + pos;
    switch (width) {
    case 1:
        *out = p[0];
        break;
    case 2:
        *out = fb_get_u16(p);
        break;
    case 4:
        *out = fb_get_u32(p);
        break;
    default:
        *out = fb_get_u64(p);
        break;
    }
    return AQ__FB_OK;
}

int aq__fbt_u8(const aq__fbt *t, unsigned slot, uint8_t def, uint8_t *out)
{
    uint64_t v = def;
    int r = fb_scalar(t, slot, 1, &v);
    *out = (uint8_t)v;
    return r == AQ__FB_BAD ? r : AQ__FB_OK;
}

int aq__fbt_i16(const aq__fbt *t, unsigned slot, int16_t def, int16_t *out)
{
    uint64_t v = (uint16_t)def;
    int r = fb_scalar(t, slot, 2, &v);
    *out = (int16_t)(uint16_t)v;
    return r == AQ__FB_BAD ? r : AQ__FB_OK;
}

int aq__fbt_i32(const aq__fbt *t, unsigned slot, int32_t def, int32_t *out)
{
    uint64_t v = (uint32_t)def;
    int r = fb_scalar(t, slot, 4, &v);
    *out = (int32_t)(uint32_t)v;
    return r == AQ__FB_BAD ? r : AQ__FB_OK;
}

int aq__fbt_i64(const aq__fbt *t, unsigned slot, int64_t def, int64_t *out)
{
    uint64_t v = (uint64_t)def;
    int r = fb_scalar(t, slot, 8, &v);
    *out = (int64_t)v;
    return r == AQ__FB_BAD ? r : AQ__FB_OK;
}

/* Follows the uoffset at pos (it must point forward and stay inside the buffer). */
static int fb_follow(const uint8_t *buf, size_t size, size_t pos, size_t *target)
{
    if (!fb_in(size, pos, 4)) {
        return AQ__FB_BAD;
    }
    uint32_t rel = fb_get_u32(buf + pos);
    if (rel == 0 || rel > size - pos) {
        return AQ__FB_BAD;
    }
    *target = pos + rel;
    return AQ__FB_OK;
}

int aq__fbt_table(const aq__fbt *t, unsigned slot, aq__fbt *out)
{
    size_t pos, target;
    int r = fb_field(t, slot, 4, &pos);
    if (r != AQ__FB_OK) {
        return r;
    }
    if (fb_follow(t->buf, t->size, pos, &target) != AQ__FB_OK) {
        return AQ__FB_BAD;
    }
    return fb_table_at(t->buf, t->size, target, out);
}

static int fb_vector_at(const uint8_t *buf, size_t size, size_t pos, size_t elem_size, aq__fbv *out)
{
    if (!fb_in(size, pos, 4)) {
        return AQ__FB_BAD;
    }
    size_t count = fb_get_u32(buf + pos);
    size_t bytes;
    if (!aq__mul_size(count, elem_size, &bytes) || !fb_in(size, pos + 4, bytes)) {
        return AQ__FB_BAD;
    }
    out->buf = buf;
    out->size = size;
    out->data = pos + 4;
    out->count = count;
    return AQ__FB_OK;
}

int aq__fbt_vector(const aq__fbt *t, unsigned slot, size_t elem_size, aq__fbv *out)
{
    size_t pos, target;
    int r = fb_field(t, slot, 4, &pos);
    if (r != AQ__FB_OK) {
        return r;
    }
    if (fb_follow(t->buf, t->size, pos, &target) != AQ__FB_OK) {
        return AQ__FB_BAD;
    }
    return fb_vector_at(t->buf, t->size, target, elem_size, out);
}

int aq__fbt_string(const aq__fbt *t, unsigned slot, const char **str, size_t *len)
{
    aq__fbv v;
    int r = aq__fbt_vector(t, slot, 1, &v);
    if (r != AQ__FB_OK) {
        return r;
    }
    *str = (const char *)v.buf + v.data;
    *len = v.count;
    return AQ__FB_OK;
}

int aq__fbv_table(const aq__fbv *v, size_t i, aq__fbt *out)
{
    size_t target;
    if (i >= v->count || fb_follow(v->buf, v->size, v->data + 4 * i, &target) != AQ__FB_OK) {
        return AQ__FB_BAD;
    }
    return fb_table_at(v->buf, v->size, target, out);
}

int aq__fbv_string(const aq__fbv *v, size_t i, const char **str, size_t *len)
{
    size_t target;
    aq__fbv s;
    if (i >= v->count || fb_follow(v->buf, v->size, v->data + 4 * i, &target) != AQ__FB_OK ||
        fb_vector_at(v->buf, v->size, target, 1, &s) != AQ__FB_OK) {
        return AQ__FB_BAD;
    }
    *str = (const char *)s.buf + s.data;
    *len = s.count;
    return AQ__FB_OK;
}

int64_t aq__fbv_i64(const aq__fbv *v, size_t i, size_t elem_size, size_t at)
{
    return (int64_t)fb_get_u64(v->buf + v->data + i * elem_size + at);
}

int32_t aq__fbv_i32(const aq__fbv *v, size_t i, size_t elem_size, size_t at)
{
    return (int32_t)fb_get_u32(v->buf + v->data + i * elem_size + at);
}

/* ---- writer ---- */

void aq__fbb_init(aq__fbb *b)
{
    memset(b, 0, sizeof *b);
}

void aq__fbb_reset(aq__fbb *b)
{
    free(b->buf);
    memset(b, 0, sizeof *b);
}

/* Appends n bytes (zeros when data is NULL); returns their position. */
static size_t fbb_put(aq__fbb *b, const void *data, size_t n)
{
    size_t pos = b->len;
    if (b->oom) {
        return pos;
    }
    if (n > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 256;
        while (n > cap - b->len) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return pos;
            }
            cap *= 2;
        }
        uint8_t *nb = realloc(b->buf, cap);
        if (nb == NULL) {
            b->oom = true;
            return pos;
        }
        b->buf = nb;
        b->cap = cap;
    }
    if (data != NULL) {
        memcpy(b->buf + b->len, data, n);
    } else {
        memset(b->buf + b->len, 0, n);
    }
    b->len += n;
    return pos;
}

static void fbb_set(aq__fbb *b, size_t pos, uint64_t v, size_t width)
{
    if (b->oom) {
        return;
    }
    for (size_t i = 0; i < width; i++) {
        b->buf[pos + i] = (uint8_t)(v >> (8 * i));
    }
}

void aq__fbb_align(aq__fbb *b, size_t align)
{
    size_t pad = (align - b->len % align) % align;
    fbb_put(b, NULL, pad);
}

size_t aq__fbb_start(aq__fbb *b)
{
    return fbb_put(b, NULL, 4);
}

size_t aq__fbb_table(aq__fbb *b, const aq__fbf *fields, size_t n, size_t *refs)
{
    /* The tables of the Arrow format have at most 7 fields. */
    uint16_t field_off[16] = {0};
    if (n > 16) {
        b->oom = true;
        return b->len;
    }
    unsigned max_slot = 0;
    for (size_t i = 0; i < n; i++) {
        max_slot = fields[i].slot > max_slot ? fields[i].slot : max_slot;
    }
    size_t vt_size = 4 + 2 * ((size_t)max_slot + 1);
    /* Inline layout: the soffset at 0, then fields by decreasing width, each aligned to its
     * width; the table itself starts 8-aligned, so every field is naturally aligned. */
    size_t at = 4;
    for (unsigned w = 8; w >= 1; w /= 2) {
        for (size_t i = 0; i < n; i++) {
            unsigned fw = fields[i].size == 0 ? 4 : fields[i].size;
            if (fw != w) {
                continue;
            }
            at = (at + w - 1) / w * w;
            field_off[i] = (uint16_t)at;
            at += w;
        }
    }
    size_t tbl_size = at;

    aq__fbb_align(b, 2);
    size_t vt = fbb_put(b, NULL, vt_size);
    fbb_set(b, vt, vt_size, 2);
    fbb_set(b, vt + 2, tbl_size, 2);
    for (size_t i = 0; i < n; i++) {
        fbb_set(b, vt + 4 + 2 * (size_t)fields[i].slot, field_off[i], 2);
    }
    aq__fbb_align(b, 8);
    size_t tbl = fbb_put(b, NULL, tbl_size);
    fbb_set(b, tbl, (uint32_t)(tbl - vt), 4);
    size_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if (fields[i].size == 0) {
            refs[r++] = tbl + field_off[i];
        } else {
            fbb_set(b, tbl + field_off[i], fields[i].value, fields[i].size);
        }
    }
    return tbl;
}

void aq__fbb_patch(aq__fbb *b, size_t ref_pos, size_t target)
{
    fbb_set(b, ref_pos, (uint32_t)(target - ref_pos), 4);
}

size_t aq__fbb_string(aq__fbb *b, const char *s, size_t len)
{
    aq__fbb_align(b, 4);
    size_t pos = fbb_put(b, NULL, 4);
    fbb_set(b, pos, len, 4);
    fbb_put(b, s, len);
    fbb_put(b, NULL, 1); /* the NUL terminator FlatBuffers strings carry */
    return pos;
}

size_t aq__fbb_vector(aq__fbb *b, size_t count, size_t elem_size, size_t align, const void *data,
                      size_t *first)
{
    if (align < 4) {
        align = 4;
    }
    /* The length sits just before element 0, which must be aligned. */
    while ((b->len + 4) % align != 0) {
        fbb_put(b, NULL, 1);
    }
    size_t pos = fbb_put(b, NULL, 4);
    fbb_set(b, pos, count, 4);
    size_t at = fbb_put(b, data, count * elem_size);
    if (first != NULL) {
        *first = at;
    }
    return pos;
}
