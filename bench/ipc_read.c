/*
 * bench/ipc_read: the IPC reader maps, it does not copy.
 *
 * Writes an uncompressed Arrow IPC file of about 1 GiB (column layer_name utf8, weights
 * list<float32>; 16 record batches of 16 tensors of 1 Mi floats) with the library's writer,
 * then, in the same process and on the same (warm) page cache, times:
 *   bytes: reading the file's bytes once with read(2) into a 16 MiB buffer;
 *   ipc:   aq_ipc_reader_open + aq_ipc_reader_next for every batch + release, i.e. what a
 *          consumer pays before it touches the values.
 * Prints both (best of 5) and their ratio; the target is ipc < 5% of bytes.
 *
 *   build/bench/ipc_read [path, default /tmp/aq_bench_ipc_read.arrow] [--keep]
 * An existing file at path is read as it is (e.g. one written by pyarrow) and kept only with
 * --keep.
 */
#include "arrow_owned.h"
#include "arrowquant.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BATCHES 16
#define ROWS 16
#define FLOATS_PER_ROW (1024 * 1024)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(const char *what, const aq_error *err)
{
    fprintf(stderr, "ipc_read: %s: %s\n", what, err->message);
    return 1;
}

static int write_file(const char *path, aq_error *err)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    if (aq__schema_alloc(&s, "+s", NULL, 0, 2, err) != AQ_OK ||
        aq__schema_alloc(s.children[0], "u", "layer_name", ARROW_FLAG_NULLABLE, 0, err) ||
        aq__schema_alloc(s.children[1], "+l", "weights", ARROW_FLAG_NULLABLE, 1, err) ||
        aq__schema_alloc(s.children[1]->children[0], "f", "item", ARROW_FLAG_NULLABLE, 0, err) ||
        aq__array_alloc(&a, ROWS, 1, 2, err) || aq__array_alloc(a.children[0], ROWS, 3, 0, err) ||
        aq__array_alloc(a.children[1], ROWS, 2, 1, err) ||
        aq__array_alloc(a.children[1]->children[0], (int64_t)ROWS * FLOATS_PER_ROW, 2, 0, err)) {
        return fail("building the batch", err);
    }
    int32_t *no = aq__array_buffer_alloc(a.children[0], 1, (ROWS + 1) * sizeof(int32_t));
    char *nd = aq__array_buffer_alloc(a.children[0], 2, ROWS * 32);
    int32_t *wo = aq__array_buffer_alloc(a.children[1], 1, (ROWS + 1) * sizeof(int32_t));
    float *w = aq__array_buffer_alloc(a.children[1]->children[0], 1,
                                      (size_t)ROWS * FLOATS_PER_ROW * sizeof(float));
    if (no == NULL || nd == NULL || wo == NULL || w == NULL) {
        fprintf(stderr, "ipc_read: out of memory\n");
        return 1;
    }
    no[0] = 0;
    wo[0] = 0;
    for (int r = 0; r < ROWS; r++) {
        int n = snprintf(nd + no[r], 32, "blocks.%d.weight", r);
        no[r + 1] = no[r] + n;
        wo[r + 1] = wo[r] + FLOATS_PER_ROW;
    }
    for (size_t i = 0; i < (size_t)ROWS * FLOATS_PER_ROW; i++) {
        w[i] = (float)(i % 1000) * 0.001f;
    }
    aq_ipc_write_options o = {.size = sizeof(aq_ipc_write_options),
                              .format = AQ_IPC_FORMAT_FILE,
                              .compression = AQ_IPC_COMPRESSION_NONE,
                              .compression_level = 0};
    aq_ipc_writer *wr = NULL;
    aq_status st = aq_ipc_writer_open(path, &s, &o, &wr, err);
    for (int b = 0; b < BATCHES && st == AQ_OK; b++) {
        st = aq_ipc_writer_write(wr, &a, err);
    }
    if (st == AQ_OK) {
        st = aq_ipc_writer_close(wr, err);
    }
    aq_ipc_writer_free(wr);
    s.release(&s);
    a.release(&a);
    return st == AQ_OK ? 0 : fail("writing", err);
}

/* Reads every byte of the file once; returns the byte count (0 on error). */
static size_t read_bytes(const char *path, unsigned char *buf, size_t cap, unsigned *sink)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        return 0;
    }
    size_t total = 0;
    ssize_t n;
    while ((n = read(fd, buf, cap)) > 0) {
        total += (size_t)n;
        *sink += buf[0];
    }
    close(fd);
    return n < 0 ? 0 : total;
}

static int read_ipc(const char *path, size_t *rows, size_t *batches, aq_error *err)
{
    aq_ipc_reader *r = NULL;
    if (aq_ipc_reader_open(path, &r, err) != AQ_OK) {
        return fail("opening", err);
    }
    *rows = 0;
    *batches = 0;
    for (;;) {
        struct ArrowArray a;
        if (aq_ipc_reader_next(r, &a, err) != AQ_OK) {
            aq_ipc_reader_free(r);
            return fail("reading", err);
        }
        if (a.release == NULL) {
            break;
        }
        *rows += (size_t)a.length;
        ++*batches;
        a.release(&a);
    }
    aq_ipc_reader_free(r);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 && argv[1][0] != '-' ? argv[1] : "/tmp/aq_bench_ipc_read.arrow";
    int keep = argc > 1 && strcmp(argv[argc - 1], "--keep") == 0;
    aq_error err;
    if (access(path, R_OK) != 0 && write_file(path, &err) != 0) {
        return 1;
    }
    size_t cap = 16u << 20;
    unsigned char *buf = malloc(cap);
    unsigned sink = 0;
    size_t size = read_bytes(path, buf, cap, &sink); /* warms the page cache */
    if (size == 0) {
        fprintf(stderr, "ipc_read: cannot read %s\n", path);
        return 1;
    }
    double best_bytes = 1e30, best_ipc = 1e30;
    size_t rows = 0, batches = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now();
        if (read_bytes(path, buf, cap, &sink) != size) {
            fprintf(stderr, "ipc_read: short read\n");
            return 1;
        }
        double t1 = now();
        if (read_ipc(path, &rows, &batches, &err) != 0) {
            return 1;
        }
        double t2 = now();
        best_bytes = t1 - t0 < best_bytes ? t1 - t0 : best_bytes;
        best_ipc = t2 - t1 < best_ipc ? t2 - t1 : best_ipc;
    }
    printf("file: %s, %.3f GiB, %zu rows in %zu batches\n", path,
           (double)size / (1024.0 * 1024.0 * 1024.0), rows, batches);
    printf("read the bytes once (read(2), 16 MiB buffer): %9.3f ms (%.2f GB/s)\n", best_bytes * 1e3,
           (double)size / best_bytes * 1e-9);
    printf("aq_ipc_reader open + every batch + release:   %9.3f ms\n", best_ipc * 1e3);
    printf("ratio ipc/bytes: %.4f (%.2f%%; target < 5%%) [sink %u]\n", best_ipc / best_bytes,
           100.0 * best_ipc / best_bytes, sink & 1u);
    free(buf);
    if (!keep) {
        unlink(path);
    }
    return best_ipc / best_bytes < 0.05 ? 0 : 2;
}
