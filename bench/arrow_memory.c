/*
 * arrow_memory: peak resident memory and throughput of Arrow batch and stream quantization.
 *
 *   arrow_memory [batch|stream] [layers] [elements_per_layer] [bits]
 *
 * batch (default): builds one record batch of `layers` float32 layers of `elements` values
 * each (default 1000 x 262,144 = 1,000 MiB), quantizes it with aq_batch_quantize and checks
 * that the process's peak resident memory grew by no more than input + output + 64 MiB over
 * what it was before the input was built: weights must be read in place and the output
 * allocated once.
 *
 * stream: the same table, produced lazily by an ArrowArrayStream in batches of 50 layers and
 * drained through aq_stream_quantize; the peak must stay within one input batch plus one
 * result batch plus 64 MiB, however long the table.
 *
 * Throughput is reported as a ratio to a read-only pass over the same input (a memory
 * bandwidth probe in the same process), since absolute figures on shared machines are noise.
 * Exit status 1 when a memory bound is exceeded.
 */
#include "arrowquant.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)
#define SLACK_BYTES ((size_t)64 << 20)
#define STREAM_BATCH_LAYERS 50

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Current resident set size, from /proc/self/statm. */
static size_t rss_now(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, resident = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2) {
            resident = 0;
        }
        fclose(f);
    }
    return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

/* Peak resident set size of the process so far (getrusage: KiB on Linux). */
static size_t rss_peak(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

/* ---- a minimal record batch {layer_name: utf8, weights: list<float32>, shape: list<int64>}
 * whose buffers are filled in place (no staging copy) ---- */

typedef struct bm_batch {
    struct ArrowSchema schema;
    struct ArrowArray array;
    size_t bytes; /* buffer bytes held */
} bm_batch;

typedef struct bm_node {
    const void *buffers[3];
    struct ArrowArray *children[3];
    struct ArrowArray child_nodes[3];
} bm_node;

static void bm_array_release(struct ArrowArray *a)
{
    bm_node *p = a->private_data;
    for (int64_t i = 0; i < a->n_children; i++) {
        if (p->children[i]->release != NULL) {
            p->children[i]->release(p->children[i]);
        }
    }
    for (int64_t i = 0; i < a->n_buffers; i++) {
        free((void *)(uintptr_t)p->buffers[i]);
    }
    free(p);
    a->release = NULL;
}

static void *bm_alloc(size_t bytes, size_t *total)
{
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
    if (p == NULL) {
        fprintf(stderr, "arrow_memory: out of memory\n");
        exit(2);
    }
    *total += bytes;
    return p;
}

static void bm_array_init(struct ArrowArray *a, int64_t length, int64_t n_buffers,
                          int64_t n_children)
{
    bm_node *p = calloc(1, sizeof *p);
    if (p == NULL) {
        exit(2);
    }
    memset(a, 0, sizeof *a);
    a->length = length;
    a->n_buffers = n_buffers;
    a->n_children = n_children;
    a->buffers = p->buffers;
    for (int64_t i = 0; i < n_children; i++) {
        p->children[i] = &p->child_nodes[i];
    }
    a->children = p->children;
    a->release = bm_array_release;
    a->private_data = p;
}

typedef struct bm_schema_node {
    struct ArrowSchema *children[3];
    struct ArrowSchema child_nodes[3];
} bm_schema_node;

static void bm_schema_release(struct ArrowSchema *s)
{
    bm_schema_node *p = s->private_data;
    for (int64_t i = 0; i < s->n_children; i++) {
        if (p->children[i]->release != NULL) {
            p->children[i]->release(p->children[i]);
        }
    }
    free(p);
    s->release = NULL;
}

static void bm_schema_init(struct ArrowSchema *s, const char *format, const char *name,
                           int64_t n_children)
{
    bm_schema_node *p = calloc(1, sizeof *p);
    if (p == NULL) {
        exit(2);
    }
    memset(s, 0, sizeof *s);
    s->format = format;
    s->name = name;
    s->flags = ARROW_FLAG_NULLABLE;
    s->n_children = n_children;
    for (int64_t i = 0; i < n_children; i++) {
        p->children[i] = &p->child_nodes[i];
    }
    s->children = p->children;
    s->release = bm_schema_release;
    s->private_data = p;
}

static void bm_make_schema(struct ArrowSchema *s)
{
    bm_schema_init(s, "+s", "", 3);
    bm_schema_init(s->children[0], "u", "layer_name", 0);
    bm_schema_init(s->children[1], "+l", "weights", 1);
    bm_schema_init(s->children[1]->children[0], "f", "item", 0);
    bm_schema_init(s->children[2], "+l", "shape", 1);
    bm_schema_init(s->children[2]->children[0], "l", "item", 0);
}

/* Layers first .. first + n - 1 of the table; values depend only on the layer index, so any
 * batching of the table holds the same data. */
static void bm_make_array(struct ArrowArray *a, size_t first, size_t n, size_t per, size_t *bytes)
{
    bm_array_init(a, (int64_t)n, 1, 3);
    struct ArrowArray *names = a->children[0], *w = a->children[1], *shape = a->children[2];
    bm_array_init(names, (int64_t)n, 3, 0);
    int32_t *noff = bm_alloc((n + 1) * 4, bytes);
    char *ndata = bm_alloc(n * 32, bytes);
    size_t at = 0;
    noff[0] = 0;
    for (size_t i = 0; i < n; i++) {
        at += (size_t)sprintf(ndata + at, "blocks.%zu.attn.weight", first + i);
        noff[i + 1] = (int32_t)at;
    }
    names->buffers[1] = noff;
    names->buffers[2] = ndata;

    bm_array_init(w, (int64_t)n, 2, 1);
    int32_t *woff = bm_alloc((n + 1) * 4, bytes);
    for (size_t i = 0; i <= n; i++) {
        woff[i] = (int32_t)(i * per);
    }
    w->buffers[1] = woff;
    bm_array_init(w->children[0], (int64_t)(n * per), 2, 0);
    float *values = bm_alloc(n * per * sizeof(float), bytes);
    for (size_t i = 0; i < n; i++) {
        uint64_t x = 0x9e3779b97f4a7c15ull * (first + i + 1);
        float *v = values + i * per;
        for (size_t k = 0; k < per; k++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            /* Roughly N(0, 0.02): sum of two uniforms, scaled like a weight. */
            float u = (float)(x >> 40) * 0x1p-24f + (float)((x >> 16) & 0xffffff) * 0x1p-24f;
            v[k] = (u - 1.0f) * 0.05f;
        }
    }
    w->children[0]->buffers[1] = values;

    bm_array_init(shape, (int64_t)n, 2, 1);
    int32_t *soff = bm_alloc((n + 1) * 4, bytes);
    for (size_t i = 0; i <= n; i++) {
        soff[i] = (int32_t)(2 * i);
    }
    shape->buffers[1] = soff;
    bm_array_init(shape->children[0], (int64_t)(2 * n), 2, 0);
    int64_t *dims = bm_alloc(2 * n * 8, bytes);
    for (size_t i = 0; i < n; i++) {
        dims[2 * i] = 512;
        dims[2 * i + 1] = (int64_t)(per / 512);
    }
    shape->children[0]->buffers[1] = dims;
}

/* Bytes held by a result batch's buffers (the library's export: offsets start at 0). */
static size_t result_bytes(const struct ArrowArray *a)
{
    size_t n = (size_t)a->length, total = 0;
    const int32_t *no = a->children[0]->buffers[1];
    const int32_t *po = a->children[1]->buffers[1];
    total += (n + 1) * 4 + (size_t)no[n];
    total += (n + 1) * 4 + (size_t)po[n];
    for (int c = 2; c <= 4; c++) {
        const struct ArrowArray *child = a->children[c]->children[0];
        total += (n + 1) * 4 + (size_t)child->length * (c == 4 ? 8 : 4);
    }
    return total + n;
}

/* A read-only pass over the weights: the memory-bandwidth probe. */
static double probe_read(const float *v, size_t n, double *sink)
{
    double t0 = now_s();
    float acc[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) {
            acc[k] += v[i + (size_t)k];
        }
    }
    double s = 0;
    for (int k = 0; k < 8; k++) {
        s += (double)acc[k];
    }
    *sink += s;
    return now_s() - t0;
}

static aq_ctx *bm_ctx(unsigned bits)
{
    aq_ctx *ctx;
    aq_error err;
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK) {
        fprintf(stderr, "arrow_memory: %s\n", err.message);
        exit(2);
    }
    return ctx;
}

static int run_batch(size_t layers, size_t per, unsigned bits)
{
    aq_ctx *ctx = bm_ctx(bits);
    size_t base = rss_now();
    bm_batch in;
    in.bytes = 0;
    bm_make_schema(&in.schema);
    bm_make_array(&in.array, 0, layers, per, &in.bytes);
    size_t after_input = rss_now();

    struct ArrowSchema out_s;
    struct ArrowArray out_a;
    aq_error err;
    double t0 = now_s();
    if (aq_batch_quantize(ctx, &in.schema, &in.array, NULL, &out_s, &out_a, &err) != AQ_OK) {
        fprintf(stderr, "arrow_memory: %s\n", err.message);
        return 2;
    }
    double tq = now_s() - t0;
    size_t peak = rss_peak();
    size_t out_bytes = result_bytes(&out_a);

    double sink = 0;
    const float *values = in.array.children[1]->children[0]->buffers[1];
    double tr = probe_read(values, layers * per, &sink);

    /* The same tensors through aq_quantize alone, into one reused buffer: the Arrow layer's
     * overhead is the difference. */
    double tk = 0;
    {
        int64_t shape[2] = {512, (int64_t)(per / 512)};
        aq_tensor t = {"layer", AQ_DTYPE_F32, NULL, shape, 2};
        aq_layout l;
        if (aq_quantize_bound(ctx, &t, &l, &err) != AQ_OK) {
            return 2;
        }
        uint8_t *packed = malloc(l.packed_bytes);
        float *sc = malloc(l.groups * sizeof *sc), *zp = malloc(l.groups * sizeof *zp);
        aq_qbuffers qb = {packed, l.packed_bytes, sc, zp, l.groups};
        double t1 = now_s();
        for (size_t i = 0; i < layers; i++) {
            t.data = values + i * per;
            if (aq_quantize(ctx, &t, &qb, &err) != AQ_OK) {
                return 2;
            }
        }
        tk = now_s() - t1;
        free(packed);
        free(sc);
        free(zp);
    }

    double input_mib = (double)(layers * per * 4) / MIB;
    size_t limit = in.bytes + out_bytes + SLACK_BYTES;
    size_t grown = peak > base ? peak - base : 0;
    printf("mode                 batch (aq_batch_quantize, %u bits, group 128, kernels %s)\n", bits,
           aq_ctx_kernels(ctx));
    printf("input                %zu layers x %zu float32 = %.1f MiB (buffers %.1f MiB)\n", layers,
           per, input_mib, (double)in.bytes / MIB);
    printf("output               %.1f MiB (%lld rows)\n", (double)out_bytes / MIB,
           (long long)out_a.length);
    printf("rss before input     %.1f MiB; after input %.1f MiB\n", (double)base / MIB,
           (double)after_input / MIB);
    printf("peak rss             %.1f MiB; growth %.1f MiB\n", (double)peak / MIB,
           (double)grown / MIB);
    printf("bound                input + output + 64 MiB = %.1f MiB\n", (double)limit / MIB);
    printf("growth / (input+output) = %.4f; headroom under the bound %.1f MiB\n",
           (double)grown / (double)(in.bytes + out_bytes), ((double)limit - (double)grown) / MIB);
    printf("quantize time        %.3f s = %.2f GB/s of float32 input\n", tq,
           (double)(layers * per * 4) / tq / 1e9);
    printf("aq_quantize alone    %.3f s; batch / tensor-API time = %.3fx (Arrow overhead)\n", tk,
           tq / tk);
    printf("read probe           %.3f s = %.2f GB/s; quantize / read-probe time = %.2fx "
           "(sink %g)\n",
           tr, (double)(layers * per * 4) / tr / 1e9, tq / tr, sink);
    out_s.release(&out_s);
    out_a.release(&out_a);
    in.array.release(&in.array);
    in.schema.release(&in.schema);
    aq_ctx_free(ctx);
    bool ok = grown <= limit;
    printf("result               %s\n", ok ? "PASS" : "FAIL: peak over the bound");
    return ok ? 0 : 1;
}

/* ---- stream mode: a lazy producer ---- */

typedef struct bm_stream {
    size_t layers, per, next;
    size_t batch_bytes; /* buffer bytes of the largest batch handed out */
} bm_stream;

static int bm_get_schema(struct ArrowArrayStream *s, struct ArrowSchema *out)
{
    (void)s;
    bm_make_schema(out);
    return 0;
}

static int bm_get_next(struct ArrowArrayStream *s, struct ArrowArray *out)
{
    bm_stream *p = s->private_data;
    if (p->next >= p->layers) {
        out->release = NULL;
        return 0;
    }
    size_t n =
        p->layers - p->next < STREAM_BATCH_LAYERS ? p->layers - p->next : STREAM_BATCH_LAYERS;
    size_t bytes = 0;
    bm_make_array(out, p->next, n, p->per, &bytes);
    p->batch_bytes = bytes > p->batch_bytes ? bytes : p->batch_bytes;
    p->next += n;
    return 0;
}

static const char *bm_last_error(struct ArrowArrayStream *s)
{
    (void)s;
    return NULL;
}

static void bm_stream_release(struct ArrowArrayStream *s)
{
    s->release = NULL;
}

static int run_stream(size_t layers, size_t per, unsigned bits)
{
    aq_ctx *ctx = bm_ctx(bits);
    size_t base = rss_now();
    bm_stream state = {layers, per, 0, 0};
    struct ArrowArrayStream in = {bm_get_schema, bm_get_next, bm_last_error, bm_stream_release,
                                  &state};
    struct ArrowArrayStream out;
    aq_error err;
    if (aq_stream_quantize(ctx, &in, NULL, &out, &err) != AQ_OK) {
        fprintf(stderr, "arrow_memory: %s\n", err.message);
        return 2;
    }
    double t0 = now_s();
    size_t rows = 0, max_out = 0, batches = 0;
    for (;;) {
        struct ArrowArray a;
        if (out.get_next(&out, &a) != 0) {
            fprintf(stderr, "arrow_memory: %s\n", out.get_last_error(&out));
            return 2;
        }
        if (a.release == NULL) {
            break;
        }
        size_t b = result_bytes(&a);
        max_out = b > max_out ? b : max_out;
        rows += (size_t)a.length;
        batches++;
        a.release(&a);
    }
    double tq = now_s() - t0;
    out.release(&out);
    size_t peak = rss_peak();
    size_t grown = peak > base ? peak - base : 0;
    size_t limit = state.batch_bytes + max_out + SLACK_BYTES;
    double total_mib = (double)(layers * per * 4) / MIB;
    printf("mode                 stream (aq_stream_quantize, %u bits, %d layers per batch)\n", bits,
           STREAM_BATCH_LAYERS);
    printf("table                %zu layers x %zu float32 = %.1f MiB in %zu batches, %zu rows "
           "out\n",
           layers, per, total_mib, batches, rows);
    printf("peak rss growth      %.1f MiB\n", (double)grown / MIB);
    printf("bound                one input batch + one result batch + 64 MiB = %.1f MiB\n",
           (double)limit / MIB);
    printf("growth / table size  %.4f\n", (double)grown / (double)(layers * per * 4));
    printf("time                 %.3f s = %.2f GB/s (input generation included)\n", tq,
           (double)(layers * per * 4) / tq / 1e9);
    aq_ctx_free(ctx);
    bool ok = grown <= limit && rows == layers;
    printf("result               %s\n", ok ? "PASS" : "FAIL: peak over the bound");
    return ok ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "batch";
    size_t layers = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 1000;
    size_t per = argc > 3 ? (size_t)strtoull(argv[3], NULL, 10) : 262144;
    unsigned bits = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 4;
    if (layers == 0 || per < 512 || per % 512 != 0) {
        fprintf(stderr, "usage: arrow_memory [batch|stream] [layers] [elements (multiple of "
                        "512)] [bits]\n");
        return 2;
    }
    if (strcmp(mode, "batch") == 0) {
        return run_batch(layers, per, bits);
    }
    if (strcmp(mode, "stream") == 0) {
        return run_stream(layers, per, bits);
    }
    fprintf(stderr, "arrow_memory: unknown mode '%s' (batch or stream)\n", mode);
    return 2;
}
