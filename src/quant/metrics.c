/* Quality metrics, in double precision, over two tensors of any float dtypes. */
#include "pipeline.h"

#include <math.h>

/* Elements converted per step: keeps the conversion buffers on the stack and in cache. */
#define METRICS_CHUNK 1024

static void metrics_load(const aq_tensor *t, size_t start, size_t n, double *out)
{
    switch (t->dtype) {
    case AQ_DTYPE_F32: {
        const float *p = (const float *)t->data + start;
        for (size_t i = 0; i < n; i++) {
            out[i] = (double)p[i];
        }
        break;
    }
    case AQ_DTYPE_F16: {
        const uint16_t *p = (const uint16_t *)t->data + start;
        for (size_t i = 0; i < n; i++) {
            out[i] = (double)aq__f16_to_f32(p[i]);
        }
        break;
    }
    case AQ_DTYPE_BF16: {
        const uint16_t *p = (const uint16_t *)t->data + start;
        for (size_t i = 0; i < n; i++) {
            out[i] = (double)aq__bf16_to_f32(p[i]);
        }
        break;
    }
    case AQ_DTYPE_F64:
        memcpy(out, (const double *)t->data + start, n * sizeof *out);
        break;
    case AQ_DTYPE_COUNT:
        break;
    }
}

static aq_status metrics_check(const aq_tensor *t, const char *role, size_t *n, aq_error *err)
{
    if (t == NULL || t->data == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_metrics_compute: %s is NULL", role);
    }
    if ((unsigned)t->dtype >= AQ_DTYPE_COUNT) {
        return aq__error_set(err, AQ_UNSUPPORTED, "Layer '%s': unknown dtype %d",
                             aq__name_or_unnamed(t->name), (int)t->dtype);
    }
    return aq__shape_elements(t->name, t->shape, t->ndim, n, err);
}

aq_status aq_metrics_compute(const aq_tensor *reference, const aq_tensor *approximation,
                             aq_metrics *out, aq_error *err)
{
    size_t n, m;
    aq_status st;
    if ((st = metrics_check(reference, "reference", &n, err)) != AQ_OK ||
        (st = metrics_check(approximation, "approximation", &m, err)) != AQ_OK) {
        return st;
    }
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_metrics_compute: NULL output");
    }
    if (n != m) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "Layer '%s': %zu reference elements but %zu approximation elements",
                             aq__name_or_unnamed(reference->name), n, m);
    }
    if (n == 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer '%s' has no elements",
                             aq__name_or_unnamed(reference->name));
    }
    double a[METRICS_CHUNK], b[METRICS_CHUNK];
    /* First pass: the mean of the reference, so the variance needs no cancelling subtraction. */
    double sum = 0.0;
    for (size_t start = 0; start < n; start += METRICS_CHUNK) {
        size_t len = n - start < METRICS_CHUNK ? n - start : METRICS_CHUNK;
        metrics_load(reference, start, len, a);
        for (size_t i = 0; i < len; i++) {
            if (!isfinite(a[i])) {
                return aq__error_set(err, AQ_NON_FINITE,
                                     "Layer '%s' contains NaN or Inf at index %zu",
                                     aq__name_or_unnamed(reference->name), start + i);
            }
            sum += a[i];
        }
    }
    const double mean = sum / (double)n;
    double var = 0.0, err2 = 0.0, ref2 = 0.0, app2 = 0.0, dot = 0.0, max_abs = 0.0;
    for (size_t start = 0; start < n; start += METRICS_CHUNK) {
        size_t len = n - start < METRICS_CHUNK ? n - start : METRICS_CHUNK;
        metrics_load(reference, start, len, a);
        metrics_load(approximation, start, len, b);
        for (size_t i = 0; i < len; i++) {
            if (!isfinite(b[i])) {
                return aq__error_set(err, AQ_NON_FINITE,
                                     "Layer '%s' contains NaN or Inf at index %zu",
                                     aq__name_or_unnamed(approximation->name), start + i);
            }
            double d = a[i] - mean;
            double e = a[i] - b[i];
            var += d * d;
            err2 += e * e;
            ref2 += a[i] * a[i];
            app2 += b[i] * b[i];
            dot += a[i] * b[i];
            if (fabs(e) > max_abs) {
                max_abs = fabs(e);
            }
        }
    }
    aq_metrics r;
    r.count = n;
    r.mse = err2 / (double)n;
    double std = sqrt(var / (double)n);
    if (r.mse == 0.0) {
        r.rel_rmse = 0.0;
    } else {
        r.rel_rmse = std > 0.0 ? sqrt(r.mse) / std : (double)INFINITY;
    }
    const double sums[5] = {ref2, err2, dot, app2, max_abs};
    aq__metrics_from_sums(sums, &r.sqnr_db, &r.cosine, &r.max_abs_error);
    *out = r;
    return AQ_OK;
}
