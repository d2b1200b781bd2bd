/*
 * Batch quantization: record batch (or tensor views) in, result struct array out.
 *
 * Three phases, so that output memory is allocated once at its final size: a plan (every
 * row's tensor view and layout, read in place from the producer's buffers), one allocation of
 * each output buffer for the rows the plan kept, then the kernels writing straight into those
 * buffers. A row that fails in the last phase (a NaN found by the kernels) in continue mode
 * simply does not advance the write cursors, so the buffers may end a little larger than the
 * data; nothing is moved.
 */
#include "arrow_internal.h"
#include "pipeline.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#define BQ_EXPECTED_NAME "string (utf8, large_utf8 or string_view)"
#define BQ_EXPECTED_WEIGHTS                                                               \
    "list<float32> (list, large_list or fixed_size_list of float32, float16, float64 or " \
    "arrowquant.bfloat16)"
#define BQ_EXPECTED_SHAPE "list<int64> (list, large_list or fixed_size_list of int64 or int32)"
#define BQ_MISSING                                                                  \
    "Missing required column '%s'. Expected schema: {layer_name: string, weights: " \
    "list<float32>, shape: list<int64>}"

typedef struct bq_item {
    const char *name; /* NUL-terminated; "" when unknown */
    size_t name_len;
    aq_tensor t;
    aq_layout layout;
    size_t elements;  /* weights in the row, 0 when unknown */
    aq_status status; /* AQ_OK, or why the plan skipped the row (continue mode) */
    char *message;    /* with status: the reason, owned */
    /* Quality mode: the row's quantized tensor, entry set_index of set (owned by the plan). */
    const aq_qset *set;
    size_t set_index;
    aq_scheme scheme;
    aq_qset_choice choice;
    /* Layer rules: kept rows are stored raw (layout.bit_width 16 or 32, no groups); fixed rows
     * have bits from a rule other than the profile's and stay outside a budget. */
    bool kept;
    bool fixed;
    aq__plan_role role; /* what the default mode's size does with the row */
} bq_item;

typedef struct bq_plan {
    size_t n;
    bq_item *items;
    char *names;     /* name arena */
    int64_t *shapes; /* n * AQ_MAX_NDIM */
    aq_qset **sets;  /* quality mode: one per row (floor) or one for the batch (budget) */
    size_t n_sets;
    size_t reported; /* rows whose progress was reported */
    /* What rows follow by default (aq__arrow_base_params). */
    aq_scheme base_scheme;
    unsigned base_bits;
    size_t base_group;
} bq_plan;

static void bq_plan_free(bq_plan *p)
{
    for (size_t i = 0; p->items != NULL && i < p->n; i++) {
        free(p->items[i].message);
    }
    for (size_t i = 0; p->sets != NULL && i < p->n_sets; i++) {
        aq_qset_free(p->sets[i]);
    }
    free(p->sets);
    free(p->items);
    free(p->names);
    free(p->shapes);
    memset(p, 0, sizeof *p);
}

static aq_status bq_plan_alloc(bq_plan *p, size_t n, size_t name_bytes, aq_error *err)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    size_t shape_count;
    if (!aq__mul_size(n, AQ_MAX_NDIM, &shape_count)) {
        return aq__error_set(err, AQ_OVERFLOW, "batch has too many rows");
    }
    p->items = calloc(n > 0 ? n : 1, sizeof *p->items);
    p->names = malloc(name_bytes > 0 ? name_bytes : 1);
    p->shapes = malloc((shape_count > 0 ? shape_count : 1) * sizeof *p->shapes);
    if (p->items == NULL || p->names == NULL || p->shapes == NULL) {
        bq_plan_free(p);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", n);
    }
    return AQ_OK;
}

/* ---- planning from a record batch ---- */

typedef struct bq_input {
    int64_t rows;
    arw_var names;
    arw_list weights;
    arw_list shape;
    bool has_shape;
} bq_input;

static const arw_list_spec bq_weights_spec = {"fegS", BQ_EXPECTED_WEIGHTS, true};
static const arw_list_spec bq_shape_spec = {"li", BQ_EXPECTED_SHAPE, true};

aq_status aq__arrow_check_input_schema(const struct ArrowSchema *schema, aq_error *err)
{
    if (schema == NULL || schema->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "input schema is NULL or was already released");
    }
    if (schema->format == NULL || strcmp(schema->format, "+s") != 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "input batch must be a struct array (Arrow format '+s'), got '%s'",
                             schema->format != NULL ? schema->format : "(null)");
    }
    if (schema->n_children < 0 || (schema->n_children > 0 && schema->children == NULL)) {
        return aq__error_set(err, AQ_INVALID_DATA, "input schema: invalid children");
    }
    for (int64_t i = 0; i < schema->n_children; i++) {
        if (schema->children[i] == NULL) {
            return aq__error_set(err, AQ_INVALID_DATA, "input schema: child %" PRId64 " is NULL",
                                 i);
        }
    }
    static const char *const required[] = {"layer_name", "weights"};
    for (size_t i = 0; i < 2; i++) {
        if (aq__arrow_find_column(schema, required[i]) < 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT, BQ_MISSING, required[i]);
        }
    }
    return AQ_OK;
}

static aq_status bq_import(const struct ArrowSchema *s, const struct ArrowArray *a, bq_input *in,
                           aq_error *err)
{
    memset(in, 0, sizeof *in);
    aq_status st;
    int64_t rows, offset;
    if ((st = aq__arrow_check_batch(s, a, &rows, &offset, err)) != AQ_OK ||
        (st = aq__arrow_check_input_schema(s, err)) != AQ_OK) {
        return st;
    }
    int64_t ni = aq__arrow_find_column(s, "layer_name");
    int64_t wi = aq__arrow_find_column(s, "weights");
    int64_t si = aq__arrow_find_column(s, "shape");
    in->rows = rows;
    if ((st = aq__arrow_import_var("layer_name", false, BQ_EXPECTED_NAME, s->children[ni],
                                   a->children[ni], offset, rows, &in->names, err)) != AQ_OK ||
        (st = aq__arrow_import_list("weights", &bq_weights_spec, s->children[wi], a->children[wi],
                                    offset, rows, &in->weights, err)) != AQ_OK) {
        return st;
    }
    if (si >= 0) {
        in->has_shape = true;
        if ((st = aq__arrow_import_list("shape", &bq_shape_spec, s->children[si], a->children[si],
                                        offset, rows, &in->shape, err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

static aq_dtype bq_dtype(char f)
{
    switch (f) {
    case 'e':
        return AQ_DTYPE_F16;
    case 'S':
        return AQ_DTYPE_BF16;
    case 'g':
        return AQ_DTYPE_F64;
    default:
        return AQ_DTYPE_F32;
    }
}

/* Fills item i of the plan from row i of the batch; on a bad row, row_err says why. */
static aq_status bq_plan_row(const aq_ctx *ctx, const bq_input *in, int64_t i, size_t grow,
                             bq_plan *p, char **name_cursor, aq_error *row_err)
{
    bq_item *item = &p->items[i];
    item->name = "";
    int64_t ws, wn;
    if (arw_list_valid(&in->weights, i)) {
        /* Known even when the row turns out bad, for the progress count. */
        aq__arrow_list_get(&in->weights, i, &ws, &wn);
        item->elements = (size_t)wn;
    }
    if (!arw_var_valid(&in->names, i)) {
        return aq__error_set(row_err, AQ_INVALID_ARGUMENT, "Row %zu: layer_name is null", grow);
    }
    item->name = aq__arrow_var_arena_copy(&in->names, i, name_cursor, &item->name_len);
    const char *name = item->name;

    if (!arw_list_valid(&in->weights, i)) {
        return aq__error_set(row_err, AQ_INVALID_ARGUMENT, "Layer '%s' (row %zu): weights is null",
                             name, grow);
    }
    int64_t bad = aq__arrow_list_first_null(&in->weights, ws, wn);
    if (bad >= 0) {
        return aq__error_set(row_err, AQ_INVALID_ARGUMENT,
                             "Layer '%s' (row %zu): weights has a null value at index %" PRId64,
                             name, grow, bad);
    }
    int64_t *shape = p->shapes + (size_t)i * AQ_MAX_NDIM;
    size_t ndim = 1;
    shape[0] = wn;
    if (in->has_shape && arw_list_valid(&in->shape, i)) {
        int64_t ss, sn;
        aq__arrow_list_get(&in->shape, i, &ss, &sn);
        if (sn > AQ_MAX_NDIM) {
            return aq__error_set(row_err, AQ_INVALID_ARGUMENT,
                                 "Layer '%s' (row %zu): shape has %" PRId64
                                 " dimensions, at most %d are supported",
                                 name, grow, sn, AQ_MAX_NDIM);
        }
        if (aq__arrow_list_first_null(&in->shape, ss, sn) >= 0) {
            return aq__error_set(row_err, AQ_INVALID_ARGUMENT,
                                 "Layer '%s' (row %zu): shape has a null dimension", name, grow);
        }
        ndim = (size_t)sn;
        for (size_t d = 0; d < ndim; d++) {
            if (in->shape.child_format == 'l') {
                shape[d] = ((const int64_t *)(const void *)in->shape.values)[ss + (int64_t)d];
            } else {
                shape[d] = ((const int32_t *)(const void *)in->shape.values)[ss + (int64_t)d];
            }
        }
    }
    size_t count;
    aq_status st = aq__shape_elements(name, shape, ndim, &count, row_err);
    if (st != AQ_OK) {
        return st;
    }
    if (count != (size_t)wn) {
        char buf[256];
        aq__arrow_format_shape(shape, ndim, buf, sizeof buf);
        return aq__error_set(row_err, AQ_SHAPE_MISMATCH,
                             "Layer '%s' (row %zu): shape %s has %zu elements but weights has "
                             "%" PRId64 " values",
                             name, grow, buf, count, wn);
    }
    item->t.name = name;
    item->t.dtype = bq_dtype(in->weights.child_format);
    item->t.data = in->weights.values + (size_t)ws * in->weights.elem_size;
    item->t.shape = shape;
    item->t.ndim = ndim;
    return aq_quantize_bound(ctx, &item->t, &item->layout, row_err);
}

/* With layer rules, the row's decision replaces the context's layout: kept (raw), or the
 * decided bits and scheme (the group size stays the context's, as in the model pipeline;
 * kquant's is always 512). The plan row must be valid (shape checked). */
static aq_status bq_decide(const aq_ctx *ctx, const aq_batch_options *opts, bq_item *it,
                           aq_error *row_err)
{
    if (opts == NULL || opts->rules == NULL) {
        return AQ_OK;
    }
    aq_rule_decision d;
    aq_status st =
        aq_rules_decide(opts->rules, it->name, it->t.shape, it->t.ndim, it->t.dtype, &d, row_err);
    if (st != AQ_OK) {
        return st;
    }
    it->role = it->layout.elements > 0 ? aq__plan_role_of(&d, it->t.ndim) : AQ__PLAN_OUTSIDE;
    if (d.keep) {
        size_t n = it->layout.elements;
        unsigned bits;
        if ((st = aq__arrow_keep_bits(&it->t, n, d.bit_width, &bits, row_err)) != AQ_OK) {
            return st;
        }
        aq_layout l = it->layout;
        l.bit_width = bits;
        l.group_size = 0;
        l.groups_per_row = 0;
        l.groups = 0;
        if (!aq__mul_size(n, bits / 8, &l.packed_bytes)) {
            return aq__error_set(row_err, AQ_OVERFLOW, "Layer '%s': size overflows", it->name);
        }
        it->layout = l;
        it->kept = true;
        return AQ_OK;
    }
    aq_layout l;
    if ((st = aq_layout_compute_scheme(d.scheme, it->t.shape, it->t.ndim, d.bit_width,
                                       ctx->group_size, &l, row_err)) != AQ_OK) {
        aq__error_prefix(row_err, "Layer '%s'", it->name);
        return st;
    }
    it->layout = l;
    it->scheme = d.scheme;
    it->fixed = d.rule != AQ_RULE_PROFILE;
    return AQ_OK;
}

static aq_status bq_plan_batch(const aq_ctx *ctx, const bq_input *in, const aq_batch_options *opts,
                               const arw_run *run, bq_plan *p, aq_error *err)
{
    size_t n = (size_t)in->rows;
    size_t name_bytes;
    aq_status st = aq__arrow_var_arena_size(&in->names, in->rows, &name_bytes, err);
    if (st != AQ_OK || (st = bq_plan_alloc(p, n, name_bytes, err)) != AQ_OK) {
        return st;
    }
    char *cursor = p->names;
    for (int64_t i = 0; i < in->rows; i++) {
        aq_error row_err;
        aq_error_clear(&row_err);
        p->items[i].scheme = ctx->scheme;
        if (bq_plan_row(ctx, in, i, run->rows_done + (size_t)i, p, &cursor, &row_err) != AQ_OK ||
            bq_decide(ctx, opts, &p->items[i], &row_err) != AQ_OK) {
            if ((st = aq__arrow_row_error(opts, &p->items[i].message, &p->items[i].status, &row_err,
                                          err)) != AQ_OK) {
                bq_plan_free(p);
                return st;
            }
        }
    }
    return AQ_OK;
}

/* ---- planning from tensor views ---- */

static aq_status bq_plan_tensors(const aq_ctx *ctx, const aq_tensor *tensors, size_t n,
                                 const aq_batch_options *opts, bq_plan *p, aq_error *err)
{
    aq_status st = bq_plan_alloc(p, n, 1, err);
    if (st != AQ_OK) {
        return st;
    }
    for (size_t i = 0; i < n; i++) {
        bq_item *item = &p->items[i];
        const aq_tensor *t = &tensors[i];
        item->name = t->name != NULL ? t->name : "";
        item->name_len = strlen(item->name);
        item->t = *t;
        item->scheme = ctx->scheme;
        aq_error row_err;
        aq_error_clear(&row_err);
        st = aq_quantize_bound(ctx, t, &item->layout, &row_err);
        if (st == AQ_OK) {
            item->elements = item->layout.elements;
            if ((unsigned)t->dtype >= AQ_DTYPE_COUNT || t->data == NULL) {
                st = aq__error_set(&row_err, AQ_INVALID_ARGUMENT,
                                   "Layer '%s': invalid dtype or NULL data",
                                   aq__name_or_unnamed(t->name));
            }
        }
        if (st == AQ_OK) {
            st = bq_decide(ctx, opts, item, &row_err);
        }
        if (st != AQ_OK && (st = aq__arrow_row_error(opts, &item->message, &item->status, &row_err,
                                                     err)) != AQ_OK) {
            bq_plan_free(p);
            return st;
        }
    }
    return AQ_OK;
}

/* ---- the result ---- */

aq_status aq__arrow_result_schema(const aq_ctx *ctx, const aq_batch_options *opts, bool large,
                                  struct ArrowSchema *out, aq_error *err)
{
    aq_scheme scheme;
    unsigned bits;
    size_t group;
    aq__arrow_base_params(ctx, opts, &scheme, &bits, &group);
    return aq__arrow_result_schema_rows(scheme, group, large, NULL, out, err);
}

aq_status aq__arrow_result_schema_rows(aq_scheme scheme, size_t group_size, bool large,
                                       const char *row_schemes, struct ArrowSchema *out,
                                       aq_error *err)
{
    static const struct {
        const char *format, *name, *child;
    } cols[6] = {{"u", "layer_name", NULL}, {"z", "quantized_data", NULL},
                 {"+l", "scales", "f"},     {"+l", "zero_points", "f"},
                 {"+l", "shape", "l"},      {"C", "bit_width", NULL}};
    struct ArrowSchema s;
    aq_status st = aq__schema_alloc(&s, "+s", "", 0, 6, err);
    for (int i = 0; st == AQ_OK && i < 6; i++) {
        const char *f = (i == 1 && large) ? "Z" : cols[i].format;
        st = aq__schema_alloc(s.children[i], f, cols[i].name, ARROW_FLAG_NULLABLE,
                              cols[i].child != NULL ? 1 : 0, err);
        if (st == AQ_OK && cols[i].child != NULL) {
            st = aq__schema_alloc(s.children[i]->children[0], cols[i].child, "item",
                                  ARROW_FLAG_NULLABLE, 0, err);
        }
    }
    if (st == AQ_OK) {
        char version[16], group[24];
        snprintf(version, sizeof version, "%d", AQ_FORMAT_VERSION);
        snprintf(group, sizeof group, "%zu", group_size);
        const char *keys[] = {"arrowquant.format_version", "arrowquant.scheme",
                              "arrowquant.group_size", "arrowquant.packing",
                              "arrowquant.row_schemes"};
        const char *values[] = {version, aq_scheme_name(scheme), group, "lsb-first", row_schemes};
        st = aq__schema_set_metadata(&s, keys, values, row_schemes != NULL ? 5 : 4, err);
    }
    if (st != AQ_OK) {
        aq__schema_release_if(&s);
        return st;
    }
    aq__schema_move(&s, out);
    return AQ_OK;
}

/* Pointers into the result's buffers while it is filled. */
typedef struct bq_out {
    int32_t *name_off;
    char *name_data;
    int32_t *packed_off32;
    int64_t *packed_off64;
    uint8_t *packed;
    int32_t *scale_off;
    float *scales;
    int32_t *zp_off;
    float *zps;
    int32_t *shape_off;
    int64_t *dims;
    uint8_t *bits;
} bq_out;

static aq_status bq_list_alloc(struct ArrowArray *col, size_t rows, size_t values, size_t elem_size,
                               int32_t **off, void **data, aq_error *err)
{
    aq_status st = aq__array_alloc(col, (int64_t)rows, 2, 1, err);
    if (st != AQ_OK) {
        return st;
    }
    if ((st = aq__array_alloc(col->children[0], (int64_t)values, 2, 0, err)) != AQ_OK) {
        return st;
    }
    *off = aq__array_buffer_alloc(col, 1, (rows + 1) * sizeof(int32_t));
    *data = aq__array_buffer_alloc(col->children[0], 1, values * elem_size);
    if (*off == NULL || *data == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory allocating the result");
    }
    (*off)[0] = 0;
    return AQ_OK;
}

static aq_status bq_result_alloc(size_t rows, size_t name_bytes, size_t packed_bytes, size_t groups,
                                 size_t dims, bool large, struct ArrowArray *out, bq_out *o,
                                 aq_error *err)
{
    memset(o, 0, sizeof *o);
    struct ArrowArray a;
    aq_status st = aq__array_alloc(&a, (int64_t)rows, 1, 6, err);
    if (st != AQ_OK) {
        return st;
    }
    void *scales, *zps, *dim_data;
    if ((st = aq__array_alloc(a.children[0], (int64_t)rows, 3, 0, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[1], (int64_t)rows, 3, 0, err)) != AQ_OK ||
        (st = bq_list_alloc(a.children[2], rows, groups, sizeof(float), &o->scale_off, &scales,
                            err)) != AQ_OK ||
        (st = bq_list_alloc(a.children[3], rows, groups, sizeof(float), &o->zp_off, &zps, err)) !=
            AQ_OK ||
        (st = bq_list_alloc(a.children[4], rows, dims, sizeof(int64_t), &o->shape_off, &dim_data,
                            err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[5], (int64_t)rows, 2, 0, err)) != AQ_OK) {
        goto done;
    }
    o->scales = scales;
    o->zps = zps;
    o->dims = dim_data;
    o->name_off = aq__array_buffer_alloc(a.children[0], 1, (rows + 1) * sizeof(int32_t));
    o->name_data = aq__array_buffer_alloc(a.children[0], 2, name_bytes);
    if (large) {
        o->packed_off64 = aq__array_buffer_alloc(a.children[1], 1, (rows + 1) * sizeof(int64_t));
    } else {
        o->packed_off32 = aq__array_buffer_alloc(a.children[1], 1, (rows + 1) * sizeof(int32_t));
    }
    o->packed = aq__array_buffer_alloc(a.children[1], 2, packed_bytes);
    o->bits = aq__array_buffer_alloc(a.children[5], 1, rows);
    if (o->name_off == NULL || o->name_data == NULL ||
        (o->packed_off32 == NULL && o->packed_off64 == NULL) || o->packed == NULL ||
        o->bits == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY,
                           "out of memory allocating the result (%zu bytes "
                           "of packed data)",
                           packed_bytes);
        goto done;
    }
    o->name_off[0] = 0;
    if (large) {
        o->packed_off64[0] = 0;
    } else {
        o->packed_off32[0] = 0;
    }
    aq__array_move(&a, out);
done:
    if (st != AQ_OK) {
        aq__array_release_if(&a);
    }
    return st;
}

/* ---- progress, quality ---- */

/* Reports progress for the rows [p->reported, upto] not yet reported, each once, in order. */
static aq_status bq_progress_to(bq_plan *p, const aq_batch_options *opts, arw_run *run, size_t upto,
                                aq_error *err)
{
    while (p->reported <= upto && p->reported < p->n) {
        aq_status st = aq__arrow_progress(opts, run, p->items[p->reported].elements, err);
        p->reported++;
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

static bool bq_quality_on(const aq_batch_options *opts)
{
    return opts != NULL && (opts->min_cosine != 0.0 || opts->target_bpw != 0.0);
}

/* The row's quantized tensor, chosen by the quality driver, becomes the row's layout. */
static aq_status bq_take_choice(bq_item *it, const aq_qset *set, size_t k, aq_error *err)
{
    aq_qtensor q;
    aq_status st = aq_qset_get(set, k, &it->choice, &q, err);
    if (st != AQ_OK) {
        return st;
    }
    it->set = set;
    it->set_index = k;
    it->scheme = q.scheme;
    it->layout.bit_width = q.bit_width;
    it->layout.group_size = q.group_size;
    it->layout.groups = q.groups;
    it->layout.packed_bytes = q.packed_size;
    return AQ_OK;
}

typedef struct bq_shim {
    bq_plan *p;
    const aq_batch_options *opts;
    arw_run *run;
    const size_t *rows; /* tensor k of the set is plan row rows[k] */
    aq_error err;       /* why the batch stopped, when it did */
} bq_shim;

static int bq_shim_progress(void *user, size_t done, size_t elements)
{
    bq_shim *sh = user;
    (void)elements;
    return bq_progress_to(sh->p, sh->opts, sh->run, sh->rows[done - 1], &sh->err) != AQ_OK;
}

static bool bq_uses_importance(aq_scheme scheme)
{
    const aq__scheme_traits *t = aq__scheme_traits_of(scheme);
    return t != NULL && t->importance;
}

/* Rows one by one through the driver (floor only, or the rows a budget does not cover), so a
 * row that fails is skipped in continue mode; with all_rows, progress (and cancellation) comes
 * between rows as without a floor. */
typedef enum bq_rows { BQ_ALL_ROWS, BQ_FIXED_ROWS, BQ_OVERRIDE_ROWS } bq_rows;

static aq_status bq_quality_each(aq_ctx *ctx, bq_plan *p, const aq_batch_options *opts,
                                 arw_run *run, bq_rows which, aq_error *err)
{
    const bool all_rows = which == BQ_ALL_ROWS;
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = opts->min_cosine;
    for (size_t i = 0; i < p->n; i++) {
        bq_item *it = &p->items[i];
        aq_status st;
        const bool picked = all_rows || (which == BQ_FIXED_ROWS && it->fixed) ||
                            (which == BQ_OVERRIDE_ROWS && it->role == AQ__PLAN_FIXED);
        if (it->status == AQ_OK && !it->kept && picked) {
            aq_error row_err;
            aq_error_clear(&row_err);
            aq_qset *set = NULL;
            aq_ctx rc = aq__ctx_with(ctx, it->scheme, it->layout.bit_width, it->layout.group_size);
            float *imp = NULL;
            st = bq_uses_importance(it->scheme)
                     ? aq__arrow_importance(opts, &it->t, it->layout.elements, &imp, &row_err)
                     : AQ_OK;
            if (st == AQ_OK) {
                const float *const imps[1] = {imp};
                qo.importance = imp != NULL ? imps : NULL;
                st = aq_qset_quantize(&rc, &it->t, 1, &qo, &set, &row_err);
                qo.importance = NULL;
            }
            free(imp);
            if (st == AQ_OK) {
                p->sets[p->n_sets++] = set;
                if ((st = bq_take_choice(it, set, 0, err)) != AQ_OK) {
                    return st;
                }
            } else if (st == AQ_NO_MEMORY || st == AQ_INVALID_PARAMETER) {
                if (err != NULL) {
                    *err = row_err;
                }
                return st;
            } else if ((st = aq__arrow_row_error(opts, &it->message, &it->status, &row_err, err)) !=
                       AQ_OK) {
                return st;
            }
        }
        if (all_rows && (st = bq_progress_to(p, opts, run, i, err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

/* AQ_TARGET_BPW_PROFILE: the budget is what the rows would take without one, each at the
 * base scheme and bits (the rules' profile's, or the context's), raised by min_cosine as the
 * floor alone would (2 -> 4 -> 8). In *out, bits per weight with half a bit of the whole batch
 * added, so that the budget in bytes is that size exactly, whatever the rounding of
 * target * elements / 8 (sizes are whole bytes). */
static aq_status bq_profile_target(aq_ctx *bc, const aq_batch_options *opts,
                                   const aq_tensor *tensors, float *const *imps, size_t k,
                                   double *out, aq_error *err)
{
    size_t bytes = 0, elements = 0;
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = opts->min_cosine;
    for (size_t j = 0; j < k; j++) {
        const aq_tensor *t = &tensors[j];
        aq_layout l;
        aq_status st = aq_layout_compute_scheme(bc->scheme, t->shape, t->ndim, bc->bit_width,
                                                bc->group_size, &l, err);
        if (st != AQ_OK) {
            return st;
        }
        size_t b = l.packed_bytes + 8 * l.groups;
        if (opts->min_cosine > 0.0) {
            const float *const imp[1] = {imps[j]};
            qo.importance = imps[j] != NULL ? imp : NULL;
            aq_qset *set = NULL;
            aq_qset_choice c;
            if ((st = aq_qset_quantize(bc, t, 1, &qo, &set, err)) != AQ_OK ||
                (st = aq_qset_get(set, 0, &c, NULL, err)) != AQ_OK) {
                aq_qset_free(set);
                return st;
            }
            aq_qset_free(set);
            b = c.bytes;
        }
        bytes += b;
        elements += l.elements;
    }
    *out = elements > 0 ? ((double)bytes * 8.0 + 0.5) / (double)elements : 0.0;
    return AQ_OK;
}

/* Budget: every row of the batch in one call of the driver, which needs them all to share
 * the budget. Non-finite rows are found first so that continue mode can skip them. */
static aq_status bq_quality_budget(aq_ctx *ctx, bq_plan *p, const aq_batch_options *opts,
                                   arw_run *run, aq_error *err)
{
    aq_status st = AQ_OK;
    size_t k = 0;
    aq_tensor *tensors = malloc((p->n > 0 ? p->n : 1) * sizeof *tensors);
    size_t *rows = malloc((p->n > 0 ? p->n : 1) * sizeof *rows);
    float **imps = calloc(p->n > 0 ? p->n : 1, sizeof *imps);
    if (tensors == NULL || rows == NULL || imps == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", p->n);
        goto done;
    }
    bool any_importance = false;
    for (size_t i = 0; i < p->n; i++) {
        bq_item *it = &p->items[i];
        if (it->status != AQ_OK || it->kept || it->fixed) {
            continue;
        }
        aq_error row_err;
        aq_error_clear(&row_err);
        if (aq_tensor_check_finite(&it->t, NULL, &row_err) != AQ_OK ||
            aq__arrow_importance(opts, &it->t, it->layout.elements, &imps[k], &row_err) != AQ_OK) {
            if ((st = aq__arrow_row_error(opts, &it->message, &it->status, &row_err, err)) !=
                AQ_OK) {
                goto done;
            }
            continue;
        }
        any_importance = any_importance || imps[k] != NULL;
        tensors[k] = it->t;
        rows[k++] = i;
    }
    bq_shim sh = {p, opts, run, rows, {AQ_OK, ""}};
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    qo.min_cosine = opts->min_cosine;
    qo.target_bpw = opts->target_bpw;
    qo.schemes = opts->budget_schemes;
    qo.n_schemes = opts->n_budget_schemes;
    qo.importance = any_importance ? (const float *const *)imps : NULL;
    qo.progress = bq_shim_progress;
    qo.progress_user = &sh;
    aq_qset *set = NULL;
    /* The budget's rows start from the rules' profile's scheme and bits, or the context's;
     * the group size of the non-kquant schemes is the context's either way. */
    aq_ctx bc = aq__ctx_with(ctx, p->base_scheme, p->base_bits, ctx->group_size);
    if (opts->target_bpw == AQ_TARGET_BPW_PROFILE) {
        if ((st = bq_profile_target(&bc, opts, tensors, imps, k, &qo.target_bpw, err)) != AQ_OK) {
            goto done;
        }
        if (k == 0) {
            qo.target_bpw = 0.0; /* nothing to choose for; the driver then has no budget */
        }
    }
    st = aq_qset_quantize(&bc, tensors, k, &qo, &set, err);
    if (st == AQ_CANCELLED && sh.err.code == AQ_CANCELLED) {
        if (err != NULL) {
            *err = sh.err; /* the batch's own message, counting its rows */
        }
    }
    if (st != AQ_OK) {
        goto done;
    }
    p->sets[p->n_sets++] = set;
    for (size_t j = 0; j < k; j++) {
        if ((st = bq_take_choice(&p->items[rows[j]], set, j, err)) != AQ_OK) {
            goto done;
        }
    }
done:
    for (size_t j = 0; imps != NULL && j < k; j++) {
        free(imps[j]);
    }
    free(imps);
    free(tensors);
    free(rows);
    return st;
}

/* ---- the default mode's model-wide size (the pipeline's plan) ---- */

/* Row it measured into the plan (the row's own errors in row_err): its options and the
 * rules' preference. */
static aq_status bq_plan_row_options(aq_ctx *ctx, const aq_batch_options *opts, bq_item *it,
                                     size_t i, aq__plan *p, aq_error *row_err)
{
    float *imp = NULL;
    aq_status st = aq_tensor_check_finite(&it->t, NULL, row_err);
    if (st != AQ_OK ||
        (st = aq__arrow_importance(opts, &it->t, it->layout.elements, &imp, row_err)) != AQ_OK) {
        return st;
    }
    aq__plan_pref pref;
    memset(&pref, 0, sizeof pref);
    if (it->kept) {
        pref.keep_bytes = it->layout.packed_bytes;
        pref.keep_bits = it->layout.bit_width;
    } else if (it->fixed) {
        pref.bits = it->layout.bit_width;
        pref.scheme = it->scheme;
        pref.group_size = ctx->group_size;
    }
    return aq__plan_measure(p, ctx, &it->t, imp, true, &pref, opts->min_cosine, NULL, i, row_err);
}

/* The chosen option of row it becomes its treatment: kept, or quantized through the driver. */
static aq_status bq_choice_take(aq_ctx *ctx, bq_plan *p, bq_item *it, const aq__budget_option *x,
                                const float *imp, aq_error *err)
{
    if (x->keep) {
        return AQ_OK;
    }
    aq_qset_options qo = AQ_SIZED_INIT(aq_qset_options);
    const float *const imps[1] = {imp};
    qo.importance = imp != NULL ? imps : NULL;
    aq_ctx rc =
        aq__ctx_with(ctx, x->scheme, x->bits, x->group_size > 0 ? x->group_size : ctx->group_size);
    aq_qset *set = NULL;
    aq_status st = aq_qset_quantize(&rc, &it->t, 1, &qo, &set, err);
    if (st != AQ_OK) {
        return st;
    }
    p->sets[p->n_sets++] = set;
    it->kept = false;
    return bq_take_choice(it, set, 0, err);
}

/* The default budget with layer rules: one size over every counted row of the batch (the
 * rules' profile's target_bpw), the rules' treatments (8 bits, kept in float) as preferences
 * within it. Rows a user override decides are quantized first, as decided, and counted. */
static aq_status bq_quality_rules(aq_ctx *ctx, bq_plan *p, const aq_batch_options *opts,
                                  arw_run *run, aq_error *err)
{
    aq_status st = bq_quality_each(ctx, p, opts, run, BQ_OVERRIDE_ROWS, err);
    if (st != AQ_OK) {
        return st;
    }
    aq__plan pl;
    st =
        aq__plan_init(&pl, p->n, opts->budget_schemes, opts->n_budget_schemes, p->base_scheme, err);
    for (size_t i = 0; i < p->n && st == AQ_OK; i++) {
        bq_item *it = &p->items[i];
        if (it->status != AQ_OK || it->role == AQ__PLAN_OUTSIDE) {
            continue;
        }
        if (it->role == AQ__PLAN_FIXED) {
            pl.counted += it->layout.elements;
            pl.fixed += it->layout.packed_bytes + 2 * it->layout.groups * sizeof(float);
            continue;
        }
        aq_error row_err;
        aq_error_clear(&row_err);
        if (bq_plan_row_options(ctx, opts, it, i, &pl, &row_err) != AQ_OK) {
            st = aq__arrow_row_error(opts, &it->message, &it->status, &row_err, err);
        }
    }
    aq_profile prof;
    aq_rules_profile(opts->rules, &prof);
    if (st == AQ_OK) {
        st = aq__plan_run(&pl, prof.target_bpw, opts->min_cosine > 0.0, err);
    }
    for (size_t j = 0; j < pl.m && st == AQ_OK; j++) {
        st = bq_choice_take(ctx, p, &p->items[pl.index[j]], &pl.opt[j * pl.per + pl.choice[j]],
                            pl.imps[j], err);
    }
    aq__plan_free(&pl);
    return st;
}

static aq_status bq_quality(aq_ctx *ctx, bq_plan *p, const aq_batch_options *opts, arw_run *run,
                            aq_error *err)
{
    /* Checked here too, so that an empty batch refuses bad values as a full one does. */
    if (!(opts->min_cosine >= 0.0 && opts->min_cosine <= 1.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid min_cosine: %g. Must be between 0 (off) and 1",
                             opts->min_cosine);
    }
    const bool budget = opts->target_bpw > 0.0 || opts->target_bpw == AQ_TARGET_BPW_PROFILE;
    if (!(opts->target_bpw >= 0.0 && opts->target_bpw <= 64.0) && !budget) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. Must be between 0 (off) and 64, or "
                             "AQ_TARGET_BPW_PROFILE (-1)",
                             opts->target_bpw);
    }
    p->sets = calloc(p->n + 1, sizeof *p->sets); /* one per row, and a budget's */
    if (p->sets == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning a batch of %zu rows", p->n);
    }
    if (!budget) {
        return bq_quality_each(ctx, p, opts, run, BQ_ALL_ROWS, err);
    }
    if (opts->rules != NULL && opts->target_bpw == AQ_TARGET_BPW_PROFILE) {
        return bq_quality_rules(ctx, p, opts, run, err);
    }
    aq_status st = AQ_OK;
    if (opts->rules != NULL &&
        (st = bq_quality_each(ctx, p, opts, run, BQ_FIXED_ROWS, err)) != AQ_OK) {
        return st;
    }
    return bq_quality_budget(ctx, p, opts, run, err);
}

/* The value of arrowquant.row_schemes for the written rows when their quantized rows do not
 * share the base scheme and group size, else NULL (in *out; free()). Kept rows get the entry
 * {"scheme":"raw","group_size":0}. */
static aq_status bq_row_schemes(const bq_plan *p, char **out, aq_error *err)
{
    *out = NULL;
    bool differ = false;
    size_t rows = 0;
    for (size_t i = 0; i < p->n; i++) {
        const bq_item *it = &p->items[i];
        if (it->status == AQ_OK) {
            rows++;
            differ = differ || (!it->kept && (it->scheme != p->base_scheme ||
                                              it->layout.group_size != p->base_group));
        }
    }
    if (!differ) {
        return AQ_OK;
    }
    /* {"scheme":"affine_search","group_size":4294967295}, is 51 bytes. */
    size_t size = rows * 64 + 3;
    char *json = malloc(size);
    if (json == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory writing arrowquant.row_schemes");
    }
    size_t at = 0;
    json[at++] = '[';
    for (size_t i = 0; i < p->n; i++) {
        const bq_item *it = &p->items[i];
        if (it->status != AQ_OK) {
            continue;
        }
        at += (size_t)snprintf(json + at, size - at, "%s{\"scheme\":\"%s\",\"group_size\":%zu}",
                               at > 1 ? "," : "", it->kept ? "raw" : aq_scheme_name(it->scheme),
                               it->kept ? (size_t)0 : it->layout.group_size);
    }
    json[at++] = ']';
    json[at] = '\0';
    *out = json;
    return AQ_OK;
}

/* Writes row it's packed codes, scales and zero points at the cursors of o: from the quality
 * driver's choice, raw for a kept row, or through the kernels. A row the kernels refuse is
 * left out of the result (and of arrowquant.row_schemes) in continue mode: *skipped. */
static aq_status bq_encode(aq_ctx *ctx, const aq_batch_options *opts, size_t row, bq_item *it,
                           const bq_out *o, size_t at_packed, size_t at_group, bool *skipped,
                           aq_error *err)
{
    const aq_layout *l = &it->layout;
    if (it->set != NULL) {
        aq_qtensor q;
        aq_status st = aq_qset_get(it->set, it->set_index, NULL, &q, err);
        if (st != AQ_OK || (st = aq__arrow_report_choice(opts->report, row, it->name, &it->choice,
                                                         err)) != AQ_OK) {
            return st;
        }
        memcpy(o->packed + at_packed, q.packed, q.packed_size);
        memcpy(o->scales + at_group, q.scales, q.groups * sizeof(float));
        memcpy(o->zps + at_group, q.zero_points, q.groups * sizeof(float));
        return AQ_OK;
    }
    if (it->kept) {
        aq__arrow_keep_encode(&it->t, l->elements, l->bit_width, o->packed + at_packed);
        return AQ_OK;
    }
    aq_qbuffers qb = {o->packed + at_packed, l->packed_bytes, o->scales + at_group,
                      o->zps + at_group, l->groups};
    aq_error row_err;
    aq_error_clear(&row_err);
    aq_ctx rc = aq__ctx_with(ctx, it->scheme, l->bit_width, l->group_size);
    float *imp = NULL;
    aq_status rst = bq_uses_importance(it->scheme)
                        ? aq__arrow_importance(opts, &it->t, l->elements, &imp, &row_err)
                        : AQ_OK;
    if (rst == AQ_OK) {
        aq_quantize_options qo = {.size = sizeof(aq_quantize_options), .importance = imp};
        rst = imp != NULL ? aq_quantize_ex(&rc, &it->t, &qo, &qb, NULL, &row_err)
                          : aq_quantize(&rc, &it->t, &qb, &row_err);
    }
    free(imp);
    if (rst == AQ_OK) {
        return AQ_OK;
    }
    it->status = row_err.code;
    *skipped = true;
    return aq__arrow_row_skip(opts, row, it->name, row_err.code, row_err.message, err);
}

static aq_status bq_execute(aq_ctx *ctx, bq_plan *p, const aq_batch_options *opts, arw_run *run,
                            size_t binary_limit, bool allow_large, struct ArrowArray *out_array,
                            struct ArrowSchema *out_schema, aq_error *err)
{
    const size_t base = run->rows_done;
    const bool quality = bq_quality_on(opts);
    aq_status st;
    aq__arrow_base_params(ctx, opts, &p->base_scheme, &p->base_bits, &p->base_group);
    if (p->n > 0) {
        /* Rows quantize through copies of the context (bq_row_ctx): its pool must exist on
         * the context itself first, or each copy would create (and leak) one. */
        aq__pool *pool;
        if ((st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
            return st;
        }
    }
    if (quality && (st = bq_quality(ctx, p, opts, run, err)) != AQ_OK) {
        return st;
    }
    size_t rows = 0, name_bytes = 0, packed = 0, groups = 0, dims = 0;
    for (size_t i = 0; i < p->n; i++) {
        const bq_item *it = &p->items[i];
        if (it->status != AQ_OK) {
            continue;
        }
        rows++;
        if (!aq__add_size(name_bytes, it->name_len, &name_bytes) ||
            !aq__add_size(packed, it->layout.packed_bytes, &packed) ||
            !aq__add_size(groups, it->layout.groups, &groups) ||
            !aq__add_size(dims, it->t.ndim, &dims)) {
            return aq__error_set(err, AQ_OVERFLOW, "result sizes overflow");
        }
    }
    if (name_bytes > INT32_MAX || groups > INT32_MAX || dims > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW,
                             "batch too large for one result batch (%zu name bytes, %zu groups): "
                             "split it into smaller batches",
                             name_bytes, groups);
    }
    bool large = packed > binary_limit;
    if (large && !allow_large) {
        return aq__error_set(err, AQ_OVERFLOW,
                             "a stream batch would hold %zu bytes of quantized data, more than "
                             "the 2 GiB a binary column can: split the input into smaller "
                             "batches",
                             packed);
    }
    struct ArrowArray result;
    struct ArrowSchema schema;
    schema.release = NULL;
    char *row_schemes = NULL;
    bq_out o;
    st = bq_result_alloc(rows, name_bytes, packed, groups, dims, large, &result, &o, err);
    if (st != AQ_OK) {
        return st;
    }
    size_t r = 0, at_name = 0, at_packed = 0, at_group = 0, at_dim = 0;
    for (size_t i = 0; i < p->n; i++) {
        bq_item *it = &p->items[i];
        size_t row = base + i;
        if (it->status != AQ_OK) {
            if ((st = aq__arrow_row_skip(opts, row, it->name, it->status, it->message, err)) !=
                    AQ_OK ||
                (st = bq_progress_to(p, opts, run, i, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        bool skipped = false;
        if ((st = bq_encode(ctx, opts, row, it, &o, at_packed, at_group, &skipped, err)) != AQ_OK) {
            goto done;
        }
        if (skipped) {
            if ((st = bq_progress_to(p, opts, run, i, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        const aq_layout *l = &it->layout;
        memcpy(o.name_data + at_name, it->name, it->name_len);
        memcpy(o.dims + at_dim, it->t.shape, it->t.ndim * sizeof(int64_t));
        at_name += it->name_len;
        at_packed += l->packed_bytes;
        at_group += l->groups;
        at_dim += it->t.ndim;
        r++;
        o.name_off[r] = (int32_t)at_name;
        if (large) {
            o.packed_off64[r] = (int64_t)at_packed;
        } else {
            o.packed_off32[r] = (int32_t)at_packed;
        }
        o.scale_off[r] = (int32_t)at_group;
        o.zp_off[r] = (int32_t)at_group;
        o.shape_off[r] = (int32_t)at_dim;
        o.bits[r - 1] = (uint8_t)l->bit_width;
        if ((st = bq_progress_to(p, opts, run, i, err)) != AQ_OK) {
            goto done;
        }
    }
    /* Rows that failed in the kernels shrink the result below the planned sizes. */
    result.length = (int64_t)r;
    for (int c = 0; c < 6; c++) {
        result.children[c]->length = (int64_t)r;
    }
    result.children[2]->children[0]->length = (int64_t)at_group;
    result.children[3]->children[0]->length = (int64_t)at_group;
    result.children[4]->children[0]->length = (int64_t)at_dim;
    if (out_schema != NULL &&
        ((st = bq_row_schemes(p, &row_schemes, err)) != AQ_OK ||
         (st = aq__arrow_result_schema_rows(p->base_scheme, p->base_group, large, row_schemes,
                                            &schema, err)) != AQ_OK)) {
        goto done;
    }
    aq__array_move(&result, out_array);
    if (out_schema != NULL) {
        aq__schema_move(&schema, out_schema);
    }
done:
    free(row_schemes);
    if (st != AQ_OK) {
        aq__array_release_if(&result);
        aq__schema_release_if(&schema);
    }
    return st;
}

aq_status aq__arrow_quantize_batch(aq_ctx *ctx, const struct ArrowSchema *schema,
                                   const struct ArrowArray *array, const aq_batch_options *opts,
                                   arw_run *run, size_t binary_limit, bool allow_large,
                                   struct ArrowArray *out_array, struct ArrowSchema *out_schema,
                                   aq_error *err)
{
    bq_input in;
    bq_plan plan;
    aq_status st = bq_import(schema, array, &in, err);
    if (st != AQ_OK || (st = aq__arrow_check_calib(opts, err)) != AQ_OK) {
        return st;
    }
    if ((st = bq_plan_batch(ctx, &in, opts, run, &plan, err)) != AQ_OK) {
        return st;
    }
    st = bq_execute(ctx, &plan, opts, run, binary_limit, allow_large, out_array, out_schema, err);
    bq_plan_free(&plan);
    return st;
}

aq_status aq_batch_quantize(aq_ctx *ctx, const struct ArrowSchema *schema,
                            const struct ArrowArray *array, const aq_batch_options *opts,
                            struct ArrowSchema *out_schema, struct ArrowArray *out_array,
                            aq_error *err)
{
    if (ctx == NULL || out_schema == NULL || out_array == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_batch_quantize: NULL argument");
    }
    aq_batch_options own;
    aq_status st = AQ__OPTS_READ(aq_batch_options, calib, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    arw_run run = {0, 0};
    return aq__arrow_quantize_batch(ctx, schema, array, opts != NULL ? &own : NULL, &run,
                                    AQ__ARROW_BINARY_LIMIT, true, out_array, out_schema, err);
}

aq_status aq_tensors_quantize(aq_ctx *ctx, const aq_tensor *tensors, size_t n,
                              const aq_batch_options *opts, struct ArrowSchema *out_schema,
                              struct ArrowArray *out_array, aq_error *err)
{
    if (ctx == NULL || out_schema == NULL || out_array == NULL || (n > 0 && tensors == NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_tensors_quantize: NULL argument");
    }
    aq_batch_options own;
    aq_status st = AQ__OPTS_READ(aq_batch_options, calib, own, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    opts = opts != NULL ? &own : NULL;
    bq_plan plan;
    st = aq__arrow_check_calib(opts, err);
    if (st != AQ_OK || (st = bq_plan_tensors(ctx, tensors, n, opts, &plan, err)) != AQ_OK) {
        return st;
    }
    arw_run run = {0, 0};
    st = bq_execute(ctx, &plan, opts, &run, AQ__ARROW_BINARY_LIMIT, true, out_array, out_schema,
                    err);
    bq_plan_free(&plan);
    return st;
}
