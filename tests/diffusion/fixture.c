#include "fixture.h"

#include "aq_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *fx_read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = (len + 4096 + 1) * 2;
            char *grown = realloc(buf, cap);
            if (grown == NULL) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = grown;
        }
        size_t got = fread(buf + len, 1, 4096, f);
        len += got;
        if (got < 4096) {
            break;
        }
    }
    fclose(f);
    buf[len] = '\0';
    return buf;
}

/* The string value after `"key":` starting the search at p; *end after the closing quote. */
static char *fx_string_after(const char *p, const char *key, const char **end)
{
    const char *k = strstr(p, key);
    if (k == NULL) {
        return NULL;
    }
    const char *q = strchr(k + strlen(key), '"');
    if (q == NULL) {
        return NULL;
    }
    const char *e = strchr(q + 1, '"');
    if (e == NULL) {
        return NULL;
    }
    size_t n = (size_t)(e - q - 1);
    char *s = malloc(n + 1);
    if (s != NULL) {
        memcpy(s, q + 1, n);
        s[n] = '\0';
    }
    *end = e + 1;
    return s;
}

int fx_load(const char *stem, fx_model *out)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/diffusion/%s.json", aq_test_data_dir(), stem);
    char *text = fx_read_file(path);
    if (text == NULL) {
        fprintf(stderr, "cannot read %s\n", path);
        return -1;
    }
    memset(out, 0, sizeof *out);
    size_t cap = 0;
    const char *p = strstr(text, "\"tensors\"");
    while (p != NULL) {
        const char *after;
        char *name = fx_string_after(p, "\"name\"", &after);
        if (name == NULL) {
            break;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            out->tensors = realloc(out->tensors, cap * sizeof *out->tensors);
        }
        fx_tensor *t = &out->tensors[out->n++];
        memset(t, 0, sizeof *t);
        t->name = name;
        const char *sh = strchr(strstr(after, "\"shape\""), '[');
        for (sh++; *sh != ']';) {
            char *e;
            long long v = strtoll(sh, &e, 10);
            if (e == sh) {
                sh++;
                continue;
            }
            t->shape[t->ndim++] = (int64_t)v;
            sh = e;
        }
        char *dtype = fx_string_after(sh, "\"dtype\"", &p);
        t->dtype = strcmp(dtype, "f16") == 0    ? AQ_DTYPE_F16
                   : strcmp(dtype, "bf16") == 0 ? AQ_DTYPE_BF16
                   : strcmp(dtype, "f64") == 0  ? AQ_DTYPE_F64
                                                : AQ_DTYPE_F32;
        free(dtype);
    }
    free(text);
    out->names = malloc((out->n ? out->n : 1) * sizeof *out->names);
    for (size_t i = 0; i < out->n; i++) {
        out->names[i] = out->tensors[i].name;
    }
    return out->n > 0 ? 0 : -1;
}

void fx_free(fx_model *m)
{
    for (size_t i = 0; i < m->n; i++) {
        free(m->tensors[i].name);
    }
    free(m->tensors);
    free(m->names);
    memset(m, 0, sizeof *m);
}

long fx_find(const fx_model *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->tensors[i].name, name) == 0) {
            return (long)i;
        }
    }
    return -1;
}
