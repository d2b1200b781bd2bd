/*
 * What the writers of the model pipeline share (model_plan.h): the columns of the rows that
 * aq_model_execute makes and aq_model_writer reads, for the model file and for GGUF, and the
 * summary of a written file.
 */
#include "arrow_owned.h"
#include "model_plan.h"

#include <math.h>
#include <string.h>

aq_status aq__rows_utf8(struct ArrowArray *a, const char *const *strs, size_t n, aq_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += strlen(strs[i]);
    }
    if (total > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW, "names too long for one batch");
    }
    aq_status st = aq__array_alloc(a, (int64_t)n, 3, 0, err);
    if (st != AQ_OK) {
        return st;
    }
    int32_t *off = aq__array_buffer_alloc(a, 1, (n + 1) * sizeof(int32_t));
    char *data = aq__array_buffer_alloc(a, 2, total > 0 ? total : 1);
    if (off == NULL || data == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
    }
    size_t pos = 0;
    off[0] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(strs[i]);
        memcpy(data + pos, strs[i], len);
        pos += len;
        off[i + 1] = (int32_t)pos;
    }
    return AQ_OK;
}

aq_status aq__rows_prim(struct ArrowArray *a, const void *vals, size_t elem, size_t n,
                        aq_error *err)
{
    aq_status st = aq__array_alloc(a, (int64_t)n, 2, 0, err);
    if (st != AQ_OK) {
        return st;
    }
    void *data = aq__array_buffer_alloc(a, 1, n > 0 ? n * elem : 1);
    if (data == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
    }
    memcpy(data, vals, n * elem);
    return AQ_OK;
}

static int64_t rows_off(const struct ArrowArray *a, bool wide, int64_t j)
{
    if (wide) {
        return ((const int64_t *)a->buffers[1])[j];
    }
    return ((const int32_t *)a->buffers[1])[j];
}

void aq__rows_span(const struct ArrowArray *a, bool wide, int64_t j, int64_t *start, size_t *n)
{
    int64_t k = a->offset + j;
    *start = rows_off(a, wide, k);
    *n = (size_t)(rows_off(a, wide, k + 1) - *start);
}

const void *aq__rows_value(const struct ArrowArray *a, int64_t j, size_t elem)
{
    return (const uint8_t *)a->buffers[1] + (size_t)(a->offset + j) * elem;
}

const void *aq__rows_at(const void *base, size_t elem, int64_t idx)
{
    return base != NULL ? (const uint8_t *)base + (size_t)idx * elem : NULL;
}

bool aq__rows_is(const char *s, size_t n, const char *want)
{
    return strlen(want) == n && (n == 0 || memcmp(s, want, n) == 0);
}

aq_status aq__rows_no_nulls(const struct ArrowArray *rows, const char *const *names, size_t n,
                            aq_error *err)
{
    for (size_t c = 0; c < n; c++) {
        const struct ArrowArray *a = rows->children[c];
        if (a->null_count != 0 && a->buffers[0] != NULL) {
            return aq__error_set(err, AQ_INVALID_DATA, "rows: column '%s' has nulls", names[c]);
        }
    }
    return AQ_OK;
}

void aq__model_totals_init(aq__model_totals *tot)
{
    memset(tot, 0, sizeof *tot);
    tot->sum.min_sqnr_db = (double)INFINITY;
}

void aq__model_totals_add(aq__model_totals *tot, const char *name, bool kept, size_t elements,
                          size_t bytes_in, size_t bytes_out, double sqnr_db, double cosine)
{
    aq_model_summary *sum = &tot->sum;
    sum->tensors++;
    sum->params += elements;
    sum->bytes_in += bytes_in;
    sum->bytes_out += bytes_out;
    if (kept) {
        sum->kept++;
        return;
    }
    sum->quantized++;
    sum->quantized_params += elements;
    sum->quantized_bytes += bytes_out;
    if (isfinite(sqnr_db)) {
        tot->sqnr_sum += sqnr_db;
        tot->finite++;
    }
    tot->cos_sum += cosine;
    if (sqnr_db < sum->min_sqnr_db) {
        sum->min_sqnr_db = sqnr_db;
        sum->worst = name;
    }
}

void aq__model_totals_finish(aq__model_totals *tot, size_t batches, aq_model_summary *out)
{
    aq_model_summary *sum = &tot->sum;
    if (sum->quantized > 0) {
        sum->mean_sqnr_db =
            tot->finite > 0 ? tot->sqnr_sum / (double)tot->finite : (double)INFINITY;
        sum->mean_cosine = tot->cos_sum / (double)sum->quantized;
    } else {
        sum->min_sqnr_db = 0.0;
    }
    sum->batches = batches;
    if (out != NULL) {
        *out = *sum;
    }
}
