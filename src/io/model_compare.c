/*
 * model_compare.c - two models compared tensor by tensor (aq_model_compare): the core of the
 * arrowquant compare and validate commands and of Python's validate_quality.
 *
 * A is the reference and is read in its own order; each of its tensors is looked up in B by
 * name. A model file (.arrow) side is read row by row and scanned forward for a name, then
 * once from the start, so two files written in the same order are each read once. Only the
 * two tensors being compared are held in memory (as float32), and a safetensors side lets go
 * of each tensor's mapped pages when done. A GGUF side is decoded tensor by tensor.
 */
#include "io_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *aq_compare_status_name(aq_compare_status status)
{
    switch (status) {
    case AQ_COMPARE_COMPARED:
        return "compared";
    case AQ_COMPARE_MISSING_IN_A:
        return "missing in A";
    case AQ_COMPARE_MISSING_IN_B:
        return "missing in B";
    case AQ_COMPARE_SHAPE_MISMATCH:
        return "shapes differ";
    case AQ_COMPARE_SAME_BYTES:
        return "identical bytes";
    case AQ_COMPARE_BYTES_DIFFER:
        return "bytes differ";
    }
    return "unknown";
}

void aq_model_compare_summary_reset(aq_model_compare_summary *summary)
{
    if (summary != NULL) {
        free(summary->worst);
        memset(summary, 0, sizeof *summary);
    }
}

typedef struct mc_src {
    const char *path;
    aq_model *m;
    aq_qmodel *q;
    aq_gguf *g;
    size_t next; /* a safetensors or GGUF source, iterated in order */
} mc_src;

/* One tensor taken from a source. Everything but values is borrowed from the source and stays
 * valid until the source's next read. */
typedef struct mc_tensor {
    const char *name;
    aq_compare_side side;
    size_t elements;
    float *values;   /* float tensors (owned) */
    const void *raw; /* other tensors: their bytes */
    size_t raw_size;
    int is_float;
} mc_tensor;

static int mc_is_arrow(const char *path)
{
    /* As the command's inspect: a .arrow name is a model file whatever its bytes; anything
     * but a regular file goes to the safetensors reader, which refuses it without blocking. */
    size_t n = strlen(path);
    if (n > 6 && strcmp(path + n - 6, ".arrow") == 0) {
        return 1;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        return 0;
    }
    FILE *f = fopen(path, "rb");
    char magic[6] = {0};
    int yes = 0;
    if (f != NULL) {
        yes = fread(magic, 1, 6, f) == 6 && memcmp(magic, "ARROW1", 6) == 0;
        fclose(f);
    }
    return yes;
}

static aq_status mc_open(const char *path, mc_src *s, aq_error *err)
{
    memset(s, 0, sizeof *s);
    s->path = path;
    if (mc_is_arrow(path)) {
        return aq_qmodel_open(path, &s->q, err);
    }
    if (aq_gguf_is_gguf(path)) {
        return aq_gguf_open(path, &s->g, err);
    }
    return aq_model_open(path, &s->m, err);
}

static void mc_close(mc_src *s)
{
    aq_model_free(s->m);
    aq_qmodel_free(s->q);
    aq_gguf_free(s->g);
}

/* A GGUF tensor's side: its type as dtype and scheme, its bits per weight (rounded down). */
static void mc_side_gguf(const aq_gguf_tensor *t, aq_compare_side *side)
{
    size_t block = 1, bytes = 4;
    if (aq_gguf_type_info(t->type, &block, &bytes, NULL, NULL) != AQ_OK) {
        block = 1; /* not reached: the reader refuses unknown types */
    }
    side->dtype = aq_gguf_type_name(t->type);
    side->scheme = aq_gguf_type_name(t->type);
    side->bit_width = (unsigned)(bytes * 8 / block);
    side->shape = t->shape;
    side->ndim = t->ndim;
}

static void mc_side_st(const aq_st_tensor *t, aq_compare_side *side)
{
    side->dtype = t->dtype_name;
    side->scheme = NULL;
    side->bit_width = (unsigned)(aq_st_dtype_size(t->dtype) * 8);
    side->shape = t->shape;
    side->ndim = t->ndim;
}

static void mc_side_row(const aq_qmodel_row *r, aq_compare_side *side)
{
    side->dtype = r->source_dtype;
    side->scheme = r->scheme;
    side->bit_width = r->bit_width;
    side->shape = r->shape;
    side->ndim = r->ndim;
}

static aq_status mc_alloc_values(mc_tensor *out, aq_error *err)
{
    out->values = malloc((out->elements > 0 ? out->elements : 1) * sizeof(float));
    if (out->values == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "Tensor '%s': out of memory for %zu floats",
                             out->name, out->elements);
    }
    out->is_float = 1;
    return AQ_OK;
}

static aq_status mc_from_st(const aq_st_tensor *t, mc_tensor *out, aq_error *err)
{
    memset(out, 0, sizeof *out);
    out->name = t->name;
    mc_side_st(t, &out->side);
    out->elements = t->elements;
    aq_dtype d;
    if (!aq_st_dtype_to_aq(t->dtype, &d)) {
        out->raw = t->data;
        out->raw_size = t->nbytes;
        return AQ_OK;
    }
    aq_status st = mc_alloc_values(out, err);
    if (st != AQ_OK) {
        return st;
    }
    /* The data may be unaligned for its element size (safetensors does not align): memcpy. */
    const unsigned char *p = t->data;
    for (size_t k = 0; k < t->elements; k++) {
        float v;
        if (d == AQ_DTYPE_F32) {
            memcpy(&v, p + 4 * k, 4);
        } else if (d == AQ_DTYPE_F64) {
            double x;
            memcpy(&x, p + 8 * k, 8);
            v = (float)x;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * k, 2);
            v = d == AQ_DTYPE_BF16 ? aq__bf16_to_f32(h) : aq__f16_to_f32(h);
        }
        out->values[k] = v;
    }
    return AQ_OK;
}

static aq_status mc_from_row(aq_ctx *ctx, const aq_qmodel_row *r, mc_tensor *out, aq_error *err)
{
    memset(out, 0, sizeof *out);
    out->name = r->name;
    mc_side_row(r, &out->side);
    out->elements = r->elements;
    if (!aq_st_dtype_to_aq(aq_st_dtype_from_name(r->source_dtype), NULL)) {
        out->raw = r->data;
        out->raw_size = r->data_size;
        return AQ_OK;
    }
    aq_status st = mc_alloc_values(out, err);
    if (st != AQ_OK || r->elements == 0) {
        return st;
    }
    return aq_qmodel_row_restore(ctx, r, 0, r->elements, AQ_ST_F32, out->values, err);
}

static aq_status mc_from_gguf(aq_ctx *ctx, const aq_gguf *g, size_t i, mc_tensor *out,
                              aq_error *err)
{
    const aq_gguf_tensor *t = aq_gguf_tensor_at(g, i);
    memset(out, 0, sizeof *out);
    out->name = t->name;
    mc_side_gguf(t, &out->side);
    out->elements = t->elements;
    aq_status st = mc_alloc_values(out, err);
    if (st != AQ_OK) {
        return st;
    }
    return aq_gguf_tensor_dequantize(ctx, g, i, out->values, out->elements, err);
}

static void mc_tensor_reset(mc_tensor *t)
{
    free(t->values);
    memset(t, 0, sizeof *t);
}

/* The next tensor of a source in its own order; *done at the end. */
static aq_status mc_next(aq_ctx *ctx, mc_src *s, mc_tensor *out, int *done, aq_error *err)
{
    *done = 0;
    if (s->g != NULL) {
        if (s->next >= aq_gguf_tensor_count(s->g)) {
            *done = 1;
            return AQ_OK;
        }
        return mc_from_gguf(ctx, s->g, s->next++, out, err);
    }
    if (s->m != NULL) {
        if (s->next >= aq_model_count(s->m)) {
            *done = 1;
            return AQ_OK;
        }
        aq_status st = mc_from_st(aq_model_tensor(s->m, s->next), out, err);
        aq_model_release(s->m, s->next);
        s->next++;
        return st;
    }
    const aq_qmodel_row *r;
    aq_status st = aq_qmodel_next(s->q, &r, err);
    if (st != AQ_OK) {
        return st;
    }
    if (r == NULL) {
        *done = 1;
        return AQ_OK;
    }
    return mc_from_row(ctx, r, out, err);
}

/* The tensor called name; *found 0 if the source has none. */
static aq_status mc_find(aq_ctx *ctx, mc_src *s, const char *name, mc_tensor *out, int *found,
                         aq_error *err)
{
    *found = 0;
    if (s->g != NULL) {
        size_t i;
        if (!aq_gguf_find(s->g, name, &i)) {
            return AQ_OK;
        }
        *found = 1;
        return mc_from_gguf(ctx, s->g, i, out, err);
    }
    if (s->m != NULL) {
        size_t i;
        if (aq_model_find(s->m, name, &i) != 0) {
            return AQ_OK;
        }
        *found = 1;
        aq_status st = mc_from_st(aq_model_tensor(s->m, i), out, err);
        aq_model_release(s->m, i);
        return st;
    }
    for (int pass = 0; pass < 2; pass++) {
        for (;;) {
            const aq_qmodel_row *r;
            aq_status st = aq_qmodel_next(s->q, &r, err);
            if (st != AQ_OK) {
                return st;
            }
            if (r == NULL) {
                break;
            }
            if (strcmp(r->name, name) == 0) {
                *found = 1;
                return mc_from_row(ctx, r, out, err);
            }
        }
        aq_status st = aq_qmodel_rewind(s->q, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

static int mc_strcmp(const void *x, const void *y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static int mc_same_shape(const aq_compare_side *a, const aq_compare_side *b)
{
    return a->ndim == b->ndim &&
           (a->ndim == 0 || memcmp(a->shape, b->shape, a->ndim * sizeof(int64_t)) == 0);
}

typedef struct mc_totals {
    aq_model_compare_summary s;
    size_t n_finite;
    double sum_sqnr;
    double sum_cos;
    double worst_cos;
    double worst_sqnr;
    const char *worst; /* borrowed until copied at the end of each tensor */
} mc_totals;

static aq_status mc_report(const aq_model_compare_options *o, mc_totals *tot, aq_compare_tensor *t,
                           aq_error *err)
{
    tot->s.tensors++;
    switch (t->status) {
    case AQ_COMPARE_COMPARED: {
        const aq_metrics *m = &t->metrics;
        tot->s.compared++;
        if (isfinite(m->sqnr_db)) {
            tot->sum_sqnr += m->sqnr_db;
            tot->n_finite++;
        }
        tot->sum_cos += m->cosine;
        if (m->sqnr_db < tot->s.min_sqnr_db) {
            tot->s.min_sqnr_db = m->sqnr_db;
        }
        if (m->cosine < tot->s.min_cosine) {
            tot->s.min_cosine = m->cosine;
        }
        if (tot->s.worst == NULL || m->cosine < tot->worst_cos ||
            (m->cosine == tot->worst_cos && m->sqnr_db < tot->worst_sqnr)) {
            char *w = aq__strdup(t->name);
            if (w == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            }
            free(tot->s.worst);
            tot->s.worst = w;
            tot->worst_cos = m->cosine;
            tot->worst_sqnr = m->sqnr_db;
        }
        if (o->min_cosine > 0.0 && m->cosine < o->min_cosine) {
            t->below_min_cosine = 1;
            tot->s.below_min_cosine++;
        }
        break;
    }
    case AQ_COMPARE_MISSING_IN_A:
        tot->s.missing_in_a++;
        break;
    case AQ_COMPARE_MISSING_IN_B:
        tot->s.missing_in_b++;
        break;
    case AQ_COMPARE_SHAPE_MISMATCH:
    case AQ_COMPARE_BYTES_DIFFER:
        tot->s.mismatched++;
        break;
    case AQ_COMPARE_SAME_BYTES:
        break;
    }
    if (o->on_tensor != NULL && o->on_tensor(o->on_tensor_user, t) != 0) {
        return aq__error_set(err, AQ_CANCELLED,
                             "comparison cancelled by the callback after %zu "
                             "tensors",
                             tot->s.tensors);
    }
    return AQ_OK;
}

/* Judges a pair of tensors of the same name (b NULL: missing in B) and fills t. */
static aq_status mc_judge(const mc_tensor *a, const mc_tensor *b, aq_compare_tensor *t,
                          aq_error *err)
{
    memset(t, 0, sizeof *t);
    t->name = a->name;
    t->a = a->side;
    t->elements = a->elements;
    if (b == NULL) {
        t->status = AQ_COMPARE_MISSING_IN_B;
        return AQ_OK;
    }
    t->b = b->side;
    if (a->elements != b->elements || !mc_same_shape(&a->side, &b->side)) {
        t->status = AQ_COMPARE_SHAPE_MISMATCH;
    } else if (!a->is_float || !b->is_float || a->elements == 0) {
        int same =
            a->is_float == b->is_float &&
            (a->is_float || (a->raw_size == b->raw_size &&
                             (a->raw_size == 0 || memcmp(a->raw, b->raw, a->raw_size) == 0)));
        t->status = same ? AQ_COMPARE_SAME_BYTES : AQ_COMPARE_BYTES_DIFFER;
    } else {
        int64_t flat = (int64_t)a->elements;
        aq_tensor x = {a->name, AQ_DTYPE_F32, a->values, &flat, 1};
        aq_tensor y = {b->name, AQ_DTYPE_F32, b->values, &flat, 1};
        aq_status st = aq_metrics_compute(&x, &y, &t->metrics, err);
        if (st != AQ_OK) {
            return st;
        }
        t->status = AQ_COMPARE_COMPARED;
    }
    return AQ_OK;
}

/* After A's pass: the tensors of B whose names A lacks (a_names sorted). */
static aq_status mc_extra_in_b(mc_src *b, char **a_names, size_t n_a,
                               const aq_model_compare_options *o, mc_totals *tot, aq_error *err)
{
    aq_compare_tensor t;
    aq_status st;
    if (b->q != NULL && (st = aq_qmodel_rewind(b->q, err)) != AQ_OK) {
        return st;
    }
    for (size_t i = 0;; i++) {
        memset(&t, 0, sizeof t);
        if (b->g != NULL) {
            const aq_gguf_tensor *x = aq_gguf_tensor_at(b->g, i);
            if (x == NULL) {
                break;
            }
            t.name = x->name;
            mc_side_gguf(x, &t.b);
            t.elements = x->elements;
        } else if (b->m != NULL) {
            if (i >= aq_model_count(b->m)) {
                break;
            }
            const aq_st_tensor *x = aq_model_tensor(b->m, i);
            t.name = x->name;
            mc_side_st(x, &t.b);
            t.elements = x->elements;
        } else {
            const aq_qmodel_row *r;
            if ((st = aq_qmodel_next(b->q, &r, err)) != AQ_OK) {
                return st;
            }
            if (r == NULL) {
                break;
            }
            t.name = r->name;
            mc_side_row(r, &t.b);
            t.elements = r->elements;
        }
        if (bsearch(&t.name, a_names, n_a, sizeof *a_names, mc_strcmp) != NULL) {
            continue;
        }
        if (o->cancel != NULL && *o->cancel) {
            return aq__error_set(err, AQ_CANCELLED, "comparison cancelled");
        }
        t.status = AQ_COMPARE_MISSING_IN_A;
        if ((st = mc_report(o, tot, &t, err)) != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

aq_status aq_model_compare(const char *a, const char *b, const aq_model_compare_options *opts,
                           aq_model_compare_summary *summary, aq_error *err)
{
    if (a == NULL || b == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_compare: a path is NULL");
    }
    aq_model_compare_options own;
    aq_status ost = AQ__OPTS_READ(aq_model_compare_options, cancel, own, opts, err);
    if (ost != AQ_OK) {
        return ost;
    }
    const aq_model_compare_options *o = &own;
    if (!(o->min_cosine >= 0.0 && o->min_cosine <= 1.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid min_cosine: %g. Must be between 0 and 1", o->min_cosine);
    }
    aq_ctx *ctx = NULL;
    mc_src sa, sb;
    mc_tensor ta, tb;
    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    memset(&ta, 0, sizeof ta);
    memset(&tb, 0, sizeof tb);
    mc_totals tot;
    memset(&tot, 0, sizeof tot);
    tot.s.min_sqnr_db = (double)INFINITY;
    tot.s.min_cosine = 1.0;
    char **names = NULL;
    size_t n_names = 0, cap_names = 0;
    aq_status st;
    if ((st = aq_ctx_create(&ctx, err)) != AQ_OK || (st = mc_open(a, &sa, err)) != AQ_OK ||
        (st = mc_open(b, &sb, err)) != AQ_OK) {
        goto done;
    }
    for (;;) {
        int done_a, found;
        if (o->cancel != NULL && *o->cancel) {
            st = aq__error_set(err, AQ_CANCELLED, "comparison cancelled");
            goto done;
        }
        if ((st = mc_next(ctx, &sa, &ta, &done_a, err)) != AQ_OK) {
            goto done;
        }
        if (done_a) {
            break;
        }
        if (!o->a_only) {
            if (n_names == cap_names) {
                size_t cap = cap_names * 2 + 64;
                char **nn = realloc(names, cap * sizeof *nn);
                if (nn == NULL) {
                    st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
                    goto done;
                }
                names = nn;
                cap_names = cap;
            }
            if ((names[n_names] = aq__strdup(ta.name)) == NULL) {
                st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
                goto done;
            }
            n_names++;
        }
        if ((st = mc_find(ctx, &sb, ta.name, &tb, &found, err)) != AQ_OK) {
            goto done;
        }
        aq_compare_tensor t;
        if ((st = mc_judge(&ta, found ? &tb : NULL, &t, err)) != AQ_OK ||
            (st = mc_report(o, &tot, &t, err)) != AQ_OK) {
            goto done;
        }
        mc_tensor_reset(&ta);
        mc_tensor_reset(&tb);
    }
    if (!o->a_only) {
        qsort(names, n_names, sizeof *names, mc_strcmp);
        if ((st = mc_extra_in_b(&sb, names, n_names, o, &tot, err)) != AQ_OK) {
            goto done;
        }
    }
    tot.s.mean_sqnr_db = tot.n_finite > 0 ? tot.sum_sqnr / (double)tot.n_finite : (double)INFINITY;
    tot.s.mean_cosine = tot.s.compared > 0 ? tot.sum_cos / (double)tot.s.compared : 0.0;
    if (summary != NULL) {
        *summary = tot.s;
        tot.s.worst = NULL;
    }
done:
    free(tot.s.worst);
    for (size_t i = 0; i < n_names; i++) {
        free(names[i]);
    }
    free(names);
    mc_tensor_reset(&ta);
    mc_tensor_reset(&tb);
    mc_close(&sa);
    mc_close(&sb);
    aq_ctx_free(ctx);
    return st;
}

aq_status aq_model_default_floor(const char *quantized, aq_model_floor *out, aq_error *err)
{
    if (quantized == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_default_floor: NULL argument");
    }
    aq_model_floor f = {0.0, "default", NULL};
    aq_profile prof;
    aq_status st;
    aq_qmodel *qm = NULL;
    const char *fl = NULL, *pn = NULL;
    if (mc_is_arrow(quantized)) {
        if ((st = aq_qmodel_open(quantized, &qm, err)) != AQ_OK) {
            return st;
        }
        fl = aq_qmodel_metadata(qm, "arrowquant.min_cosine");
        pn = aq_qmodel_metadata(qm, "arrowquant.profile");
    }
    char *end = NULL;
    double v = fl != NULL ? strtod(fl, &end) : 0.0;
    if (fl != NULL && end != fl && *end == '\0' && v > 0.0 && v <= 1.0) {
        f.min_cosine = v;
        f.source = "file";
    } else if (pn != NULL && aq_profile_get(pn, &prof, NULL) == AQ_OK) {
        f.min_cosine = prof.min_cosine;
        f.source = "profile";
        f.profile = prof.name;
    }
    aq_qmodel_free(qm);
    if (f.profile == NULL && strcmp(f.source, "default") == 0) {
        if ((st = aq_profile_get("local", &prof, err)) != AQ_OK) {
            return st;
        }
        f.min_cosine = prof.min_cosine;
        f.profile = prof.name;
    }
    *out = f;
    return AQ_OK;
}
