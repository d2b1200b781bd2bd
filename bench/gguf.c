/*
 * bench/gguf: the GGUF block encoders (aq_gguf_encode) on four synthetic weight distributions,
 * against ggml's own reference quantizers' figures: relative RMSE (rms error / std) of the
 * decoded floats, and encode speed on one thread in millions of weights per second of the
 * process's CPU time (per core; see bench/quality.c). For Q8_0 and Q4_0 also the ratio to a
 * memory floor measured in the same run: one pass that reads the float32 input and writes the
 * output's bytes (the least any encoder must do), timed the same way. For every type also the
 * decode speed (aq_gguf_decode, one thread, the best of 3 N + 2 runs) as a share of its own
 * floor: one pass that reads the encoded bytes and writes the float32 output. The floor passes are plain vectorised
 * reads and a memset, so they are set by memory bandwidth.
 *
 * The distributions are those of bench/quality.c, from the same generator (bench/weights_gen.h
 * gives every formula), std 0.02.
 *
 * Usage: bench_gguf [--rows R] [--cols C] [--reps N] [--only TYPE]   (default 4096 x 4096)
 */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weights_gen.h"

/* ggml's reference quantizers' relative RMSE on these distributions, and their encode speed
 * per core (M weights/s, the low end of the range measured), as given with the targets. */
typedef struct bg_type {
    const char *name;
    double ggml_rmse[WG_DISTS];
    double ggml_speed; /* 0: not given */
} bg_type;

static const bg_type bg_types[] = {
    {"Q8_0", {0.00535, 0.0067, 0.0080, 0.0085}, 0},
    {"Q6_K", {0.0178, 0.0217, 0.0241, 0.0256}, 34},
    {"Q5_K", {0.0361, 0.0428, 0.0417, 0.0469}, 15},
    {"Q5_0", {0, 0, 0, 0}, 0},
    {"Q4_K", {0.0714, 0.0846, 0.0832, 0.0922}, 11},
    {"Q4_0", {0.0859, 0.1068, 0.1258, 0.1274}, 0},
    {"Q3_K", {0.1509, 0.1762, 0.1633, 0.1888}, 68},
    {"Q2_K", {0.2965, 0.3440, 0.2854, 0.3502}, 13},
    {"BF16", {0, 0, 0, 0}, 0},
    {"F16", {0, 0, 0, 0}, 0},
};

/* XOR of the 8-byte words of p (len a multiple of 8): a read the compiler vectorises, so
 * that the floors below are set by memory, not by the loop. */
static uint64_t bg_xor_words(const void *p, size_t len)
{
    uint64_t acc = 0;
    for (size_t i = 0; i < len; i += 8) {
        uint64_t v;
        memcpy(&v, (const char *)p + i, 8);
        acc ^= v;
    }
    return acc;
}

int main(int argc, char **argv)
{
    size_t rows = 4096, cols = 4096;
    int reps = 1;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0) {
            rows = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--cols") == 0) {
            cols = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--only") == 0) {
            only = argv[i + 1];
        } else {
            fprintf(stderr, "usage: bench_gguf [--rows R] [--cols C] [--reps N] [--only TYPE]\n");
            return 2;
        }
    }
    const size_t n = rows * cols;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    uint8_t *out = malloc(n * 4);
    aq_ctx *ctx = NULL;
    aq_error err;
    if (x == NULL || y == NULL || out == NULL || aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 1, &err) != AQ_OK) {
        fprintf(stderr, "bench_gguf: set-up failed\n");
        return 2;
    }
    printf("bench_gguf: %zu x %zu float32 per distribution, one thread, kernels %s\n", rows, cols,
           aq_ctx_kernels(ctx));
    printf("%-5s %-11s %9s %9s %7s %9s %9s %7s %9s %7s\n", "type", "dist", "rel_rmse", "ggml",
           "ratio", "enc Mw/s", "ggml Mw/s", "x ggml", "dec Mw/s", "floor");
    const int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    int missed = 0;
    for (int d = 0; d < WG_DISTS; d++) {
        wg_generate(d, x, n);
        double mean = 0.0, var = 0.0;
        for (size_t i = 0; i < n; i++) {
            mean += (double)x[i];
        }
        mean /= (double)n;
        for (size_t i = 0; i < n; i++) {
            var += ((double)x[i] - mean) * ((double)x[i] - mean);
        }
        const double sd = sqrt(var / (double)n);
        /* The encode memory floor: read every input float, write a Q8_0 output's bytes. */
        double floor_s = (double)INFINITY;
        for (int r = 0; r < reps; r++) {
            const double t0 = wg_now();
            memset(out, (int)(bg_xor_words(x, n * sizeof *x) & 1u), n * 34 / 32);
            floor_s = fmin(floor_s, wg_now() - t0);
        }
        for (size_t k = 0; k < sizeof bg_types / sizeof bg_types[0]; k++) {
            const bg_type *bt = &bg_types[k];
            if (only != NULL && strcmp(only, bt->name) != 0) {
                continue;
            }
            aq_gguf_type t;
            size_t block, bytes;
            if (aq_gguf_type_from_name(bt->name, 1, &t, &err) != AQ_OK ||
                aq_gguf_type_info(t, &block, &bytes, NULL, &err) != AQ_OK) {
                fprintf(stderr, "bench_gguf: %s\n", err.message);
                return 2;
            }
            aq_tensor src = {
                .name = "w", .dtype = AQ_DTYPE_F32, .data = x, .shape = shape, .ndim = 2};
            double best = (double)INFINITY;
            for (int r = 0; r < reps; r++) {
                double t0 = wg_now();
                if (aq_gguf_encode(ctx, t, &src, NULL, out, n * 4, &err) != AQ_OK) {
                    fprintf(stderr, "bench_gguf: %s\n", err.message);
                    return 2;
                }
                best = fmin(best, wg_now() - t0);
            }
            /* Decode speed, against its own floor: read the encoded bytes, write the floats. */
            const size_t enc_bytes = n / block * bytes;
            double dec_s = (double)INFINITY, dfloor_s = (double)INFINITY;
            for (int r = 0; r < 3 * reps + 2; r++) { /* cheap, and noisier: more runs */
                double t0 = wg_now();
                if (aq_gguf_decode(ctx, t, out, enc_bytes, n, y, &err) != AQ_OK) {
                    fprintf(stderr, "bench_gguf: %s\n", err.message);
                    return 2;
                }
                dec_s = fmin(dec_s, wg_now() - t0);
                t0 = wg_now();
                memset(y, (int)(bg_xor_words(out, enc_bytes / 8 * 8) & 1u), n * sizeof *y);
                dfloor_s = fmin(dfloor_s, wg_now() - t0);
            }
            if (aq_gguf_decode(ctx, t, out, enc_bytes, n, y, &err) != AQ_OK) {
                fprintf(stderr, "bench_gguf: %s\n", err.message);
                return 2;
            }
            double se = 0.0;
            for (size_t i = 0; i < n; i++) {
                se += ((double)x[i] - (double)y[i]) * ((double)x[i] - (double)y[i]);
            }
            const double rr = sqrt(se / (double)n) / sd, speed = (double)n / best / 1e6;
            const double ref = bt->ggml_rmse[d];
            if (ref > 0) {
                printf("%-5s %-11s %9.5f %9.5f %7.3f", bt->name, wg_dist_names[d], rr, ref,
                       rr / ref);
                missed += rr > ref;
            } else {
                printf("%-5s %-11s %9.5f %9s %7s", bt->name, wg_dist_names[d], rr, "-", "-");
            }
            printf(" %9.1f", speed);
            if (bt->ggml_speed > 0) {
                printf(" %9.0f %7.2f", bt->ggml_speed, speed / bt->ggml_speed);
            } else if (strcmp(bt->name, "Q8_0") == 0 || strcmp(bt->name, "Q4_0") == 0) {
                printf(" %9s %6.0f%%", "floor", 100.0 * floor_s / best);
            } else {
                printf(" %9s %7s", "-", "-");
            }
            printf(" %9.1f %6.0f%%\n", (double)n / dec_s / 1e6, 100.0 * dfloor_s / dec_s);
            fflush(stdout);
        }
    }
    printf("%d of the figures with a ggml reference are above it\n", missed);
    aq_ctx_free(ctx);
    free(x);
    free(y);
    free(out);
    return 0;
}
