/*
 * The streaming safetensors writer. The header is complete before the first data byte (the
 * tensors are declared up front), so the data can be appended piece by piece and never needs
 * to be held in memory whole. The header is padded with spaces to a multiple of 8 bytes, as
 * the reference writer does, so that the data region starts aligned.
 */
#include "io_internal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>

struct aq_st_writer {
    aq__outfile *out;
    size_t total;   /* declared data bytes */
    size_t written; /* data bytes appended so far */
};

static aq_status stw_header(const aq_st_spec *tensors, size_t n, const char *const *keys,
                            const char *const *values, size_t n_meta, char **out, size_t *total,
                            aq_error *err)
{
    aq_status st = AQ_OK;
    json_t *root = json_object();
    size_t offset = 0;
    if (root == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    if (n_meta > 0) {
        json_t *meta = json_object();
        if (meta == NULL || json_object_set_new(root, "__metadata__", meta) != 0) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < n_meta; i++) {
            if (keys[i] == NULL || values[i] == NULL ||
                json_object_set_new(meta, keys[i], json_string(values[i])) != 0) {
                st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                                   "metadata entry %zu is NULL or not valid UTF-8", i);
                goto done;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        const aq_st_spec *t = &tensors[i];
        const char *name = t->name;
        if (name == NULL || strcmp(name, "__metadata__") == 0) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor %zu has no usable name", i);
            goto done;
        }
        if (json_object_get(root, name) != NULL) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor '%s' is declared twice", name);
            goto done;
        }
        const char *dtype = t->dtype == AQ_ST_UNKNOWN ? t->dtype_name : aq_st_dtype_name(t->dtype);
        if ((unsigned)t->dtype >= AQ_ST_DTYPE_COUNT || dtype == NULL || dtype[0] == '\0') {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor '%s': no dtype", name);
            goto done;
        }
        if (t->ndim > AQ_MAX_NDIM || (t->ndim > 0 && t->shape == NULL)) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor '%s': bad shape", name);
            goto done;
        }
        size_t elements = 1;
        json_t *shape = json_array();
        json_t *entry = json_object();
        json_t *offs = json_array();
        if (shape == NULL || entry == NULL || offs == NULL) {
            json_decref(shape);
            json_decref(entry);
            json_decref(offs);
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        json_object_set_new(entry, "dtype", json_string(dtype));
        json_object_set_new(entry, "shape", shape);
        json_object_set_new(entry, "data_offsets", offs);
        if (json_object_set_new(root, name, entry) != 0) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor name %zu is not valid UTF-8", i);
            goto done;
        }
        for (size_t d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0 || !aq__mul_size(elements, (size_t)t->shape[d], &elements)) {
                st = aq__error_set(err, AQ_INVALID_ARGUMENT, "tensor '%s': bad dimension %zu", name,
                                   d);
                goto done;
            }
            json_array_append_new(shape, json_integer(t->shape[d]));
        }
        if (t->dtype != AQ_ST_UNKNOWN) {
            size_t bytes;
            if (!aq__mul_size(elements, aq_st_dtype_size(t->dtype), &bytes) || bytes != t->nbytes) {
                st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                                   "tensor '%s': %zu bytes declared, %s x %zu elements need "
                                   "%zu",
                                   name, t->nbytes, dtype, elements, bytes);
                goto done;
            }
        }
        size_t end;
        if (!aq__add_size(offset, t->nbytes, &end) || end > INT64_MAX) {
            st = aq__error_set(err, AQ_OVERFLOW, "tensor '%s': data offsets overflow", name);
            goto done;
        }
        json_array_append_new(offs, json_integer((json_int_t)offset));
        json_array_append_new(offs, json_integer((json_int_t)end));
        offset = end;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (text == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "cannot encode the header");
        goto done;
    }
    *out = text;
    *total = offset;
done:
    json_decref(root);
    return st;
}

aq_status aq_st_writer_open(const char *path, const aq_st_spec *tensors, size_t n,
                            const char *const *meta_keys, const char *const *meta_values,
                            size_t n_meta, aq_st_writer **out, aq_error *err)
{
    if (path == NULL || out == NULL || (n > 0 && tensors == NULL) ||
        (n_meta > 0 && (meta_keys == NULL || meta_values == NULL))) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_st_writer_open: NULL argument");
    }
    aq_status st;
    char *text = NULL;
    char *padded = NULL;
    aq_st_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    if ((st = stw_header(tensors, n, meta_keys, meta_values, n_meta, &text, &w->total, err)) !=
        AQ_OK) {
        aq__error_prefix(err, "%s", path);
        goto done;
    }
    size_t len = strlen(text);
    size_t plen = (len + 7) / 8 * 8;
    if ((padded = malloc(8 + plen)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < 8; i++) {
        padded[i] = (char)(((uint64_t)plen >> (8 * i)) & 0xff);
    }
    memcpy(padded + 8, text, len);
    memset(padded + 8 + len, ' ', plen - len);
    if ((st = aq__outfile_open(path, &w->out, err)) != AQ_OK ||
        (st = aq__outfile_write(w->out, padded, 8 + plen, err)) != AQ_OK) {
        goto done;
    }
    *out = w;
    w = NULL;
done:
    free(text);
    free(padded);
    aq_st_writer_free(w);
    return st;
}

aq_status aq_st_writer_write(aq_st_writer *w, const void *data, size_t nbytes, aq_error *err)
{
    if (w == NULL || (nbytes > 0 && data == NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_st_writer_write: NULL argument");
    }
    if (nbytes > w->total - w->written) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: %zu more bytes than the %zu declared",
                             w->out->final_path, nbytes - (w->total - w->written), w->total);
    }
    aq_status st = aq__outfile_write(w->out, data, nbytes, err);
    if (st == AQ_OK) {
        w->written += nbytes;
    }
    return st;
}

aq_status aq_st_writer_finish(aq_st_writer *w, aq_error *err)
{
    if (w == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_st_writer_finish: NULL argument");
    }
    if (w->written != w->total) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: %zu of %zu declared data bytes written",
                             w->out->final_path, w->written, w->total);
    }
    return aq__outfile_commit(w->out, err);
}

void aq_st_writer_free(aq_st_writer *w)
{
    if (w == NULL) {
        return;
    }
    aq__outfile_free(w->out);
    free(w);
}
