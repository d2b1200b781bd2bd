/*
 * The reverse path: a result batch (DESIGN.md 2.2) back to layer_name, weights
 * (list<float32>) and shape (list<int64>).
 *
 * A result batch may come from anywhere (a file, another program), so everything is checked
 * before it is trusted: the schema metadata (format version, scheme, group size, packing), the
 * column types, and per row the packed size and group count against the shape. As for
 * quantization, a plan sizes the output, which is then allocated once and filled in place.
 */
#include "arrow_internal.h"
#include "quant_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define DQ_MISSING                                                                              \
    "Missing required column '%s' in a quantized batch. Expected schema: {layer_name: string, " \
    "quantized_data: binary, scales: list<float32>, zero_points: list<float32>, shape: "        \
    "list<int64>, bit_width: uint8}"

/* The batch's scheme and group size, or one per row (arrowquant.row_schemes, indexed by the
 * row's number in the batch or, for a stream, in the whole stream). */
typedef struct dq_meta {
    aq_scheme scheme;
    size_t group_size;
    bool per_row;
    aq__row_scheme *rows;
    size_t n_rows;
} dq_meta;

static void dq_meta_free(dq_meta *meta)
{
    free(meta->rows);
    meta->rows = NULL;
    meta->n_rows = 0;
}

static const char *const dq_columns[6] = {"layer_name",  "quantized_data", "scales",
                                          "zero_points", "shape",          "bit_width"};

/* The value of key into buf; "" when absent and not required. */
static aq_status dq_meta_string(const char *metadata, const char *key, char *buf, size_t size,
                                bool required, aq_error *err)
{
    buf[0] = '\0';
    const char *v;
    size_t n;
    bool found;
    aq_status st = aq__arrow_metadata_get(metadata, key, &v, &n, &found, err);
    if (st != AQ_OK) {
        return st;
    }
    if (!found && !required) {
        return AQ_OK;
    }
    if (!found) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "quantized batch: the schema metadata has no '%s' (is this an "
                             "ArrowQuant result?)",
                             key);
    }
    if (n >= size) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "quantized batch: schema metadata '%s' is too long (%zu bytes)", key,
                             n);
    }
    memcpy(buf, v, n);
    buf[n] = '\0';
    return AQ_OK;
}

static aq_status dq_check_schema(const struct ArrowSchema *schema, dq_meta *meta, aq_error *err)
{
    if (schema == NULL || schema->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "quantized batch: the ArrowSchema is NULL or was already released");
    }
    if (schema->format == NULL || strcmp(schema->format, "+s") != 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "quantized batch must be a struct array (Arrow format '+s'), got "
                             "'%s'",
                             schema->format != NULL ? schema->format : "(null)");
    }
    if (schema->n_children < 0 || (schema->n_children > 0 && schema->children == NULL)) {
        return aq__error_set(err, AQ_INVALID_DATA, "quantized batch: invalid schema children");
    }
    for (int64_t i = 0; i < schema->n_children; i++) {
        if (schema->children[i] == NULL) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "quantized batch: schema child %" PRId64 " is NULL", i);
        }
    }
    for (size_t i = 0; i < 6; i++) {
        if (aq__arrow_find_column(schema, dq_columns[i]) < 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT, DQ_MISSING, dq_columns[i]);
        }
    }
    char buf[64];
    aq_status st;
    if ((st = dq_meta_string(schema->metadata, "arrowquant.format_version", buf, sizeof buf, true,
                             err)) != AQ_OK) {
        return st;
    }
    int version = 0;
    for (const char *p = buf; *p >= '0' && *p <= '9' && version < 1000; p++) {
        version = version * 10 + (*p - '0');
    }
    char canon[16];
    snprintf(canon, sizeof canon, "%d", version);
    if (strcmp(buf, canon) != 0 || version < AQ_FORMAT_VERSION_MIN || version > AQ_FORMAT_VERSION) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "quantized batch: arrowquant.format_version '%s' is not supported "
                             "(this library reads versions %d to %d)",
                             buf, AQ_FORMAT_VERSION_MIN, AQ_FORMAT_VERSION);
    }
    if ((st = dq_meta_string(schema->metadata, "arrowquant.packing", buf, sizeof buf, true, err)) !=
        AQ_OK) {
        return st;
    }
    if (strcmp(buf, "lsb-first") != 0) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "quantized batch: arrowquant.packing '%s' is not supported "
                             "(expected 'lsb-first')",
                             buf);
    }
    /* With per-row schemes, the batch-wide keys are optional (but checked when present). */
    bool found;
    const char *v;
    size_t n;
    if ((st = aq__arrow_metadata_get(schema->metadata, "arrowquant.row_schemes", &v, &n, &found,
                                     err)) != AQ_OK) {
        return st;
    }
    bool required = !found;
    meta->scheme = AQ_SCHEME_AFFINE;
    meta->group_size = AQ_DEFAULT_GROUP_SIZE;
    if ((st = dq_meta_string(schema->metadata, "arrowquant.scheme", buf, sizeof buf, required,
                             err)) != AQ_OK) {
        return st;
    }
    if (buf[0] != '\0' && aq_scheme_from_name(buf, &meta->scheme, NULL) != AQ_OK) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "quantized batch: arrowquant.scheme '%s' is not supported (known: "
                             "affine, affine_search, kquant, kquant_rows)",
                             buf);
    }
    meta->scheme = aq_scheme_for_format_version(meta->scheme, version);
    if ((st = dq_meta_string(schema->metadata, "arrowquant.group_size", buf, sizeof buf, required,
                             err)) != AQ_OK) {
        return st;
    }
    if (buf[0] != '\0') {
        uint64_t g = 0;
        bool digits = true;
        for (const char *p = buf; *p != '\0' && digits; p++) {
            digits = *p >= '0' && *p <= '9' && g <= (UINT64_MAX - 9) / 10;
            g = g * 10 + (uint64_t)(*p - '0');
        }
        if (!digits || g < AQ_MIN_GROUP_SIZE || g > AQ_GROUP_SIZE_ROW) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "quantized batch: arrowquant.group_size '%s' is not a valid "
                                 "group size (%d to %u)",
                                 buf, AQ_MIN_GROUP_SIZE, AQ_GROUP_SIZE_ROW);
        }
        meta->group_size = (size_t)g;
    }
    if (found) {
        meta->per_row = true;
        if ((st = aq__arrow_parse_row_schemes(v, n, &meta->rows, &meta->n_rows, err)) != AQ_OK) {
            return st;
        }
        for (size_t i = 0; i < meta->n_rows; i++) {
            meta->rows[i].scheme = aq_scheme_for_format_version(meta->rows[i].scheme, version);
        }
    }
    return AQ_OK;
}

aq_status aq__arrow_check_result_schema(const struct ArrowSchema *schema, aq_error *err)
{
    dq_meta meta = {AQ_SCHEME_AFFINE, 0, false, NULL, 0};
    aq_status st = dq_check_schema(schema, &meta, err);
    dq_meta_free(&meta);
    return st;
}

/* ---- the columns ---- */

typedef struct dq_input {
    int64_t rows;
    int64_t offset; /* the struct array's own offset: a sliced batch keeps its metadata */
    dq_meta meta;
    arw_var names;
    arw_var packed;
    arw_list scales;
    arw_list zps;
    arw_list shape;
    arw_prim bits;
} dq_input;

static const arw_list_spec dq_float_spec = {"f", "list<float32>", true};
static const arw_list_spec dq_shape_spec = {"li", "list<int64>", true};

static aq_status dq_import(const struct ArrowSchema *s, const struct ArrowArray *a, dq_input *in,
                           aq_error *err)
{
    memset(in, 0, sizeof *in);
    int64_t rows, off;
    aq_status st;
    if ((st = dq_check_schema(s, &in->meta, err)) != AQ_OK ||
        (st = aq__arrow_check_batch(s, a, &rows, &off, err)) != AQ_OK) {
        dq_meta_free(&in->meta);
        return st;
    }
    in->rows = rows;
    in->offset = off;
    int64_t c[6];
    for (int i = 0; i < 6; i++) {
        c[i] = aq__arrow_find_column(s, dq_columns[i]);
    }
    if ((st = aq__arrow_import_var("layer_name", false,
                                   "string (utf8, large_utf8 or "
                                   "string_view)",
                                   s->children[c[0]], a->children[c[0]], off, rows, &in->names,
                                   err)) != AQ_OK ||
        (st = aq__arrow_import_list("scales", &dq_float_spec, s->children[c[2]], a->children[c[2]],
                                    off, rows, &in->scales, err)) != AQ_OK ||
        (st = aq__arrow_import_list("zero_points", &dq_float_spec, s->children[c[3]],
                                    a->children[c[3]], off, rows, &in->zps, err)) != AQ_OK ||
        (st = aq__arrow_import_list("shape", &dq_shape_spec, s->children[c[4]], a->children[c[4]],
                                    off, rows, &in->shape, err)) != AQ_OK ||
        (st = aq__arrow_import_prim("bit_width", 'C', "uint8", s->children[c[5]], a->children[c[5]],
                                    off, rows, &in->bits, err)) != AQ_OK ||
        (st = aq__arrow_import_var("quantized_data", true,
                                   "binary (binary, large_binary or "
                                   "binary_view)",
                                   s->children[c[1]], a->children[c[1]], off, rows, &in->packed,
                                   err)) != AQ_OK) {
        dq_meta_free(&in->meta);
        return st;
    }
    return AQ_OK;
}

/* ---- plan ---- */

typedef struct dq_item {
    const char *name;
    size_t name_len;
    aq_qtensor q;
    size_t elements;
    aq_status status;
    char *message;
} dq_item;

typedef struct dq_plan {
    size_t n;
    dq_item *items;
    char *names;
    int64_t *shapes;
} dq_plan;

static void dq_plan_free(dq_plan *p)
{
    for (size_t i = 0; p->items != NULL && i < p->n; i++) {
        free(p->items[i].message);
    }
    free(p->items);
    free(p->names);
    free(p->shapes);
    memset(p, 0, sizeof *p);
}

static aq_status dq_plan_row(const dq_input *in, int64_t i, size_t grow, dq_plan *p, char **cursor,
                             aq_error *row_err)
{
    dq_item *it = &p->items[i];
    it->name = "";
    if (!arw_var_valid(&in->names, i)) {
        return aq__error_set(row_err, AQ_INVALID_DATA, "Row %zu: layer_name is null", grow);
    }
    it->name = aq__arrow_var_arena_copy(&in->names, i, cursor, &it->name_len);
    const char *name = it->name;
    static const char *const what[4] = {"quantized_data", "scales", "zero_points", "shape"};
    bool valid[4] = {arw_var_valid(&in->packed, i), arw_list_valid(&in->scales, i),
                     arw_list_valid(&in->zps, i), arw_list_valid(&in->shape, i)};
    for (int k = 0; k < 4; k++) {
        if (!valid[k]) {
            return aq__error_set(row_err, AQ_INVALID_DATA, "Layer '%s' (row %zu): %s is null", name,
                                 grow, what[k]);
        }
    }
    if (!arw_prim_valid(&in->bits, i)) {
        return aq__error_set(row_err, AQ_INVALID_DATA, "Layer '%s' (row %zu): bit_width is null",
                             name, grow);
    }
    unsigned bits = in->bits.values[in->bits.offset + i];
    int64_t ss, sn, zs, zn, hs, hn;
    aq__arrow_list_get(&in->scales, i, &ss, &sn);
    aq__arrow_list_get(&in->zps, i, &zs, &zn);
    aq__arrow_list_get(&in->shape, i, &hs, &hn);
    if (sn != zn) {
        return aq__error_set(row_err, AQ_INVALID_DATA,
                             "Layer '%s' (row %zu): %" PRId64 " scales but %" PRId64 " zero points",
                             name, grow, sn, zn);
    }
    if (aq__arrow_list_first_null(&in->scales, ss, sn) >= 0 ||
        aq__arrow_list_first_null(&in->zps, zs, zn) >= 0 ||
        aq__arrow_list_first_null(&in->shape, hs, hn) >= 0) {
        return aq__error_set(row_err, AQ_INVALID_DATA,
                             "Layer '%s' (row %zu): null values inside scales, zero_points or "
                             "shape",
                             name, grow);
    }
    if (hn > AQ_MAX_NDIM) {
        return aq__error_set(row_err, AQ_INVALID_DATA,
                             "Layer '%s' (row %zu): shape has %" PRId64
                             " dimensions, at most %d are supported",
                             name, grow, hn, AQ_MAX_NDIM);
    }
    int64_t *shape = p->shapes + (size_t)i * AQ_MAX_NDIM;
    for (int64_t d = 0; d < hn; d++) {
        shape[d] = in->shape.child_format == 'l'
                       ? ((const int64_t *)(const void *)in->shape.values)[hs + d]
                       : ((const int32_t *)(const void *)in->shape.values)[hs + d];
    }
    aq_scheme scheme = in->meta.scheme;
    size_t group_size = in->meta.group_size;
    const uint8_t *pd;
    size_t pn;
    aq__arrow_var_get(&in->packed, i, &pd, &pn);
    aq_status st;
    if (bits == 16 || bits == 32) {
        /* A tensor kept as is (DESIGN.md 2.3): raw little-endian float16 or float32. */
        size_t count, want;
        if ((st = aq__shape_elements(name, shape, (size_t)hn, &count, row_err)) != AQ_OK) {
            return st;
        }
        if (!aq__mul_size(count, bits / 8, &want) || want != pn) {
            return aq__error_set(row_err, AQ_INVALID_DATA,
                                 "Layer '%s' (row %zu): %zu bytes of raw float%u data, expected "
                                 "%zu for %zu elements",
                                 name, grow, pn, bits, count * (bits / 8), count);
        }
        if (sn != 0) {
            return aq__error_set(row_err, AQ_INVALID_DATA,
                                 "Layer '%s' (row %zu): a raw float%u row (kept as is) must have "
                                 "empty scales and zero_points, got %" PRId64,
                                 name, grow, bits, sn);
        }
        it->elements = count;
    } else {
        if (in->meta.per_row) {
            /* Entries describe the rows as written; a slice starts `offset` rows in. */
            size_t entry = grow + (size_t)in->offset;
            if (entry >= in->meta.n_rows) {
                return aq__error_set(row_err, AQ_INVALID_DATA,
                                     "Layer '%s' (row %zu): arrowquant.row_schemes has only %zu "
                                     "entries",
                                     name, entry, in->meta.n_rows);
            }
            if (in->meta.rows[entry].raw) {
                return aq__error_set(row_err, AQ_INVALID_DATA,
                                     "Layer '%s' (row %zu): arrowquant.row_schemes says \"raw\" "
                                     "(a kept row) but bit_width is %u, not 16 or 32",
                                     name, grow, bits);
            }
            scheme = in->meta.rows[entry].scheme;
            group_size = in->meta.rows[entry].group_size;
        }
        aq_layout l;
        if ((st = aq_layout_compute_scheme(scheme, shape, (size_t)hn, bits, group_size, &l,
                                           row_err)) != AQ_OK) {
            aq__error_prefix(row_err, "Layer '%s' (row %zu)", name, grow);
            return st;
        }
        if (pn != l.packed_bytes || (size_t)sn != l.groups) {
            return aq__error_set(row_err, AQ_INVALID_DATA,
                                 "Layer '%s' (row %zu): %zu packed bytes and %" PRId64
                                 " groups, expected %zu and %zu for shape with %zu elements at "
                                 "%u bits, group size %zu",
                                 name, grow, pn, sn, l.packed_bytes, l.groups, l.elements, bits,
                                 group_size);
        }
        it->elements = l.elements;
    }
    it->q.name = name;
    it->q.scheme = scheme;
    it->q.bit_width = bits;
    it->q.group_size = group_size;
    it->q.shape = shape;
    it->q.ndim = (size_t)hn;
    it->q.packed = pd;
    it->q.packed_size = pn;
    it->q.scales = (const float *)(const void *)(in->scales.values + (size_t)ss * 4);
    it->q.zero_points = (const float *)(const void *)(in->zps.values + (size_t)zs * 4);
    it->q.groups = (size_t)sn;
    return AQ_OK;
}

static aq_status dq_plan_batch(const dq_input *in, const aq_batch_options *opts, const arw_run *run,
                               dq_plan *p, aq_error *err)
{
    memset(p, 0, sizeof *p);
    size_t n = (size_t)in->rows, name_bytes, shape_count;
    aq_status st = aq__arrow_var_arena_size(&in->names, in->rows, &name_bytes, err);
    if (st != AQ_OK) {
        return st;
    }
    if (!aq__mul_size(n, AQ_MAX_NDIM, &shape_count)) {
        return aq__error_set(err, AQ_OVERFLOW, "batch has too many rows");
    }
    p->n = n;
    p->items = calloc(n > 0 ? n : 1, sizeof *p->items);
    p->names = malloc(name_bytes > 0 ? name_bytes : 1);
    p->shapes = malloc((shape_count > 0 ? shape_count : 1) * sizeof *p->shapes);
    if (p->items == NULL || p->names == NULL || p->shapes == NULL) {
        dq_plan_free(p);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", n);
    }
    char *cursor = p->names;
    for (int64_t i = 0; i < in->rows; i++) {
        aq_error row_err;
        aq_error_clear(&row_err);
        if (dq_plan_row(in, i, run->rows_done + (size_t)i, p, &cursor, &row_err) != AQ_OK) {
            st =
                aq__arrow_row_error(opts, &p->items[i].message, &p->items[i].status, &row_err, err);
            if (st != AQ_OK) {
                dq_plan_free(p);
                return st;
            }
        }
    }
    return AQ_OK;
}

/* ---- output ---- */

aq_status aq__arrow_restored_schema(struct ArrowSchema *out, aq_error *err)
{
    struct ArrowSchema s;
    aq_status st = aq__schema_alloc(&s, "+s", "", 0, 3, err);
    if (st == AQ_OK) {
        st = aq__schema_alloc(s.children[0], "u", "layer_name", ARROW_FLAG_NULLABLE, 0, err);
    }
    if (st == AQ_OK) {
        st = aq__schema_alloc(s.children[1], "+l", "weights", ARROW_FLAG_NULLABLE, 1, err);
    }
    if (st == AQ_OK) {
        st = aq__schema_alloc(s.children[1]->children[0], "f", "item", ARROW_FLAG_NULLABLE, 0, err);
    }
    if (st == AQ_OK) {
        st = aq__schema_alloc(s.children[2], "+l", "shape", ARROW_FLAG_NULLABLE, 1, err);
    }
    if (st == AQ_OK) {
        st = aq__schema_alloc(s.children[2]->children[0], "l", "item", ARROW_FLAG_NULLABLE, 0, err);
    }
    if (st != AQ_OK) {
        aq__schema_release_if(&s);
        return st;
    }
    aq__schema_move(&s, out);
    return AQ_OK;
}

static aq_status dq_restore_row(aq_ctx *ctx, const dq_item *it, float *out, aq_error *err)
{
    if (it->q.bit_width == 32) {
        memcpy(out, it->q.packed, it->elements * sizeof(float));
        for (size_t k = 0; k < it->elements; k++) {
            if (!isfinite(out[k])) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "Layer '%s': raw float32 data has NaN or Inf at index %zu",
                                     it->name, k);
            }
        }
        return AQ_OK;
    }
    if (it->q.bit_width == 16) {
        for (size_t k = 0; k < it->elements; k++) {
            uint16_t h;
            memcpy(&h, it->q.packed + 2 * k, 2);
            if ((h & 0x7c00u) == 0x7c00u) {
                return aq__error_set(err, AQ_INVALID_DATA,
                                     "Layer '%s': raw float16 data has NaN or Inf at index %zu",
                                     it->name, k);
            }
            out[k] = aq__f16_to_f32(h);
        }
        return AQ_OK;
    }
    return aq_dequantize(ctx, &it->q, AQ_DTYPE_F32, out, it->elements, err);
}

static aq_status dq_execute(aq_ctx *ctx, dq_plan *p, const aq_batch_options *opts, arw_run *run,
                            struct ArrowArray *out_array, aq_error *err)
{
    size_t rows = 0, name_bytes = 0, elements = 0, dims = 0;
    for (size_t i = 0; i < p->n; i++) {
        const dq_item *it = &p->items[i];
        if (it->status != AQ_OK) {
            continue;
        }
        rows++;
        if (!aq__add_size(name_bytes, it->name_len, &name_bytes) ||
            !aq__add_size(elements, it->elements, &elements) ||
            !aq__add_size(dims, it->q.ndim, &dims)) {
            return aq__error_set(err, AQ_OVERFLOW, "result sizes overflow");
        }
    }
    if (name_bytes > INT32_MAX || elements > INT32_MAX || dims > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW,
                             "dequantized batch too large for list<float32> (%zu weights): "
                             "dequantize smaller batches",
                             elements);
    }
    struct ArrowArray a;
    aq_status st = aq__array_alloc(&a, (int64_t)rows, 1, 3, err);
    if (st != AQ_OK) {
        return st;
    }
    int32_t *name_off = NULL, *w_off = NULL, *s_off = NULL;
    char *name_data = NULL;
    float *w = NULL;
    int64_t *d = NULL;
    if ((st = aq__array_alloc(a.children[0], (int64_t)rows, 3, 0, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[1], (int64_t)rows, 2, 1, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[1]->children[0], (int64_t)elements, 2, 0, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[2], (int64_t)rows, 2, 1, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[2]->children[0], (int64_t)dims, 2, 0, err)) != AQ_OK) {
        goto done;
    }
    name_off = aq__array_buffer_alloc(a.children[0], 1, (rows + 1) * sizeof(int32_t));
    name_data = aq__array_buffer_alloc(a.children[0], 2, name_bytes);
    w_off = aq__array_buffer_alloc(a.children[1], 1, (rows + 1) * sizeof(int32_t));
    w = aq__array_buffer_alloc(a.children[1]->children[0], 1, elements * sizeof(float));
    s_off = aq__array_buffer_alloc(a.children[2], 1, (rows + 1) * sizeof(int32_t));
    d = aq__array_buffer_alloc(a.children[2]->children[0], 1, dims * sizeof(int64_t));
    if (name_off == NULL || name_data == NULL || w_off == NULL || w == NULL || s_off == NULL ||
        d == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory allocating %zu restored weights",
                           elements);
        goto done;
    }
    name_off[0] = w_off[0] = s_off[0] = 0;
    size_t r = 0, at_name = 0, at_w = 0, at_d = 0;
    for (size_t i = 0; i < p->n; i++) {
        const dq_item *it = &p->items[i];
        size_t row = run->rows_done;
        if (it->status != AQ_OK) {
            if ((st = aq__arrow_row_skip(opts, row, it->name, it->status, it->message, err)) !=
                AQ_OK) {
                goto done;
            }
            if ((st = aq__arrow_progress(opts, run, it->elements, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        aq_error row_err;
        aq_error_clear(&row_err);
        if (dq_restore_row(ctx, it, w + at_w, &row_err) != AQ_OK) {
            if ((st = aq__arrow_row_skip(opts, row, it->name, row_err.code, row_err.message,
                                         err)) != AQ_OK) {
                goto done;
            }
            if ((st = aq__arrow_progress(opts, run, it->elements, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        memcpy(name_data + at_name, it->name, it->name_len);
        memcpy(d + at_d, it->q.shape, it->q.ndim * sizeof(int64_t));
        at_name += it->name_len;
        at_w += it->elements;
        at_d += it->q.ndim;
        r++;
        name_off[r] = (int32_t)at_name;
        w_off[r] = (int32_t)at_w;
        s_off[r] = (int32_t)at_d;
        if ((st = aq__arrow_progress(opts, run, it->elements, err)) != AQ_OK) {
            goto done;
        }
    }
    a.length = (int64_t)r;
    for (int c = 0; c < 3; c++) {
        a.children[c]->length = (int64_t)r;
    }
    a.children[1]->children[0]->length = (int64_t)at_w;
    a.children[2]->children[0]->length = (int64_t)at_d;
    aq__array_move(&a, out_array);
done:
    if (st != AQ_OK) {
        aq__array_release_if(&a);
    }
    return st;
}

aq_status aq__arrow_dequantize_batch(aq_ctx *ctx, const struct ArrowSchema *schema,
                                     const struct ArrowArray *array, const aq_batch_options *opts,
                                     arw_run *run, struct ArrowArray *out_array, aq_error *err)
{
    dq_input in;
    dq_plan plan;
    aq_status st = dq_import(schema, array, &in, err);
    if (st != AQ_OK) {
        return st;
    }
    if ((st = dq_plan_batch(&in, opts, run, &plan, err)) == AQ_OK) {
        st = dq_execute(ctx, &plan, opts, run, out_array, err);
        dq_plan_free(&plan);
    }
    dq_meta_free(&in.meta);
    return st;
}

aq_status aq_batch_dequantize(aq_ctx *ctx, const struct ArrowSchema *schema,
                              const struct ArrowArray *array, const aq_batch_options *opts,
                              struct ArrowSchema *out_schema, struct ArrowArray *out_array,
                              aq_error *err)
{
    if (ctx == NULL || out_schema == NULL || out_array == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_batch_dequantize: NULL argument");
    }
    aq_batch_options own;
    aq_status st = AQ__OPTS_READ(aq_batch_options, calib, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    arw_run run = {0, 0};
    struct ArrowArray a;
    struct ArrowSchema s;
    st = aq__arrow_dequantize_batch(ctx, schema, array, opts != NULL ? &own : NULL, &run, &a, err);
    if (st != AQ_OK) {
        return st;
    }
    if ((st = aq__arrow_restored_schema(&s, err)) != AQ_OK) {
        aq__array_release_if(&a);
        return st;
    }
    aq__array_move(&a, out_array);
    aq__schema_move(&s, out_schema);
    return AQ_OK;
}
