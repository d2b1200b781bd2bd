/*
 * Reading a model file (DESIGN.md 2.4) row by row, and writing it back to safetensors.
 *
 * The file comes through the IPC reader (mapped; buffers are used in place), one record batch
 * at a time, so reading a model never holds more than one batch, besides the batches of rows
 * a caller holds to use in place (aq_qmodel_row_hold: the batch is reference-counted). Every
 * row is validated here before it is handed out: a model file is input from outside.
 */
#include "arrow_internal.h"
#include "io_internal.h"
#include "ipc_internal.h"
#include "quant_internal.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const qm_colnames[12] = {
    "layer_name", "quantized_data", "scales",       "zero_points", "shape",  "bit_width",
    "group_size", "scheme",         "source_dtype", "sqnr_db",     "cosine", "max_abs_error"};

/* A record batch, shared by the reader and the holds on its rows (aq_qmodel_row_hold). */
typedef struct qm_batch {
    size_t refs;
    struct ArrowArray array;
} qm_batch;

struct aq_qmodel_hold {
    qm_batch *batch;
    float *floats; /* the row's scales and zero points when the reader had copied them */
    int guard;     /* the file mapping's aq__mapped_add slot, when the row lies in it; or -1 */
    int fd;        /* that mapping's file (the reader's region owns it, the batch keeps it); -1 */
    size_t mapped; /* the mapping's size: the file's size when it was opened */
    char *path;
};

struct aq_qmodel {
    char *path;
    aq_ipc_reader *reader;
    struct ArrowSchema schema;
    qm_batch *batch; /* the batch being read (NULL before the first) */
    int64_t col[12];
    int64_t sum_col; /* the optional checksum column, or -1 */
    int64_t rows;
    int64_t next_row;
    size_t row_index; /* rows handed out so far, over all batches */
    uint64_t faults;  /* aq_mapped_faults() when opened */
    int format_version;
    arw_var names, data, scheme, sdtype;
    arw_list scales, zps, shape;
    arw_prim bits, group, m[3], sums;
    /* The current row's own copies. */
    char *name_buf, *scheme_buf, *dtype_buf;
    size_t name_cap, scheme_cap, dtype_cap;
    int64_t shape_buf[AQ_MAX_NDIM];
    float *fcopy;
    size_t fcopy_cap;
    char **meta_keys;
    char **meta_values;
    size_t n_meta;
    aq_qmodel_row row;
    /* Address ranges read for the current row, given back to the kernel when it is done. */
    uintptr_t lo[3], hi[3];
    bool current;       /* a row was handed out and is still valid */
    bool held;          /* the current row is held: its pages stay */
    bool copy_on_write; /* the file mapping was made writable for holds */
};

static void qm_batch_release(qm_batch *b)
{
    if (b != NULL && __atomic_sub_fetch(&b->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        aq__array_release_if(&b->array);
        free(b);
    }
}

/* A model file is mapped by the IPC reader, and pages touched while reading count as resident
 * memory until they are unmapped. MADV_PAGEOUT drops the clean file pages of a row once it
 * is done; it never changes memory contents. A compressed file's rows lie in buffers the
 * reader decompressed for this batch alone, which only this reader reads, row after row
 * (offsets never decrease): the whole pages inside a finished row are given back with
 * MADV_DONTNEED (they would read as zeros, but nothing reads them again), so that a caller
 * copying rows out never holds a decompressed batch beside its copies. A held row
 * (aq_qmodel_row_hold) is in use in place: its pages stay. */
static void qm_touch(aq_qmodel *qm, int k, const void *p, size_t n)
{
    uintptr_t a = (uintptr_t)p;
    if (n == 0) {
        return;
    }
    if (qm->hi[k] == 0 || a < qm->lo[k]) {
        qm->lo[k] = a;
    }
    if (a + n > qm->hi[k]) {
        qm->hi[k] = a + n;
    }
}

static void qm_let_go(aq_qmodel *qm)
{
    qm->current = false;
    if (qm->held) {
        /* Its memory is in use in place: nothing goes. */
        qm->held = false;
        memset(qm->lo, 0, sizeof qm->lo);
        memset(qm->hi, 0, sizeof qm->hi);
        return;
    }
#if defined(MADV_PAGEOUT)
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int k = 0; k < 3; k++) {
        if (qm->hi[k] > qm->lo[k]) {
            if (aq__ipc_reader_in_map(qm->reader, (const void *)qm->lo[k])) {
                uintptr_t lo = qm->lo[k] / page * page;
                uintptr_t hi = (qm->hi[k] + page - 1) / page * page;
                (void)madvise((void *)lo, hi - lo, MADV_PAGEOUT);
            } else {
                uintptr_t lo = (qm->lo[k] + page - 1) / page * page;
                uintptr_t hi = qm->hi[k] / page * page;
                if (hi > lo) {
                    (void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
                }
            }
        }
        qm->lo[k] = qm->hi[k] = 0;
    }
#else
    memset(qm->lo, 0, sizeof qm->lo);
    memset(qm->hi, 0, sizeof qm->hi);
#endif
}

static aq_status qm_copy_str(const arw_var *v, int64_t i, char **buf, size_t *cap, aq_error *err)
{
    const uint8_t *d;
    size_t n;
    aq__arrow_var_get(v, i, &d, &n);
    if (n + 1 > *cap) {
        char *b = realloc(*buf, n + 1);
        if (b == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        *buf = b;
        *cap = n + 1;
    }
    memcpy(*buf, d, n);
    (*buf)[n] = '\0';
    if (memchr(*buf, '\0', n) != NULL) {
        return aq__error_set(err, AQ_INVALID_DATA, "a string contains a NUL byte");
    }
    return AQ_OK;
}

/* Parses the schema metadata (C Data Interface encoding) into key/value strings. */
static aq_status qm_metadata(aq_qmodel *qm, aq_error *err)
{
    const char *md = qm->schema.metadata;
    if (md == NULL) {
        return AQ_OK;
    }
    int32_t n;
    memcpy(&n, md, 4);
    if (n < 0 || n > 1000000) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: bad schema metadata", qm->path);
    }
    qm->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    qm->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (qm->meta_keys == NULL || qm->meta_values == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    const char *p = md + 4;
    for (int32_t i = 0; i < n; i++) {
        char **dst[2] = {&qm->meta_keys[i], &qm->meta_values[i]};
        for (int k = 0; k < 2; k++) {
            int32_t len;
            memcpy(&len, p, 4);
            p += 4;
            if (len < 0 || (*dst[k] = malloc((size_t)len + 1)) == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            }
            memcpy(*dst[k], p, (size_t)len);
            (*dst[k])[len] = '\0';
            p += len;
        }
        qm->n_meta++;
    }
    return AQ_OK;
}

const char *aq_qmodel_metadata(const aq_qmodel *qm, const char *key)
{
    for (size_t i = 0; qm != NULL && key != NULL && i < qm->n_meta; i++) {
        if (strcmp(qm->meta_keys[i], key) == 0) {
            return qm->meta_values[i];
        }
    }
    return NULL;
}

aq_status aq_qmodel_open(const char *path, aq_qmodel **out, aq_error *err)
{
    if (path == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qmodel_open: NULL argument");
    }
    aq_status st = AQ_OK;
    aq_qmodel *qm = calloc(1, sizeof *qm);
    if (qm == NULL || (qm->path = aq__strdup(path)) == NULL) {
        free(qm);
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    qm->faults = aq_mapped_faults();
    if ((st = aq_ipc_reader_open(path, &qm->reader, err)) != AQ_OK ||
        (st = aq_ipc_reader_schema(qm->reader, &qm->schema, err)) != AQ_OK) {
        goto done;
    }
    if (qm->schema.format == NULL || strcmp(qm->schema.format, "+s") != 0) {
        st = aq__error_set(err, AQ_INVALID_DATA, "%s: not a record batch schema", path);
        goto done;
    }
    for (int i = 0; i < 12; i++) {
        qm->col[i] = aq__arrow_find_column(&qm->schema, qm_colnames[i]);
        if (qm->col[i] < 0) {
            st = aq__error_set(err, AQ_INVALID_DATA,
                               "%s: not an arrowquant model file: column '%s' is missing", path,
                               qm_colnames[i]);
            goto done;
        }
    }
    /* Files written before the checksum column read as before. */
    qm->sum_col = aq__arrow_find_column(&qm->schema, "checksum");
    if ((st = qm_metadata(qm, err)) != AQ_OK) {
        goto done;
    }
    const char *fv = aq_qmodel_metadata(qm, "arrowquant.format_version");
    const char *pk = aq_qmodel_metadata(qm, "arrowquant.packing");
    if (fv == NULL || atoi(fv) < AQ_FORMAT_VERSION_MIN || atoi(fv) > AQ_FORMAT_VERSION ||
        pk == NULL || strcmp(pk, "lsb-first") != 0) {
        st = aq__error_set(err, AQ_UNSUPPORTED,
                           "%s: arrowquant.format_version '%s' / packing '%s' not supported "
                           "(expected %d to %d / lsb-first)",
                           path, fv ? fv : "(missing)", pk ? pk : "(missing)",
                           AQ_FORMAT_VERSION_MIN, AQ_FORMAT_VERSION);
        goto done;
    }
    qm->format_version = atoi(fv);
    *out = qm;
    qm = NULL;
done:
    aq_qmodel_free(qm);
    return st;
}

void aq_qmodel_free(aq_qmodel *qm)
{
    if (qm == NULL) {
        return;
    }
    qm_batch_release(qm->batch);
    aq__schema_release_if(&qm->schema);
    aq_ipc_reader_free(qm->reader);
    for (size_t i = 0; i < qm->n_meta; i++) {
        free(qm->meta_keys[i]);
        free(qm->meta_values[i]);
    }
    free(qm->meta_keys);
    free(qm->meta_values);
    free(qm->name_buf);
    free(qm->scheme_buf);
    free(qm->dtype_buf);
    free(qm->fcopy);
    free(qm->path);
    free(qm);
}

aq_status aq_qmodel_rewind(aq_qmodel *qm, aq_error *err)
{
    qm_let_go(qm);
    qm_batch_release(qm->batch);
    qm->batch = NULL;
    qm->copy_on_write = false;
    aq_ipc_reader_free(qm->reader);
    qm->reader = NULL;
    qm->rows = qm->next_row = 0;
    qm->row_index = 0;
    return aq_ipc_reader_open(qm->path, &qm->reader, err);
}

static const arw_list_spec qm_float_spec = {"f", "list<float32>", false};
static const arw_list_spec qm_shape_spec = {"l", "list<int64>", false};

static aq_status qm_import(aq_qmodel *qm, aq_error *err)
{
    const struct ArrowSchema *s = &qm->schema;
    const struct ArrowArray *a = &qm->batch->array;
    int64_t off;
    aq_status st = aq__arrow_check_batch(s, a, &qm->rows, &off, err);
    if (st != AQ_OK) {
        return st;
    }
    int64_t *c = qm->col;
    int64_t r = qm->rows;
#define QM_S(i) s->children[c[i]], a->children[c[i]], off, r
    if ((st = aq__arrow_import_var("layer_name", false, "utf8", QM_S(0), &qm->names, err)) ||
        (st = aq__arrow_import_var("quantized_data", true, "binary", QM_S(1), &qm->data, err)) ||
        (st = aq__arrow_import_list("scales", &qm_float_spec, QM_S(2), &qm->scales, err)) ||
        (st = aq__arrow_import_list("zero_points", &qm_float_spec, QM_S(3), &qm->zps, err)) ||
        (st = aq__arrow_import_list("shape", &qm_shape_spec, QM_S(4), &qm->shape, err)) ||
        (st = aq__arrow_import_prim("bit_width", 'C', "uint8", QM_S(5), &qm->bits, err)) ||
        (st = aq__arrow_import_prim("group_size", 'I', "uint32", QM_S(6), &qm->group, err)) ||
        (st = aq__arrow_import_var("scheme", false, "utf8", QM_S(7), &qm->scheme, err)) ||
        (st = aq__arrow_import_var("source_dtype", false, "utf8", QM_S(8), &qm->sdtype, err)) ||
        (st = aq__arrow_import_prim("sqnr_db", 'g', "float64", QM_S(9), &qm->m[0], err)) ||
        (st = aq__arrow_import_prim("cosine", 'g', "float64", QM_S(10), &qm->m[1], err)) ||
        (st = aq__arrow_import_prim("max_abs_error", 'g', "float64", QM_S(11), &qm->m[2], err))) {
        return st;
    }
#undef QM_S
    if (qm->sum_col >= 0 &&
        (st = aq__arrow_import_prim("checksum", 'L', "uint64", s->children[qm->sum_col],
                                    a->children[qm->sum_col], off, r, &qm->sums, err)) != AQ_OK) {
        return st;
    }
    return AQ_OK;
}

/* Floats of a list row, copied when the buffer is not aligned for float. */
static aq_status qm_floats(aq_qmodel *qm, const arw_list *l, int64_t start, int64_t count,
                           float *tmp, const float **out, aq_error *err)
{
    const uint8_t *p = l->values + (size_t)start * 4;
    if (((uintptr_t)p & 3u) == 0) {
        *out = (const float *)(const void *)p;
        return AQ_OK;
    }
    if (tmp == NULL) {
        return aq__error_set(err, AQ_INTERNAL, "%s: misaligned floats", qm->path);
    }
    memcpy(tmp, p, (size_t)count * 4);
    *out = tmp;
    return AQ_OK;
}

/* Compares row i's bytes with its checksum (format.md 6.2), before any of them is used. */
static aq_status qm_verify(aq_qmodel *qm, int64_t i, size_t ri, aq_error *err)
{
    if (!arw_prim_valid(&qm->sums, i)) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: row %zu (layer '%s') has a null checksum",
                             qm->path, ri, qm->name_buf);
    }
    aq__row_bytes rb;
    memset(&rb, 0, sizeof rb);
    const uint8_t *p;
    aq__arrow_var_get(&qm->names, i, &p, &rb.name_len);
    rb.name = p;
    aq__arrow_var_get(&qm->data, i, &p, &rb.data_len);
    rb.data = p;
    aq__arrow_var_get(&qm->scheme, i, &p, &rb.scheme_len);
    rb.scheme = p;
    aq__arrow_var_get(&qm->sdtype, i, &p, &rb.source_dtype_len);
    rb.source_dtype = p;
    int64_t start, count;
    aq__arrow_list_get(&qm->scales, i, &start, &count);
    rb.scales = qm->scales.values + (size_t)start * 4;
    rb.scales_len = (size_t)count * 4;
    aq__arrow_list_get(&qm->zps, i, &start, &count);
    rb.zero_points = qm->zps.values + (size_t)start * 4;
    rb.zero_points_len = (size_t)count * 4;
    aq__arrow_list_get(&qm->shape, i, &start, &count);
    rb.shape = qm->shape.values + (size_t)start * 8;
    rb.shape_len = (size_t)count * 8;
    rb.bit_width = qm->bits.values[qm->bits.offset + i];
    memcpy(&rb.group_size, qm->group.values + (size_t)(qm->group.offset + i) * 4, 4);
    uint64_t want;
    memcpy(&want, qm->sums.values + (size_t)(qm->sums.offset + i) * 8, 8);
    uint64_t got = aq__row_checksum(&rb);
    if (got != want) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: row %zu (layer '%s'): checksum mismatch (stored %016" PRIx64
                             ", computed %016" PRIx64 "): the row's bytes are damaged",
                             qm->path, ri, qm->name_buf, want, got);
    }
    return AQ_OK;
}

/* A kept row (scheme "raw"): its bits and size must be those of its source dtype as kept
 * (float32 for BF16 and F64 sources), with no scales. */
static aq_status qm_raw_row(const aq_qmodel *qm, aq_qmodel_row *row, int64_t sn, aq_error *err)
{
    const char *name = row->name;
    const size_t elements = row->elements;
    row->raw = 1;
    aq_st_dtype sd = aq_st_dtype_from_name(row->source_dtype);
    size_t esize;
    if (sd == AQ_ST_F32 || sd == AQ_ST_BF16 || sd == AQ_ST_F64) {
        esize = 4;
    } else if (sd == AQ_ST_UNKNOWN) {
        esize = 0;
    } else {
        esize = aq_st_dtype_size(sd);
    }
    unsigned bits = (unsigned)esize * 8;
    size_t want = 0;
    if (esize > 0 && !aq__mul_size(elements, esize, &want)) {
        return aq__error_set(err, AQ_OVERFLOW, "%s: layer '%s': size overflows", qm->path, name);
    }
    if (row->bit_width != bits || (esize > 0 && row->data_size != want) || sn != 0) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: layer '%s': a kept %s tensor of %zu elements must have "
                             "bit_width %u, %zu bytes and no scales; got %u, %zu and %" PRId64,
                             qm->path, name, row->source_dtype, elements, bits, want,
                             row->bit_width, row->data_size, sn);
    }
    return AQ_OK;
}

static aq_status qm_row(aq_qmodel *qm, int64_t i, aq_error *err)
{
    aq_qmodel_row *row = &qm->row;
    memset(row, 0, sizeof *row);
    size_t ri = qm->row_index;
    if (!arw_var_valid(&qm->names, i) || !arw_var_valid(&qm->data, i) ||
        !arw_var_valid(&qm->scheme, i) || !arw_var_valid(&qm->sdtype, i) ||
        !arw_list_valid(&qm->scales, i) || !arw_list_valid(&qm->zps, i) ||
        !arw_list_valid(&qm->shape, i) || !arw_prim_valid(&qm->bits, i) ||
        !arw_prim_valid(&qm->group, i)) {
        return aq__error_set(err, AQ_INVALID_DATA, "%s: row %zu has a null value", qm->path, ri);
    }
    aq_status st;
    if ((st = qm_copy_str(&qm->names, i, &qm->name_buf, &qm->name_cap, err)) != AQ_OK ||
        (st = qm_copy_str(&qm->scheme, i, &qm->scheme_buf, &qm->scheme_cap, err)) != AQ_OK ||
        (st = qm_copy_str(&qm->sdtype, i, &qm->dtype_buf, &qm->dtype_cap, err)) != AQ_OK) {
        aq__error_prefix(err, "%s: row %zu", qm->path, ri);
        return st;
    }
    row->name = qm->name_buf;
    if (qm->sum_col >= 0 && (st = qm_verify(qm, i, ri, err)) != AQ_OK) {
        return st;
    }
    if (qm->format_version < 2 && strcmp(qm->scheme_buf, "kquant") == 0) {
        /* Version 1 laid kquant row by row: hand the row out under that layout's name. */
        static const char rows_name[] = "kquant_rows";
        char *p = qm->scheme_buf;
        if (qm->scheme_cap < sizeof rows_name) {
            p = realloc(qm->scheme_buf, sizeof rows_name);
            if (p == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "%s: row %zu: out of memory", qm->path, ri);
            }
            qm->scheme_buf = p;
            qm->scheme_cap = sizeof rows_name;
        }
        memcpy(p, rows_name, sizeof rows_name);
    }
    row->scheme = qm->scheme_buf;
    row->source_dtype = qm->dtype_buf;
    const char *name = row->name;
    row->bit_width = qm->bits.values[qm->bits.offset + i];
    uint32_t g;
    memcpy(&g, qm->group.values + (size_t)(qm->group.offset + i) * 4, 4);
    row->group_size = g;
    for (int k = 0; k < 3; k++) {
        double v = 0.0;
        if (arw_prim_valid(&qm->m[k], i)) {
            memcpy(&v, qm->m[k].values + (size_t)(qm->m[k].offset + i) * 8, 8);
        }
        (&row->sqnr_db)[k] = v;
    }
    int64_t hs, hn, ss, sn, zs, zn;
    aq__arrow_list_get(&qm->shape, i, &hs, &hn);
    aq__arrow_list_get(&qm->scales, i, &ss, &sn);
    aq__arrow_list_get(&qm->zps, i, &zs, &zn);
    if (hn > AQ_MAX_NDIM || sn != zn) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: layer '%s': %" PRId64 " dimensions (at most %d), %" PRId64
                             " scales and %" PRId64 " zero points (must be equal)",
                             qm->path, name, hn, AQ_MAX_NDIM, sn, zn);
    }
    for (int64_t d = 0; d < hn; d++) {
        memcpy(&qm->shape_buf[d], qm->shape.values + (size_t)(hs + d) * 8, 8);
    }
    row->shape = qm->shape_buf;
    row->ndim = (size_t)hn;
    size_t elements;
    if ((st = aq__shape_elements(name, row->shape, row->ndim, &elements, err)) != AQ_OK) {
        return st;
    }
    row->elements = elements;
    aq__arrow_var_get(&qm->data, i, &row->data, &row->data_size);
    qm_touch(qm, 0, row->data, row->data_size);
    qm_touch(qm, 1, qm->scales.values + (size_t)ss * 4, (size_t)sn * 4);
    qm_touch(qm, 2, qm->zps.values + (size_t)zs * 4, (size_t)zn * 4);
    row->groups = (size_t)sn;
    if (strcmp(row->scheme, "raw") == 0) {
        return qm_raw_row(qm, row, sn, err);
    }
    aq_scheme scheme;
    if (aq_scheme_from_name(row->scheme, &scheme, NULL) != AQ_OK) {
        return aq__error_set(err, AQ_UNSUPPORTED, "%s: row %zu (layer '%s'): unknown scheme '%s'",
                             qm->path, ri, name, row->scheme);
    }
    /* The codes restore to floats of the source's dtype: a dtype the reader does not know
     * would turn packed codes into a tensor of that dtype. */
    if (!aq_st_dtype_to_aq(aq_st_dtype_from_name(row->source_dtype), NULL)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: row %zu (layer '%s'): source_dtype '%s' is not one a quantized "
                             "row can have (F32, F16, BF16, F64)",
                             qm->path, ri, name, row->source_dtype);
    }
    aq_layout l;
    size_t fixed = aq__scheme_group(scheme, row->group_size);
    if (fixed != row->group_size) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: layer '%s': %s group_size is %zu, expected %zu (the "
                             "super-block size)",
                             qm->path, name, aq_scheme_name(scheme), row->group_size, fixed);
    }
    if ((st = aq_layout_compute_scheme(scheme, row->shape, row->ndim, row->bit_width,
                                       row->group_size, &l, err)) != AQ_OK) {
        aq__error_prefix(err, "%s: layer '%s'", qm->path, name);
        return st;
    }
    if (l.packed_bytes != row->data_size || l.groups != row->groups) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: layer '%s': %zu packed bytes and %zu groups, expected %zu and "
                             "%zu for %zu elements at %u bits with the %s scheme (group size %zu)",
                             qm->path, name, row->data_size, row->groups, l.packed_bytes, l.groups,
                             l.elements, l.bit_width, row->scheme, l.group_size);
    }
    float *tmp = NULL;
    if ((((uintptr_t)(qm->scales.values + (size_t)ss * 4)) & 3u) != 0 ||
        (((uintptr_t)(qm->zps.values + (size_t)zs * 4)) & 3u) != 0) {
        if (2 * (size_t)sn > qm->fcopy_cap) {
            float *f = realloc(qm->fcopy, 2 * (size_t)sn * sizeof(float));
            if (f == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            }
            qm->fcopy = f;
            qm->fcopy_cap = 2 * (size_t)sn;
        }
        tmp = qm->fcopy;
    }
    if ((st = qm_floats(qm, &qm->scales, ss, sn, tmp, &row->scales, err)) != AQ_OK ||
        (st = qm_floats(qm, &qm->zps, zs, zn, tmp != NULL ? tmp + sn : NULL, &row->zero_points,
                        err)) != AQ_OK) {
        return st;
    }
    return AQ_OK;
}

aq_status aq_qmodel_next(aq_qmodel *qm, const aq_qmodel_row **row, aq_error *err)
{
    if (qm == NULL || row == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qmodel_next: NULL argument");
    }
    aq_status st;
    /* The previous row is done with (it is valid until this call): its pages go now, not at
     * the end of its batch, so a caller that copies rows out holds about one row twice, not
     * one batch. */
    qm_let_go(qm);
    /* The file truncated while mapped: what was read (the previous row too, which the caller
     * had until now) may be zeros, and a checksum that fails on them would mislead. */
    if ((st = aq_mapped_check(qm->faults, err)) != AQ_OK) {
        return st;
    }
    while (qm->next_row >= qm->rows) {
        qm_batch_release(qm->batch);
        qm->batch = NULL;
        qm->rows = qm->next_row = 0;
        if ((qm->batch = calloc(1, sizeof *qm->batch)) == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", qm->path);
        }
        qm->batch->refs = 1;
        if ((st = aq_ipc_reader_next(qm->reader, &qm->batch->array, err)) != AQ_OK) {
            return aq_mapped_check(qm->faults, err) != AQ_OK ? AQ_IO : st;
        }
        if (qm->batch->array.release == NULL) {
            *row = NULL;
            return aq_mapped_check(qm->faults, err);
        }
        if ((st = qm_import(qm, err)) != AQ_OK) {
            aq__error_prefix(err, "%s", qm->path);
            return aq_mapped_check(qm->faults, err) != AQ_OK ? AQ_IO : st;
        }
    }
    if ((st = qm_row(qm, qm->next_row, err)) != AQ_OK ||
        (st = aq_mapped_check(qm->faults, err)) != AQ_OK) {
        return aq_mapped_check(qm->faults, err) != AQ_OK ? AQ_IO : st;
    }
    qm->next_row++;
    qm->row_index++;
    qm->current = true;
    *row = &qm->row;
    return AQ_OK;
}

static bool qm_in_copy(const aq_qmodel *qm, const float *p)
{
    uintptr_t a = (uintptr_t)p, c = (uintptr_t)qm->fcopy;
    return qm->fcopy != NULL && a >= c && a - c < qm->fcopy_cap * sizeof(float);
}

aq_status aq_qmodel_row_hold(aq_qmodel *qm, aq_qmodel_hold **out, aq_error *err)
{
    if (qm == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qmodel_row_hold: NULL argument");
    }
    if (!qm->current || qm->batch == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_qmodel_row_hold: no current row (call aq_qmodel_next first)");
    }
    aq_qmodel_row *row = &qm->row;
    bool in_map = aq__ipc_reader_in_map(qm->reader, row->data);
    aq_qmodel_hold *h = calloc(1, sizeof *h);
    bool copied = qm_in_copy(qm, row->scales) || qm_in_copy(qm, row->zero_points);
    if (h == NULL || (h->path = aq__strdup(qm->path)) == NULL ||
        (copied && (h->floats = malloc(2 * row->groups * sizeof(float))) == NULL)) {
        aq_qmodel_hold_free(h);
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", qm->path);
    }
    if (in_map && !qm->copy_on_write) {
        aq_status st = aq__ipc_reader_copy_on_write(qm->reader, err);
        if (st != AQ_OK) {
            aq_qmodel_hold_free(h);
            return st;
        }
        qm->copy_on_write = true;
    }
    if (copied) {
        memcpy(h->floats, row->scales, row->groups * sizeof(float));
        memcpy(h->floats + row->groups, row->zero_points, row->groups * sizeof(float));
        row->scales = h->floats;
        row->zero_points = h->floats + row->groups;
    }
    h->guard = in_map ? aq__ipc_reader_guard(qm->reader) : -1;
    h->fd = in_map ? aq__ipc_reader_map_fd(qm->reader, &h->mapped) : -1;
    __atomic_add_fetch(&qm->batch->refs, 1, __ATOMIC_ACQ_REL);
    h->batch = qm->batch;
    qm->held = true;
    *out = h;
    return AQ_OK;
}

aq_status aq_qmodel_hold_check(const aq_qmodel_hold *hold, aq_error *err)
{
    if (hold == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qmodel_hold_check: NULL argument");
    }
    if (hold->guard >= 0 && aq__mapped_faulted(hold->guard)) {
        return aq__error_set(err, AQ_IO,
                             "%s: the file changed while in use (truncated by another "
                             "process?): the weights read from it are not its own",
                             hold->path);
    }
    /* The file's size, before its pages are read: a page past the end would raise SIGBUS,
     * which only the library's guard turns into zeros, and a handler installed after it
     * (faulthandler, a framework's) would not pass on. One fstat. */
    struct stat sb;
    if (hold->fd >= 0 && fstat(hold->fd, &sb) == 0 && (uint64_t)sb.st_size < hold->mapped) {
        return aq__error_set(err, AQ_IO,
                             "%s: the file changed while in use (truncated by another "
                             "process?): %lld bytes now, %zu when loaded; its weights past "
                             "byte %lld are gone",
                             hold->path, (long long)sb.st_size, hold->mapped,
                             (long long)sb.st_size);
    }
    return AQ_OK;
}

void aq_qmodel_hold_free(aq_qmodel_hold *hold)
{
    if (hold == NULL) {
        return;
    }
    qm_batch_release(hold->batch);
    free(hold->floats);
    free(hold->path);
    free(hold);
}

aq_st_dtype aq_qmodel_row_default_dtype(const aq_qmodel_row *row)
{
    aq_st_dtype sd = aq_st_dtype_from_name(row->source_dtype);
    if (sd == AQ_ST_F64) {
        return AQ_ST_F32;
    }
    return sd;
}

static bool qm_is_float_out(aq_st_dtype d)
{
    return d == AQ_ST_F32 || d == AQ_ST_F16 || d == AQ_ST_BF16;
}

aq_status aq_qmodel_row_restore(aq_ctx *ctx, const aq_qmodel_row *row, size_t start, size_t count,
                                aq_st_dtype out_dtype, void *out, aq_error *err)
{
    if (row == NULL || out == NULL || start > row->elements || count > row->elements - start) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_qmodel_row_restore: bad range");
    }
    aq_st_dtype sd = aq_st_dtype_from_name(row->source_dtype);
    bool float_src = aq_st_dtype_to_aq(sd, NULL);
    if (!float_src || !qm_is_float_out(out_dtype)) {
        /* Raw non-float data: only as itself, byte for byte. */
        if (!row->raw || out_dtype != sd || float_src) {
            return aq__error_set(err, AQ_UNSUPPORTED, "layer '%s': cannot restore %s data as %s",
                                 row->name, row->source_dtype, aq_st_dtype_name(out_dtype));
        }
        size_t es = aq_st_dtype_size(sd);
        if (es == 0) {
            memcpy(out, row->data, row->data_size); /* unknown dtype: whole tensor */
        } else {
            memcpy(out, row->data + start * es, count * es);
        }
        return AQ_OK;
    }
    if (row->raw) {
        for (size_t k = 0; k < count; k++) {
            float v;
            if (row->bit_width == 16) {
                uint16_t h;
                memcpy(&h, row->data + (start + k) * 2, 2);
                if (out_dtype == AQ_ST_F16) {
                    memcpy((char *)out + 2 * k, &h, 2);
                    continue;
                }
                v = aq__f16_to_f32(h);
            } else {
                memcpy(&v, row->data + (start + k) * 4, 4);
            }
            if (out_dtype == AQ_ST_F32) {
                memcpy((char *)out + 4 * k, &v, 4);
            } else {
                uint16_t h = out_dtype == AQ_ST_F16 ? aq__f32_to_f16(v) : aq__f32_to_bf16(v);
                memcpy((char *)out + 2 * k, &h, 2);
            }
        }
        return AQ_OK;
    }
    /* Quantized: whole rows, starting on a byte of the packed codes. */
    size_t rows = row->ndim >= 2 ? (size_t)row->shape[0] : 1;
    size_t cols = row->elements / (rows > 0 ? rows : 1);
    if (cols == 0 || start % cols != 0 || (count % cols != 0 && start + count != row->elements) ||
        (start * row->bit_width) % 8 != 0) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "layer '%s': restore range [%zu, +%zu) is not whole, byte-aligned "
                             "rows",
                             row->name, start, count);
    }
    size_t r0 = start / cols;
    size_t nr = (count + cols - 1) / cols;
    aq_qtensor q;
    memset(&q, 0, sizeof q);
    q.name = row->name;
    if (aq_scheme_from_name(row->scheme, &q.scheme, NULL) != AQ_OK) {
        return aq__error_set(err, AQ_UNSUPPORTED, "layer '%s': unknown scheme '%s'", row->name,
                             row->scheme);
    }
    q.bit_width = row->bit_width;
    q.group_size = row->group_size;
    q.shape = row->shape;
    q.ndim = row->ndim;
    q.packed = row->data;
    q.packed_size = row->data_size;
    q.scales = row->scales;
    q.zero_points = row->zero_points;
    q.groups = row->groups;
    aq_dtype d = out_dtype == AQ_ST_F32   ? AQ_DTYPE_F32
                 : out_dtype == AQ_ST_F16 ? AQ_DTYPE_F16
                                          : AQ_DTYPE_BF16;
    return aq__dequantize_rows(ctx, &q, r0, nr, d, out, count, err);
}

/* ---- back to safetensors ---- */

typedef struct qs_spec {
    char *name;
    char *dtype_name;
    int64_t shape[AQ_MAX_NDIM];
} qs_spec;

/* Restored size of a row as dtype d. */
static size_t qs_out_bytes(const aq_qmodel_row *row, aq_st_dtype d)
{
    size_t es = aq_st_dtype_size(d);
    return es == 0 ? row->data_size : row->elements * es;
}

static aq_st_dtype qs_dtype(const aq_qmodel_row *row, aq_st_dtype want)
{
    aq_st_dtype def = aq_qmodel_row_default_dtype(row);
    if (want != AQ_ST_UNKNOWN &&
        aq_st_dtype_to_aq(aq_st_dtype_from_name(row->source_dtype), NULL)) {
        return want;
    }
    return def;
}

/* The row's name without "prefix/", or NULL if it does not start with it. An empty prefix
 * takes every row. */
static const char *qs_match(const char *name, const char *prefix)
{
    size_t n = strlen(prefix);
    if (n == 0) {
        return name;
    }
    return strncmp(name, prefix, n) == 0 && name[n] == '/' ? name + n + 1 : NULL;
}

/* Pass 1 of qs_write: the name, dtype and shape of every row under prefix into specs and
 * decl (grown as needed; *n counts the entries begun, each to be freed by the caller). The
 * shape pointers of decl are left for the caller to set once specs stops moving. */
static aq_status qs_collect(aq_qmodel *qm, const char *prefix, aq_st_dtype out_dtype,
                            qs_spec **specs, aq_st_spec **decl, size_t *n, size_t *cap,
                            aq_error *err)
{
    aq_status st;
    for (;;) {
        const aq_qmodel_row *row;
        if ((st = aq_qmodel_next(qm, &row, err)) != AQ_OK) {
            return st;
        }
        if (row == NULL) {
            break;
        }
        const char *rname = qs_match(row->name, prefix);
        if (rname == NULL) {
            continue;
        }
        if (*n == *cap) {
            *cap = *cap * 2 + 64;
            qs_spec *s2 = realloc(*specs, *cap * sizeof *s2);
            aq_st_spec *d2 = realloc(*decl, *cap * sizeof *d2);
            if (s2 != NULL) {
                *specs = s2;
            }
            if (d2 != NULL) {
                *decl = d2;
            }
            if (s2 == NULL || d2 == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            }
        }
        qs_spec *s = &(*specs)[*n];
        memset(s, 0, sizeof *s);
        (*n)++;
        aq_st_dtype d = qs_dtype(row, out_dtype);
        s->name = aq__strdup(rname);
        s->dtype_name = aq__strdup(d == AQ_ST_UNKNOWN ? row->source_dtype : aq_st_dtype_name(d));
        if (s->name == NULL || s->dtype_name == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        }
        memcpy(s->shape, row->shape, row->ndim * sizeof(int64_t));
        /* The shape pointer is set by the caller once specs stops moving. */
        (*decl)[*n - 1] =
            (aq_st_spec){s->name, d, s->dtype_name, NULL, row->ndim, qs_out_bytes(row, d)};
    }
    return AQ_OK;
}

/* The source model's __metadata__ of qm, as it was: the string values of its JSON object,
 * keys in *mk and values in *mv (pointing into *meta; all three for the caller to free). */
static aq_status qs_metadata(aq_qmodel *qm, const char *in_path, json_t **meta, char ***mk,
                             char ***mv, size_t *n_meta, aq_error *err)
{
    const char *mj = aq_qmodel_metadata(qm, "arrowquant.model_metadata");
    if (mj == NULL) {
        return AQ_OK;
    }
    json_error_t jerr;
    *meta = json_loads(mj, 0, &jerr);
    if (!json_is_object(*meta)) {
        return aq__error_set(err, AQ_INVALID_DATA,
                             "%s: arrowquant.model_metadata is not a JSON object", in_path);
    }
    size_t nm = json_object_size(*meta);
    *mk = calloc(nm + 1, sizeof **mk);
    *mv = calloc(nm + 1, sizeof **mv);
    if (*mk == NULL || *mv == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    const char *k;
    json_t *v;
    json_object_foreach(*meta, k, v)
    {
        if (json_is_string(v)) {
            (*mk)[*n_meta] = (char *)k;
            (*mv)[*n_meta] = (char *)json_string_value(v);
            (*n_meta)++;
        }
    }
    return AQ_OK;
}

/* Pass 2 of qs_write for one float row: restored as dtype d (es bytes an element) in steps of
 * whole rows of at most `block` elements through buf (4 * block bytes), and written to w. */
static aq_status qs_write_row(aq_ctx *ctx, const aq_qmodel_row *row, aq_st_dtype d, size_t es,
                              aq_st_writer *w, uint8_t *buf, size_t block, aq_error *err)
{
    aq_status st = AQ_OK;
    size_t rows = row->ndim >= 2 ? (size_t)row->shape[0] : 1;
    size_t cols = rows > 0 ? row->elements / rows : 0;
    size_t step = row->elements;
    if (!row->raw && cols > 0) {
        size_t br = block / cols;
        br = br < 8 ? 8 : br / 8 * 8;
        step = br * cols;
    } else if (row->raw) {
        step = block;
    }
    for (size_t s0 = 0; s0 < row->elements; s0 += step) {
        size_t cnt = row->elements - s0 < step ? row->elements - s0 : step;
        uint8_t *dst = buf;
        uint8_t *big = NULL;
        if (cnt > block) {
            /* A row wider than a block (rare): one buffer for the whole step. */
            if ((big = malloc(cnt * es)) == NULL) {
                return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            }
            dst = big;
        }
        st = aq_qmodel_row_restore(ctx, row, s0, cnt, d, dst, err);
        if (st == AQ_OK) {
            st = aq_st_writer_write(w, dst, cnt * es, err);
        }
        free(big);
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}

/* Writes the rows of in_path whose names start with "prefix/" (all rows for "") to out_path,
 * names stripped of the prefix. */
static aq_status qs_write(aq_ctx *ctx, const char *in_path, const char *out_path,
                          aq_st_dtype out_dtype, const volatile int *cancel, const char *prefix,
                          aq_error *err)
{
    aq_status st = AQ_OK;
    aq_qmodel *qm = NULL;
    qs_spec *specs = NULL;
    aq_st_spec *decl = NULL;
    size_t n = 0, cap = 0;
    char **mk = NULL, **mv = NULL;
    size_t n_meta = 0;
    json_t *meta = NULL;
    aq_st_writer *w = NULL;
    uint8_t *buf = NULL;
    if ((st = aq_qmodel_open(in_path, &qm, err)) != AQ_OK) {
        goto done;
    }
    /* Pass 1: names, dtypes and shapes, to write the header first. */
    if ((st = qs_collect(qm, prefix, out_dtype, &specs, &decl, &n, &cap, err)) != AQ_OK) {
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        decl[i].shape = specs[i].shape;
    }
    /* The source model's __metadata__ comes back as it was. */
    if ((st = qs_metadata(qm, in_path, &meta, &mk, &mv, &n_meta, err)) != AQ_OK) {
        goto done;
    }
    if ((st = aq_st_writer_open(out_path, decl, n, (const char *const *)mk, (const char *const *)mv,
                                n_meta, &w, err)) != AQ_OK ||
        (st = aq_qmodel_rewind(qm, err)) != AQ_OK) {
        goto done;
    }
    /* Pass 2: the data, in blocks of whole rows. */
    const size_t block = (size_t)1 << 20; /* elements */
    if ((buf = malloc(block * 4)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    for (size_t i = 0;; i++) {
        const aq_qmodel_row *row;
        const char *rname = NULL;
        while ((st = aq_qmodel_next(qm, &row, err)) == AQ_OK && row != NULL &&
               (rname = qs_match(row->name, prefix)) == NULL) {
        }
        if (st != AQ_OK) {
            goto done;
        }
        if (row == NULL) {
            break;
        }
        if (cancel != NULL && *cancel) {
            st = aq__error_set(err, AQ_CANCELLED, "cancelled");
            goto done;
        }
        if (i >= n || strcmp(rname, specs[i].name) != 0) {
            st = aq__error_set(err, AQ_INVALID_DATA, "%s: the file changed while being read",
                               in_path);
            goto done;
        }
        aq_st_dtype d = decl[i].dtype;
        size_t es = aq_st_dtype_size(d);
        if (es == 0 || !aq_st_dtype_to_aq(aq_st_dtype_from_name(row->source_dtype), NULL)) {
            /* Raw non-float data goes out as it came in. */
            if ((st = aq_st_writer_write(w, row->data, row->data_size, err)) != AQ_OK) {
                goto done;
            }
            continue;
        }
        if ((st = qs_write_row(ctx, row, d, es, w, buf, block, err)) != AQ_OK) {
            goto done;
        }
    }
    st = aq_st_writer_finish(w, err);
done:
    aq_st_writer_free(w);
    free(buf);
    for (size_t i = 0; i < n; i++) {
        free(specs[i].name);
        free(specs[i].dtype_name);
    }
    free(specs);
    free(decl);
    free(mk);
    free(mv);
    json_decref(meta);
    aq_qmodel_free(qm);
    return st;
}

static aq_status qs_check_args(aq_ctx *ctx, const char *in_path, const char *out_path,
                               aq_st_dtype out_dtype, aq_error *err)
{
    if (ctx == NULL || in_path == NULL || out_path == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "dequantize: NULL argument");
    }
    if (out_dtype != AQ_ST_UNKNOWN && !qm_is_float_out(out_dtype)) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "output dtype must be F32, F16 or BF16, got %s",
                             aq_st_dtype_name(out_dtype));
    }
    return AQ_OK;
}

aq_status aq_qmodel_to_safetensors(aq_ctx *ctx, const char *in_path, const char *out_path,
                                   aq_st_dtype out_dtype, const volatile int *cancel, aq_error *err)
{
    aq_status st = qs_check_args(ctx, in_path, out_path, out_dtype, err);
    if (st == AQ_OK) {
        st = aq__io_check_output(out_path, &in_path, 1, err);
    }
    return st != AQ_OK ? st : qs_write(ctx, in_path, out_path, out_dtype, cancel, "", err);
}

/* out_dir/file, for a component's weights file as the source model named it. A sharded
 * component ("x.safetensors.index.json") comes back as one file, "x.safetensors": the index
 * name holding safetensors bytes would load nowhere. */
static char *qf_target(const char *out_dir, const char *file)
{
    static const char idx[] = ".index.json";
    size_t fl = strlen(file), il = sizeof idx - 1;
    if (fl > il && strcmp(file + fl - il, idx) == 0) {
        fl -= il;
    }
    char *p = malloc(strlen(out_dir) + fl + 2);
    if (p != NULL) {
        sprintf(p, "%s/%.*s", out_dir, (int)fl, file);
    }
    return p;
}

/* A component folder of the output must hold no weights yet: dequantizing into a pipeline's
 * own folder would replace its original weights (or leave an index beside our file). */
static aq_status qf_no_weights(const char *sub, aq_error *err)
{
    DIR *d = opendir(sub);
    if (d == NULL) {
        return AQ_OK; /* absent: created later; anything else fails at mkdir */
    }
    aq_status st = AQ_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *n = de->d_name;
        size_t l = strlen(n);
        bool st_file = l > 12 && strcmp(n + l - 12, ".safetensors") == 0;
        bool st_index = l > 23 && strcmp(n + l - 23, ".safetensors.index.json") == 0;
        if (n[0] != '.' && (st_file || st_index)) {
            st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                               "%s: already holds weights (%s): refusing to replace a model's "
                               "weights; dequantize into a folder without them",
                               sub, n);
            break;
        }
    }
    closedir(d);
    return st;
}

aq_status aq_qmodel_to_folder(aq_ctx *ctx, const char *in_path, const char *out_dir,
                              aq_st_dtype out_dtype, const volatile int *cancel, aq_error *err)
{
    aq_status st = qs_check_args(ctx, in_path, out_dir, out_dtype, err);
    if (st != AQ_OK) {
        return st;
    }
    aq_qmodel *qm = NULL;
    json_t *comps = NULL;
    char **written = NULL;
    char **made = NULL;
    char **targets = NULL;
    size_t n_written = 0, n_made = 0;
    if ((st = aq_qmodel_open(in_path, &qm, err)) != AQ_OK) {
        return st;
    }
    const char *cj = aq_qmodel_metadata(qm, "arrowquant.components");
    json_error_t jerr;
    comps = cj != NULL ? json_loads(cj, 0, &jerr) : NULL;
    if (!json_is_object(comps) || json_object_size(comps) == 0) {
        st = aq__error_set(err, AQ_INVALID_ARGUMENT,
                           "%s: not a diffusers pipeline (no components): write a single "
                           ".safetensors file instead",
                           in_path);
        goto done;
    }
    struct stat sb;
    if (stat(out_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        st = aq__error_set(err, AQ_IO, "%s: output folder does not exist", out_dir);
        goto done;
    }
    size_t nc = json_object_size(comps);
    written = calloc(nc, sizeof *written);
    made = calloc(nc, sizeof *made);
    targets = calloc(nc, sizeof *targets);
    if (written == NULL || made == NULL || targets == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    /* Pass 1, before any work: every component's file name, checked. */
    const char *name;
    json_t *fv;
    size_t k = 0;
    json_object_foreach(comps, name, fv)
    {
        const char *file = json_string_value(fv);
        size_t nl = strlen(name);
        /* "name/file.safetensors": one folder level, nothing that climbs out of out_dir. */
        if (file == NULL || nl == 0 || name[0] == '.' || strchr(name, '/') != NULL ||
            strncmp(file, name, nl) != 0 || file[nl] != '/' || file[nl + 1] == '.' ||
            file[nl + 1] == '\0' || strchr(file + nl + 1, '/') != NULL) {
            st = aq__error_set(err, AQ_INVALID_DATA, "%s: bad component entry '%s'", in_path, name);
            goto done;
        }
        if ((targets[k] = qf_target(out_dir, file)) == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        char *sub = malloc(strlen(out_dir) + nl + 2);
        if (sub == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        sprintf(sub, "%s/%s", out_dir, name);
        /* A component folder made by this run holds no input; one already there is
         * checked as any output's destination. */
        bool exists = stat(sub, &sb) == 0;
        st = qf_no_weights(sub, err);
        free(sub);
        if (st != AQ_OK ||
            (exists && (st = aq__io_check_output(targets[k], &in_path, 1, err)) != AQ_OK)) {
            goto done;
        }
        k++;
    }
    /* Pass 2: the files. */
    k = 0;
    json_object_foreach(comps, name, fv)
    {
        char *sub = malloc(strlen(out_dir) + strlen(name) + 2);
        if (sub == NULL) {
            st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
            goto done;
        }
        sprintf(sub, "%s/%s", out_dir, name);
        if (mkdir(sub, 0755) == 0) {
            made[n_made++] = sub;
        } else if (errno == EEXIST && stat(sub, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            free(sub);
        } else {
            st = aq__error_set(err, AQ_IO, "%s: cannot create folder: %s", sub, strerror(errno));
            free(sub);
            goto done;
        }
        st = qs_write(ctx, in_path, targets[k], out_dtype, cancel, name, err);
        if (st != AQ_OK) {
            goto done;
        }
        written[n_written++] = targets[k];
        targets[k++] = NULL;
    }
done:
    if (st != AQ_OK) {
        /* Nothing of a failed run stays behind. */
        for (size_t i = 0; i < n_written; i++) {
            unlink(written[i]);
        }
        for (size_t i = 0; i < n_made; i++) {
            rmdir(made[i]);
        }
    }
    for (size_t i = 0; i < n_written; i++) {
        free(written[i]);
    }
    for (size_t i = 0; i < n_made; i++) {
        free(made[i]);
    }
    for (size_t i = 0; targets != NULL && i < json_object_size(comps); i++) {
        free(targets[i]);
    }
    free(targets);
    free(written);
    free(made);
    json_decref(comps);
    aq_qmodel_free(qm);
    return st;
}
