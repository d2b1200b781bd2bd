/*
 * Time-aware calibration: per-layer, per-timestep-group input statistics (an Arrow table) turned
 * into one importance weight per element of a weight tensor.
 *
 * Weights do not change with the timestep; the inputs they multiply do. The squared error a
 * quantized weight adds to a layer's output is, for a Linear y = W x, E|dW x|^2 =
 * sum_ij dW_ij^2 E[x_j^2] when the input channels are uncorrelated: the per-input-channel mean
 * square is exactly the weight of each element in the error the searched and kquant schemes
 * minimise. Along a sampling trajectory E[x_j^2] differs per timestep, so the table keeps one
 * vector per group of timesteps, and the groups are combined here (see the header for the
 * normalise-then-max rule and why).
 */
#include "aq_common.h"
#include "calib_table.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

aq_status aq_calib_create(aq_calib **out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_create: NULL argument");
    }
    aq_calib *c = calloc(1, sizeof *c);
    if (c == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Out of memory creating calibration statistics");
    }
    c->declared_groups = -1;
    c->max_group = -1;
    *out = c;
    return AQ_OK;
}

void aq_calib_free(aq_calib *calib)
{
    if (calib == NULL) {
        return;
    }
    for (size_t i = 0; i < calib->n_layers; i++) {
        cb_layer *l = &calib->layers[i];
        for (size_t g = 0; g < l->n_groups; g++) {
            free(l->groups[g].ms);
        }
        free(l->groups);
        free(l->combined);
        free(l->name);
    }
    free(calib->layers);
    for (size_t i = 0; i < calib->n_sources; i++) {
        free(calib->sources[i]);
    }
    free(calib->sources);
    free(calib);
}

size_t aq__calib_source_count(const aq_calib *calib)
{
    return calib != NULL ? calib->n_sources : 0;
}

const char *aq__calib_source(const aq_calib *calib, size_t i)
{
    return calib != NULL && i < calib->n_sources ? calib->sources[i] : NULL;
}

static cb_layer *cb_find(aq_calib *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->n_layers; i++) {
        if (strlen(c->layers[i].name) == len && memcmp(c->layers[i].name, name, len) == 0) {
            return &c->layers[i];
        }
    }
    return NULL;
}

static const cb_layer *cb_find_const(const aq_calib *c, const char *name, size_t len)
{
    return cb_find((aq_calib *)(uintptr_t)c, name, len);
}

/* Adds one row's vector to its layer (creating the layer). ms is taken over on success. */
aq_status aq__calib_add(aq_calib *c, const char *name, size_t len, int64_t group, double *ms,
                        size_t channels, aq_error *err)
{
    cb_layer *l = cb_find(c, name, len);
    if (l == NULL) {
        if (c->n_layers == c->cap_layers) {
            size_t cap = c->cap_layers ? c->cap_layers * 2 : 64;
            cb_layer *grown = realloc(c->layers, cap * sizeof *grown);
            if (grown == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "Out of memory reading calibration");
            }
            c->layers = grown;
            c->cap_layers = cap;
        }
        l = &c->layers[c->n_layers];
        memset(l, 0, sizeof *l);
        l->name = malloc(len + 1);
        if (l->name == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Out of memory reading calibration");
        }
        memcpy(l->name, name, len);
        l->name[len] = '\0';
        l->channels = channels;
        c->n_layers++;
    }
    if (l->channels != channels) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "Calibration layer '%s': timestep group %" PRId64
                             " has %zu channels, an earlier group %zu",
                             l->name, group, channels, l->channels);
    }
    for (size_t g = 0; g < l->n_groups; g++) {
        if (l->groups[g].id == group) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration layer '%s' has timestep group %" PRId64 " twice",
                                 l->name, group);
        }
    }
    if (l->n_groups == l->cap_groups) {
        size_t cap = l->cap_groups ? l->cap_groups * 2 : 8;
        cb_group *grown = realloc(l->groups, cap * sizeof *grown);
        if (grown == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Out of memory reading calibration");
        }
        l->groups = grown;
        l->cap_groups = cap;
    }
    l->groups[l->n_groups].id = group;
    l->groups[l->n_groups].ms = ms;
    l->n_groups++;
    if (group > c->max_group) {
        c->max_group = group;
    }
    return AQ_OK;
}

static const cb_group *cb_group_of(const cb_layer *l, int64_t id)
{
    for (size_t g = 0; g < l->n_groups; g++) {
        if (l->groups[g].id == id) {
            return &l->groups[g];
        }
    }
    return NULL;
}

/* Combines one layer's groups (all present, ids 0 .. n_groups-1). */
static aq_status cb_combine(cb_layer *l, aq_calib_combine how, aq_error *err)
{
    size_t C = l->channels, G = l->n_groups;
    double *mean = calloc(G, sizeof *mean);
    double *acc = calloc(C, sizeof *acc);   /* max or sum of normalised values */
    double *nbar = calloc(C, sizeof *nbar); /* mean of normalised values */
    aq_status st = AQ_OK;
    if (mean == NULL || acc == NULL || nbar == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "Out of memory combining calibration groups");
        goto done;
    }
    l->combined = malloc(C * sizeof *l->combined);
    if (l->combined == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "Out of memory combining calibration groups");
        goto done;
    }
    double lo = (double)INFINITY, hi = 0.0;
    for (size_t g = 0; g < G; g++) {
        const double *v = cb_group_of(l, (int64_t)g)->ms;
        double s = 0.0;
        for (size_t k = 0; k < C; k++) {
            s += v[k];
        }
        mean[g] = s / (double)C;
        lo = mean[g] < lo ? mean[g] : lo;
        hi = mean[g] > hi ? mean[g] : hi;
        for (size_t k = 0; k < C; k++) {
            /* An all-zero group says nothing about which channels matter: uniform. */
            double n = mean[g] > 0.0 ? v[k] / mean[g] : 1.0;
            nbar[k] += n / (double)G;
            if (how == AQ_CALIB_COMBINE_MAX) {
                acc[k] = g == 0 || n > acc[k] ? n : acc[k];
            } else {
                acc[k] += n / (double)G;
            }
        }
    }
    l->scale_ratio = hi == 0.0 ? 1.0 : (lo == 0.0 ? (double)INFINITY : hi / lo);
    double nn = 0.0;
    for (size_t k = 0; k < C; k++) {
        nn += nbar[k] * nbar[k];
        l->combined[k] = (float)(acc[k] > AQ_CALIB_FLOOR ? acc[k] : AQ_CALIB_FLOOR);
    }
    l->shape_variation = 0.0;
    for (size_t g = 0; g < G; g++) {
        const double *v = cb_group_of(l, (int64_t)g)->ms;
        double d = 0.0;
        for (size_t k = 0; k < C; k++) {
            double n = mean[g] > 0.0 ? v[k] / mean[g] : 1.0;
            d += (n - nbar[k]) * (n - nbar[k]);
        }
        double rel = nn > 0.0 ? sqrt(d / nn) : 0.0;
        l->shape_variation = rel > l->shape_variation ? rel : l->shape_variation;
    }
done:
    free(mean);
    free(acc);
    free(nbar);
    return st;
}

aq_status aq_calib_finish(aq_calib *calib, aq_calib_combine combine, aq_error *err)
{
    if (calib == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_finish: NULL argument");
    }
    if (combine != AQ_CALIB_COMBINE_MAX && combine != AQ_CALIB_COMBINE_MEAN) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Unknown way of combining timestep groups: %d", (int)combine);
    }
    if (calib->broken) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration statistics: an earlier batch was refused");
    }
    if (calib->finished) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Calibration statistics already finished");
    }
    if (calib->n_layers == 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Calibration table has no rows");
    }
    int64_t G = calib->declared_groups >= 0 ? calib->declared_groups : calib->max_group + 1;
    for (size_t i = 0; i < calib->n_layers; i++) {
        const cb_layer *l = &calib->layers[i];
        for (int64_t g = 0; g < G; g++) {
            if (cb_group_of(l, g) == NULL) {
                return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                     "Layer '%s' has no statistics for timestep group %" PRId64
                                     " (the table has groups 0..%" PRId64 ")",
                                     l->name, g, G - 1);
            }
        }
    }
    for (size_t i = 0; i < calib->n_layers; i++) {
        aq_status st = cb_combine(&calib->layers[i], combine, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    calib->finished = true;
    return AQ_OK;
}

size_t aq_calib_layer_count(const aq_calib *calib)
{
    return calib != NULL && calib->finished ? calib->n_layers : 0;
}

aq_status aq_calib_layer_get(const aq_calib *calib, size_t i, aq_calib_layer_info *out,
                             aq_error *err)
{
    if (calib == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_layer_get: NULL argument");
    }
    if (!calib->finished) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration statistics are not finished (aq_calib_finish)");
    }
    if (i >= calib->n_layers) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "Layer index %zu out of range (%zu)", i,
                             calib->n_layers);
    }
    const cb_layer *l = &calib->layers[i];
    out->name = l->name;
    out->channels = l->channels;
    out->groups = l->n_groups;
    out->scale_ratio = l->scale_ratio;
    out->shape_variation = l->shape_variation;
    return AQ_OK;
}

/* name is "L.weight" or "COMPONENT/L.weight" for layer L. */
static bool cb_names_layer(const char *name, const char *layer)
{
    size_t ln = strlen(layer), nn = strlen(name);
    const char *slash = strchr(name, '/');
    for (int pass = 0; pass < 2; pass++) {
        const char *s = pass == 0 ? name : (slash != NULL ? slash + 1 : NULL);
        if (s == NULL) {
            break;
        }
        size_t sn = nn - (size_t)(s - name);
        if (sn == ln + 7 && memcmp(s, layer, ln) == 0 && memcmp(s + ln, ".weight", 7) == 0) {
            return true;
        }
    }
    return false;
}

aq_status aq_calib_check_model(const aq_calib *calib, const char *const *tensor_names, size_t n,
                               aq_error *err)
{
    if (calib == NULL || (tensor_names == NULL && n > 0)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_check_model: NULL argument");
    }
    for (size_t i = 0; i < calib->n_layers; i++) {
        const char *layer = calib->layers[i].name;
        bool found = false;
        for (size_t t = 0; t < n && !found; t++) {
            found = tensor_names[t] != NULL && cb_names_layer(tensor_names[t], layer);
        }
        if (!found) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration table has statistics for layer '%s', which the "
                                 "model does not have (no tensor '%s.weight')",
                                 layer, layer);
        }
    }
    return AQ_OK;
}

static const cb_layer *cb_layer_for(const aq_calib *c, const char *name)
{
    size_t nn = strlen(name);
    if (nn <= 7 || memcmp(name + nn - 7, ".weight", 7) != 0) {
        return NULL;
    }
    const cb_layer *l = cb_find_const(c, name, nn - 7);
    const char *slash = strchr(name, '/');
    if (l == NULL && slash != NULL && (size_t)(slash + 1 - name) < nn - 7) {
        l = cb_find_const(c, slash + 1, nn - 7 - (size_t)(slash + 1 - name));
    }
    return l;
}

aq_status aq_calib_importance(const aq_calib *calib, const char *name, const int64_t *shape,
                              size_t ndim, float *out, size_t out_len, int *found, aq_error *err)
{
    if (calib == NULL || name == NULL || found == NULL || (shape == NULL && ndim > 0)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_importance: NULL argument");
    }
    if (!calib->finished) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration statistics are not finished (aq_calib_finish)");
    }
    const cb_layer *l = cb_layer_for(calib, name);
    if (l == NULL) {
        *found = 0;
        return AQ_OK;
    }
    if (ndim < 2 || ndim > AQ_MAX_NDIM) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "Tensor '%s' has %zu dimensions; importance from calibration needs "
                             "a weight of 2 to %d ([out, in, ...])",
                             name, ndim, AQ_MAX_NDIM);
    }
    size_t dims[AQ_MAX_NDIM];
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] <= 0) {
            return aq__error_set(err, AQ_SHAPE_MISMATCH,
                                 "Tensor '%s': dimension %zu is %" PRId64 " (must be > 0)", name, i,
                                 shape[i]);
        }
        dims[i] = (size_t)shape[i];
    }
    size_t rows = dims[0], in_pg = dims[1], k = 1, elements;
    for (size_t i = 2; i < ndim; i++) {
        if (!aq__mul_size(k, dims[i], &k)) {
            return aq__error_set(err, AQ_OVERFLOW, "Tensor '%s': size overflows", name);
        }
    }
    if (!aq__mul_size(rows, in_pg, &elements) || !aq__mul_size(elements, k, &elements)) {
        return aq__error_set(err, AQ_OVERFLOW, "Tensor '%s': size overflows", name);
    }
    size_t C = l->channels, conv_groups = 0;
    if (C == in_pg) {
        conv_groups = 1;
    } else if (C % in_pg == 0 && rows % (C / in_pg) == 0) {
        conv_groups = C / in_pg; /* a grouped convolution */
    }
    if (conv_groups == 0) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "Calibration layer '%s' has %zu input channels, which does not fit "
                             "tensor '%s' of shape [%zu, %zu, ...]",
                             l->name, C, name, rows, in_pg);
    }
    if (out == NULL || out_len != elements) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Tensor '%s': importance buffer holds %zu elements, the tensor %zu",
                             name, out_len, elements);
    }
    size_t rows_per_group = rows / conv_groups;
    float *p = out;
    for (size_t o = 0; o < rows; o++) {
        const float *src = l->combined + (o / rows_per_group) * in_pg;
        for (size_t i = 0; i < in_pg; i++) {
            for (size_t j = 0; j < k; j++) {
                *p++ = src[i];
            }
        }
    }
    *found = 1;
    return AQ_OK;
}
