/*
 * Calibration statistics read from an Arrow table ({layer_name, timestep_group, mean_square})
 * or an Arrow IPC file of them, into the table of calib.c. Above the Arrow and IPC layers;
 * the table and its importance lookup are below the Arrow batch path that uses them.
 */
#include "aq_common.h"
#include "arrow_internal.h"
#include "calib_table.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define CB_EXPECTED_SCHEMA \
    "Expected schema: {layer_name: string, timestep_group: int64, mean_square: list<float32>}"
#define CB_EXPECTED_MS "list<float32> (list, large_list or fixed_size_list of float32 or float64)"

static aq_status cb_metadata(aq_calib *c, const struct ArrowSchema *schema, aq_error *err)
{
    const char *v;
    size_t n;
    bool found;
    aq_status st =
        aq__arrow_metadata_get(schema->metadata, "arrowquant.timestep_groups", &v, &n, &found, err);
    if (st != AQ_OK || !found) {
        return st;
    }
    int64_t groups = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || groups > 1000000) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration table: arrowquant.timestep_groups must be a "
                                 "decimal number from 1 to 1000000, got '%.*s'",
                                 (int)n, v);
        }
        groups = groups * 10 + (v[i] - '0');
    }
    if (n == 0 || groups < 1 || groups > 1000000) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration table: arrowquant.timestep_groups must be a decimal "
                             "number from 1 to 1000000, got '%.*s'",
                             (int)n, v);
    }
    if (c->declared_groups >= 0 && c->declared_groups != groups) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration table: arrowquant.timestep_groups is %" PRId64
                             " in this batch but %" PRId64 " in an earlier one",
                             groups, c->declared_groups);
    }
    c->declared_groups = groups;
    return AQ_OK;
}

static aq_status cb_add_rows(aq_calib *c, const struct ArrowSchema *s, const struct ArrowArray *a,
                             aq_error *err)
{
    static const arw_list_spec ms_spec = {"fg", CB_EXPECTED_MS, true};
    static const char *const cols[] = {"layer_name", "timestep_group", "mean_square"};
    int64_t rows, offset, idx[3];
    aq_status st = aq__arrow_check_batch(s, a, &rows, &offset, err);
    if (st != AQ_OK) {
        return st;
    }
    for (size_t i = 0; i < 3; i++) {
        idx[i] = aq__arrow_find_column(s, cols[i]);
        if (idx[i] < 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration table: missing required column '%s'. %s", cols[i],
                                 CB_EXPECTED_SCHEMA);
        }
    }
    if ((st = cb_metadata(c, s, err)) != AQ_OK) {
        return st;
    }
    arw_var names;
    arw_prim groups;
    arw_list ms;
    const struct ArrowSchema *gs = s->children[idx[1]];
    char gfmt = gs->format != NULL && strcmp(gs->format, "i") == 0 ? 'i' : 'l';
    if ((st = aq__arrow_import_var("layer_name", false, "string (utf8)", s->children[idx[0]],
                                   a->children[idx[0]], offset, rows, &names, err)) != AQ_OK ||
        (st = aq__arrow_import_prim("timestep_group", gfmt, "int64 or int32", gs,
                                    a->children[idx[1]], offset, rows, &groups, err)) != AQ_OK ||
        (st = aq__arrow_import_list("mean_square", &ms_spec, s->children[idx[2]],
                                    a->children[idx[2]], offset, rows, &ms, err)) != AQ_OK) {
        return st;
    }
    for (int64_t r = 0; r < rows; r++) {
        if (!arw_var_valid(&names, r)) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration table row %" PRId64 ": layer_name is null", r);
        }
        const uint8_t *nd;
        size_t nl;
        aq__arrow_var_get(&names, r, &nd, &nl);
        const char *name = (const char *)nd;
        if (!arw_prim_valid(&groups, r) || !arw_list_valid(&ms, r)) {
            return aq__error_set(
                err, AQ_INVALID_ARGUMENT, "Calibration layer '%.*s' (row %" PRId64 "): %s is null",
                (int)nl, name, r, arw_prim_valid(&groups, r) ? "mean_square" : "timestep_group");
        }
        int64_t group;
        if (gfmt == 'i') {
            int32_t g32;
            memcpy(&g32, groups.values + (size_t)(groups.offset + r) * 4, 4);
            group = g32;
        } else {
            memcpy(&group, groups.values + (size_t)(groups.offset + r) * 8, 8);
        }
        if (group < 0 || (c->declared_groups >= 0 && group >= c->declared_groups)) {
            return c->declared_groups >= 0
                       ? aq__error_set(err, AQ_INVALID_ARGUMENT,
                                       "Calibration layer '%.*s': timestep group %" PRId64
                                       " is outside 0..%" PRId64 " (arrowquant.timestep_groups)",
                                       (int)nl, name, group, c->declared_groups - 1)
                       : aq__error_set(err, AQ_INVALID_ARGUMENT,
                                       "Calibration layer '%.*s': timestep group %" PRId64
                                       " is negative",
                                       (int)nl, name, group);
        }
        int64_t start, count;
        aq__arrow_list_get(&ms, r, &start, &count);
        if (count <= 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration layer '%.*s', timestep group %" PRId64
                                 ": mean_square is empty",
                                 (int)nl, name, group);
        }
        int64_t bad = aq__arrow_list_first_null(&ms, start, count);
        if (bad >= 0) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "Calibration layer '%.*s', timestep group %" PRId64
                                 ": mean_square is null at channel %" PRId64,
                                 (int)nl, name, group, bad);
        }
        double *v = malloc((size_t)count * sizeof *v);
        if (v == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Out of memory reading calibration");
        }
        for (int64_t k = 0; k < count; k++) {
            const uint8_t *p = ms.values + (size_t)(start + k) * ms.elem_size;
            if (ms.child_format == 'f') {
                float f;
                memcpy(&f, p, 4);
                v[k] = (double)f;
            } else {
                memcpy(&v[k], p, 8);
            }
            if (!isfinite(v[k]) || v[k] < 0.0) {
                aq_status code = isfinite(v[k]) ? AQ_INVALID_ARGUMENT : AQ_NON_FINITE;
                free(v);
                return aq__error_set(
                    err, code,
                    "Calibration layer '%.*s', timestep group %" PRId64
                    ": mean_square at channel %" PRId64 " is %s (must be finite and >= 0)",
                    (int)nl, name, group, k, code == AQ_NON_FINITE ? "NaN or Inf" : "negative");
            }
        }
        if ((st = aq__calib_add(c, name, nl, group, v, (size_t)count, err)) != AQ_OK) {
            free(v);
            return st;
        }
    }
    return AQ_OK;
}

aq_status aq_calib_add_batch(aq_calib *calib, const struct ArrowSchema *schema,
                             const struct ArrowArray *array, aq_error *err)
{
    if (calib == NULL || schema == NULL || array == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_add_batch: NULL argument");
    }
    if (calib->finished) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration statistics are already finished: no more batches");
    }
    if (calib->broken) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Calibration statistics: an earlier batch was refused");
    }
    aq_status st = cb_add_rows(calib, schema, array, err);
    if (st != AQ_OK) {
        calib->broken = true;
    }
    return st;
}

/* Prefixes the message already in err with the file's path (err may be NULL). */
static aq_status cb_file_error(aq_error *err, aq_status st, const char *path)
{
    if (err == NULL) {
        return st;
    }
    char msg[AQ_ERROR_MESSAGE_SIZE];
    snprintf(msg, sizeof msg, "%s", err->message);
    return aq__error_set(err, st, "%s: %s", path, msg);
}

aq_status aq_calib_add_ipc_file(aq_calib *calib, const char *path, aq_error *err)
{
    if (calib == NULL || path == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_calib_add_ipc_file: NULL argument");
    }
    aq_ipc_reader *r = NULL;
    struct ArrowSchema schema;
    struct ArrowArray batch;
    memset(&schema, 0, sizeof schema);
    memset(&batch, 0, sizeof batch);
    size_t batches = 0;
    /* Remembered first: an output named like this file must be refused (aq_model_quantize). */
    char **sources = realloc(calib->sources, (calib->n_sources + 1) * sizeof *sources);
    if (sources == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
    }
    calib->sources = sources;
    if ((sources[calib->n_sources] = aq__strdup(path)) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
    }
    calib->n_sources++;
    aq_status st = aq_ipc_reader_open(path, &r, err);
    if (st != AQ_OK) {
        /* The reader names the file in most of its messages; say what was expected. */
        if (err != NULL && strstr(err->message, path) == NULL) {
            st = cb_file_error(err, st, path);
        }
        if (err != NULL && st == AQ_INVALID_DATA) {
            char msg[AQ_ERROR_MESSAGE_SIZE];
            snprintf(msg, sizeof msg, "%s", err->message);
            st = aq__error_set(err, st,
                               "%s (expected an Arrow IPC file or stream of calibration "
                               "statistics)",
                               msg);
        }
        goto done;
    }
    if ((st = aq_ipc_reader_schema(r, &schema, err)) != AQ_OK) {
        st = cb_file_error(err, st, path);
        goto done;
    }
    for (;;) {
        if ((st = aq_ipc_reader_next(r, &batch, err)) != AQ_OK) {
            st = cb_file_error(err, st, path);
            goto done;
        }
        if (batch.release == NULL) {
            break;
        }
        st = aq_calib_add_batch(calib, &schema, &batch, err);
        batch.release(&batch);
        memset(&batch, 0, sizeof batch);
        if (st != AQ_OK) {
            st = cb_file_error(err, st, path);
            goto done;
        }
        batches++;
    }
    if (batches == 0) {
        st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                           "%s: the calibration table has no record batch (no statistics)", path);
    }
done:
    if (batch.release != NULL) {
        batch.release(&batch);
    }
    if (schema.release != NULL) {
        schema.release(&schema);
    }
    aq_ipc_reader_free(r);
    return st;
}
