/*
 * GGUF files opened for reading (mapped read-only, validated by aq__gguf_parse), tensor
 * decoding, and the conversion of a GGUF file back to safetensors.
 */
#include "gguf_internal.h"
#include "io_internal.h"
#include "kernels_ggml.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void aq_gguf_free(aq_gguf *g)
{
    if (g == NULL) {
        return;
    }
    aq__gguf_reset(g);
    if (g->map != NULL) {
        if (g->mapped) {
            aq__mapped_remove(g->guard - 1);
            munmap((void *)g->map, g->size);
        } else {
            free((void *)g->map);
        }
    }
    free(g->label);
    free(g);
}

static aq_status gf_finish(aq_gguf *g, aq_gguf **out, aq_error *err)
{
    aq_status st = aq__gguf_parse(g->map, g->size, g->label, g, err);
    if (st != AQ_OK) {
        aq_gguf_free(g);
        return st;
    }
    *out = g;
    return AQ_OK;
}

aq_status aq_gguf_open(const char *path, aq_gguf **out, aq_error *err)
{
    if (path == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_open: NULL argument");
    }
    aq_gguf *g = calloc(1, sizeof *g);
    if (g == NULL || (g->label = aq__strdup(path)) == NULL) {
        free(g);
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
    }
    int fd = -1;
    struct stat sb;
    /* Refuses a FIFO or a device before opening it (a FIFO's open blocks). */
    aq_status st = aq__file_open_read(path, &fd, &sb, err);
    if (st != AQ_OK) {
        /* nothing opened */
    } else if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = aq__error_set(err, AQ_OVERFLOW, "%s: file too large for this platform", path);
    } else if (sb.st_size > 0) {
        void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            st = aq__error_set(err, AQ_IO, "%s: cannot map: %s", path, strerror(errno));
        } else {
            g->map = map;
            g->size = (size_t)sb.st_size;
            g->mapped = 1;
            g->guard = aq__mapped_add(map, g->size, path) + 1;
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    if (st != AQ_OK) {
        aq_gguf_free(g);
        return st;
    }
    return gf_finish(g, out, err);
}

aq_status aq_gguf_open_memory(const void *data, size_t size, const char *label, aq_gguf **out,
                              aq_error *err)
{
    if ((data == NULL && size > 0) || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_open_memory: NULL argument");
    }
    const char *name = label != NULL ? label : "(memory)";
    aq_gguf *g = calloc(1, sizeof *g);
    uint8_t *copy = malloc(size > 0 ? size : 1);
    if (g == NULL || copy == NULL || (g->label = aq__strdup(name)) == NULL) {
        free(g);
        free(copy);
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", name);
    }
    if (size > 0) {
        memcpy(copy, data, size);
    }
    g->map = copy;
    g->size = size;
    return gf_finish(g, out, err);
}

int aq_gguf_is_gguf(const char *path)
{
    /* Only a regular file can be one: a FIFO or a device is left to the caller's own open,
     * which names it (opening a FIFO here would block). */
    int fd = -1;
    if (path == NULL || aq__file_open_read(path, &fd, NULL, NULL) != AQ_OK) {
        return 0;
    }
    char magic[4] = {0};
    ssize_t n;
    do {
        n = read(fd, magic, sizeof magic);
    } while (n < 0 && errno == EINTR);
    close(fd);
    return n == 4 && memcmp(magic, "GGUF", 4) == 0;
}

uint32_t aq_gguf_version(const aq_gguf *g)
{
    return g != NULL ? g->version : 0;
}

size_t aq_gguf_alignment(const aq_gguf *g)
{
    return g != NULL ? g->alignment : 0;
}

size_t aq_gguf_tensor_count(const aq_gguf *g)
{
    return g != NULL ? g->n_tensors : 0;
}

const aq_gguf_tensor *aq_gguf_tensor_at(const aq_gguf *g, size_t i)
{
    return g != NULL && i < g->n_tensors ? &g->tensors[i] : NULL;
}

int aq_gguf_find(const aq_gguf *g, const char *name, size_t *index)
{
    for (size_t i = 0; g != NULL && name != NULL && i < g->n_tensors; i++) {
        if (strcmp(g->tensors[i].name, name) == 0) {
            if (index != NULL) {
                *index = i;
            }
            return 1;
        }
    }
    return 0;
}

size_t aq_gguf_metadata_count(const aq_gguf *g)
{
    return g != NULL ? g->n_meta : 0;
}

aq_status aq_gguf_metadata_get(const aq_gguf *g, size_t i, const char **key, const char **type,
                               const char **value, aq_error *err)
{
    if (g == NULL || i >= g->n_meta) {
        return aq__error_set(
            err, AQ_INVALID_ARGUMENT,
            "aq_gguf_metadata_get: index %zu is not below the %zu metadata entries", i,
            g != NULL ? g->n_meta : (size_t)0);
    }
    const aq__gguf_meta *m = &g->meta[i];
    if (key != NULL) {
        *key = m->key;
    }
    if (type != NULL) {
        *type = aq__gguf_value_type_name(m->type);
    }
    if (value != NULL) {
        *value = m->value;
    }
    return AQ_OK;
}

const char *aq_gguf_metadata_string(const aq_gguf *g, const char *key)
{
    for (size_t i = 0; g != NULL && key != NULL && i < g->n_meta; i++) {
        if (g->meta[i].type == 8 && strcmp(g->meta[i].key, key) == 0) {
            return g->meta[i].value;
        }
    }
    return NULL;
}

aq_status aq_gguf_tensor_dequantize(aq_ctx *ctx, const aq_gguf *g, size_t i, float *out,
                                    size_t out_capacity, aq_error *err)
{
    const aq_gguf_tensor *t = aq_gguf_tensor_at(g, i);
    if (t == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_tensor_dequantize: bad argument");
    }
    if (out_capacity < t->elements) {
        return aq__error_set(err, AQ_BUFFER_TOO_SMALL,
                             "%s: tensor '%s': %zu elements do not fit in %zu", g->label, t->name,
                             t->elements, out_capacity);
    }
    aq_status st = aq_gguf_decode(ctx, t->type, t->data, t->nbytes, t->elements, out, err);
    if (st != AQ_OK) {
        aq__error_prefix(err, "%s: tensor '%s': ", g->label, t->name);
    }
    return st;
}

/* The safetensors dtype tensor t is written as. */
static aq_st_dtype gf_st_dtype(const aq_gguf_tensor *t, aq_st_dtype block_dtype)
{
    switch (t->type) {
    case AQ_GGUF_F32:
        return AQ_ST_F32;
    case AQ_GGUF_F16:
        return AQ_ST_F16;
    case AQ_GGUF_BF16:
        return AQ_ST_BF16;
    default:
        return block_dtype;
    }
}

aq_status aq_gguf_to_safetensors(aq_ctx *ctx, const char *in_path, const char *out_path,
                                 aq_st_dtype out_dtype, aq_error *err)
{
    if (ctx == NULL || in_path == NULL || out_path == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_gguf_to_safetensors: NULL argument");
    }
    if (out_dtype == AQ_ST_UNKNOWN) {
        out_dtype = AQ_ST_F32;
    }
    if (out_dtype != AQ_ST_F32 && out_dtype != AQ_ST_F16 && out_dtype != AQ_ST_BF16) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "output dtype %s: GGUF tensors are restored as F32, F16 or BF16",
                             aq_st_dtype_name(out_dtype));
    }
    aq_gguf *g = NULL;
    aq_st_writer *w = NULL;
    aq_st_spec *specs = NULL;
    const char **keys = NULL, **values = NULL;
    float *buf = NULL;
    uint16_t *half = NULL;
    aq_status st = aq_gguf_open(in_path, &g, err);
    if (st != AQ_OK) {
        goto done;
    }
    specs = calloc(g->n_tensors + 1, sizeof *specs);
    keys = calloc(g->n_meta + 1, sizeof *keys);
    values = calloc(g->n_meta + 1, sizeof *values);
    if (specs == NULL || keys == NULL || values == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", in_path);
        goto done;
    }
    size_t n_meta = 0, largest = 0;
    for (size_t i = 0; i < g->n_meta; i++) {
        if (g->meta[i].type == 8) {
            keys[n_meta] = g->meta[i].key;
            values[n_meta++] = g->meta[i].value;
        }
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        const aq_gguf_tensor *t = &g->tensors[i];
        specs[i].name = t->name;
        specs[i].dtype = gf_st_dtype(t, out_dtype);
        specs[i].shape = t->shape;
        specs[i].ndim = t->ndim;
        specs[i].nbytes = t->elements * aq_st_dtype_size(specs[i].dtype);
        largest = t->elements > largest ? t->elements : largest;
    }
    if ((st = aq_st_writer_open(out_path, specs, g->n_tensors, keys, values, n_meta, &w, err)) !=
        AQ_OK) {
        goto done;
    }
    buf = malloc((largest > 0 ? largest : 1) * sizeof *buf);
    half = out_dtype != AQ_ST_F32 ? malloc((largest > 0 ? largest : 1) * sizeof *half) : NULL;
    if (buf == NULL || (out_dtype != AQ_ST_F32 && half == NULL)) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory for %zu elements", in_path,
                           largest);
        goto done;
    }
    for (size_t i = 0; i < g->n_tensors; i++) {
        const aq_gguf_tensor *t = &g->tensors[i];
        if (t->type == AQ_GGUF_F32 || t->type == AQ_GGUF_F16 || t->type == AQ_GGUF_BF16) {
            /* Little-endian on both sides: the bytes as they are. */
            st = aq_st_writer_write(w, t->data, t->nbytes, err);
        } else if ((st = aq_gguf_tensor_dequantize(ctx, g, i, buf, largest, err)) == AQ_OK) {
            if (out_dtype == AQ_ST_F32) {
                st = aq_st_writer_write(w, buf, t->elements * sizeof *buf, err);
            } else {
                for (size_t k = 0; k < t->elements; k++) {
                    half[k] =
                        out_dtype == AQ_ST_F16 ? aq__f32_to_f16(buf[k]) : aq__f32_to_bf16(buf[k]);
                }
                st = aq_st_writer_write(w, half, t->elements * sizeof *half, err);
            }
        }
        if (st != AQ_OK) {
            goto done;
        }
    }
    st = aq_st_writer_finish(w, err);
done:
    aq_st_writer_free(w);
    free(buf);
    free(half);
    free(specs);
    free(keys);
    free(values);
    aq_gguf_free(g);
    return st;
}
