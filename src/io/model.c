/*
 * Opening a checkpoint: one safetensors file, a sharded checkpoint through its
 * `*.safetensors.index.json`, or a folder (a diffusers pipeline through `model_index.json`,
 * or a single model folder). Every file is mapped and its header validated at open time, so a
 * bad shard is reported before any work starts; the tensors of all files are then listed in
 * one array, in file order.
 */
#include "io_internal.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct model_entry {
    aq_st_tensor pub;
    char *full_name; /* owned, or the file header's own name where there is no component */
    size_t file;     /* index into files */
    size_t offset;   /* absolute offset in the file */
} model_entry;

typedef struct model_component {
    char *name;
    char *file; /* relative file name: "unet/diffusion_pytorch_model.safetensors" */
} model_component;

struct aq_model {
    aq__st_file **files;
    char **comp_of_file; /* component name of each file ("" if none) */
    size_t n_files;
    model_entry *entries;
    size_t n;
    size_t cap;
    char **meta_keys;
    char **meta_values;
    size_t n_meta;
    model_component *comps;
    size_t n_comps;
    size_t data_bytes;
    json_t *meta_seen; /* the metadata keys so far, as a set: a lookup per key */
    char **srcs;       /* every file read: safetensors files, indexes, model_index.json */
    size_t n_srcs;
    model_component *skipped; /* pipeline members without safetensors weights, and why */
    size_t n_skipped;
};

/* Index and model_index.json files larger than this are refused before they are read. */
#define MODEL_MAX_JSON ((size_t)1 << 30)

static aq_status model_add_src(aq_model *m, const char *path, aq_error *err)
{
    char **s = realloc(m->srcs, (m->n_srcs + 1) * sizeof *s);
    if (s == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    m->srcs = s;
    if ((s[m->n_srcs] = aq__strdup(path)) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    m->n_srcs++;
    return AQ_OK;
}

/* A JSON file read through aq__file_read_all (regular files only: a FIFO would block
 * json_load_file), or NULL with jerr filled. */
static json_t *model_load_json(const char *path, json_error_t *jerr, aq_status *st, aq_error *err)
{
    char *buf = NULL;
    size_t len = 0;
    if ((*st = aq__file_read_all(path, MODEL_MAX_JSON, &buf, &len, err)) != AQ_OK) {
        return NULL;
    }
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, jerr);
    free(buf);
    return root;
}

static aq_status model_add_skipped(aq_model *m, const char *name, const char *reason, aq_error *err)
{
    model_component *c = realloc(m->skipped, (m->n_skipped + 1) * sizeof *c);
    if (c == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    m->skipped = c;
    c[m->n_skipped].name = aq__strdup(name);
    c[m->n_skipped].file = aq__strdup(reason);
    m->n_skipped++;
    if (c[m->n_skipped - 1].name == NULL || c[m->n_skipped - 1].file == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    return AQ_OK;
}

static char *model_join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *s = malloc(n);
    if (s != NULL) {
        snprintf(s, n, "%s/%s", a, b);
    }
    return s;
}

static bool model_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s);
    size_t b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int model_is_dir(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static aq_status model_add_meta(aq_model *m, const char *key, const char *value, aq_error *err)
{
    if (m->meta_seen == NULL && (m->meta_seen = json_object()) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    if (json_object_get(m->meta_seen, key) != NULL) {
        return AQ_OK; /* first one wins: the index's metadata, then the first shard's */
    }
    if (json_object_set_new(m->meta_seen, key, json_null()) != 0) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    char **k = realloc(m->meta_keys, (m->n_meta + 1) * sizeof(char *));
    if (k != NULL) {
        m->meta_keys = k;
    }
    char **v = realloc(m->meta_values, (m->n_meta + 1) * sizeof(char *));
    if (v != NULL) {
        m->meta_values = v;
    }
    if (k == NULL || v == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    m->meta_keys[m->n_meta] = aq__strdup(key);
    m->meta_values[m->n_meta] = aq__strdup(value);
    m->n_meta++;
    if (m->meta_keys[m->n_meta - 1] == NULL || m->meta_values[m->n_meta - 1] == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    return AQ_OK;
}

/* Opens one safetensors file and appends its tensors, named prefix + name. */
static aq_status model_add_file(aq_model *m, const char *path, const char *component, aq_error *err)
{
    aq__st_file *f = NULL;
    aq_status st = aq__st_file_open(path, &f, err);
    if (st == AQ_OK && (st = model_add_src(m, path, err)) != AQ_OK) {
        aq__st_file_free(f);
    }
    if (st != AQ_OK) {
        return st;
    }
    aq__st_file **files = realloc(m->files, (m->n_files + 1) * sizeof *files);
    char **comps = realloc(m->comp_of_file, (m->n_files + 1) * sizeof *comps);
    if (files != NULL) {
        m->files = files;
    }
    if (comps != NULL) {
        m->comp_of_file = comps;
    }
    char *comp = aq__strdup(component);
    if (files == NULL || comps == NULL || comp == NULL) {
        free(comp);
        aq__st_file_free(f);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    size_t fi = m->n_files++;
    m->files[fi] = f;
    m->comp_of_file[fi] = comp;
    if (m->n + f->h.n > m->cap) {
        size_t cap = m->cap + m->cap / 2;
        if (cap < m->n + f->h.n) {
            cap = m->n + f->h.n; /* a single large file gets no spare room */
        }
        model_entry *e = realloc(m->entries, cap * sizeof *e);
        if (e == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        m->entries = e;
        m->cap = cap;
    }
    for (size_t i = 0; i < f->h.n; i++) {
        const aq__st_entry *se = &f->h.entries[i];
        model_entry *e = &m->entries[m->n];
        memset(e, 0, sizeof *e);
        if (comp[0] != '\0') {
            e->full_name = model_join(comp, se->name);
        } else {
            e->full_name = se->name;
        }
        if (e->full_name == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        m->n++;
        e->file = fi;
        e->offset = f->h.data_start + se->begin;
        e->pub.name = e->full_name;
        e->pub.dtype = se->dtype;
        e->pub.dtype_name = se->dtype_name;
        e->pub.shape = se->shape;
        e->pub.ndim = se->ndim;
        e->pub.elements = se->elements;
        e->pub.nbytes = se->end - se->begin;
        e->pub.data = f->map != NULL ? f->map + e->offset : NULL;
        e->pub.file = f->path;
        e->pub.component = comp;
        m->data_bytes += e->pub.nbytes;
    }
    for (size_t i = 0; i < f->h.n_meta; i++) {
        if ((st = model_add_meta(m, f->h.meta_keys[i], f->h.meta_values[i], err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

static int model_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A sharded checkpoint: {"metadata": {...}, "weight_map": {tensor: shard file}}. Each shard is
 * opened once, in name order; every tensor the map names must be in the shard it names, and
 * every tensor of a shard must be named in the map. */
static aq_status model_add_index(aq_model *m, const char *path, const char *component,
                                 aq_error *err)
{
    aq_status st = AQ_OK;
    json_error_t jerr;
    char *dir_copy = aq__strdup(path);
    const char **shards = NULL;
    size_t n_shards = 0;
    size_t first_entry = m->n;
    json_t *root = model_load_json(path, &jerr, &st, err);
    if (st != AQ_OK) {
        goto done;
    }
    if (dir_copy == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    if (root == NULL) {
        st = aq__error_set(err, AQ_INVALID_DATA, "%s: cannot read the index: %s (line %d)", path,
                           jerr.text, jerr.line);
        goto done;
    }
    if ((st = model_add_src(m, path, err)) != AQ_OK) {
        goto done;
    }
    char *slash = strrchr(dir_copy, '/');
    const char *dir = ".";
    if (slash != NULL) {
        *slash = '\0';
        dir = dir_copy[0] != '\0' ? dir_copy : "/";
    }
    json_t *wmap = json_object_get(root, "weight_map");
    if (!json_is_object(root) || !json_is_object(wmap)) {
        st = aq__error_set(err, AQ_INVALID_DATA, "%s: index has no \"weight_map\" object", path);
        goto done;
    }
    if (json_object_size(wmap) == 0) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: the index's \"weight_map\" is empty: it names no tensor", path);
        goto done;
    }
    json_t *meta = json_object_get(root, "metadata");
    if (json_is_object(meta)) {
        const char *k;
        json_t *v;
        json_object_foreach(meta, k, v)
        {
            /* Only string values are metadata in the safetensors sense; total_size is a
             * number and is recomputed anyway. */
            if (json_is_string(v) &&
                (st = model_add_meta(m, k, json_string_value(v), err)) != AQ_OK) {
                goto done;
            }
        }
    }
    shards = calloc(json_object_size(wmap) + 1, sizeof *shards);
    if (shards == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    const char *tname;
    json_t *sv;
    json_object_foreach(wmap, tname, sv)
    {
        const char *s = json_string_value(sv);
        if (s == NULL || s[0] == '\0' || strchr(s, '/') != NULL) {
            st = aq__error_set(err, AQ_INVALID_DATA,
                               "%s: weight_map entry '%s' is not a shard file name", path, tname);
            goto done;
        }
        shards[n_shards++] = s;
    }
    /* Unique shard names: sorted, then adjacent duplicates dropped (no quadratic scan). */
    qsort(shards, n_shards, sizeof *shards, model_cmp_str);
    size_t uniq = 0;
    for (size_t i = 0; i < n_shards; i++) {
        if (uniq == 0 || strcmp(shards[uniq - 1], shards[i]) != 0) {
            shards[uniq++] = shards[i];
        }
    }
    n_shards = uniq;
    /* Every shard must be there before any is opened. */
    for (size_t i = 0; i < n_shards; i++) {
        char *sp = model_join(dir, shards[i]);
        if (sp == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        struct stat sb;
        int missing = stat(sp, &sb) != 0;
        int saved = errno;
        free(sp);
        if (missing) {
            st = aq__error_set(err, AQ_IO, "%s: the index names shard '%s', which is missing (%s)",
                               path, shards[i], strerror(saved));
            goto done;
        }
    }
    for (size_t i = 0; i < n_shards; i++) {
        char *sp = model_join(dir, shards[i]);
        if (sp == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        size_t before = m->n;
        st = model_add_file(m, sp, component, err);
        free(sp);
        if (st != AQ_OK) {
            goto done;
        }
        /* Every tensor of the shard must be mapped to this shard. */
        for (size_t j = before; j < m->n; j++) {
            const char *short_name = m->files[m->entries[j].file]->h.entries[j - before].name;
            const char *want = json_string_value(json_object_get(wmap, short_name));
            if (want == NULL || strcmp(want, shards[i]) != 0) {
                st = aq__error_set(
                    err, AQ_INVALID_DATA,
                    "%s: shard '%s' holds tensor '%s', which the index maps to %s%s%s", path,
                    shards[i], short_name, want ? "'" : "", want ? want : "no shard",
                    want ? "'" : "");
                goto done;
            }
        }
    }
    if (m->n - first_entry != json_object_size(wmap)) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: the index names %zu tensors but its shards hold %zu", path,
                           json_object_size(wmap), m->n - first_entry);
        goto done;
    }
done:
    json_decref(root);
    free(shards);
    free(dir_copy);
    return st;
}

/* The weights file of one model folder: an index if there is one, else the one safetensors
 * file. Names without a variant ("x.safetensors") win over a variant ("x.fp16.safetensors"),
 * which is used when it is the only one. *found is false when the folder holds no weights. */
static aq_status model_add_folder(aq_model *m, const char *dir, const char *component, bool *found,
                                  aq_error *err)
{
    aq_status st = AQ_OK;
    char *best[4] = {NULL, NULL, NULL, NULL}; /* index, index variant, file, file variant */
    int count[4] = {0, 0, 0, 0};
    DIR *d = opendir(dir);
    *found = false;
    if (d == NULL) {
        return aq__error_set(err, AQ_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        int kind;
        size_t stem;
        if (model_ends_with(n, ".safetensors.index.json")) {
            kind = 0;
            stem = strlen(n) - strlen(".safetensors.index.json");
        } else if (model_ends_with(n, ".safetensors")) {
            kind = 2;
            stem = strlen(n) - strlen(".safetensors");
        } else {
            continue;
        }
        if (n[0] == '.') {
            continue; /* hidden files, our own temporary files */
        }
        if (memchr(n, '.', stem) != NULL) {
            kind++; /* a variant: "name.fp16" */
        }
        if (kind >= 2 && (strstr(n, "-of-") != NULL)) {
            continue; /* a shard: reached through its index */
        }
        count[kind]++;
        if (best[kind] == NULL || strcmp(n, best[kind]) < 0) {
            free(best[kind]);
            if ((best[kind] = aq__strdup(n)) == NULL) {
                st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
                goto done;
            }
        }
    }
    for (int kind = 0; kind < 4; kind++) {
        if (best[kind] == NULL) {
            continue;
        }
        if (count[kind] > 1 && (kind == 0 || kind == 2)) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                               "%s: %d candidate weight files (e.g. '%s'): name one of them", dir,
                               count[kind], best[kind]);
            goto done;
        }
        char *p = model_join(dir, best[kind]);
        if (p == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        st =
            kind < 2 ? model_add_index(m, p, component, err) : model_add_file(m, p, component, err);
        free(p);
        if (st == AQ_OK && component[0] != '\0') {
            model_component *c = realloc(m->comps, (m->n_comps + 1) * sizeof *c);
            if (c == NULL) {
                st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
                goto done;
            }
            m->comps = c;
            c[m->n_comps].name = aq__strdup(component);
            c[m->n_comps].file = model_join(component, best[kind]);
            m->n_comps++;
        }
        *found = st == AQ_OK;
        goto done;
    }
done:
    closedir(d);
    for (int i = 0; i < 4; i++) {
        free(best[i]);
    }
    return st;
}

/* Why a component folder gave no weights: what it holds instead. */
static const char *model_no_weights_reason(const char *dir)
{
    static const char *const other[] = {".bin", ".pt", ".pth", ".ckpt", ".gguf", ".onnx"};
    DIR *d = opendir(dir);
    if (d == NULL) {
        return "folder cannot be read";
    }
    const char *why = "empty folder";
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        if (n[0] == '.') {
            continue;
        }
        if (model_ends_with(n, ".safetensors")) {
            closedir(d);
            return "safetensors shards without their index (*.safetensors.index.json)";
        }
        for (size_t k = 0; k < sizeof other / sizeof other[0]; k++) {
            if (model_ends_with(n, other[k])) {
                closedir(d);
                return "weights only in a format other than safetensors (e.g. "
                       "pytorch_model.bin)";
            }
        }
        why = "no weight files (configuration only)";
    }
    closedir(d);
    return why;
}

/* A diffusers pipeline: every member of model_index.json that names a library and a class,
 * and whose folder holds weights, is a component. */
static aq_status model_add_pipeline(aq_model *m, const char *dir, const char *index, aq_error *err)
{
    aq_status st = AQ_OK;
    json_error_t jerr;
    const char **names = NULL;
    size_t n = 0;
    json_t *root = model_load_json(index, &jerr, &st, err);
    if (st != AQ_OK) {
        goto done;
    }
    if ((st = model_add_src(m, index, err)) != AQ_OK) {
        goto done;
    }
    if (root == NULL || !json_is_object(root)) {
        st = aq__error_set(err, AQ_INVALID_DATA, "%s: not a diffusers model index: %s", index,
                           root == NULL ? jerr.text : "not a JSON object");
        goto done;
    }
    names = calloc(json_object_size(root) + 1, sizeof *names);
    if (names == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    const char *k;
    json_t *v;
    json_object_foreach(root, k, v)
    {
        if (k[0] == '_' || !json_is_array(v) || json_array_size(v) != 2 ||
            !json_is_string(json_array_get(v, 1)) || strchr(k, '/') != NULL ||
            strcmp(k, "..") == 0 || strcmp(k, ".") == 0) {
            continue;
        }
        names[n++] = k;
    }
    qsort(names, n, sizeof *names, model_cmp_str);
    size_t with_weights = 0;
    for (size_t i = 0; i < n; i++) {
        char *sub = model_join(dir, names[i]);
        if (sub == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        bool found = false;
        bool is_dir = model_is_dir(sub);
        if (is_dir) {
            st = model_add_folder(m, sub, names[i], &found, err);
        }
        if (st == AQ_OK && !found) {
            st = model_add_skipped(m, names[i], is_dir ? model_no_weights_reason(sub) : "no folder",
                                   err);
        }
        free(sub);
        if (st != AQ_OK) {
            goto done;
        }
        with_weights += found;
    }
    if (with_weights == 0) {
        st = aq__error_set(err, AQ_INVALID_DATA,
                           "%s: no component folder of this pipeline holds safetensors weights",
                           dir);
    }
done:
    json_decref(root);
    free(names);
    return st;
}

aq_status aq_model_open(const char *path, aq_model **out, aq_error *err)
{
    if (path == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_open: NULL argument");
    }
    aq_status st = AQ_OK;
    char *index = NULL;
    aq_model *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = aq__error_set(err, AQ_IO, "%s: %s", path, strerror(errno));
        goto done;
    }
    if (S_ISDIR(sb.st_mode)) {
        if ((index = model_join(path, "model_index.json")) == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        if (stat(index, &sb) == 0) {
            st = model_add_pipeline(m, path, index, err);
        } else {
            bool found;
            st = model_add_folder(m, path, "", &found, err);
            if (st == AQ_OK && !found) {
                st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                                   "%s: no safetensors file, index or model_index.json here", path);
            }
        }
    } else if (model_ends_with(path, ".json")) {
        st = model_add_index(m, path, "", err);
    } else {
        st = model_add_file(m, path, "", err);
    }
    if (st == AQ_OK) {
        /* Names must be unique over the whole model (shards, components). */
        for (size_t i = 0; i < m->n && st == AQ_OK; i++) {
            for (size_t j = i + 1; j < m->n; j++) {
                if (strcmp(m->entries[i].full_name, m->entries[j].full_name) == 0) {
                    st = aq__error_set(
                        err, AQ_INVALID_DATA, "%s: tensor '%s' appears twice (%s and %s)", path,
                        m->entries[i].full_name, m->entries[i].pub.file, m->entries[j].pub.file);
                    break;
                }
            }
            if (m->n > 4096) {
                break; /* checked below with a sort instead */
            }
        }
    }
    if (st == AQ_OK && m->n > 4096) {
        const char **names = malloc(m->n * sizeof *names);
        if (names == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < m->n; i++) {
            names[i] = m->entries[i].full_name;
        }
        qsort(names, m->n, sizeof *names, model_cmp_str);
        for (size_t i = 1; i < m->n; i++) {
            if (strcmp(names[i - 1], names[i]) == 0) {
                st = aq__error_set(err, AQ_INVALID_DATA, "%s: tensor '%s' appears twice", path,
                                   names[i]);
                break;
            }
        }
        free(names);
    }
    if (st == AQ_OK) {
        *out = m;
        m = NULL;
    }
done:
    free(index);
    aq_model_free(m);
    return st;
}

void aq_model_free(aq_model *m)
{
    if (m == NULL) {
        return;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (m->comp_of_file[m->entries[i].file][0] != '\0') {
            free(m->entries[i].full_name);
        }
    }
    free(m->entries);
    for (size_t i = 0; i < m->n_files; i++) {
        aq__st_file_free(m->files[i]);
        free(m->comp_of_file[i]);
    }
    free(m->files);
    free(m->comp_of_file);
    for (size_t i = 0; i < m->n_meta; i++) {
        free(m->meta_keys[i]);
        free(m->meta_values[i]);
    }
    free(m->meta_keys);
    free(m->meta_values);
    for (size_t i = 0; i < m->n_comps; i++) {
        free(m->comps[i].name);
        free(m->comps[i].file);
    }
    free(m->comps);
    for (size_t i = 0; i < m->n_skipped; i++) {
        free(m->skipped[i].name);
        free(m->skipped[i].file);
    }
    free(m->skipped);
    for (size_t i = 0; i < m->n_srcs; i++) {
        free(m->srcs[i]);
    }
    free(m->srcs);
    json_decref(m->meta_seen);
    free(m);
}

size_t aq_model_count(const aq_model *m)
{
    return m != NULL ? m->n : 0;
}

const aq_st_tensor *aq_model_tensor(const aq_model *m, size_t i)
{
    return m != NULL && i < m->n ? &m->entries[i].pub : NULL;
}

int aq_model_find(const aq_model *m, const char *name, size_t *index)
{
    if (m == NULL || name == NULL) {
        return -1;
    }
    for (size_t i = 0; i < m->n; i++) {
        if (strcmp(m->entries[i].full_name, name) == 0) {
            if (index != NULL) {
                *index = i;
            }
            return 0;
        }
    }
    return -1;
}

aq_status aq_model_tensor_view(const aq_model *m, size_t i, aq_tensor *out, aq_error *err)
{
    if (m == NULL || out == NULL || i >= m->n) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_tensor_view: bad argument");
    }
    const aq_st_tensor *t = &m->entries[i].pub;
    aq_dtype d;
    if (!aq_st_dtype_to_aq(t->dtype, &d)) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "tensor '%s' has dtype %s, which cannot be quantized (F32, F16, "
                             "BF16 and F64 can)",
                             t->name, t->dtype_name);
    }
    out->name = t->name;
    out->dtype = d;
    out->data = t->data;
    out->shape = t->shape;
    out->ndim = t->ndim;
    return AQ_OK;
}

void aq_model_release(aq_model *m, size_t i)
{
    if (m == NULL || i >= m->n) {
        return;
    }
    const model_entry *e = &m->entries[i];
    aq__st_file_release(m->files[e->file], e->offset, e->pub.nbytes);
}

size_t aq_model_metadata_count(const aq_model *m)
{
    return m != NULL ? m->n_meta : 0;
}

aq_status aq_model_metadata_get(const aq_model *m, size_t i, const char **key, const char **value,
                                aq_error *err)
{
    if (m == NULL || i >= m->n_meta) {
        return aq__error_set(
            err, AQ_INVALID_ARGUMENT,
            "aq_model_metadata_get: index %zu is not below the %zu metadata entries", i,
            m != NULL ? m->n_meta : (size_t)0);
    }
    if (key != NULL) {
        *key = m->meta_keys[i];
    }
    if (value != NULL) {
        *value = m->meta_values[i];
    }
    return AQ_OK;
}

size_t aq_model_component_count(const aq_model *m)
{
    return m != NULL ? m->n_comps : 0;
}

aq_status aq_model_component_get(const aq_model *m, size_t i, const char **name, const char **file,
                                 aq_error *err)
{
    if (m == NULL || i >= m->n_comps) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_component_get: index %zu is not below the %zu components", i,
                             m != NULL ? m->n_comps : (size_t)0);
    }
    if (name != NULL) {
        *name = m->comps[i].name;
    }
    if (file != NULL) {
        *file = m->comps[i].file;
    }
    return AQ_OK;
}

size_t aq_model_skipped_count(const aq_model *m)
{
    return m != NULL ? m->n_skipped : 0;
}

aq_status aq_model_skipped_get(const aq_model *m, size_t i, const char **name, const char **reason,
                               aq_error *err)
{
    if (m == NULL || i >= m->n_skipped) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_skipped_get: index %zu is not below the %zu skipped members",
                             i, m != NULL ? m->n_skipped : (size_t)0);
    }
    if (name != NULL) {
        *name = m->skipped[i].name;
    }
    if (reason != NULL) {
        *reason = m->skipped[i].file;
    }
    return AQ_OK;
}

aq_status aq__io_model_check_output(const aq_model *m, const char *out, aq_error *err)
{
    return aq__io_check_output(out, (const char *const *)m->srcs, m->n_srcs, err);
}

size_t aq_model_data_bytes(const aq_model *m)
{
    return m != NULL ? m->data_bytes : 0;
}

aq_status aq__io_model_meta_json(const aq_model *m, char **meta, char **components, aq_error *err)
{
    json_t *a = json_object();
    json_t *b = json_object();
    char *sa = NULL;
    char *sb = NULL;
    aq_status st = AQ_OK;
    if (a == NULL || b == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < m->n_meta; i++) {
        json_object_set_new(a, m->meta_keys[i], json_string(m->meta_values[i]));
    }
    for (size_t i = 0; i < m->n_comps; i++) {
        json_object_set_new(b, m->comps[i].name, json_string(m->comps[i].file));
    }
    sa = json_dumps(a, JSON_COMPACT);
    sb = json_dumps(b, JSON_COMPACT);
    if (sa == NULL || sb == NULL) {
        free(sa);
        free(sb);
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    *meta = sa;
    *components = sb;
done:
    json_decref(a);
    json_decref(b);
    return st;
}
