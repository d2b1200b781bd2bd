/*
 * The model pipeline's plan (docs/pipeline.md, "Plan, execute, write"): its accessors, its
 * serialised form (what a distributed driver sends to the workers) and the check that a plan
 * belongs to a model.
 *
 * The serialised plan is little-endian: "AQPLAN\x02\n", the model-wide fields, one record per
 * tensor, then the XXH64 of every byte before it. Strings are a u32 length and the bytes
 * (0xFFFFFFFF: none). A GGUF plan adds its own model-wide fields and, per tensor, its type,
 * reason and size.
 */
#include "model_plan.h"
#include "io_internal.h"

#include <stdlib.h>
#include <string.h>

static const char plan_magic[8] = {'A', 'Q', 'P', 'L', 'A', 'N', 2, '\n'};
#define PLAN_NO_STRING 0xFFFFFFFFu

aq_status aq__model_plan_alloc(size_t n, aq_model_plan **out, aq_error *err)
{
    aq_model_plan *p = calloc(1, sizeof *p);
    if (p != NULL) {
        p->t = calloc(n > 0 ? n : 1, sizeof *p->t);
    }
    if (p == NULL || p->t == NULL) {
        free(p);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory for a plan of %zu tensors", n);
    }
    p->n = n;
    *out = p;
    return AQ_OK;
}

void aq_model_plan_free(aq_model_plan *plan)
{
    if (plan == NULL) {
        return;
    }
    for (size_t i = 0; i < plan->n; i++) {
        free(plan->t[i].name);
        free(plan->t[i].dtype_name);
        free(plan->t[i].shape);
    }
    free(plan->t);
    free(plan->profile);
    free(plan->model_meta);
    free(plan->components);
    free(plan->arch);
    free(plan->gguf_name);
    for (size_t i = 0; i < plan->n_meta; i++) {
        free(plan->meta_keys[i]);
        free(plan->meta_values[i]);
    }
    free(plan->meta_keys);
    free(plan->meta_values);
    free(plan);
}

size_t aq_model_plan_count(const aq_model_plan *plan)
{
    return plan != NULL ? plan->n : 0;
}

bool aq__model_plan_dup(char **out, const char *str)
{
    *out = aq__strdup(str);
    return str == NULL || *out != NULL;
}

aq_status aq__model_plan_tensors(aq_model_plan *plan, const aq_model *model, aq_error *err)
{
    for (size_t i = 0; i < plan->n; i++) {
        const aq_st_tensor *t = aq_model_tensor(model, i);
        aq__plan_tensor *e = &plan->t[i];
        e->ndim = t->ndim;
        e->elements = t->elements;
        e->nbytes = t->nbytes;
        e->shape = malloc((t->ndim > 0 ? t->ndim : 1) * sizeof *e->shape);
        if (e->shape == NULL || !aq__model_plan_dup(&e->name, t->name) ||
            !aq__model_plan_dup(&e->dtype_name, t->dtype_name)) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory for a plan");
        }
        if (t->ndim > 0) {
            memcpy(e->shape, t->shape, t->ndim * sizeof *e->shape);
        }
    }
    return AQ_OK;
}

size_t aq__model_plan_kept_bytes(const aq__plan_tensor *t)
{
    aq_st_dtype d = aq_st_dtype_from_name(t->dtype_name);
    if (d == AQ_ST_BF16 || d == AQ_ST_F64) {
        return t->elements * 4;
    }
    return t->nbytes;
}

aq_status aq_model_plan_tensor_get(const aq_model_plan *plan, size_t i, aq_model_plan_tensor *out,
                                   aq_error *err)
{
    /* The struct as first released ends at `rule`; later fields are filled when the caller's
     * struct has them. */
    if (plan == NULL || out == NULL || out->size < AQ__SIZE_UPTO(aq_model_plan_tensor, rule)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_plan_tensor_get: NULL argument or size not set");
    }
    if (i >= plan->n) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_plan_tensor_get: tensor %zu of a plan of %zu", i, plan->n);
    }
    const aq__plan_tensor *t = &plan->t[i];
    out->name = t->name;
    out->source_dtype = t->dtype_name;
    out->kept = t->kept;
    out->scheme = t->scheme;
    out->bit_width = t->bits;
    out->group_size = t->group_size;
    out->floor_may_raise = !t->kept && !t->fixed && plan->min_cosine > 0.0;
    out->elements = t->elements;
    out->source_bytes = t->nbytes;
    out->rule = t->rule;
    if (out->size >= AQ__SIZE_UPTO(aq_model_plan_tensor, gguf_bytes)) {
        const bool gguf = plan->format == AQ__PLAN_GGUF;
        out->gguf_type = gguf ? (int)t->gguf_type : -1;
        out->gguf_reason = gguf ? t->reason : NULL;
        out->gguf_bytes = gguf ? t->gguf_bytes : 0;
    }
    return AQ_OK;
}

/* ---- serialising ---- */

typedef struct plan_buf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} plan_buf;

static void pb_put(plan_buf *b, const void *data, size_t n)
{
    if (b->oom) {
        return;
    }
    if (n > b->cap - b->len) {
        size_t cap = b->cap > 0 ? b->cap : 256;
        while (n > cap - b->len) {
            cap *= 2;
        }
        uint8_t *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

/* Integers little-endian, whatever the host. */
static void pb_u64(plan_buf *b, uint64_t v)
{
    uint8_t x[8];
    for (int k = 0; k < 8; k++) {
        x[k] = (uint8_t)(v >> (8 * k));
    }
    pb_put(b, x, 8);
}

static void pb_u32(plan_buf *b, uint32_t v)
{
    uint8_t x[4];
    for (int k = 0; k < 4; k++) {
        x[k] = (uint8_t)(v >> (8 * k));
    }
    pb_put(b, x, 4);
}

static void pb_f64(plan_buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, 8);
    pb_u64(b, u);
}

static void pb_str(plan_buf *b, const char *s)
{
    if (s == NULL) {
        pb_u32(b, PLAN_NO_STRING);
        return;
    }
    size_t n = strlen(s);
    pb_u32(b, (uint32_t)n);
    pb_put(b, s, n);
}

aq_status aq_model_plan_serialize(const aq_model_plan *plan, void **out, size_t *out_len,
                                  aq_error *err)
{
    if (plan == NULL || out == NULL || out_len == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_plan_serialize: NULL argument");
    }
    plan_buf b = {NULL, 0, 0, false};
    pb_put(&b, plan_magic, sizeof plan_magic);
    pb_u64(&b, plan->n);
    pb_u32(&b, plan->ctx_bits);
    pb_u64(&b, plan->ctx_group);
    pb_u32(&b, (uint32_t)plan->ctx_scheme);
    pb_u32(&b, (uint32_t)plan->preserve_moments);
    pb_f64(&b, plan->min_cosine);
    pb_f64(&b, plan->recorded_floor);
    pb_u32(&b, (uint32_t)plan->large);
    pb_u64(&b, plan->batch_bytes);
    pb_u32(&b, (uint32_t)plan->compression);
    pb_u32(&b, (uint32_t)plan->calibrated);
    pb_str(&b, plan->profile);
    pb_str(&b, plan->model_meta);
    pb_str(&b, plan->components);
    pb_u32(&b, (uint32_t)plan->format);
    if (plan->format == AQ__PLAN_GGUF) {
        pb_u32(&b, plan->gguf_type);
        pb_u32(&b, (uint32_t)plan->gguf_search);
        pb_str(&b, plan->arch);
        pb_str(&b, plan->gguf_name);
        pb_u64(&b, plan->n_meta);
        for (size_t i = 0; i < plan->n_meta; i++) {
            pb_str(&b, plan->meta_keys[i]);
            pb_str(&b, plan->meta_values[i]);
        }
    }
    for (size_t i = 0; i < plan->n; i++) {
        const aq__plan_tensor *t = &plan->t[i];
        pb_str(&b, t->name);
        pb_str(&b, t->dtype_name);
        pb_u32(&b, (uint32_t)t->ndim);
        for (size_t d = 0; d < t->ndim; d++) {
            pb_u64(&b, (uint64_t)t->shape[d]);
        }
        pb_u64(&b, t->elements);
        pb_u64(&b, t->nbytes);
        pb_u32(&b, (uint32_t)t->kept);
        pb_u32(&b, (uint32_t)t->fixed);
        pb_u32(&b, (uint32_t)t->scheme);
        pb_u32(&b, t->bits);
        pb_u64(&b, t->group_size);
        pb_str(&b, t->rule);
        if (plan->format == AQ__PLAN_GGUF) {
            pb_u32(&b, t->gguf_type);
            pb_str(&b, t->reason);
            pb_u64(&b, t->gguf_bytes);
        }
    }
    if (!b.oom) {
        pb_u64(&b, aq__xxh64(b.p, b.len, 0));
    }
    if (b.oom) {
        free(b.p);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory serialising a plan");
    }
    *out = b.p;
    *out_len = b.len;
    return AQ_OK;
}

void aq_model_plan_bytes_free(void *bytes)
{
    free(bytes);
}

/* ---- reading it back ---- */

typedef struct plan_rd {
    const uint8_t *p;
    size_t len, pos;
    aq_status st;
    aq_error *err;
} plan_rd;

static bool pr_take(plan_rd *r, size_t n, const char *what, const uint8_t **at)
{
    if (r->st != AQ_OK) {
        return false;
    }
    if (n > r->len - r->pos) {
        r->st = aq__error_set(r->err, AQ_INVALID_DATA,
                              "plan: truncated at byte %zu reading %s (%zu bytes needed, %zu left)",
                              r->pos, what, n, r->len - r->pos);
        return false;
    }
    *at = r->p + r->pos;
    r->pos += n;
    return true;
}

static uint64_t pr_u64(plan_rd *r, const char *what)
{
    const uint8_t *x;
    uint64_t v = 0;
    if (pr_take(r, 8, what, &x)) {
        for (int k = 0; k < 8; k++) {
            v |= (uint64_t)x[k] << (8 * k);
        }
    }
    return v;
}

static uint32_t pr_u32(plan_rd *r, const char *what)
{
    const uint8_t *x;
    uint32_t v = 0;
    if (pr_take(r, 4, what, &x)) {
        for (int k = 0; k < 4; k++) {
            v |= (uint32_t)x[k] << (8 * k);
        }
    }
    return v;
}

static double pr_f64(plan_rd *r, const char *what)
{
    uint64_t u = pr_u64(r, what);
    double v;
    memcpy(&v, &u, 8);
    return v;
}

/* A new string (NULL for none, or on error). */
static char *pr_str(plan_rd *r, const char *what)
{
    size_t at = r->pos;
    uint32_t n = pr_u32(r, what);
    const uint8_t *x;
    if (r->st != AQ_OK || n == PLAN_NO_STRING || !pr_take(r, n, what, &x)) {
        return NULL;
    }
    if (memchr(x, 0, n) != NULL) {
        r->st = aq__error_set(r->err, AQ_INVALID_DATA, "plan: %s at byte %zu holds a NUL byte",
                              what, at);
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (s == NULL) {
        r->st = aq__error_set(r->err, AQ_NO_MEMORY, "out of memory reading a plan");
        return NULL;
    }
    memcpy(s, x, n);
    s[n] = '\0';
    return s;
}

/* A static copy of rule or reason name s (the plan's strings outlive no caller's results),
 * or NULL when s is not one. */
static const char *pr_static_name(const char *s)
{
    static const char *const others[] = {"not float", "type", "1-D", "block", "range"};
    for (size_t k = 0; k < sizeof others / sizeof others[0]; k++) {
        if (strcmp(s, others[k]) == 0) {
            return others[k];
        }
    }
    for (int k = 0; k < AQ_RULE_COUNT; k++) {
        if (strcmp(s, aq_rule_name((aq_rule)k)) == 0) {
            return aq_rule_name((aq_rule)k);
        }
    }
    return NULL;
}

/* A rule or reason read as one of the static names. */
static const char *pr_name(plan_rd *r, size_t i, const char *what)
{
    char *s = pr_str(r, what);
    if (s == NULL) {
        return NULL;
    }
    const char *name = pr_static_name(s);
    if (name == NULL) {
        r->st =
            aq__error_set(r->err, AQ_INVALID_DATA, "plan: tensor %zu: unknown %s '%s'", i, what, s);
    }
    free(s);
    return name;
}

/* The GGUF fields of tensor i (a GGUF plan's). */
static aq_status pr_gguf_tensor(plan_rd *r, size_t i, size_t at, aq__plan_tensor *t)
{
    t->gguf_type = pr_u32(r, "a tensor's GGUF type");
    t->reason = pr_name(r, i, "reason");
    t->gguf_bytes = (size_t)pr_u64(r, "a tensor's GGUF size");
    if (r->st == AQ_OK && (t->reason == NULL || !aq__gguf_plan_tensor_ok(t))) {
        r->st = aq__error_set(r->err, AQ_INVALID_DATA,
                              "plan: tensor %zu ('%s') at byte %zu: GGUF type %u of %zu bytes "
                              "for %zu elements is not a decision the planner makes",
                              i, t->name, at, (unsigned)t->gguf_type, t->gguf_bytes, t->elements);
    }
    return r->st;
}

static aq_status pr_tensor(plan_rd *r, const aq_model_plan *plan, size_t i, aq__plan_tensor *t)
{
    size_t at = r->pos;
    t->name = pr_str(r, "a tensor's name");
    t->dtype_name = pr_str(r, "a tensor's dtype");
    uint32_t ndim = pr_u32(r, "a tensor's rank");
    if (r->st == AQ_OK && (t->name == NULL || t->dtype_name == NULL || ndim > 64)) {
        return r->st = aq__error_set(r->err, AQ_INVALID_DATA, "plan: tensor %zu at byte %zu: %s", i,
                                     at, ndim > 64 ? "rank above 64" : "no name or dtype");
    }
    t->ndim = ndim;
    if (r->st == AQ_OK && (t->shape = calloc(ndim > 0 ? ndim : 1, sizeof *t->shape)) == NULL) {
        return r->st = aq__error_set(r->err, AQ_NO_MEMORY, "out of memory reading a plan");
    }
    for (size_t d = 0; d < ndim && r->st == AQ_OK; d++) {
        t->shape[d] = (int64_t)pr_u64(r, "a tensor's shape");
    }
    t->elements = (size_t)pr_u64(r, "a tensor's element count");
    t->nbytes = (size_t)pr_u64(r, "a tensor's size");
    t->kept = (int)pr_u32(r, "a tensor's kept flag");
    t->fixed = (int)pr_u32(r, "a tensor's fixed flag");
    uint32_t scheme = pr_u32(r, "a tensor's scheme");
    t->scheme = (aq_scheme)scheme;
    t->bits = pr_u32(r, "a tensor's bit width");
    t->group_size = (size_t)pr_u64(r, "a tensor's group size");
    t->rule = pr_name(r, i, "rule");
    if (plan->format == AQ__PLAN_GGUF) {
        return pr_gguf_tensor(r, i, at, t);
    }
    if (r->st == AQ_OK && (t->kept > 1 || t->fixed > 1 || scheme >= AQ_SCHEME_COUNT ||
                           (!t->kept && t->bits != 2 && t->bits != 4 && t->bits != 8))) {
        r->st = aq__error_set(r->err, AQ_INVALID_DATA,
                              "plan: tensor %zu ('%s') at byte %zu: kept %d, scheme %u, bits %u "
                              "is not a decision the planner makes",
                              i, t->name, at, t->kept, scheme, t->bits);
    }
    return r->st;
}

/* A GGUF plan's model-wide fields. */
static aq_status pr_gguf_fields(plan_rd *r, aq_model_plan *plan)
{
    plan->gguf_type = pr_u32(r, "the GGUF type");
    plan->gguf_search = (int)pr_u32(r, "gguf_search");
    plan->arch = pr_str(r, "general.architecture");
    plan->gguf_name = pr_str(r, "general.name");
    uint64_t n_meta = pr_u64(r, "the metadata count");
    if (r->st == AQ_OK && n_meta > (r->len - r->pos) / 8) {
        return r->st = aq__error_set(r->err, AQ_INVALID_DATA,
                                     "plan: %llu metadata entries cannot fit in %zu bytes",
                                     (unsigned long long)n_meta, r->len - r->pos);
    }
    if (r->st == AQ_OK && n_meta > 0 &&
        ((plan->meta_keys = calloc((size_t)n_meta, sizeof(char *))) == NULL ||
         (plan->meta_values = calloc((size_t)n_meta, sizeof(char *))) == NULL)) {
        return r->st = aq__error_set(r->err, AQ_NO_MEMORY, "out of memory reading a plan");
    }
    for (size_t k = 0; k < n_meta && r->st == AQ_OK; k++) {
        plan->n_meta = k + 1;
        plan->meta_keys[k] = pr_str(r, "a metadata key");
        plan->meta_values[k] = pr_str(r, "a metadata value");
        if (r->st == AQ_OK && (plan->meta_keys[k] == NULL || plan->meta_values[k] == NULL)) {
            r->st = aq__error_set(r->err, AQ_INVALID_DATA, "plan: metadata entry %zu is absent", k);
        }
    }
    if (r->st == AQ_OK && plan->gguf_search > 1) {
        r->st = aq__error_set(r->err, AQ_INVALID_DATA, "plan: gguf_search %d is not 0 or 1",
                              plan->gguf_search);
    }
    return r->st;
}

aq_status aq_model_plan_deserialize(const void *bytes, size_t len, aq_model_plan **out,
                                    aq_error *err)
{
    if (bytes == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_plan_deserialize: NULL argument");
    }
    *out = NULL;
    const uint8_t *p = bytes;
    if (len < sizeof plan_magic + 8 || memcmp(p, plan_magic, sizeof plan_magic) != 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "plan: not a serialised model plan (%zu bytes; it must start with "
                             "\"AQPLAN\\x02\\n\")",
                             len);
    }
    uint64_t want = 0;
    for (int k = 0; k < 8; k++) {
        want |= (uint64_t)p[len - 8 + (size_t)k] << (8 * k);
    }
    if (aq__xxh64(p, len - 8, 0) != want) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "plan: checksum mismatch over its %zu bytes (damaged or truncated)",
                             len);
    }
    plan_rd r = {p, len - 8, sizeof plan_magic, AQ_OK, err};
    uint64_t n = pr_u64(&r, "the tensor count");
    if (n > (len / 32) + 1) {
        return aq__error_set(err, AQ_INVALID_DATA, "plan: %llu tensors cannot fit in %zu bytes",
                             (unsigned long long)n, len);
    }
    aq_model_plan *plan = NULL;
    aq_status st = aq__model_plan_alloc((size_t)n, &plan, err);
    if (st != AQ_OK) {
        return st;
    }
    plan->ctx_bits = pr_u32(&r, "the context's bits");
    plan->ctx_group = (size_t)pr_u64(&r, "the context's group size");
    plan->ctx_scheme = (aq_scheme)pr_u32(&r, "the context's scheme");
    plan->preserve_moments = (int)pr_u32(&r, "preserve_moments");
    plan->min_cosine = pr_f64(&r, "min_cosine");
    plan->recorded_floor = pr_f64(&r, "the recorded floor");
    plan->large = (int)pr_u32(&r, "the large flag");
    plan->batch_bytes = (size_t)pr_u64(&r, "batch_bytes");
    plan->compression = (int)pr_u32(&r, "compression");
    plan->calibrated = (int)pr_u32(&r, "the calibration flag");
    plan->profile = pr_str(&r, "the profile");
    plan->model_meta = pr_str(&r, "the model's metadata");
    plan->components = pr_str(&r, "the components");
    uint32_t format = pr_u32(&r, "the plan's format");
    plan->format = (aq__plan_format)format;
    if (r.st == AQ_OK && format == AQ__PLAN_GGUF) {
        (void)pr_gguf_fields(&r, plan);
    } else if (r.st == AQ_OK && format != AQ__PLAN_MODEL_FILE) {
        r.st = aq__error_set(err, AQ_INVALID_DATA, "plan: unknown format %u", (unsigned)format);
    }
    if (r.st == AQ_OK && ((unsigned)plan->ctx_scheme >= AQ_SCHEME_COUNT ||
                          (plan->format == AQ__PLAN_MODEL_FILE &&
                           (plan->batch_bytes == 0 || plan->profile == NULL ||
                            plan->model_meta == NULL || plan->components == NULL)))) {
        r.st = aq__error_set(err, AQ_INVALID_DATA, "plan: bad model-wide fields");
    }
    for (size_t i = 0; i < plan->n && r.st == AQ_OK; i++) {
        (void)pr_tensor(&r, plan, i, &plan->t[i]);
    }
    if (r.st == AQ_OK && r.pos != r.len) {
        r.st = aq__error_set(err, AQ_INVALID_DATA, "plan: %zu bytes left over at byte %zu",
                             r.len - r.pos, r.pos);
    }
    if (r.st != AQ_OK) {
        aq_model_plan_free(plan);
        return r.st;
    }
    *out = plan;
    return AQ_OK;
}

aq_status aq__model_plan_follow_check(const char *fn, const aq_model_plan *plan,
                                      const aq_model *model, const aq_calib *calib,
                                      const char *out_path, aq_error *err)
{
    if (plan->calibrated != (calib != NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             plan->calibrated
                                 ? "%s: the plan was made with a calibration: it needs the same one"
                                 : "%s: the plan was made without a calibration",
                             fn);
    }
    aq_status st = aq__model_plan_match(plan, model, err);
    if (st == AQ_OK) {
        st = aq__io_model_check_output(model, out_path, err);
    }
    if (st == AQ_OK) {
        st = aq__io_calib_check_output(calib, out_path, err);
    }
    return st;
}

aq_status aq__model_plan_match(const aq_model_plan *plan, const aq_model *model, aq_error *err)
{
    size_t n = aq_model_count(model);
    if (n != plan->n) {
        return aq__error_set(err, AQ_SHAPE_MISMATCH,
                             "the plan does not match the model: the plan has %zu tensors, the "
                             "model %zu",
                             plan->n, n);
    }
    for (size_t i = 0; i < n; i++) {
        const aq_st_tensor *t = aq_model_tensor(model, i);
        const aq__plan_tensor *e = &plan->t[i];
        const char *what = NULL;
        if (strcmp(t->name, e->name) != 0) {
            what = "name";
        } else if (strcmp(t->dtype_name, e->dtype_name) != 0) {
            what = "dtype";
        } else if (t->ndim != e->ndim ||
                   (t->ndim > 0 && memcmp(t->shape, e->shape, t->ndim * sizeof(int64_t)) != 0)) {
            what = "shape";
        } else if (t->nbytes != e->nbytes || t->elements != e->elements) {
            what = "size";
        }
        if (what != NULL) {
            return aq__error_set(err, AQ_SHAPE_MISMATCH,
                                 "the plan does not match the model: tensor %zu is '%s' (%s) in "
                                 "the plan and '%s' (%s) in the model; they differ in %s",
                                 i, e->name, e->dtype_name, t->name, t->dtype_name, what);
        }
    }
    return AQ_OK;
}
