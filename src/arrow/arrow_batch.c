/*
 * Batch quantization, the Arrow side: record batch (or tensor views) in, result struct array
 * out. The stages between (decide, floor and budget, execute) are the quantization pipeline's
 * (src/quant/pipeline_set.c); this file reads the rows in place into its items, and writes the
 * result.
 *
 * Output memory is allocated once at its final size: the plan (every row's tensor view and
 * layout, read in place from the producer's buffers) and the pipeline's choices come first,
 * then one allocation of each output buffer for the rows kept, then the pipeline writing
 * straight into those buffers. A row that fails in the last phase (a NaN found by the kernels)
 * in continue mode simply does not advance the write cursors, so the buffers may end a little
 * larger than the data; nothing is moved.
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

/* ---- what the pipeline asks of the batch path (aq__pipe_hooks) ---- */

typedef struct bq_hooks {
    const aq_ctx *ctx;
    const aq_batch_options *opts;
    arw_run *run;
    size_t base; /* the first row's index in the stream */
} bq_hooks;

static aq_status bq_hook_decide(void *user, const aq_tensor *t, aq_rule_decision *d, bool *ruled,
                                aq_error *err)
{
    const aq_batch_options *opts = ((bq_hooks *)user)->opts;
    *ruled = opts != NULL && opts->rules != NULL;
    return *ruled ? aq_rules_decide(opts->rules, t->name, t->shape, t->ndim, t->dtype, d, err)
                  : AQ_OK;
}

static aq_status bq_hook_importance(void *user, const aq_tensor *t, size_t elements, float **out,
                                    aq_error *err)
{
    return aq__arrow_importance(((bq_hooks *)user)->opts, t, elements, out, err);
}

static aq_status bq_hook_row_error(void *user, char **message, aq_status *status,
                                   const aq_error *row_err, aq_error *err)
{
    return aq__arrow_row_error(((bq_hooks *)user)->opts, message, status, row_err, err);
}

static aq_status bq_hook_row_skip(void *user, size_t i, const char *name, aq_status code,
                                  const char *message, aq_error *err)
{
    bq_hooks *h = user;
    return aq__arrow_row_skip(h->opts, h->base + i, name, code, message, err);
}

static aq_status bq_hook_progress(void *user, size_t elements, aq_error *err)
{
    bq_hooks *h = user;
    return aq__arrow_progress(h->opts, h->run, elements, err);
}

static aq_status bq_hook_choice(void *user, size_t i, const char *name, const aq_qset_choice *c,
                                aq_error *err)
{
    bq_hooks *h = user;
    return aq__arrow_report_choice(h->opts->report, h->base + i, name, c, err);
}

/* A pipe of n rows for this call: the options' floor and budget, the hooks over h. */
static aq_status bq_pipe_alloc(aq__pipe *p, bq_hooks *h, size_t n, size_t name_bytes, aq_error *err)
{
    const aq_batch_options *opts = h->opts;
    aq__pipe_quality q;
    memset(&q, 0, sizeof q);
    if (opts != NULL) {
        q.min_cosine = opts->min_cosine;
        q.target_bpw = opts->target_bpw;
        q.budget_schemes = opts->budget_schemes;
        q.n_budget_schemes = opts->n_budget_schemes;
        q.rules = opts->rules != NULL;
        if (q.rules) {
            aq_profile prof;
            aq_rules_profile(opts->rules, &prof);
            q.profile_bpw = prof.target_bpw;
        }
    }
    const aq__pipe_hooks hooks = {h,
                                  bq_hook_decide,
                                  bq_hook_importance,
                                  bq_hook_row_error,
                                  bq_hook_row_skip,
                                  bq_hook_progress,
                                  bq_hook_choice};
    aq_status st = aq__pipe_alloc(p, h->ctx, n, name_bytes, &q, &hooks, err);
    if (st == AQ_OK) {
        aq__arrow_base_params(h->ctx, opts, &p->base_scheme, &p->base_bits, &p->base_group);
    }
    return st;
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
                             aq__pipe *p, char **name_cursor, aq_error *row_err)
{
    aq__pipe_item *item = &p->items[i];
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

static aq_status bq_plan_batch(const aq_ctx *ctx, const bq_input *in, bq_hooks *h, aq__pipe *p,
                               aq_error *err)
{
    size_t n = (size_t)in->rows;
    size_t name_bytes;
    aq_status st = aq__arrow_var_arena_size(&in->names, in->rows, &name_bytes, err);
    if (st != AQ_OK || (st = bq_pipe_alloc(p, h, n, name_bytes, err)) != AQ_OK) {
        return st;
    }
    char *cursor = p->names;
    for (int64_t i = 0; i < in->rows; i++) {
        aq_error row_err;
        aq_error_clear(&row_err);
        if (bq_plan_row(ctx, in, i, h->run->rows_done + (size_t)i, p, &cursor, &row_err) != AQ_OK ||
            aq__pipe_decide(p, ctx, (size_t)i, &row_err) != AQ_OK) {
            if ((st = aq__arrow_row_error(h->opts, &p->items[i].message, &p->items[i].status,
                                          &row_err, err)) != AQ_OK) {
                aq__pipe_free(p);
                return st;
            }
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

/* The value of arrowquant.row_schemes for the written rows when their quantized rows do not
 * share the base scheme and group size, else NULL (in *out; free()). Kept rows get the entry
 * {"scheme":"raw","group_size":0}. */
static aq_status bq_row_schemes(const aq__pipe *p, char **out, aq_error *err)
{
    *out = NULL;
    bool differ = false;
    size_t rows = 0;
    for (size_t i = 0; i < p->n; i++) {
        const aq__pipe_item *it = &p->items[i];
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
        const aq__pipe_item *it = &p->items[i];
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

static aq_status bq_execute(aq_ctx *ctx, aq__pipe *p, const bq_hooks *h, size_t binary_limit,
                            bool allow_large, struct ArrowArray *out_array,
                            struct ArrowSchema *out_schema, aq_error *err)
{
    const aq_batch_options *opts = h->opts;
    aq_status st = aq__pipe_choose(p, ctx, err);
    if (st != AQ_OK) {
        return st;
    }
    size_t rows = 0, name_bytes = 0, packed = 0, groups = 0, dims = 0;
    for (size_t i = 0; i < p->n; i++) {
        const aq__pipe_item *it = &p->items[i];
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
        aq__pipe_item *it = &p->items[i];
        if (it->status != AQ_OK) {
            if ((st = aq__arrow_row_skip(opts, h->base + i, it->name, it->status, it->message,
                                         err)) != AQ_OK ||
                (st = aq__pipe_progress_to(p, i, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        bool skipped = false;
        if ((st = aq__pipe_encode(p, ctx, i, o.packed + at_packed, o.scales + at_group,
                                  o.zps + at_group, &skipped, err)) != AQ_OK) {
            goto done;
        }
        if (skipped) {
            if ((st = aq__pipe_progress_to(p, i, err)) != AQ_OK) {
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
        if ((st = aq__pipe_progress_to(p, i, err)) != AQ_OK) {
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
    aq__pipe pipe;
    bq_hooks h = {ctx, opts, run, run->rows_done};
    aq_status st = bq_import(schema, array, &in, err);
    if (st != AQ_OK || (st = aq__arrow_check_calib(opts, err)) != AQ_OK) {
        return st;
    }
    if ((st = bq_plan_batch(ctx, &in, &h, &pipe, err)) != AQ_OK) {
        return st;
    }
    st = bq_execute(ctx, &pipe, &h, binary_limit, allow_large, out_array, out_schema, err);
    aq__pipe_free(&pipe);
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
    arw_run run = {0, 0};
    bq_hooks h = {ctx, opts, &run, 0};
    aq__pipe pipe;
    st = aq__arrow_check_calib(opts, err);
    if (st != AQ_OK || (st = bq_pipe_alloc(&pipe, &h, n, 1, err)) != AQ_OK) {
        return st;
    }
    if ((st = aq__pipe_from_tensors(&pipe, ctx, tensors, err)) == AQ_OK) {
        st = bq_execute(ctx, &pipe, &h, AQ__ARROW_BINARY_LIMIT, true, out_array, out_schema, err);
    }
    aq__pipe_free(&pipe);
    return st;
}
