/*
 * libFuzzer target for the Arrow IPC reader: any bytes go in through aq_ipc_reader_open_memory;
 * every batch the reader accepts is then walked the way a consumer would (every validity bit,
 * every value, every string byte the offsets or views point to), so that an accepted but
 * inconsistent batch shows up as an out-of-bounds read under AddressSanitizer.
 *
 * Built twice: with -fsanitize=fuzzer for fuzzing (fuzz/run_ipc_fuzzer), and with
 * fuzz/replay_main.c as a plain program that replays fuzz/corpus/ipc in the normal test run.
 */
#include "arrowquant.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t fz_sink;

static void fz_touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        fz_sink += b[i];
    }
}

static int64_t fz_offset(const void *p, int width, int64_t i)
{
    if (width == 4) {
        int32_t v;
        memcpy(&v, (const uint8_t *)p + 4 * i, 4);
        return v;
    }
    int64_t v;
    memcpy(&v, (const uint8_t *)p + 8 * i, 8);
    return v;
}

/* Reads what a consumer may read of an array of the given format. */
static void fz_walk(const struct ArrowSchema *s, const struct ArrowArray *a)
{
    const char *f = s->format;
    int64_t n = a->length, o = a->offset;
    if (a->null_count != 0 && a->n_buffers > 0 && a->buffers[0] != NULL && f[0] != 'n') {
        fz_touch(a->buffers[0], (size_t)((o + n + 7) / 8));
    }
    static const char widths[] = "c1C1s2S2i4I4l8L8e2f4g8";
    const char *w = strlen(f) == 1 ? strchr(widths, f[0]) : NULL;
    if (w != NULL && (w - widths) % 2 == 0) {
        fz_touch(a->buffers[1], (size_t)((o + n) * (w[1] - '0')));
    } else if (strcmp(f, "u") == 0 || strcmp(f, "z") == 0 || strcmp(f, "U") == 0 ||
               strcmp(f, "Z") == 0) {
        int width = (f[0] == 'u' || f[0] == 'z') ? 4 : 8;
        int64_t first = fz_offset(a->buffers[1], width, o);
        int64_t last = fz_offset(a->buffers[1], width, o + n);
        if (last > first) {
            fz_touch((const uint8_t *)a->buffers[2] + first, (size_t)(last - first));
        }
    } else if (strcmp(f, "vu") == 0 || strcmp(f, "vz") == 0) {
        const uint8_t *views = a->buffers[1];
        const uint8_t *valid = a->null_count != 0 ? a->buffers[0] : NULL;
        for (int64_t i = o; i < o + n; i++) {
            if (valid != NULL && !((valid[i / 8] >> (i % 8)) & 1)) {
                continue;
            }
            int32_t len, idx, off;
            memcpy(&len, views + 16 * i, 4);
            if (len <= 12) {
                fz_touch(views + 16 * i + 4, (size_t)len);
            } else {
                memcpy(&idx, views + 16 * i + 8, 4);
                memcpy(&off, views + 16 * i + 12, 4);
                fz_touch((const uint8_t *)a->buffers[2 + idx] + off, (size_t)len);
            }
        }
    } else if (strcmp(f, "+l") == 0 || strcmp(f, "+L") == 0) {
        int width = f[1] == 'l' ? 4 : 8;
        fz_offset(a->buffers[1], width, o);
        fz_offset(a->buffers[1], width, o + n);
        fz_walk(s->children[0], a->children[0]);
    } else if (f[0] == '+') {
        for (int64_t i = 0; i < a->n_children; i++) {
            fz_walk(s->children[i], a->children[i]);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    aq_error err;
    aq_ipc_reader *r = NULL;
    if (aq_ipc_reader_open_memory(data, size, &r, &err) != AQ_OK) {
        return 0;
    }
    struct ArrowSchema schema;
    if (aq_ipc_reader_schema(r, &schema, &err) == AQ_OK) {
        for (int i = 0; i < 64; i++) {
            struct ArrowArray batch;
            if (aq_ipc_reader_next(r, &batch, &err) != AQ_OK || batch.release == NULL) {
                break;
            }
            fz_walk(&schema, &batch);
            batch.release(&batch);
        }
        schema.release(&schema);
    }
    aq_ipc_reader_free(r);
    return 0;
}
