/*
 * Quantizing a whole model into an Arrow IPC model file (DESIGN.md 2.4).
 *
 * Tensors stream through one at a time: each is quantized from the file mapping, its quality
 * measured block by block against the source, and its pages dropped. Results wait in a pending
 * batch until about batch_bytes of output have gathered. Each tensor is quantized straight into
 * its batch's buffers (mq_arena: one data, scales and zero-point buffer per batch, allocated
 * once and reused, so no copy and no fresh page faults); a tensor whose output alone is that
 * large goes out as a batch of its own, with its own buffers handed to Arrow without a copy (a
 * kept float32/float16 tensor is even written straight from the mapping). A finished batch is
 * written by a writer thread while the next one is quantized into the other of two arenas. So
 * the peak stays near the largest tensor plus two batches.
 *
 * The decisions are the quantization pipeline's (src/quant/pipeline.h): a cosine floor
 * requantizes a tensor with more bits on the spot (aq__floor_run); a size budget needs every
 * tensor's options before the first row is chosen, so planning adds a measuring pass, each
 * tensor read from the mapping, quantized at every candidate, measured and dropped at once
 * (aq__budget_over for an explicit budget, aq__plan_over for the default mode's size); the
 * writing pass then follows the plan.
 */
#include "arrow_owned.h"
#include "io_internal.h"
#include "ipc_internal.h"
#include "model_plan.h"
#include "pipeline.h"

#include <fnmatch.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>

enum { MQ_NCOLS = 13 };

/* The column after the file's in exported rows: each row's cosine at the plan's bits, before
 * the floor raised them (what the run's summary says of a moved tensor). */
#define MQ_INITIAL_COSINE "initial_cosine"

static const struct {
    const char *format;
    const char *name;
    const char *child;
} mq_cols[MQ_NCOLS] = {
    {"u", "layer_name", NULL},  {"z", "quantized_data", NULL}, {"+l", "scales", "f"},
    {"+l", "zero_points", "f"}, {"+l", "shape", "l"},          {"C", "bit_width", NULL},
    {"I", "group_size", NULL},  {"u", "scheme", NULL},         {"u", "source_dtype", NULL},
    {"g", "sqnr_db", NULL},     {"g", "cosine", NULL},         {"g", "max_abs_error", NULL},
    {"L", "checksum", NULL},
};

typedef struct mq_row {
    size_t index; /* tensor index in the model */
    const char *name;
    const int64_t *shape;
    size_t ndim;
    const char *scheme;
    aq_scheme scheme_id; /* of a quantized row */
    const char *source_dtype;
    unsigned bit_width;
    size_t group_size;
    uint8_t *data; /* owned (aq__aligned_alloc) unless borrowed or in the arena */
    const uint8_t *borrowed;
    size_t data_size;
    float *scales; /* owned (aq__aligned_alloc) unless in the arena */
    float *zps;
    size_t groups;
    double sqnr, cosine, maxerr;
    double initial_cosine; /* at the plan's bits, before the floor raised them */
    double sse;            /* squared error against the source */
    bool place;            /* set by the writing pass: output goes where mq_place puts it */
    bool arena;            /* data, scales and zps lie in the current arena, at these offsets: */
    size_t data_off, grp_off;
} mq_row;

/* One batch's output buffers: the rows' packed data, scales and zero points, each one
 * contiguous in row order, as the batch's columns hold them (borrowed by the batch, never
 * copied). Allocated on first use, grown while a batch fills, kept for the next batches. */
typedef struct mq_arena {
    uint8_t *data;
    size_t data_cap, data_len;
    float *scales, *zps;
    size_t grp_cap, grp_len;
} mq_arena;

/* The writer thread: writes one batch while the next is quantized. */
typedef struct mq_writer {
    pthread_t thread;
    bool running;
    void *ipc; /* aq_ipc_writer */
    struct ArrowArray batch;
    aq_status st;
    aq_error err;
} mq_writer;

typedef struct mq_state {
    aq_ctx *ctx;
    aq_model *model; /* NULL in a writer of rows made elsewhere */
    /* What every tensor becomes (set once planned); the file's model-wide fields. */
    const aq_model_plan *mp;
    /* Rows for another process (aq_model_execute): the batch never borrows from the mapping. */
    bool exporting;
    const aq_model_quantize_options *opts;
    size_t batch_bytes;
    bool large;
    void *ipc; /* aq_ipc_writer */
    mq_row *rows;
    size_t n_rows;
    size_t pending_bytes;
    aq__keepalive *keep; /* for buffers borrowed from the mapping */
    size_t batches;
    aq__budget_option *plan; /* with a budget: the option chosen for each tensor */
    double min_cosine;
    /* The floor the file records (arrowquant.min_cosine), what arrowquant validate holds it to:
     * min_cosine, or lower where the default mode's size left a tensor below it. */
    double recorded_floor;
    float *mbuf; /* dequantized block for mq_measure, reused from tensor to tensor */
    size_t mbuf_cap;
    /* With layer rules: each tensor's bits, scheme and deciding rule (aq_rule_name), and
     * whether it follows the profile (the budget chooses its bits) or is fixed by a rule. */
    unsigned *r_bits;
    aq_scheme *r_scheme;
    const char **r_rule;
    unsigned char *r_profile;
    unsigned char *r_role; /* aq__plan_role: what the default mode's size does with it */
    /* With a calibration: the importance of the tensor being quantized (NULL: none), in ibuf. */
    const float *imp;
    float *ibuf;
    size_t ibuf_cap;
    mq_arena arena[2]; /* the batch being filled uses arena[cur]; the other may be in flight */
    int cur;
    mq_writer wr;
} mq_state;

/* Drops the row's output buffers (those it owns; arena space is only given up). */
static void mq_row_out_free(mq_row *r)
{
    if (!r->arena) {
        free(r->data);
        free(r->scales);
        free(r->zps);
    }
    r->data = NULL;
    r->scales = r->zps = NULL;
    r->arena = false;
}

static void mq_row_free(mq_row *r)
{
    mq_row_out_free(r);
    memset(r, 0, sizeof *r);
}

static bool mq_cancelled(const aq_model_quantize_options *o)
{
    return o != NULL && o->cancel != NULL && *o->cancel != 0;
}

/* ---- the keep rule ---- */

static bool mq_is_embedding(const char *name)
{
    /* A dotted part of the name (after the component) that contains "embed". */
    const char *p = name;
    while (*p != '\0') {
        const char *end = strchr(p, '.');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        for (size_t i = 0; i + 5 <= len; i++) {
            if (strncmp(p + i, "embed", 5) == 0) {
                return true;
            }
        }
        p += len;
        if (*p == '.') {
            p++;
        }
    }
    return false;
}

/* The caller's options (any size the struct has had) read into *own; *opts then points at it
 * (NULL stays NULL). */
static aq_status mq_opts_read(const aq_model_quantize_options **opts,
                              aq_model_quantize_options *own, aq_error *err)
{
    aq_status st = AQ__OPTS_READ(aq_model_quantize_options, budget_scope, *own, *opts, err);
    if (st == AQ_OK && *opts != NULL) {
        *opts = own;
    }
    return st;
}

aq_status aq_model_keep_rule(const aq_model *model, size_t i, const aq_model_quantize_options *opts,
                             int *kept, const char **reason, aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(model, i);
    if (t == NULL || kept == NULL || reason == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_keep_rule: bad argument");
    }
    aq_model_quantize_options own;
    aq_status ost = mq_opts_read(&opts, &own, err);
    if (ost != AQ_OK) {
        return ost;
    }
    size_t min =
        opts != NULL && opts->min_elements > 0 ? opts->min_elements : AQ_MODEL_MIN_ELEMENTS;
    for (size_t k = 0; opts != NULL && k < opts->n_keep; k++) {
        if (fnmatch(opts->keep[k], t->name, 0) == 0) {
            *kept = 1;
            *reason = "--keep";
            return AQ_OK;
        }
    }
    if (t->dtype == AQ_ST_UNKNOWN) {
        return aq__error_set(err, AQ_UNSUPPORTED,
                             "tensor '%s' has unknown dtype '%s' and cannot be quantized (keep "
                             "it as it is with --keep '%s')",
                             t->name, t->dtype_name, t->name);
    }
    *kept = 1;
    if (!aq_st_dtype_to_aq(t->dtype, NULL)) {
        *reason = "not float";
    } else if (t->ndim <= 1) {
        *reason = "1-D";
    } else if (mq_is_embedding(t->name)) {
        *reason = "embedding";
    } else if (t->elements < min) {
        *reason = "small";
    } else {
        *kept = 0;
        *reason = "quantized";
    }
    return AQ_OK;
}

/* The layer rules' decision for tensor i (opts->rules set): kept, or bits and scheme. A
 * non-float tensor is kept unless it has an unknown dtype that no override keeps. */
static aq_status mq_rule(mq_state *s, size_t i, int *kept, aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(s->model, i);
    aq_dtype d;
    bool is_float = aq_st_dtype_to_aq(t->dtype, &d);
    aq_rule_decision dec;
    aq_status st = aq_rules_decide(s->opts->rules, t->name, t->shape, t->ndim,
                                   is_float ? d : AQ_DTYPE_F32, &dec, err);
    if (st != AQ_OK) {
        return st;
    }
    if (!is_float) {
        bool overridden = dec.rule == AQ_RULE_OVERRIDE && dec.keep;
        if (t->dtype == AQ_ST_UNKNOWN && !overridden) {
            return aq__error_set(err, AQ_UNSUPPORTED,
                                 "tensor '%s' has unknown dtype '%s' and cannot be quantized "
                                 "(keep it as it is with --keep '%s')",
                                 t->name, t->dtype_name, t->name);
        }
        *kept = 1;
        s->r_rule[i] = overridden ? aq_rule_name(dec.rule) : "not float";
        return AQ_OK;
    }
    *kept = dec.keep ? 1 : 0;
    s->r_bits[i] = dec.bit_width;
    s->r_scheme[i] = dec.scheme;
    s->r_rule[i] = aq_rule_name(dec.rule);
    s->r_profile[i] = dec.rule == AQ_RULE_PROFILE && !dec.keep;
    s->r_role[i] = (unsigned char)aq__plan_role_of(&dec, t->ndim, t->elements);
    return AQ_OK;
}

/* The importance of quantized tensor t from the calibration, into s->ibuf; s->imp is NULL
 * when there is no calibration or the table has no statistics for the tensor. A table whose
 * channel count does not fit the tensor is an error (AQ_SHAPE_MISMATCH naming both). */
static aq_status mq_importance(mq_state *s, const aq_st_tensor *t, aq_error *err)
{
    s->imp = NULL;
    const aq_calib *calib = s->opts != NULL ? s->opts->calib : NULL;
    if (calib == NULL || t->ndim < 2) {
        return AQ_OK;
    }
    if (t->elements > s->ibuf_cap) {
        free(s->ibuf);
        s->ibuf_cap = 0;
        if ((s->ibuf = malloc(t->elements * sizeof(float))) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory for its importance",
                                 t->name);
        }
        s->ibuf_cap = t->elements;
    }
    int found = 0;
    aq_status st =
        aq_calib_importance(calib, t->name, t->shape, t->ndim, s->ibuf, t->elements, &found, err);
    if (st == AQ_OK && found) {
        aq__importance_temper(s->ibuf, t->elements);
        s->imp = s->ibuf;
    }
    return st;
}

/* Whether the budget chooses tensor i's bits (it is quantized and, with rules, follows the
 * profile). */
static bool mq_budgeted(const mq_state *s, const int *kept, size_t i)
{
    return !kept[i] && (s->r_profile == NULL || s->r_profile[i]);
}

/* ---- quality, block by block (the pipeline's meter) ---- */

static aq_status mq_meter_init(mq_state *s, aq_ctx *c, const aq_tensor *src, aq_scheme scheme,
                               const aq_layout *l, const mq_row *r, aq__meter *m, aq_error *err)
{
    aq_status st = aq__meter_init(c, src, scheme, l, r->data, r->scales, r->zps, &s->mbuf,
                                  &s->mbuf_cap, m, err);
    m->cancel = s->opts != NULL ? s->opts->cancel : NULL;
    return st;
}

static void mq_meter_finish(const aq__meter *m, mq_row *r)
{
    aq__metrics_from_sums(m->acc, &r->sqnr, &r->cosine, &r->maxerr);
    r->sse = m->acc[1];
}

/* Quantizes src into r's buffers (laid out as l) with c and measures the result. An affine
 * tensor on one thread is quantized block by block, each block measured while its source is
 * still in the cache (the second pass over the input cost about as much as quantizing:
 * bench/e2e.sh); its bytes are the same (groups never straddle rows, and a block of a multiple
 * of 8 rows starts on a byte). Other schemes and pooled contexts quantize the whole tensor
 * first. */
static aq_status mq_quantize_measure(mq_state *s, aq_ctx *c, const aq_tensor *src, aq_scheme scheme,
                                     const aq_layout *l, mq_row *r, aq_error *err)
{
    aq_qbuffers out = {r->data, l->packed_bytes, r->scales, r->zps, l->groups};
    aq__meter m;
    aq_status st = mq_meter_init(s, c, src, scheme, l, r, &m, err);
    if (st != AQ_OK) {
        return st;
    }
    aq__pool *pool = NULL;
    if ((st = aq__ctx_pool(c, &pool, err)) != AQ_OK) {
        return st;
    }
    /* Blocks of rows quantize alone where the scheme's groups stay within rows, on one level,
     * and no importance steers them (plain affine): the block path passes none. */
    const aq__scheme_traits *tr = aq__scheme_traits_of(scheme);
    bool blocks = tr != NULL && !tr->flattened && !tr->two_level && !tr->importance &&
                  !c->preserve_moments && pool == NULL && src->ndim >= 2 && l->rows > m.block_rows;
    if (!blocks) {
        aq_quantize_options qo = {.size = sizeof(aq_quantize_options), .importance = s->imp};
        if ((st = aq_quantize_ex(c, src, &qo, &out, NULL, err)) != AQ_OK ||
            (st = aq__meter_rows(&m, 0, m.rows, err)) != AQ_OK) {
            return st;
        }
        mq_meter_finish(&m, r);
        return AQ_OK;
    }
    const size_t esize = aq_dtype_size(src->dtype);
    for (size_t r0 = 0; r0 < l->rows; r0 += m.block_rows) {
        size_t nr = l->rows - r0 < m.block_rows ? l->rows - r0 : m.block_rows;
        int64_t shape[2] = {(int64_t)nr, (int64_t)l->cols};
        aq_tensor part = *src;
        part.data = (const char *)src->data + r0 * l->cols * esize;
        part.shape = shape;
        part.ndim = 2;
        size_t bit0 = r0 * l->cols * l->bit_width; /* a multiple of 8: r0 is */
        size_t g0 = r0 * l->groups_per_row;
        aq_qbuffers po = {r->data + bit0 / 8, l->packed_bytes - bit0 / 8, r->scales + g0,
                          r->zps + g0, l->groups - g0};
        st = aq_quantize(c, &part, &po, err);
        if (st == AQ_NON_FINITE) {
            /* The message gives the index in the whole tensor. */
            return aq_quantize(c, src, &out, err);
        }
        if (st != AQ_OK || (st = aq__meter_rows(&m, r0, r0 + nr, err)) != AQ_OK) {
            return st;
        }
    }
    mq_meter_finish(&m, r);
    return AQ_OK;
}

/* ---- building and writing a batch ---- */

/* The model file's schema, with its metadata, from the plan; rows exported for another process
 * (aq_model_execute) carry one column more, MQ_INITIAL_COSINE, which the file does not. */
static aq_status mq_schema(const aq_model_plan *mp, bool exporting, struct ArrowSchema *out,
                           aq_error *err)
{
    struct ArrowSchema sc;
    aq_status st = aq__schema_alloc(&sc, "+s", "", 0, MQ_NCOLS + (exporting ? 1 : 0), err);
    if (st == AQ_OK && exporting) {
        st = aq__schema_alloc(sc.children[MQ_NCOLS], "g", MQ_INITIAL_COSINE, ARROW_FLAG_NULLABLE, 0,
                              err);
    }
    for (int i = 0; st == AQ_OK && i < MQ_NCOLS; i++) {
        const char *f = (i == 1 && mp->large) ? "Z" : mq_cols[i].format;
        st = aq__schema_alloc(sc.children[i], f, mq_cols[i].name, ARROW_FLAG_NULLABLE,
                              mq_cols[i].child != NULL ? 1 : 0, err);
        if (st == AQ_OK && mq_cols[i].child != NULL) {
            st = aq__schema_alloc(sc.children[i]->children[0], mq_cols[i].child, "item",
                                  ARROW_FLAG_NULLABLE, 0, err);
        }
    }
    /* Metadata: the seed keys, then the tool's and the source model's. */
    if (st == AQ_OK) {
        long long bits = (long long)mp->ctx_bits;
        /* The layout's group size: the scheme's own where it fixes one (kquant's super-block),
         * whatever the parameter says. */
        long long group = (long long)aq__scheme_group(mp->ctx_scheme, mp->ctx_group);
        char version[16], gs[24], bw[24];
        snprintf(version, sizeof version, "%d", AQ_FORMAT_VERSION);
        snprintf(gs, sizeof gs, "%lld", group);
        snprintf(bw, sizeof bw, "%lld", bits);
        /* The cosine floor of the run, when it had one: what arrowquant validate holds the
         * file to by default (%.17g keeps the double exact). */
        char floor[32];
        double min_cos = mp->recorded_floor;
        snprintf(floor, sizeof floor, "%.17g", min_cos);
        const char *keys[] = {"arrowquant.format_version", "arrowquant.scheme",
                              "arrowquant.group_size",     "arrowquant.packing",
                              "arrowquant.bit_width",      "arrowquant.tool_version",
                              "arrowquant.profile",        "arrowquant.model_metadata",
                              "arrowquant.components",     "arrowquant.min_cosine"};
        const char *values[] = {version,
                                aq_scheme_name(mp->ctx_scheme),
                                gs,
                                "lsb-first",
                                bw,
                                AQ_VERSION_STRING,
                                mp->profile,
                                mp->model_meta,
                                mp->components,
                                floor};
        st = aq__schema_set_metadata(&sc, keys, values, min_cos > 0.0 ? 10 : 9, err);
    }
    if (st != AQ_OK) {
        aq__schema_release_if(&sc);
        return st;
    }
    aq__schema_move(&sc, out);
    return AQ_OK;
}

static void mq_keep_destroy(void *data)
{
    (void)data; /* the mapping belongs to the model, which outlives the batch */
}

/* list<T> column: the values of row i are vals[i][0..counts[i]). */
/* whole: all rows' values already contiguous (an arena's), borrowed through keep. */
static aq_status mq_list(struct ArrowArray *a, const void *const *vals, const size_t *counts,
                         size_t elem, size_t n, bool adopt_single, const void *whole,
                         aq__keepalive *keep, aq_error *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += counts[i];
    }
    if (total > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW, "more than 2^31 list values in one batch");
    }
    aq_status st = aq__array_alloc(a, (int64_t)n, 2, 1, err);
    if (st == AQ_OK) {
        st = aq__array_alloc(a->children[0], (int64_t)total, 2, 0, err);
    }
    if (st != AQ_OK) {
        return st;
    }
    int32_t *off = aq__array_buffer_alloc(a, 1, (n + 1) * sizeof(int32_t));
    if (off == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
    }
    off[0] = 0;
    for (size_t i = 0; i < n; i++) {
        off[i + 1] = off[i] + (int32_t)counts[i];
    }
    if (whole != NULL && total > 0) {
        aq__array_buffer_borrow(a->children[0], 1, whole, keep);
        return AQ_OK;
    }
    if (adopt_single && n == 1 && vals[0] != NULL) {
        aq__array_buffer_adopt(a->children[0], 1, (void *)vals[0]);
        return AQ_OK;
    }
    uint8_t *data = aq__array_buffer_alloc(a->children[0], 1, total > 0 ? total * elem : 1);
    if (data == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
    }
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        if (counts[i] > 0) {
            memcpy(data + pos, vals[i], counts[i] * elem);
        }
        pos += counts[i] * elem;
    }
    return AQ_OK;
}

/* ---- the arenas and the writer thread ---- */

static void mq_arena_free(mq_arena *a)
{
    free(a->data);
    free(a->scales);
    free(a->zps);
    memset(a, 0, sizeof *a);
}

/* Asks for transparent huge pages for a large buffer written once per batch: a fault per
 * 2 MiB instead of per 4 KiB when the arena is first filled (docs/decisions.md, "The write
 * path"). Only advice; where THP is off or unsupported, nothing changes. */
static void mq_huge(void *p, size_t n)
{
#if defined(MADV_HUGEPAGE)
    const uintptr_t huge = (uintptr_t)2 << 20;
    uintptr_t lo = ((uintptr_t)p + huge - 1) & ~(huge - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(huge - 1);
    if (hi > lo) {
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
    }
#else
    (void)p;
    (void)n;
#endif
}

/* Room in the current arena for one more row of data_bytes and groups. The arena is allocated
 * on first use for a whole batch: a batch never holds more than batch_bytes of data, nor more
 * than batch_bytes / 8 groups (each costs a scale and a zero point), since mq_place flushes
 * first. Pages are touched only as rows fill them, then stay for the next batches (growing it
 * as rows came cost a copy of every batch's first half). */
static aq_status mq_arena_reserve(mq_state *s, size_t data_bytes, size_t groups, const char *name,
                                  aq_error *err)
{
    mq_arena *a = &s->arena[s->cur];
    if (a->data == NULL) {
        a->data_cap = s->batch_bytes;
        a->grp_cap = s->batch_bytes / (2 * sizeof(float)) + 1;
        a->data = aq__aligned_alloc(a->data_cap);
        a->scales = aq__aligned_alloc(a->grp_cap * sizeof(float));
        a->zps = aq__aligned_alloc(a->grp_cap * sizeof(float));
        if (a->data == NULL || a->scales == NULL || a->zps == NULL) {
            mq_arena_free(a);
            return aq__error_set(err, AQ_NO_MEMORY,
                                 "Layer '%s': out of memory for a batch of %zu "
                                 "bytes",
                                 name, s->batch_bytes);
        }
        mq_huge(a->data, a->data_cap);
        mq_huge(a->scales, a->grp_cap * sizeof(float));
        mq_huge(a->zps, a->grp_cap * sizeof(float));
    }
    if (data_bytes > a->data_cap - a->data_len || groups > a->grp_cap - a->grp_len) {
        return aq__error_set(err, AQ_INTERNAL, "Layer '%s': row does not fit its batch", name);
    }
    return AQ_OK;
}

static void *mq_writer_main(void *arg)
{
    mq_writer *x = arg;
    x->st = aq_ipc_writer_write((aq_ipc_writer *)x->ipc, &x->batch, &x->err);
    aq__array_release_if(&x->batch);
    return NULL;
}

/* Waits for the batch in flight, if any: its status (its message in *err). */
static aq_status mq_wait(mq_state *s, aq_error *err)
{
    if (!s->wr.running) {
        return AQ_OK;
    }
    (void)pthread_join(s->wr.thread, NULL);
    s->wr.running = false;
    if (s->wr.st != AQ_OK) {
        return aq__error_set(err, s->wr.st, "%s", s->wr.err.message);
    }
    return AQ_OK;
}

/* Writes a batch: on the writer thread when `async` (the batch is moved there), or here. The
 * batch before it is waited for first, so batches reach the file in order. */
static aq_status mq_submit(mq_state *s, struct ArrowArray *batch, bool async, aq_error *err)
{
    aq_status st = mq_wait(s, err);
    if (st != AQ_OK) {
        return st;
    }
    if (async) {
        aq__array_move(batch, &s->wr.batch);
        s->wr.ipc = s->ipc;
        s->wr.st = AQ_OK;
        aq_error_clear(&s->wr.err);
        /* Signals are for the caller's thread (the CLI's interrupt flag); SIGXFSZ stays as the
         * process has it, on the thread that writes. */
        sigset_t all, old;
        sigfillset(&all);
        sigdelset(&all, SIGXFSZ);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int rc = pthread_create(&s->wr.thread, NULL, mq_writer_main, &s->wr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0) {
            s->wr.running = true;
            return AQ_OK;
        }
        aq__array_move(&s->wr.batch, batch); /* no thread: write it here */
    }
    return aq_ipc_writer_write((aq_ipc_writer *)s->ipc, batch, err);
}

/* The quantized_data column of the pending rows: the arena's buffer or the one row's buffer
 * as is (borrowed or adopted), or the rows copied together. *in_arena: the rows lie in the
 * current arena back to back; *borrowed: one of them is read from the mapping. */
static aq_status mq_data_column(mq_state *s, struct ArrowArray *qd, size_t total_data,
                                bool *in_arena_out, bool *borrowed_out, aq_error *err)
{
    const size_t n = s->n_rows;
    /* quantized_data: the one row's buffer as is, or the rows copied together. */
    if (!s->large && total_data > INT32_MAX) {
        return aq__error_set(err, AQ_OVERFLOW, "batch data exceeds 2 GiB");
    }
    aq_status st = aq__array_alloc(qd, (int64_t)n, 3, 0, err);
    if (st != AQ_OK) {
        return st;
    }
    size_t osz = s->large ? sizeof(int64_t) : sizeof(int32_t);
    uint8_t *offs = aq__array_buffer_alloc(qd, 1, (n + 1) * osz);
    if (offs == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
    }
    size_t pos = 0;
    for (size_t i = 0; i <= n; i++) {
        if (s->large) {
            int64_t v = (int64_t)pos;
            memcpy(offs + i * osz, &v, osz);
        } else {
            int32_t v = (int32_t)pos;
            memcpy(offs + i * osz, &v, osz);
        }
        if (i < n) {
            pos += s->rows[i].data_size;
        }
    }
    /* The rows of an arena lie in it back to back: the batch borrows its buffers. */
    bool in_arena = true, borrowed = false;
    for (size_t i = 0; i < n; i++) {
        in_arena = in_arena && s->rows[i].arena;
        borrowed = borrowed || s->rows[i].borrowed != NULL;
    }
    const mq_arena *ar = &s->arena[s->cur];
    in_arena = in_arena && total_data > 0 && total_data == ar->data_len;
    if (in_arena) {
        aq__array_buffer_borrow(qd, 2, ar->data, s->keep);
    } else if (n == 1 && s->rows[0].borrowed != NULL && !s->exporting) {
        aq__array_buffer_borrow(qd, 2, s->rows[0].borrowed, s->keep);
    } else if (n == 1 && s->rows[0].data != NULL && !s->rows[0].arena) {
        aq__array_buffer_adopt(qd, 2, s->rows[0].data);
        s->rows[0].data = NULL;
    } else {
        uint8_t *data = aq__array_buffer_alloc(qd, 2, total_data > 0 ? total_data : 1);
        if (data == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
        }
        pos = 0;
        for (size_t i = 0; i < n; i++) {
            const mq_row *r = &s->rows[i];
            const uint8_t *src = r->borrowed != NULL ? r->borrowed : r->data;
            if (r->data_size > 0) {
                memcpy(data + pos, src, r->data_size);
            }
            pos += r->data_size;
        }
    }
    *in_arena_out = in_arena;
    *borrowed_out = borrowed;
    return AQ_OK;
}

/* The pending rows as one batch in *out (*borrowed_out: it reads from the mapping). The rows
 * stay pending (mq_drop gives them up). */
static aq_status mq_build(mq_state *s, struct ArrowArray *out, bool *borrowed_out, aq_error *err)
{
    size_t n = s->n_rows;
    aq_status st;
    struct ArrowArray batch;
    memset(&batch, 0, sizeof batch);
    const char **names = calloc(n, sizeof *names);
    const char **schemes = calloc(n, sizeof *schemes);
    const char **dtypes = calloc(n, sizeof *dtypes);
    const void **sv = calloc(n, sizeof *sv);
    const void **zv = calloc(n, sizeof *zv);
    const void **dv = calloc(n, sizeof *dv);
    size_t *gc = calloc(n, sizeof *gc);
    size_t *dc = calloc(n, sizeof *dc);
    uint8_t *bits = calloc(n, 1);
    uint32_t *groups = calloc(n, sizeof *groups);
    double *m[3] = {calloc(n, sizeof(double)), calloc(n, sizeof(double)),
                    calloc(n, sizeof(double))};
    uint64_t *sums = calloc(n, sizeof *sums);
    double *initial = s->exporting ? calloc(n, sizeof(double)) : NULL;
    if (!names || !schemes || !dtypes || !sv || !zv || !dv || !gc || !dc || !bits || !groups ||
        !m[0] || !m[1] || !m[2] || !sums || (s->exporting && initial == NULL)) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory building a batch");
        goto done;
    }
    size_t total_data = 0;
    for (size_t i = 0; i < n; i++) {
        const mq_row *r = &s->rows[i];
        names[i] = r->name;
        schemes[i] = r->scheme;
        dtypes[i] = r->source_dtype;
        sv[i] = r->scales;
        zv[i] = r->zps;
        gc[i] = r->groups;
        dv[i] = r->shape;
        dc[i] = r->ndim;
        bits[i] = (uint8_t)r->bit_width;
        groups[i] = (uint32_t)(r->group_size > UINT32_MAX ? UINT32_MAX : r->group_size);
        m[0][i] = r->sqnr;
        m[1][i] = r->cosine;
        m[2][i] = r->maxerr;
        if (initial != NULL) {
            initial[i] = r->initial_cosine;
        }
        total_data += r->data_size;
        aq__row_bytes rb = {
            .name = r->name,
            .name_len = strlen(r->name),
            .data = r->borrowed != NULL ? r->borrowed : r->data,
            .data_len = r->data_size,
            .scales = r->scales,
            .scales_len = r->groups * sizeof(float),
            .zero_points = r->zps,
            .zero_points_len = r->groups * sizeof(float),
            .shape = r->shape,
            .shape_len = r->ndim * sizeof(int64_t),
            .bit_width = bits[i],
            .group_size = groups[i],
            .scheme = r->scheme,
            .scheme_len = strlen(r->scheme),
            .source_dtype = r->source_dtype,
            .source_dtype_len = strlen(r->source_dtype),
        };
        sums[i] = aq__row_checksum(&rb);
    }
    if ((st = aq__array_alloc(&batch, (int64_t)n, 1, MQ_NCOLS + (initial != NULL ? 1 : 0), err)) !=
            AQ_OK ||
        (st = aq__rows_utf8(batch.children[0], names, n, err)) != AQ_OK) {
        goto done;
    }
    bool in_arena = false, borrowed = false;
    if ((st = mq_data_column(s, batch.children[1], total_data, &in_arena, &borrowed, err)) !=
        AQ_OK) {
        goto done;
    }
    const mq_arena *ar = &s->arena[s->cur];
    bool single = n == 1 && !s->rows[0].arena;
    const void *wsc = in_arena ? ar->scales : NULL, *wzp = in_arena ? ar->zps : NULL;
    if ((st = mq_list(batch.children[2], sv, gc, sizeof(float), n, single, wsc, s->keep, err)) !=
        AQ_OK) {
        goto done;
    }
    if (single) {
        s->rows[0].scales = NULL;
    }
    if ((st = mq_list(batch.children[3], zv, gc, sizeof(float), n, single, wzp, s->keep, err)) !=
        AQ_OK) {
        goto done;
    }
    if (single) {
        s->rows[0].zps = NULL;
    }
    if ((st = mq_list(batch.children[4], dv, dc, sizeof(int64_t), n, false, NULL, NULL, err)) !=
            AQ_OK ||
        (st = aq__rows_prim(batch.children[5], bits, 1, n, err)) != AQ_OK ||
        (st = aq__rows_prim(batch.children[6], groups, sizeof(uint32_t), n, err)) != AQ_OK ||
        (st = aq__rows_utf8(batch.children[7], schemes, n, err)) != AQ_OK ||
        (st = aq__rows_utf8(batch.children[8], dtypes, n, err)) != AQ_OK) {
        goto done;
    }
    for (int k = 0; k < 3; k++) {
        if ((st = aq__rows_prim(batch.children[9 + k], m[k], sizeof(double), n, err)) != AQ_OK) {
            goto done;
        }
    }
    if ((st = aq__rows_prim(batch.children[12], sums, sizeof(uint64_t), n, err)) != AQ_OK ||
        (initial != NULL && (st = aq__rows_prim(batch.children[MQ_NCOLS], initial, sizeof(double),
                                                n, err)) != AQ_OK)) {
        goto done;
    }
    aq__array_move(&batch, out);
    *borrowed_out = borrowed;
done:
    aq__array_release_if(&batch);
    free(names);
    free(schemes);
    free(dtypes);
    free(sv);
    free(zv);
    free(dv);
    free(gc);
    free(dc);
    free(bits);
    free(groups);
    for (int k = 0; k < 3; k++) {
        free(m[k]);
    }
    free(sums);
    free(initial);
    return st;
}

/* Gives up the pending rows (their pages too: borrowed rows were read from the mapping only
 * when their batch was written). */
static void mq_drop(mq_state *s)
{
    for (size_t i = 0; i < s->n_rows; i++) {
        if (s->model != NULL) {
            aq_model_release(s->model, s->rows[i].index);
        }
        mq_row_free(&s->rows[i]);
    }
    s->n_rows = 0;
    s->pending_bytes = 0;
}

/* Writes the pending rows as one batch. */
static aq_status mq_flush(mq_state *s, aq_error *err)
{
    if (s->n_rows == 0) {
        return AQ_OK;
    }
    struct ArrowArray batch;
    memset(&batch, 0, sizeof batch);
    bool borrowed = false;
    aq_status st = mq_build(s, &batch, &borrowed, err);
    /* A batch that borrows from the mapping is written now: its pages are let go below. */
    if (st == AQ_OK && (st = mq_submit(s, &batch, !borrowed, err)) == AQ_OK) {
        s->batches++;
        /* The next batch fills the other arena, whose batch mq_submit has waited for. */
        s->arena[s->cur].data_len = 0;
        s->arena[s->cur].grp_len = 0;
        s->cur = 1 - s->cur;
    }
    aq__array_release_if(&batch);
    mq_drop(s);
    return st;
}

/* ---- one tensor ---- */

/* Output buffers for a row of data_bytes and groups, replacing any it has (an attempt with
 * fewer bits). In the writing pass (r->place) the pending batch is flushed first when the row
 * would overflow it, as the main loop would do after quantizing, and a row smaller than a batch
 * goes into the arena after the pending rows; a larger one, or a row of the budget's measuring
 * pass, gets buffers of its own. */
static aq_status mq_place(mq_state *s, mq_row *r, size_t data_bytes, size_t groups,
                          const char *name, aq_error *err)
{
    mq_row_out_free(r);
    aq_status st;
    size_t out = data_bytes + 2 * groups * sizeof(float);
    if (r->place) {
        if (s->n_rows > 0 && s->pending_bytes + out > s->batch_bytes &&
            (st = mq_flush(s, err)) != AQ_OK) {
            return st;
        }
        if (out < s->batch_bytes) {
            if ((st = mq_arena_reserve(s, data_bytes, groups, name, err)) != AQ_OK) {
                return st;
            }
            mq_arena *a = &s->arena[s->cur];
            r->arena = true;
            r->data_off = a->data_len;
            r->grp_off = a->grp_len;
            r->data = a->data + a->data_len;
            r->scales = groups > 0 ? a->scales + a->grp_len : NULL;
            r->zps = groups > 0 ? a->zps + a->grp_len : NULL;
            return AQ_OK;
        }
    }
    r->data = aq__aligned_alloc(data_bytes);
    if (groups > 0) {
        r->scales = aq__aligned_alloc(groups * sizeof(float));
        r->zps = aq__aligned_alloc(groups * sizeof(float));
    }
    if (r->data == NULL || (groups > 0 && (r->scales == NULL || r->zps == NULL))) {
        return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", name);
    }
    return AQ_OK;
}

/* Adds a finished row to the pending batch (its arena space becomes the batch's). */
static void mq_push(mq_state *s, mq_row *r, size_t out_bytes)
{
    if (r->arena) {
        mq_arena *a = &s->arena[s->cur];
        a->data_len += r->data_size;
        a->grp_len += r->groups;
    }
    s->rows[s->n_rows++] = *r;
    s->pending_bytes += out_bytes;
}

static bool mq_aligned(const void *p, size_t align)
{
    return align == 0 || ((uintptr_t)p % align) == 0;
}

/* Element k of a BF16 or F64 source, for keeping it in float32. */
static double mq_src_value(const void *data, aq_dtype d, size_t k)
{
    if (d == AQ_DTYPE_BF16) {
        uint16_t h;
        memcpy(&h, (const char *)data + 2 * k, 2);
        return (double)aq__bf16_to_f32(h);
    }
    double v;
    memcpy(&v, (const char *)data + 8 * k, 8);
    return v;
}

/* A kept tensor: raw bytes, float32 for BF16/F64 sources (a float16 source stays float16). */
static aq_status mq_keep(mq_state *s, const aq_st_tensor *t, mq_row *r, aq_error *err)
{
    r->scheme = "raw";
    r->source_dtype = t->dtype_name;
    r->sqnr = (double)INFINITY;
    r->cosine = 1.0;
    r->maxerr = 0.0;
    aq_dtype d;
    if (t->dtype == AQ_ST_BF16 || t->dtype == AQ_ST_F64) {
        (void)aq_st_dtype_to_aq(t->dtype, &d);
        r->bit_width = 32;
        r->data_size = t->elements * 4;
        aq_status st = mq_place(s, r, r->data_size > 0 ? r->data_size : 1, 0, t->name, err);
        if (st != AQ_OK) {
            return st;
        }
        /* The conversion's error sums (x^2, e^2, x*y, y^2, max |e|) in element order. */
        double acc[5] = {0, 0, 0, 0, 0};
        for (size_t k = 0; k < t->elements; k++) {
            double x = mq_src_value(t->data, d, k);
            float y = (float)x;
            double e = x - (double)y;
            memcpy(r->data + 4 * k, &y, 4);
            acc[0] += x * x;
            acc[1] += e * e;
            acc[2] += x * (double)y;
            acc[3] += (double)y * (double)y;
            acc[4] = fabs(e) > acc[4] ? fabs(e) : acc[4];
        }
        if (t->dtype == AQ_ST_F64) {
            aq__metrics_from_sums(acc, &r->sqnr, &r->cosine, &r->maxerr);
        }
        return AQ_OK;
    }
    size_t esize = aq_st_dtype_size(t->dtype);
    r->bit_width = (unsigned)(esize * 8); /* 0 for an unknown dtype */
    r->data_size = t->nbytes;
    if (r->place && t->nbytes > 0 && t->nbytes < s->batch_bytes) {
        /* Copied into the batch's arena now, so that its pages can go at once. */
        aq_status st = mq_place(s, r, t->nbytes, 0, t->name, err);
        if (st == AQ_OK) {
            memcpy(r->data, t->data, t->nbytes);
        }
        return st;
    }
    r->borrowed = t->data; /* straight from the mapping */
    return AQ_OK;
}

/* The tensor's view, aligned for the kernels (copied into *copy when the file's is not). */
static aq_status mq_view(mq_state *s, size_t i, const aq_st_tensor *t, aq_tensor *src, void **copy,
                         aq_error *err)
{
    aq_status st = aq_model_tensor_view(s->model, i, src, err);
    *copy = NULL;
    if (st != AQ_OK) {
        return st;
    }
    if (!mq_aligned(src->data, aq_dtype_size(src->dtype))) {
        /* safetensors does not align tensors; the kernels need aligned elements. */
        if ((*copy = aq__aligned_alloc(t->nbytes)) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "Layer '%s': out of memory", t->name);
        }
        memcpy(*copy, src->data, t->nbytes);
        src->data = *copy;
    }
    return AQ_OK;
}

/* Quantizes src with (scheme, bits, group_size; 0: the context's) into r's own buffers
 * (replacing any) and measures it. */
static aq_status mq_quantize_with(mq_state *s, const aq_tensor *src, const aq_st_tensor *t,
                                  aq_scheme scheme, unsigned bits, size_t group_size, mq_row *r,
                                  aq_error *err)
{
    aq_ctx tmp = aq__ctx_with(s->ctx, scheme, bits,
                              group_size > 0 ? group_size : aq__ctx_group_size(s->ctx));
    mq_row_out_free(r);
    aq_layout l;
    aq_status st = aq_quantize_bound(&tmp, src, &l, err);
    if (st != AQ_OK) {
        return st;
    }
    r->scheme = aq_scheme_name(scheme);
    r->scheme_id = scheme;
    r->source_dtype = t->dtype_name;
    r->bit_width = l.bit_width;
    r->group_size = l.group_size;
    r->data_size = l.packed_bytes;
    r->groups = l.groups;
    if ((st = mq_place(s, r, l.packed_bytes, l.groups, t->name, err)) != AQ_OK) {
        return st;
    }
    return mq_quantize_measure(s, &tmp, src, scheme, &l, r, err);
}

/* What a quantized tensor is made with: scheme, bits and group (0: the context's), and whether
 * the budget chose them (then the floor does not raise them). */
typedef struct mq_choice {
    aq_scheme scheme;
    unsigned bits;
    size_t group;
    bool fixed;
} mq_choice;

/* Tensor i's choice while planning: the budget's, else the rules', else the context's. */
static mq_choice mq_choice_of(const mq_state *s, size_t i)
{
    mq_choice c;
    c.fixed = s->plan != NULL && s->plan[i].bits != 0;
    c.scheme = c.fixed ? s->plan[i].scheme : s->r_scheme != NULL ? s->r_scheme[i] : s->ctx->scheme;
    c.bits = c.fixed ? s->plan[i].bits : s->r_bits != NULL ? s->r_bits[i] : s->ctx->bit_width;
    c.group = c.fixed ? s->plan[i].group_size : 0;
    return c;
}

/* One attempt of the floor (aq__floor_run): the tensor quantized at `bits` into the row. */
typedef struct mq_attempt {
    mq_state *s;
    const aq_tensor *src;
    const aq_st_tensor *t;
    const mq_choice *c;
    mq_row *r;
} mq_attempt;

static aq_status mq_attempt_at(void *user, unsigned bits, double *cosine, aq_error *err)
{
    mq_attempt *a = user;
    aq_status st = mq_quantize_with(a->s, a->src, a->t, a->c->scheme, bits, a->c->group, a->r, err);
    *cosine = a->r->cosine;
    return st;
}

/* One quantized tensor with choice c, raised while the cosine stays below the floor (unless
 * the budget fixed it). */
static aq_status mq_quantize(mq_state *s, size_t i, const aq_st_tensor *t, const mq_choice *c,
                             mq_row *r, aq_model_tensor_result *res, aq_error *err)
{
    aq_tensor src;
    void *copy = NULL;
    aq_status st = mq_view(s, i, t, &src, &copy, err);
    if (st == AQ_OK) {
        st = mq_importance(s, t, err);
    }
    if (st != AQ_OK) {
        free(copy);
        return st;
    }
    /* Tensors the budget chose for follow the plan; tensors the rules fix keep their bits. */
    mq_attempt a = {s, &src, t, c, r};
    unsigned bits = c->bits;
    res->initial_bit_width = bits;
    st =
        aq__floor_run(&bits, s->min_cosine, c->fixed, mq_attempt_at, &a, &res->initial_cosine, err);
    res->moved = bits != res->initial_bit_width;
    free(copy);
    return st;
}

/* The bytes a kept tensor takes in the file (mq_keep: float32 for BF16/F64 sources, the
 * source's own bytes otherwise). */
static size_t mq_kept_bytes(const aq_st_tensor *t)
{
    if (t->dtype == AQ_ST_BF16 || t->dtype == AQ_ST_F64) {
        return t->elements * 4;
    }
    return t->nbytes;
}

/* The bytes of a tensor the budget does not choose for: kept (as stored), or quantized at the
 * bits the rules fix (with a floor, quantized here as the writing pass will, since the floor
 * may raise them). */
static aq_status mq_fixed_bytes(mq_state *s, const int *kept, size_t i, size_t *out, aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(s->model, i);
    if (kept[i]) {
        *out = mq_kept_bytes(t);
        return AQ_OK;
    }
    unsigned bits = s->r_bits != NULL ? s->r_bits[i] : s->ctx->bit_width;
    aq_scheme scheme = s->r_scheme != NULL ? s->r_scheme[i] : s->ctx->scheme;
    aq_status st;
    if (s->min_cosine > 0.0 && bits < 8) {
        mq_row r;
        aq_model_tensor_result res;
        memset(&r, 0, sizeof r);
        memset(&res, 0, sizeof res);
        mq_choice c = mq_choice_of(s, i);
        st = mq_quantize(s, i, t, &c, &r, &res, err);
        *out = r.data_size + 2 * r.groups * sizeof(float);
        mq_row_free(&r);
        aq_model_release(s->model, i);
        return st;
    }
    aq_layout l;
    if ((st = aq_layout_compute_scheme(scheme, t->shape, t->ndim, bits, s->ctx->group_size, &l,
                                       err)) != AQ_OK) {
        return st;
    }
    *out = l.packed_bytes + 2 * l.groups * sizeof(float);
    return AQ_OK;
}

/* ---- the default mode's model-wide size (the pipeline's plan) ---- */

/* Chosen tensor i measured into the plan: its options and the rules' preference. */
static aq_status mq_plan_tensor(mq_state *s, const int *kept, size_t i, aq__plan *p, aq_error *err)
{
    const aq_st_tensor *t = aq_model_tensor(s->model, i);
    aq_tensor src;
    void *copy = NULL;
    aq_status st = mq_view(s, i, t, &src, &copy, err);
    if (st == AQ_OK) {
        st = mq_importance(s, t, err);
    }
    aq__plan_pref pref;
    memset(&pref, 0, sizeof pref);
    if (kept[i]) {
        pref.keep_bytes = mq_kept_bytes(t);
        pref.keep_bits = pref.keep_bytes * 8 / t->elements > 16 ? 32u : 16u;
    } else if (!s->r_profile[i]) {
        pref.bits = s->r_bits[i];
        pref.scheme = s->r_scheme[i];
        pref.group_size = aq__ctx_group_size(s->ctx);
    }
    if (st == AQ_OK) {
        /* The importance is borrowed: the writing pass looks it up again. */
        st = aq__plan_measure(p, s->ctx, &src, s->imp != NULL ? s->ibuf : NULL, false, &pref,
                              s->min_cosine, s->opts->cancel, i, err);
    }
    free(copy);
    aq_model_release(s->model, i);
    return st;
}

/* The default budget's plan over the model (aq__plan_over): the tensors' roles, a fixed
 * tensor's bytes, a chosen one measured; progress counts the chosen tensors' source bytes. */
typedef struct mq_plan_src {
    mq_state *s;
    const int *kept;
    aq_model_progress prog;
} mq_plan_src;

static aq__plan_role mq_plan_role(void *user, size_t i)
{
    return (aq__plan_role)((mq_plan_src *)user)->s->r_role[i];
}

static aq_status mq_plan_fixed(void *user, size_t i, size_t *elements, size_t *bytes, aq_error *err)
{
    mq_plan_src *src = user;
    *elements = aq_model_tensor(src->s->model, i)->elements;
    return mq_fixed_bytes(src->s, src->kept, i, bytes, err);
}

static aq_status mq_plan_chosen(void *user, size_t i, aq__plan *p, aq_error *err)
{
    mq_plan_src *src = user;
    const aq_model_quantize_options *o = src->s->opts;
    const aq_st_tensor *t = aq_model_tensor(src->s->model, i);
    aq_status st = mq_plan_tensor(src->s, src->kept, i, p, err);
    if (st == AQ_OK) {
        src->prog.tensors_done = i + 1;
        src->prog.bytes_done += t->nbytes;
        src->prog.current = t->name;
        if (o->progress != NULL) {
            o->progress(o->progress_user, &src->prog);
        }
    }
    return st;
}

/* The default budget with layer rules: one size over every counted tensor of the model (the
 * profile's target_bpw), the rules' treatments (8 bits, kept in float) as preferences within
 * it. kept[i] becomes 0 for a tensor the rules kept that the plan quantizes. */
static aq_status mq_plan_rules(mq_state *s, int *kept, aq_error *err)
{
    const aq_model_quantize_options *o = s->opts;
    const size_t n = aq_model_count(s->model);
    aq_profile prof;
    aq_rules_profile(o->rules, &prof);
    mq_plan_src user = {s, kept, {0, 0, 0, 0, NULL, 1}};
    for (size_t i = 0; i < n; i++) {
        if (s->r_role[i] == AQ__PLAN_CHOSEN) {
            user.prog.bytes_total += aq_model_tensor(s->model, i)->nbytes;
            user.prog.tensors_total = i + 1;
        }
    }
    const aq__plan_source src = {&user, mq_plan_role, mq_plan_fixed, mq_plan_chosen};
    aq__plan p;
    aq_status st = aq__plan_over(&p, n, o->schemes, o->n_schemes, prof.scheme, &src,
                                 prof.target_bpw, s->min_cosine > 0.0, err);
    if (st == AQ_OK && (s->plan = calloc(n > 0 ? n : 1, sizeof *s->plan)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory planning the budget");
    }
    for (size_t j = 0; j < p.m && st == AQ_OK; j++) {
        const aq__budget_option *x = &p.opt[j * p.per + p.choice[j]];
        size_t i = p.index[j];
        kept[i] = x->keep ? 1 : 0;
        if (!x->keep) {
            s->plan[i] = *x;
        }
        if (s->min_cosine > 0.0 && x->cosine < s->recorded_floor) {
            /* The size left it below the floor. Six decimals, rounded down: validate's own
             * sums may differ from the kernels' in the last bits. */
            s->recorded_floor = floor(x->cosine * 1e6) / 1e6;
        }
    }
    aq__plan_free(&p);
    return st;
}

/* An explicit budget's tensors (aq__budget_over): the model's, read from the mapping one at a
 * time; progress counts the budgeted tensors' source bytes. */
typedef struct mq_budget_src {
    mq_state *s;
    const int *kept;
    void *copy; /* the view's aligned copy, while one is measured */
    aq_model_progress prog;
} mq_budget_src;

static aq__plan_role mq_budget_role(void *user, size_t i)
{
    const mq_budget_src *b = user;
    if (!aq_st_dtype_to_aq(aq_model_tensor(b->s->model, i)->dtype, NULL)) {
        return AQ__PLAN_OUTSIDE;
    }
    return mq_budgeted(b->s, b->kept, i) ? AQ__PLAN_CHOSEN : AQ__PLAN_FIXED;
}

static void mq_budget_shape(void *user, size_t i, const int64_t **shape, size_t *ndim,
                            size_t *elements)
{
    const aq_st_tensor *t = aq_model_tensor(((mq_budget_src *)user)->s->model, i);
    *shape = t->shape;
    *ndim = t->ndim;
    *elements = t->elements;
}

static aq_status mq_budget_fixed(void *user, size_t i, size_t *bytes, aq_error *err)
{
    mq_budget_src *b = user;
    return mq_fixed_bytes(b->s, b->kept, i, bytes, err);
}

static aq_status mq_budget_view(void *user, size_t i, aq_tensor *t, const float **imp,
                                aq_error *err)
{
    mq_budget_src *b = user;
    const aq_st_tensor *st_t = aq_model_tensor(b->s->model, i);
    aq_status st = mq_view(b->s, i, st_t, t, &b->copy, err);
    if (st == AQ_OK) {
        st = mq_importance(b->s, st_t, err);
    }
    *imp = b->s->imp;
    return st;
}

static void mq_budget_release(void *user, size_t i)
{
    mq_budget_src *b = user;
    free(b->copy);
    b->copy = NULL;
    aq_model_release(b->s->model, i);
}

static void mq_budget_measured(void *user, size_t i)
{
    mq_budget_src *b = user;
    const aq_model_quantize_options *o = b->s->opts;
    const aq_st_tensor *t = aq_model_tensor(b->s->model, i);
    b->prog.tensors_done = i + 1;
    b->prog.bytes_done += t->nbytes;
    b->prog.current = t->name;
    if (o->progress != NULL) {
        o->progress(o->progress_user, &b->prog);
    }
}

/* An explicit budget (aq__budget_over over the model's tensors): s->plan receives each
 * budgeted tensor's choice (bits 0 for the others: kept, or fixed by the rules). The default
 * mode's budget with rules is mq_plan_rules. */
static aq_status mq_plan(mq_state *s, int *kept, aq_error *err)
{
    const aq_model_quantize_options *o = s->opts;
    if (o->target_bpw == AQ_TARGET_BPW_PROFILE && o->rules != NULL) {
        return mq_plan_rules(s, kept, err);
    }
    aq_scheme own = s->ctx->scheme;
    if (o->rules != NULL) {
        aq_profile p;
        aq_rules_profile(o->rules, &p);
        own = p.scheme; /* the rules' profile scheme: what the profile tensors would get */
    }
    const size_t n = aq_model_count(s->model);
    if ((s->plan = calloc(n > 0 ? n : 1, sizeof *s->plan)) == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory planning the budget");
    }
    aq__budget_params bp;
    memset(&bp, 0, sizeof bp);
    bp.target_bpw = o->target_bpw;
    bp.whole = o->budget_scope == AQ_BUDGET_SCOPE_MODEL;
    bp.min_cosine = s->min_cosine;
    bp.schemes = o->schemes != NULL && o->n_schemes > 0 ? o->schemes : &own;
    bp.n_schemes = o->schemes != NULL && o->n_schemes > 0 ? o->n_schemes : 1;
    bp.own_scheme = s->ctx->scheme;
    bp.own_bits = s->ctx->bit_width;
    bp.cancel = o->cancel;
    mq_budget_src user = {s, kept, NULL, {0, 0, 0, 0, NULL, 1}};
    for (size_t i = 0; i < n; i++) {
        if (mq_budgeted(s, kept, i)) {
            user.prog.bytes_total += aq_model_tensor(s->model, i)->nbytes;
            user.prog.tensors_total = i + 1;
        }
    }
    const aq__budget_source src = {&user,
                                   n,
                                   mq_budget_role,
                                   mq_budget_shape,
                                   mq_budget_fixed,
                                   mq_budget_view,
                                   mq_budget_release,
                                   mq_budget_measured};
    return aq__budget_over(s->ctx, &src, &bp, s->plan, err);
}

/* The options' values and the calibration, checked before any work. */
static aq_status mq_check_options(const aq_model *model, const aq_model_quantize_options *opts,
                                  aq_error *err)
{
    const double min_cosine = opts != NULL ? opts->min_cosine : 0.0;
    const double target = opts != NULL ? opts->target_bpw : 0.0;
    if (!(min_cosine >= 0.0 && min_cosine <= 1.0)) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid min_cosine: %g. Must be between 0 (off) and 1", min_cosine);
    }
    if (!(target >= 0.0 && target <= 64.0) && target != AQ_TARGET_BPW_PROFILE) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid target_bpw: %g. Must be between 0 (off) and 64, or "
                             "AQ_TARGET_BPW_PROFILE (-1)",
                             target);
    }
    if (opts != NULL && opts->budget_scope != AQ_BUDGET_SCOPE_PROFILE &&
        opts->budget_scope != AQ_BUDGET_SCOPE_MODEL) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid budget_scope: %d. Must be AQ_BUDGET_SCOPE_PROFILE (0) or "
                             "AQ_BUDGET_SCOPE_MODEL (1)",
                             (int)opts->budget_scope);
    }
    const aq_calib *calib = opts != NULL ? opts->calib : NULL;
    if (calib == NULL) {
        return AQ_OK;
    }
    /* Before any output: the table must be finished and name only layers of this model. */
    aq_calib_layer_info info;
    aq_status st = aq_calib_layer_get(calib, 0, &info, err);
    if (st != AQ_OK) {
        return st;
    }
    size_t nt = aq_model_count(model);
    const char **names = calloc(nt + 1, sizeof *names);
    if (names == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    for (size_t i = 0; i < nt; i++) {
        names[i] = aq_model_tensor(model, i)->name;
    }
    st = aq_calib_check_model(calib, names, nt, err);
    free(names);
    return st;
}

/* The state's per-tensor arrays (kept, rows and, with rules, the rules' decisions). */
static aq_status mq_state_alloc(mq_state *s, int **kept, aq_error *err)
{
    const size_t n = aq_model_count(s->model);
    const bool ruled = s->opts != NULL && s->opts->rules != NULL;
    *kept = calloc(n + 1, sizeof **kept);
    s->rows = calloc(n + 1, sizeof *s->rows);
    s->keep = aq__keepalive_create(mq_keep_destroy, NULL);
    if (ruled) {
        s->r_bits = calloc(n + 1, sizeof *s->r_bits);
        s->r_scheme = calloc(n + 1, sizeof *s->r_scheme);
        s->r_rule = calloc(n + 1, sizeof *s->r_rule);
        s->r_profile = calloc(n + 1, sizeof *s->r_profile);
        s->r_role = calloc(n + 1, sizeof *s->r_role);
    }
    if (*kept == NULL || s->rows == NULL || s->keep == NULL ||
        (ruled && (s->r_bits == NULL || s->r_scheme == NULL || s->r_rule == NULL ||
                   s->r_profile == NULL || s->r_role == NULL))) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    return AQ_OK;
}

static void mq_state_free(mq_state *s)
{
    if (s->wr.running) {
        aq_error ignored; /* the run failed already */
        (void)mq_wait(s, &ignored);
    }
    for (size_t i = 0; i < s->n_rows; i++) {
        mq_row_free(&s->rows[i]);
    }
    mq_arena_free(&s->arena[0]);
    mq_arena_free(&s->arena[1]);
    aq_ipc_writer_free((aq_ipc_writer *)s->ipc);
    aq__keepalive_release(s->keep);
    free(s->rows);
    free(s->plan);
    free(s->mbuf);
    free(s->r_bits);
    free(s->r_scheme);
    free(s->r_rule);
    free(s->r_profile);
    free(s->r_role);
    free(s->ibuf);
}

/* Decides every tensor first: an unquantizable tensor fails the run before any work, and the
 * largest output tells whether quantized_data must be large_binary. */
static aq_status mq_decide(mq_state *s, int *kept, aq_error *err)
{
    const aq_model_quantize_options *opts = s->opts;
    const bool ruled = opts != NULL && opts->rules != NULL;
    const aq_calib *calib = opts != NULL ? opts->calib : NULL;
    /* With a floor or a budget a tensor may take 8 bits and any scheme: bound with the
     * largest layout the table has at 8 bits. */
    const bool any = s->min_cosine > 0.0 || (opts != NULL && opts->target_bpw != 0.0) || ruled;
    aq_ctx bound_ctx =
        any ? aq__ctx_with(s->ctx, aq__scheme_widest(), 8, aq__ctx_group_size(s->ctx)) : *s->ctx;
    for (size_t i = 0; i < aq_model_count(s->model); i++) {
        const char *reason;
        aq_status st = ruled ? mq_rule(s, i, &kept[i], err)
                             : aq_model_keep_rule(s->model, i, opts, &kept[i], &reason, err);
        if (st != AQ_OK) {
            return st;
        }
        const aq_st_tensor *t = aq_model_tensor(s->model, i);
        size_t out_bytes = t->nbytes * 2; /* a bound for kept tensors (BF16 -> F32) */
        if (!kept[i]) {
            aq_tensor v;
            aq_layout l;
            if ((st = aq_model_tensor_view(s->model, i, &v, err)) != AQ_OK ||
                (st = aq_quantize_bound(&bound_ctx, &v, &l, err)) != AQ_OK) {
                return st;
            }
            /* A calibration layer whose channels do not fit the tensor fails here, before
             * any output. */
            if (calib != NULL && (st = mq_importance(s, t, err)) != AQ_OK) {
                return st;
            }
            out_bytes = l.packed_bytes;
        }
        if (out_bytes > INT32_MAX) {
            s->large = true;
        }
    }
    /* Tests force the large_binary layout, which real data only needs past 2 GiB a tensor. */
    const char *force = getenv("AQ_MODEL_LARGE_BINARY");
    if (force != NULL && strcmp(force, "1") == 0) {
        s->large = true;
    }
    return AQ_OK;
}

/* Tensor i, written as row r: the summary, the caller's per-tensor result and progress. Names
 * point into the model when there is one (they outlive the call), else into the plan. */
static void mq_report(mq_state *s, size_t i, const mq_row *r, aq_model_tensor_result *res,
                      size_t out_bytes, aq__model_totals *tot, aq_model_progress *prog)
{
    const aq_model_quantize_options *opts = s->opts;
    const aq__plan_tensor *e = &s->mp->t[i];
    const char *name = s->model != NULL ? aq_model_tensor(s->model, i)->name : e->name;
    aq__model_totals_add(tot, name, e->kept != 0, e->elements, e->nbytes, out_bytes, r->sqnr,
                         r->cosine);
    res->index = i;
    res->name = name;
    res->kept = e->kept;
    res->elements = e->elements;
    res->bytes = out_bytes;
    res->sqnr_db = r->sqnr;
    res->cosine = r->cosine;
    res->rule = e->rule;
    if (!e->kept) {
        tot->sum.moved += (size_t)res->moved;
        res->scheme = r->scheme_id;
        res->bit_width = r->bit_width;
        res->group_size = r->group_size;
    }
    if (opts != NULL && opts->on_tensor != NULL) {
        opts->on_tensor(opts->on_tensor_user, res);
    }
    prog->tensors_done = i + 1;
    prog->bytes_done += e->nbytes;
    prog->current = name;
    if (opts != NULL && opts->progress != NULL) {
        opts->progress(opts->progress_user, prog);
    }
}

/* ---- execute: tensor i of the plan into a row ---- */

/* Tensor i kept or quantized as the plan says, into *r (placed in the pending batch's arena
 * when writing here; buffers of its own when exporting). */
static aq_status mq_exec_tensor(mq_state *s, size_t i, mq_row *r, aq_model_tensor_result *res,
                                aq_error *err)
{
    const aq__plan_tensor *e = &s->mp->t[i];
    const aq_st_tensor *t = aq_model_tensor(s->model, i);
    memset(r, 0, sizeof *r);
    memset(res, 0, sizeof *res);
    r->index = i;
    r->name = t->name;
    r->shape = t->shape;
    r->ndim = t->ndim;
    r->place = !s->exporting;
    aq_status st;
    if (e->kept) {
        st = mq_keep(s, t, r, err);
    } else {
        mq_choice c = {e->scheme, e->bits, e->group_size, e->fixed != 0};
        st = mq_quantize(s, i, t, &c, r, res, err);
    }
    if (st != AQ_OK) {
        mq_row_free(r);
        return st;
    }
    r->initial_cosine = e->kept ? r->cosine : res->initial_cosine;
    if (r->borrowed == NULL) {
        aq_model_release(s->model, i);
    }
    return AQ_OK;
}

/* ---- write: rows into batches, batches into the file ---- */

/* Appends finished row r (out_bytes of output) to the pending batch, writing the batch first
 * when the row would overflow it and after when it is full: batch boundaries depend only on
 * the rows' sizes, so rows made anywhere give the same file. */
static aq_status mq_append(mq_state *s, mq_row *r, size_t out_bytes, aq_error *err)
{
    aq_status st;
    /* (A row in the arena was placed after this flush already: mq_place.) */
    if (!r->arena && s->n_rows > 0 && s->pending_bytes + out_bytes > s->batch_bytes &&
        (st = mq_flush(s, err)) != AQ_OK) {
        mq_row_free(r);
        return st;
    }
    mq_push(s, r, out_bytes);
    if (s->pending_bytes >= s->batch_bytes) {
        return mq_flush(s, err);
    }
    return AQ_OK;
}

/* The pending rows written, the writer thread joined and the file closed (renamed into
 * place). */
static aq_status mq_finish(mq_state *s, aq_error *err)
{
    aq_status st;
    if ((st = mq_flush(s, err)) != AQ_OK || (st = mq_wait(s, err)) != AQ_OK) {
        return st;
    }
    return aq_ipc_writer_close((aq_ipc_writer *)s->ipc, err);
}

/* Opens the file at out_path for the plan's rows (aq_ipc_writer, a temporary name). */
static aq_status mq_open(mq_state *s, const char *out_path, aq_error *err)
{
    struct ArrowSchema schema;
    memset(&schema, 0, sizeof schema);
    aq_ipc_write_options wo = AQ_SIZED_INIT(aq_ipc_write_options);
    wo.format = AQ_IPC_FORMAT_FILE;
    wo.compression = (aq_ipc_compression)s->mp->compression;
    aq_ipc_writer *w = NULL;
    aq_status st = mq_schema(s->mp, false, &schema, err);
    if (st == AQ_OK && (st = aq_ipc_writer_open(out_path, &schema, &wo, &w, err)) == AQ_OK) {
        s->ipc = w;
        aq__ipc_writer_drop_behind(w, true);
    }
    aq__schema_release_if(&schema);
    return st;
}

/* A state that follows plan mp: rows, the keepalive; ctx, model and opts as given. */
static aq_status mq_state_init(mq_state *s, aq_ctx *ctx, aq_model *model, const aq_model_plan *mp,
                               const aq_model_quantize_options *opts, aq_error *err)
{
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->model = model;
    s->mp = mp;
    s->opts = opts;
    s->batch_bytes = mp->batch_bytes;
    s->large = mp->large != 0;
    s->min_cosine = mp->min_cosine;
    s->recorded_floor = mp->recorded_floor;
    s->rows = calloc(mp->n + 1, sizeof *s->rows);
    s->keep = aq__keepalive_create(mq_keep_destroy, NULL);
    if (s->rows == NULL || s->keep == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    return AQ_OK;
}

/* ---- plan ---- */

/* The plan from the planning state: every tensor's decision and the model-wide fields. */
static aq_status mq_plan_fill(mq_state *s, const int *kept, aq_model_plan **out, aq_error *err)
{
    const size_t n = aq_model_count(s->model);
    aq_model_plan *p = NULL;
    aq_status st = aq__model_plan_alloc(n, &p, err);
    if (st != AQ_OK) {
        return st;
    }
    const aq_model_quantize_options *o = s->opts;
    p->ctx_bits = s->ctx->bit_width;
    p->ctx_group = aq__ctx_group_size(s->ctx);
    p->ctx_scheme = s->ctx->scheme;
    p->preserve_moments = s->ctx->preserve_moments ? 1 : 0;
    p->min_cosine = s->min_cosine;
    p->recorded_floor = s->recorded_floor;
    p->large = s->large ? 1 : 0;
    p->batch_bytes = s->batch_bytes;
    p->compression = o != NULL ? o->compression : 0;
    p->calibrated = o != NULL && o->calib != NULL;
    bool ok =
        aq__model_plan_dup(&p->profile, o != NULL && o->profile != NULL ? o->profile : "none");
    st = ok ? aq__io_model_meta_json(s->model, &p->model_meta, &p->components, err)
            : aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    if (st == AQ_OK) {
        st = aq__model_plan_tensors(p, s->model, err);
    }
    for (size_t i = 0; i < n && st == AQ_OK; i++) {
        aq__plan_tensor *e = &p->t[i];
        e->kept = kept[i] ? 1 : 0;
        e->rule = s->r_rule != NULL ? s->r_rule[i] : NULL;
        if (!e->kept) {
            mq_choice c = mq_choice_of(s, i);
            e->scheme = c.scheme;
            e->bits = c.bits;
            e->group_size = c.group > 0 ? c.group : aq__ctx_group_size(s->ctx);
            e->fixed = c.fixed ? 1 : 0;
        }
    }
    if (st != AQ_OK) {
        aq_model_plan_free(p);
        return st;
    }
    *out = p;
    return AQ_OK;
}

/* Every decision about the model (the rules, the keep rule, the floor's record, the budget)
 * into a plan. */
static aq_status mq_plan_make(aq_ctx *ctx, aq_model *model, const aq_model_quantize_options *opts,
                              aq_model_plan **out, aq_error *err)
{
    if (aq_model_count(model) == 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "the model holds no tensors: nothing to quantize");
    }
    aq_status st = mq_check_options(model, opts, err);
    if (st != AQ_OK) {
        return st;
    }
    /* Copies of the context (other scheme or bits) share its thread pool: create it now, so
     * that no copy creates one of its own. */
    aq__pool *pool;
    if ((st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
        return st;
    }
    mq_state s;
    memset(&s, 0, sizeof s);
    s.ctx = ctx;
    s.model = model;
    s.opts = opts;
    s.batch_bytes =
        opts != NULL && opts->batch_bytes > 0 ? opts->batch_bytes : AQ_MODEL_BATCH_BYTES;
    s.min_cosine = opts != NULL ? opts->min_cosine : 0.0;
    s.recorded_floor = s.min_cosine;
    int *kept = NULL;
    if ((st = mq_state_alloc(&s, &kept, err)) == AQ_OK &&
        (st = mq_decide(&s, kept, err)) == AQ_OK &&
        (opts == NULL || opts->target_bpw == 0.0 || (st = mq_plan(&s, kept, err)) == AQ_OK)) {
        st = mq_plan_fill(&s, kept, out, err);
    }
    mq_state_free(&s);
    free(kept);
    return st;
}

aq_status aq_model_plan_create(aq_ctx *ctx, aq_model *model, const aq_model_quantize_options *opts,
                               aq_model_plan **out, aq_error *err)
{
    if (ctx == NULL || model == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_plan_create: NULL argument");
    }
    *out = NULL;
    aq_model_quantize_options own;
    aq_status st = mq_opts_read(&opts, &own, err);
    if (st != AQ_OK) {
        return st;
    }
    /* Planning writes no tensor: a callback per tensor would never be called. */
    own.on_tensor = NULL;
    return mq_plan_make(ctx, model, opts, out, err);
}

/* ---- the whole run ---- */

/* Every tensor of plan executed here, one at a time, each appended to the file at out_path as
 * it comes: the path a distributed run takes in pieces (aq_model_execute, aq_model_writer).
 * ctx carries the plan's parameters. */
static aq_status mq_run(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan,
                        const char *out_path, const aq_model_quantize_options *opts,
                        aq_model_summary *summary, aq_error *err)
{
    mq_state s;
    aq__model_totals tot;
    aq__model_totals_init(&tot);
    const size_t n = plan->n;
    aq_model_progress prog = {0, n, 0, aq_model_data_bytes(model), NULL, 0};
    aq_status st;
    if ((st = mq_state_init(&s, ctx, model, plan, opts, err)) != AQ_OK ||
        (st = mq_open(&s, out_path, err)) != AQ_OK) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (mq_cancelled(opts)) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled");
            goto done;
        }
        mq_row r;
        aq_model_tensor_result res;
        if ((st = mq_exec_tensor(&s, i, &r, &res, err)) != AQ_OK) {
            goto done;
        }
        size_t out_bytes = r.data_size + 2 * r.groups * sizeof(float);
        if ((st = mq_append(&s, &r, out_bytes, err)) != AQ_OK) {
            goto done;
        }
        mq_report(&s, i, &r, &res, out_bytes, &tot, &prog);
    }
    if ((st = mq_finish(&s, err)) == AQ_OK) {
        aq__model_totals_finish(&tot, s.batches, summary);
    }
done:
    mq_state_free(&s);
    return st;
}

/* The checks of aq_model_quantize before any work: the output must be a place a file can go,
 * and none of the inputs. */
static aq_status mq_check_output(const aq_model *model, const char *out_path,
                                 const aq_model_quantize_options *opts, aq_error *err)
{
    aq_status st = aq__io_model_check_output(model, out_path, err);
    if (st == AQ_OK && opts != NULL) {
        st = aq__io_calib_check_output(opts->calib, out_path, err);
    }
    return st;
}

aq_status aq_model_quantize(aq_ctx *ctx, aq_model *model, const char *out_path,
                            const aq_model_quantize_options *opts, aq_model_summary *summary,
                            aq_error *err)
{
    if (ctx == NULL || model == NULL || out_path == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_quantize: NULL argument");
    }
    aq_model_quantize_options own;
    aq_status st = mq_opts_read(&opts, &own, err);
    if (st != AQ_OK) {
        return st;
    }
    aq_model_plan *plan = NULL;
    if ((st = mq_check_output(model, out_path, opts, err)) != AQ_OK ||
        (st = mq_plan_make(ctx, model, opts, &plan, err)) != AQ_OK) {
        return st;
    }
    st = mq_run(ctx, model, plan, out_path, opts, summary, err);
    aq_model_plan_free(plan);
    return st;
}

aq_status aq_model_quantize_plan(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan,
                                 const char *out_path, const aq_model_quantize_options *opts,
                                 aq_model_summary *summary, aq_error *err)
{
    if (ctx == NULL || model == NULL || plan == NULL || out_path == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_quantize_plan: NULL argument");
    }
    aq_model_quantize_options own;
    aq_status st = mq_opts_read(&opts, &own, err);
    if (st != AQ_OK) {
        return st;
    }
    if (plan->format == AQ__PLAN_GGUF) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_quantize_plan: the plan is a GGUF file's "
                             "(aq_model_plan_create_gguf): aq_model_to_gguf_plan follows it");
    }
    aq__pool *pool;
    if ((st = aq__model_plan_follow_check("aq_model_quantize_plan", plan, model,
                                          opts != NULL ? opts->calib : NULL, out_path, err)) !=
            AQ_OK ||
        (st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
        return st;
    }
    /* The plan's parameters, the caller's threads (the copy shares its pool), as
     * aq_model_execute takes them: the rows are the same wherever they are made. */
    aq_ctx c = aq__ctx_with(ctx, plan->ctx_scheme, plan->ctx_bits, plan->ctx_group);
    c.preserve_moments = plan->preserve_moments != 0;
    return mq_run(&c, model, plan, out_path, opts, summary, err);
}

/* ---- execute, for another process ---- */

aq_status aq_model_execute(aq_ctx *ctx, aq_model *model, const aq_model_plan *plan, size_t begin,
                           size_t end, const aq_model_execute_options *opts,
                           struct ArrowSchema *schema, struct ArrowArray *rows, aq_error *err)
{
    if (ctx == NULL || model == NULL || plan == NULL || schema == NULL || rows == NULL ||
        (opts != NULL && opts->size < sizeof(aq_model_execute_options))) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_execute: NULL argument or options' size not set");
    }
    if (begin >= end || end > plan->n) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_execute: tensors [%zu, %zu) are not a range of the plan's "
                             "%zu",
                             begin, end, plan->n);
    }
    const aq_calib *calib = opts != NULL ? opts->calib : NULL;
    if (plan->calibrated != (calib != NULL)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             plan->calibrated
                                 ? "aq_model_execute: the plan was made with a calibration: "
                                   "execute needs the same one"
                                 : "aq_model_execute: the plan was made without a calibration");
    }
    aq_status st = aq__model_plan_match(plan, model, err);
    aq__pool *pool;
    if (st != AQ_OK || (st = aq__ctx_pool(ctx, &pool, err)) != AQ_OK) {
        return st;
    }
    if (plan->format == AQ__PLAN_GGUF) {
        return aq__gguf_execute(ctx, model, plan, begin, end, opts, schema, rows, err);
    }
    /* The plan's parameters, the caller's threads (the copy shares its pool). */
    aq_ctx c = aq__ctx_with(ctx, plan->ctx_scheme, plan->ctx_bits, plan->ctx_group);
    c.preserve_moments = plan->preserve_moments != 0;
    aq_model_quantize_options o;
    memset(&o, 0, sizeof o);
    o.calib = calib;
    o.cancel = opts != NULL ? opts->cancel : NULL;
    mq_state s;
    struct ArrowSchema sc;
    memset(&sc, 0, sizeof sc);
    aq_model_progress prog = {0, end - begin, 0, 0, NULL, 0};
    for (size_t i = begin; i < end; i++) {
        prog.bytes_total += plan->t[i].nbytes;
    }
    if ((st = mq_state_init(&s, &c, model, plan, &o, err)) != AQ_OK) {
        goto done;
    }
    s.exporting = true;
    for (size_t i = begin; i < end; i++) {
        if (mq_cancelled(&o)) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled");
            goto done;
        }
        mq_row r;
        aq_model_tensor_result res;
        if ((st = mq_exec_tensor(&s, i, &r, &res, err)) != AQ_OK) {
            goto done;
        }
        mq_push(&s, &r, r.data_size + 2 * r.groups * sizeof(float));
        prog.tensors_done++;
        prog.bytes_done += plan->t[i].nbytes;
        prog.current = plan->t[i].name;
        if (opts != NULL && opts->progress != NULL) {
            opts->progress(opts->progress_user, &prog);
        }
    }
    bool borrowed = false;
    if ((st = mq_schema(plan, true, &sc, err)) == AQ_OK &&
        (st = mq_build(&s, rows, &borrowed, err)) == AQ_OK) {
        aq__schema_move(&sc, schema);
    }
done:
    mq_drop(&s);
    mq_state_free(&s);
    aq__schema_release_if(&sc);
    return st;
}

/* ---- write, from rows made elsewhere ---- */

struct aq_model_writer {
    aq__gguf_writer *gguf; /* a GGUF plan's writer; the rest is then unused */
    mq_state s;
    aq__model_totals tot;
    aq_model_progress prog;
    /* The caller's callbacks, where the rows' reports go (as aq_model_quantize's do). */
    aq_model_quantize_options calls;
    size_t next; /* the plan's tensor the next row must be */
};

aq_status aq_model_writer_open(const aq_model_plan *plan, const char *out_path,
                               const aq_model_writer_options *opts, aq_model_writer **out,
                               aq_error *err)
{
    if (plan == NULL || out_path == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_writer_open: NULL argument");
    }
    *out = NULL;
    aq_model_writer_options o;
    aq_status st = AQ__OPTS_READ(aq_model_writer_options, progress_user, o, opts, err);
    if (st == AQ_OK && plan->format != AQ__PLAN_GGUF && o.on_gguf_tensor != NULL) {
        st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                           "aq_model_writer_open: on_gguf_tensor is for a GGUF plan's writer; "
                           "the plan is a model file's");
    }
    /* Rows made elsewhere for this checkpoint: the checks of a plan followed here. */
    if (st == AQ_OK && opts != NULL && o.model != NULL &&
        (st = aq__model_plan_match(plan, o.model, err)) == AQ_OK) {
        st = aq__io_model_check_output(o.model, out_path, err);
    }
    if (st == AQ_OK && opts != NULL && o.calib != NULL) {
        st = aq__io_calib_check_output(o.calib, out_path, err);
    }
    if (st != AQ_OK) {
        return st;
    }
    aq_model_writer *w = calloc(1, sizeof *w);
    if (w == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    aq__model_totals_init(&w->tot);
    w->prog.tensors_total = plan->n;
    for (size_t i = 0; i < plan->n; i++) {
        w->prog.bytes_total += plan->t[i].nbytes;
    }
    w->calls.size = sizeof w->calls;
    if (opts != NULL) {
        w->calls.on_tensor = o.on_tensor;
        w->calls.on_tensor_user = o.on_tensor_user;
        w->calls.progress = o.progress;
        w->calls.progress_user = o.progress_user;
    }
    if (plan->format == AQ__PLAN_GGUF) {
        st = aq__gguf_writer_open(plan, out_path, opts != NULL ? o.on_gguf_tensor : NULL,
                                  opts != NULL ? o.on_gguf_tensor_user : NULL, &w->gguf, err);
        if (st == AQ_OK) {
            aq__gguf_writer_reports(w->gguf, w->calls.on_tensor, w->calls.on_tensor_user,
                                    w->calls.progress, w->calls.progress_user);
        }
    } else if ((st = mq_state_init(&w->s, NULL, NULL, plan, &w->calls, err)) == AQ_OK) {
        st = mq_open(&w->s, out_path, err);
    }
    if (st != AQ_OK) {
        aq_model_writer_free(w);
        return st;
    }
    *out = w;
    return AQ_OK;
}

/* The columns of the rows aq_model_execute makes: the model file's, then (rows of this
 * release) MQ_INITIAL_COSINE. */
static aq_status mw_check_schema(const struct ArrowSchema *schema, bool *wide, aq_error *err)
{
    if ((schema->n_children != MQ_NCOLS && schema->n_children != MQ_NCOLS + 1) ||
        strcmp(schema->format, "+s") != 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: a struct of the model file's %d columns (then '%s', "
                             "optionally) was expected, not '%s' with %lld",
                             MQ_NCOLS, MQ_INITIAL_COSINE, schema->format,
                             (long long)schema->n_children);
    }
    if (schema->n_children > MQ_NCOLS) {
        const struct ArrowSchema *c = schema->children[MQ_NCOLS];
        if (c->name == NULL || strcmp(c->name, MQ_INITIAL_COSINE) != 0 ||
            strcmp(c->format, "g") != 0) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "rows: column %d is '%s' of type '%s'; '%s' of type 'g' was "
                                 "expected",
                                 MQ_NCOLS, c->name != NULL ? c->name : "", c->format,
                                 MQ_INITIAL_COSINE);
        }
    }
    for (int i = 0; i < MQ_NCOLS; i++) {
        const struct ArrowSchema *c = schema->children[i];
        const char *f = c->format;
        bool fmt = strcmp(f, mq_cols[i].format) == 0 || (i == 1 && strcmp(f, "Z") == 0);
        bool child = mq_cols[i].child == NULL ||
                     (c->n_children == 1 && strcmp(c->children[0]->format, mq_cols[i].child) == 0);
        if (c->name == NULL || strcmp(c->name, mq_cols[i].name) != 0 || !fmt || !child) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "rows: column %d is '%s' of type '%s'; the model file's is "
                                 "'%s' of type '%s'",
                                 i, c->name != NULL ? c->name : "", f, mq_cols[i].name,
                                 mq_cols[i].format);
        }
    }
    *wide = strcmp(schema->children[1]->format, "Z") == 0;
    return AQ_OK;
}

/* Row k of a batch of these columns, read in place. */
typedef struct mw_row {
    const char *name, *scheme, *dtype;
    size_t name_len, scheme_len, dtype_len;
    const uint8_t *data;
    size_t data_len;
    const float *scales, *zps;
    size_t n_scales, n_zps;
    const int64_t *shape;
    size_t ndim;
    uint8_t bits;
    uint32_t group;
    double sqnr, cosine, maxerr;
    double initial_cosine; /* NaN for rows without the column */
    uint64_t checksum;
} mw_row;

static aq_status mw_read(const struct ArrowArray *b, bool wide, int64_t k, mw_row *r, aq_error *err)
{
    for (int64_t c = 0; c < b->n_children; c++) {
        const struct ArrowArray *a = b->children[c];
        if (a->null_count != 0 && a->buffers[0] != NULL) {
            return aq__error_set(err, AQ_INVALID_DATA, "rows: column '%s' has nulls",
                                 c < MQ_NCOLS ? mq_cols[c].name : MQ_INITIAL_COSINE);
        }
    }
    const int64_t j = b->offset + k;
    int64_t st;
    size_t n;
    const struct ArrowArray *const *ch = (const struct ArrowArray *const *)b->children;
    aq__rows_span(ch[0], false, j, &st, &n);
    r->name = aq__rows_at(ch[0]->buffers[2], 1, st);
    r->name_len = n;
    aq__rows_span(ch[1], wide, j, &st, &r->data_len);
    r->data = aq__rows_at(ch[1]->buffers[2], 1, st);
    aq__rows_span(ch[2], false, j, &st, &r->n_scales);
    r->scales = aq__rows_at(ch[2]->children[0]->buffers[1], 4, ch[2]->children[0]->offset + st);
    aq__rows_span(ch[3], false, j, &st, &r->n_zps);
    r->zps = aq__rows_at(ch[3]->children[0]->buffers[1], 4, ch[3]->children[0]->offset + st);
    aq__rows_span(ch[4], false, j, &st, &r->ndim);
    r->shape = aq__rows_at(ch[4]->children[0]->buffers[1], 8, ch[4]->children[0]->offset + st);
    memcpy(&r->bits, aq__rows_value(ch[5], j, 1), 1);
    memcpy(&r->group, aq__rows_value(ch[6], j, 4), 4);
    aq__rows_span(ch[7], false, j, &st, &r->scheme_len);
    r->scheme = aq__rows_at(ch[7]->buffers[2], 1, st);
    aq__rows_span(ch[8], false, j, &st, &r->dtype_len);
    r->dtype = aq__rows_at(ch[8]->buffers[2], 1, st);
    memcpy(&r->sqnr, aq__rows_value(ch[9], j, 8), 8);
    memcpy(&r->cosine, aq__rows_value(ch[10], j, 8), 8);
    memcpy(&r->maxerr, aq__rows_value(ch[11], j, 8), 8);
    memcpy(&r->checksum, aq__rows_value(ch[12], j, 8), 8);
    r->initial_cosine = (double)NAN;
    if (b->n_children > MQ_NCOLS) {
        memcpy(&r->initial_cosine, aq__rows_value(ch[MQ_NCOLS], j, 8), 8);
    }
    return AQ_OK;
}

/* Row r checked against the plan's tensor e (index i): its name, shape, dtype, layout and
 * checksum. *scheme: its scheme's static name ("raw" when kept). */
static aq_status mw_check_row(const aq_model_plan *plan, size_t i, const mw_row *r,
                              const char **scheme, aq_scheme *scheme_id, aq_error *err)
{
    const aq__plan_tensor *e = &plan->t[i];
    if (!aq__rows_is(r->name, r->name_len, e->name)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: '%.*s' came where tensor %zu of the plan, '%s', was expected "
                             "(rows out of order, missing, or of another plan)",
                             (int)(r->name_len > 200 ? 200 : r->name_len), r->name, i, e->name);
    }
    if (r->ndim != e->ndim || (e->ndim > 0 && memcmp(r->shape, e->shape, e->ndim * 8) != 0) ||
        !aq__rows_is(r->dtype, r->dtype_len, e->dtype_name)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: tensor '%s' has another shape or source dtype than the "
                             "plan's (%s)",
                             e->name, e->dtype_name);
    }
    if (e->kept) {
        *scheme = "raw";
        *scheme_id = AQ_SCHEME_AFFINE;
        if (!aq__rows_is(r->scheme, r->scheme_len, "raw") ||
            r->data_len != aq__model_plan_kept_bytes(e) || r->n_scales != 0 || r->n_zps != 0) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "rows: tensor '%s' is kept in the plan (%zu raw bytes, no "
                                 "scales): its row is not",
                                 e->name, aq__model_plan_kept_bytes(e));
        }
    } else {
        *scheme = aq_scheme_name(e->scheme);
        *scheme_id = e->scheme;
        bool floor = !e->fixed && plan->min_cosine > 0.0;
        bool bits_ok =
            r->bits == e->bits || (floor && r->bits > e->bits && (r->bits == 4 || r->bits == 8));
        aq_layout l;
        memset(&l, 0, sizeof l);
        aq_status st = AQ_OK;
        if (bits_ok && aq__rows_is(r->scheme, r->scheme_len, *scheme)) {
            st = aq_layout_compute_scheme(e->scheme, e->shape, e->ndim, r->bits, e->group_size, &l,
                                          err);
        }
        if (st != AQ_OK || !bits_ok || !aq__rows_is(r->scheme, r->scheme_len, *scheme) ||
            r->data_len != l.packed_bytes || r->n_scales != l.groups || r->n_zps != l.groups ||
            r->group != (uint32_t)l.group_size) {
            return aq__error_set(err, AQ_INVALID_DATA,
                                 "rows: tensor '%s' is %s at %u bits in the plan: its row (%.*s, "
                                 "%u bits, %zu bytes, %zu groups) does not have that layout",
                                 e->name, *scheme, e->bits, (int)r->scheme_len, r->scheme,
                                 (unsigned)r->bits, r->data_len, r->n_scales);
        }
    }
    aq__row_bytes rb = {
        .name = r->name,
        .name_len = r->name_len,
        .data = r->data,
        .data_len = r->data_len,
        .scales = r->scales,
        .scales_len = r->n_scales * sizeof(float),
        .zero_points = r->zps,
        .zero_points_len = r->n_zps * sizeof(float),
        .shape = r->shape,
        .shape_len = r->ndim * sizeof(int64_t),
        .bit_width = r->bits,
        .group_size = r->group,
        .scheme = r->scheme,
        .scheme_len = r->scheme_len,
        .source_dtype = r->dtype,
        .source_dtype_len = r->dtype_len,
    };
    if (aq__row_checksum(&rb) != r->checksum) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: tensor '%s': its checksum does not match its bytes (damaged "
                             "on the way)",
                             e->name);
    }
    return AQ_OK;
}

/* Row r of tensor i copied into the pending batch and appended. */
static aq_status mw_append_row(aq_model_writer *w, size_t i, const mw_row *in, const char *scheme,
                               aq_scheme scheme_id, aq_error *err)
{
    mq_state *s = &w->s;
    const aq__plan_tensor *e = &s->mp->t[i];
    mq_row r;
    memset(&r, 0, sizeof r);
    r.index = i;
    r.name = e->name;
    r.shape = e->shape;
    r.ndim = e->ndim;
    r.place = true;
    r.scheme = scheme;
    r.scheme_id = scheme_id;
    r.source_dtype = e->dtype_name;
    r.bit_width = in->bits;
    r.group_size = in->group;
    r.data_size = in->data_len;
    r.groups = in->n_scales;
    r.sqnr = in->sqnr;
    r.cosine = in->cosine;
    r.maxerr = in->maxerr;
    aq_status st = mq_place(s, &r, in->data_len > 0 ? in->data_len : 1, in->n_scales, e->name, err);
    if (st != AQ_OK) {
        mq_row_free(&r);
        return st;
    }
    if (in->data_len > 0) {
        memcpy(r.data, in->data, in->data_len);
    }
    if (in->n_scales > 0) {
        memcpy(r.scales, in->scales, in->n_scales * sizeof(float));
        memcpy(r.zps, in->zps, in->n_zps * sizeof(float));
    }
    size_t out_bytes = r.data_size + 2 * r.groups * sizeof(float);
    if ((st = mq_append(s, &r, out_bytes, err)) != AQ_OK) {
        return st;
    }
    aq_model_tensor_result res;
    memset(&res, 0, sizeof res);
    res.initial_bit_width = e->bits;
    res.moved = !e->kept && in->bits != e->bits;
    res.initial_cosine = res.moved ? in->initial_cosine : in->cosine;
    mq_report(s, i, &r, &res, out_bytes, &w->tot, &w->prog);
    return AQ_OK;
}

aq_status aq_model_writer_append(aq_model_writer *w, const struct ArrowSchema *schema,
                                 const struct ArrowArray *rows, aq_error *err)
{
    if (w == NULL || schema == NULL || rows == NULL || rows->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_writer_append: NULL argument");
    }
    if (w->gguf != NULL) {
        return aq__gguf_writer_append(w->gguf, schema, rows, err);
    }
    if (w->s.ipc == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_writer_append: the writer is closed or failed");
    }
    bool wide = false;
    aq_status st = mw_check_schema(schema, &wide, err);
    if (st == AQ_OK && rows->n_children != schema->n_children) {
        st = aq__error_set(err, AQ_INVALID_DATA, "rows: %lld columns where the schema has %lld",
                           (long long)rows->n_children, (long long)schema->n_children);
    }
    for (int64_t k = 0; k < rows->length && st == AQ_OK; k++) {
        mw_row r;
        memset(&r, 0, sizeof r);
        const char *scheme = NULL;
        aq_scheme scheme_id = AQ_SCHEME_AFFINE;
        if (w->next >= w->s.mp->n) {
            st = aq__error_set(err, AQ_INVALID_DATA, "rows: more rows than the plan's %zu tensors",
                               w->s.mp->n);
        } else if ((st = mw_read(rows, wide, k, &r, err)) == AQ_OK &&
                   (st = mw_check_row(w->s.mp, w->next, &r, &scheme, &scheme_id, err)) == AQ_OK &&
                   (st = mw_append_row(w, w->next, &r, scheme, scheme_id, err)) == AQ_OK) {
            w->next++;
        }
    }
    if (st != AQ_OK && st != AQ_INVALID_DATA) {
        /* A failed write leaves the file unusable: nothing more goes to it. */
        mq_drop(&w->s);
        (void)mq_wait(&w->s, &(aq_error){0});
        aq_ipc_writer_free((aq_ipc_writer *)w->s.ipc);
        w->s.ipc = NULL;
    }
    return st;
}

aq_status aq_model_writer_close(aq_model_writer *w, aq_model_summary *summary, aq_error *err)
{
    if (w == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_writer_close: NULL argument");
    }
    if (w->gguf != NULL) {
        return aq__gguf_writer_close(w->gguf, summary, NULL, err);
    }
    if (w->s.ipc == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_writer_close: the writer is closed or failed");
    }
    if (w->next < w->s.mp->n) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "rows: %zu of the plan's %zu tensors were appended; the first "
                             "missing is '%s'; nothing written",
                             w->next, w->s.mp->n, w->s.mp->t[w->next].name);
    }
    aq_status st = mq_finish(&w->s, err);
    if (st == AQ_OK) {
        aq__model_totals_finish(&w->tot, w->s.batches, summary);
    }
    aq_ipc_writer_free((aq_ipc_writer *)w->s.ipc);
    w->s.ipc = NULL;
    return st;
}

void aq_model_writer_free(aq_model_writer *w)
{
    if (w == NULL) {
        return;
    }
    aq__gguf_writer_free(w->gguf);
    mq_state_free(&w->s);
    free(w);
}

aq_status aq_model_writer_close_gguf(aq_model_writer *w, aq_gguf_write_summary *summary,
                                     aq_error *err)
{
    if (w == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_model_writer_close_gguf: NULL argument");
    }
    if (w->gguf == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_model_writer_close_gguf: the plan is a model file's, not a GGUF "
                             "file's: aq_model_writer_close closes it");
    }
    return aq__gguf_writer_close(w->gguf, NULL, summary, err);
}
