/*
 * bench/gguf: the GGUF block encoders (aq_gguf_encode) on four synthetic weight distributions,
 * beside ggml's own quantizers measured in the same run: relative RMSE (rms error / std) of the
 * decoded floats, and encode speed on one thread in millions of weights per second of the
 * process's CPU time (per core; see bench/quality.c). Both without importance and with one
 * per-column importance vector (ggml's imatrix; our encoder gets it repeated per element); the
 * error with importance is the weighted one, sqrt(sum w e^2 / sum w) / std. Every type's encode
 * rate is also given as a share of a memory floor measured in the same run, each floor pass right
 * after one of the encodes: one pass that reads the float32 input and writes a Q8_0 output's
 * bytes (the least any encoder must do). For every
 * type also the decode speed (aq_gguf_decode, one thread, the best of 3 N + 2 runs) as a share
 * of its own floor: one pass that reads the encoded bytes and writes the float32 output. The
 * floor passes are plain vectorised reads and a memset, so they are set by memory bandwidth.
 *
 * ggml is loaded at run time from the library that bench/ggml_ref.sh builds from the pinned
 * ggml sources (--ggml LIB): ggml_quantize_chunk over all rows on this thread, as llama-quantize
 * calls it. Its blocks are decoded with our decoder, which gives ggml's floats bit for bit
 * (tests/python/gguf). Without --ggml the ggml columns are empty.
 *
 * The distributions are those of bench/quality.c, from the same generator (bench/weights_gen.h
 * gives every formula), std 0.02.
 *
 * Usage: bench_gguf [--rows R] [--cols C] [--reps N] [--only TYPE] [--ggml LIB]
 *        (default 4096 x 4096, one run each)
 */
#include <arrowquant.h>

#include <dlfcn.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "weights_gen.h"

/* The types aq_gguf_encode writes, in the table's order. */
static const char *const bg_types[] = {"Q8_0", "Q6_K", "Q5_K", "Q5_0", "Q4_K",
                                       "Q4_0", "Q3_K", "Q2_K", "BF16", "F16"};
#define BG_NTYPES (sizeof bg_types / sizeof bg_types[0])

/* The rows: every type with the default search, then the types that have ggml's rounding with
 * AQ_PARAM_GGUF_SEARCH 0 ("TYPE/none"). */
typedef struct bg_row {
    const char *type;
    int search;
} bg_row;

static const bg_row bg_rows[] = {{"Q8_0", 1}, {"Q6_K", 1}, {"Q5_K", 1}, {"Q5_0", 1}, {"Q4_K", 1},
                                 {"Q4_0", 1}, {"Q3_K", 1}, {"Q2_K", 1}, {"BF16", 1}, {"F16", 1},
                                 {"Q8_0", 0}, {"Q5_0", 0}, {"Q4_0", 0}};

/* The few entry points of ggml's public header (ggml.h) that the bench calls; ggml's type ids
 * are GGUF's (aq_gguf_type). */
typedef struct bg_ggml {
    size_t (*quantize_chunk)(int type, const float *src, void *dst, int64_t start, int64_t nrows,
                             int64_t n_per_row, const float *imatrix);
    const char *(*type_name)(int type);
    int64_t (*blck_size)(int type);
    size_t (*type_size)(int type);
    void (*quantize_init)(int type);
} bg_ggml;

/* Opens ggml's library and checks that it knows every type we write (ggml spells the names in
 * lower case but for the K), with our block sizes. */
static bool bg_ggml_open(const char *path, bg_ggml *g)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        fprintf(stderr, "bench_gguf: cannot load ggml from %s: %s (build it: bench/ggml_ref.sh)\n",
                path, dlerror());
        return false;
    }
    /* POSIX's way from a symbol to a function pointer: copy the object pointer's bytes. */
#define BG_SYM(field, name)                                                                   \
    do {                                                                                      \
        void *p_ = dlsym(h, name);                                                            \
        if (p_ == NULL) {                                                                     \
            fprintf(stderr, "bench_gguf: %s has no %s: not ggml's ggml-base library\n", path, \
                    name);                                                                    \
            return false;                                                                     \
        }                                                                                     \
        memcpy(&g->field, &p_, sizeof p_);                                                    \
    } while (0)
    BG_SYM(quantize_chunk, "ggml_quantize_chunk");
    BG_SYM(type_name, "ggml_type_name");
    BG_SYM(blck_size, "ggml_blck_size");
    BG_SYM(type_size, "ggml_type_size");
    BG_SYM(quantize_init, "ggml_quantize_init");
#undef BG_SYM
    for (size_t k = 0; k < BG_NTYPES; k++) {
        aq_gguf_type t;
        size_t block, bytes;
        aq_error err;
        if (aq_gguf_type_from_name(bg_types[k], 1, &t, &err) != AQ_OK ||
            aq_gguf_type_info(t, &block, &bytes, NULL, &err) != AQ_OK) {
            fprintf(stderr, "bench_gguf: %s\n", err.message);
            return false;
        }
        const char *name = g->type_name((int)t);
        if (name == NULL || strcasecmp(name, bg_types[k]) != 0) {
            fprintf(stderr, "bench_gguf: ggml at %s names type %d '%s', expected %s\n", path,
                    (int)t, name ? name : "(none)", bg_types[k]);
            return false;
        }
        if ((size_t)g->blck_size((int)t) != block || g->type_size((int)t) != bytes) {
            fprintf(
                stderr, "bench_gguf: ggml's %s is %lld elements in %zu bytes, ours %zu in %zu\n",
                bg_types[k], (long long)g->blck_size((int)t), g->type_size((int)t), block, bytes);
            return false;
        }
        g->quantize_init((int)t);
    }
    return true;
}

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

/* One encoder's figures on one input: error (weighted by imp_col when given) and speed. */
typedef struct bg_fig {
    double rmse, speed; /* relative RMSE; M weights/s per core */
} bg_fig;

/* Decodes enc (type t) into y and returns x's relative RMSE against it, weighted per column by
 * imp_col when not NULL. */
static double bg_rmse(aq_ctx *ctx, aq_gguf_type t, const void *enc, size_t enc_bytes,
                      const float *x, float *y, size_t rows, size_t cols, const float *imp_col,
                      double sd)
{
    aq_error err;
    if (aq_gguf_decode(ctx, t, enc, enc_bytes, rows * cols, y, &err) != AQ_OK) {
        fprintf(stderr, "bench_gguf: %s\n", err.message);
        exit(2);
    }
    double se = 0.0, wsum = 0.0;
    for (size_t r = 0; r < rows; r++) {
        for (size_t c = 0; c < cols; c++) {
            const size_t i = r * cols + c;
            const double w = imp_col ? (double)imp_col[c] : 1.0, e = (double)x[i] - (double)y[i];
            se += w * e * e;
            wsum += w;
        }
    }
    return sqrt(se / wsum) / sd;
}

int main(int argc, char **argv)
{
    size_t rows = 4096, cols = 4096;
    int reps = 1;
    const char *only = NULL, *ggml_path = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0) {
            rows = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--cols") == 0) {
            cols = (size_t)atol(argv[i + 1]);
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--only") == 0) {
            only = argv[i + 1];
        } else if (strcmp(argv[i], "--ggml") == 0) {
            ggml_path = argv[i + 1];
        } else {
            fprintf(stderr, "usage: bench_gguf [--rows R] [--cols C] [--reps N] [--only TYPE] "
                            "[--ggml LIB]\n");
            return 2;
        }
    }
    bg_ggml ggml = {0};
    if (ggml_path != NULL && !bg_ggml_open(ggml_path, &ggml)) {
        return 2;
    }
    const size_t n = rows * cols;
    float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y), *imp = malloc(n * sizeof *imp);
    float *imp_col = malloc(cols * sizeof *imp_col);
    uint8_t *out = malloc(n * 4), *mine = malloc(n * 4);
    aq_ctx *ctx = NULL;
    aq_error err;
    if (x == NULL || y == NULL || imp == NULL || imp_col == NULL || out == NULL || mine == NULL ||
        aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 1, &err) != AQ_OK) {
        fprintf(stderr, "bench_gguf: set-up failed\n");
        return 2;
    }
    /* Every page touched once, so that no timing below pays for first-touch faults. */
    memset(out, 0, n * 4);
    memset(mine, 0, n * 4);
    memset(y, 0, n * sizeof *y);
    /* The importance: a mean squared activation per input column, log-normal (sigma 1), so a
     * few columns weigh much more than the rest, as in a real imatrix. */
    uint64_t seed = 99;
    for (size_t c = 0; c < cols; c++) {
        imp_col[c] = (float)exp(wg_normal(&seed));
    }
    for (size_t i = 0; i < n; i++) {
        imp[i] = imp_col[i % cols];
    }
    printf("bench_gguf: %zu x %zu float32 per distribution, one thread, kernels %s, ggml %s\n",
           rows, cols, aq_ctx_kernels(ctx), ggml_path ? ggml_path : "not measured (no --ggml)");
    printf("%-9s %-10s | %8s %8s %6s %7s %7s %6s %5s %5s | %8s %8s %6s %7s %7s %6s | %7s %5s\n", "",
           "", "plain:", "", "", "", "", "", "", "", "imatrix:", "", "", "", "", "", "decode", "");
    printf("%-9s %-10s | %8s %8s %6s %7s %7s %6s %5s %5s | %8s %8s %6s %7s %7s %6s | %7s %5s\n",
           "type", "dist", "rmse", "ggml", "ratio", "Mw/s", "ggml", "x", "floor", "=ggml", "w-rmse",
           "ggml", "ratio", "Mw/s", "ggml", "x", "Mw/s", "floor");
    const int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    int missed = 0, compared = 0;
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
        for (size_t k = 0; k < sizeof bg_rows / sizeof bg_rows[0]; k++) {
            const bg_row *row = &bg_rows[k];
            if (only != NULL && strcmp(only, row->type) != 0) {
                continue;
            }
            aq_gguf_type t;
            size_t block, bytes;
            if (aq_gguf_type_from_name(row->type, 1, &t, &err) != AQ_OK ||
                aq_gguf_type_info(t, &block, &bytes, NULL, &err) != AQ_OK ||
                aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, row->search, &err) != AQ_OK) {
                fprintf(stderr, "bench_gguf: %s\n", err.message);
                return 2;
            }
            bool same = false; /* our bytes are ggml's (no importance) */
            const size_t enc_bytes = n / block * bytes;
            aq_tensor src = {
                .name = "w", .dtype = AQ_DTYPE_F32, .data = x, .shape = shape, .ndim = 2};
            /* [with importance][ours, ggml] */
            bg_fig fig[2][2] = {{{0, 0}, {0, 0}}, {{0, 0}, {0, 0}}};
            /* The encode memory floor: read every input float, write a Q8_0 output's bytes;
             * timed after each of our encodes without importance, so that both meet the same
             * load on the machine. */
            double floor_s = (double)INFINITY;
            for (int wi = 0; wi < 2; wi++) {
                for (int who = 0; who < (ggml_path ? 2 : 1); who++) {
                    double best = (double)INFINITY;
                    for (int r = 0; r < reps; r++) {
                        const double t0 = wg_now();
                        if (who == 0) {
                            if (aq_gguf_encode(ctx, t, &src, wi ? imp : NULL, out, n * 4, &err) !=
                                AQ_OK) {
                                fprintf(stderr, "bench_gguf: %s\n", err.message);
                                return 2;
                            }
                        } else if (ggml.quantize_chunk((int)t, x, out, 0, (int64_t)rows,
                                                       (int64_t)cols,
                                                       wi ? imp_col : NULL) != enc_bytes) {
                            fprintf(stderr, "bench_gguf: ggml wrote an unexpected size\n");
                            return 2;
                        }
                        best = fmin(best, wg_now() - t0);
                        if (wi == 0 && who == 0) {
                            const double f0 = wg_now();
                            memset(out + enc_bytes, (int)(bg_xor_words(x, n * sizeof *x) & 1u),
                                   n * 34 / 32);
                            floor_s = fmin(floor_s, wg_now() - f0);
                        }
                    }
                    fig[wi][who].speed = (double)n / best / 1e6;
                    if (wi == 0 && who == 0) {
                        memcpy(mine, out, enc_bytes);
                    } else if (wi == 0) {
                        same = memcmp(mine, out, enc_bytes) == 0;
                    }
                    fig[wi][who].rmse =
                        bg_rmse(ctx, t, out, enc_bytes, x, y, rows, cols, wi ? imp_col : NULL, sd);
                }
            }
            /* Decode speed, against its own floor: read the encoded bytes, write the floats
             * (of our last encoding, re-made). */
            if (aq_gguf_encode(ctx, t, &src, NULL, out, n * 4, &err) != AQ_OK) {
                fprintf(stderr, "bench_gguf: %s\n", err.message);
                return 2;
            }
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
            char label[16];
            snprintf(label, sizeof label, "%s%s", row->type, row->search ? "" : "/none");
            printf("%-9s %-10s |", label, wg_dist_names[d]);
            for (int wi = 0; wi < 2; wi++) {
                const bg_fig *o = &fig[wi][0], *g = &fig[wi][1];
                printf(" %8.5f", o->rmse);
                if (ggml_path) {
                    printf(" %8.5f %6.3f", g->rmse, o->rmse / g->rmse);
                    /* ties at the last bits of a double count as at or below; the rows
                     * without search are not counted */
                    missed += row->search && o->rmse > g->rmse * (1 + 1e-12);
                    compared += row->search;
                } else {
                    printf(" %8s %6s", "-", "-");
                }
                printf(" %7.1f", o->speed);
                if (ggml_path) {
                    printf(" %7.1f %6.2f", g->speed, o->speed / g->speed);
                } else {
                    printf(" %7s %6s", "-", "-");
                }
                if (wi == 0) {
                    printf(" %4.0f%% %5s", 100.0 * floor_s * o->speed * 1e6 / (double)n,
                           ggml_path ? (same ? "yes" : "no") : "-");
                }
                printf(" |");
            }
            printf(" %7.1f %4.0f%%\n", (double)n / dec_s / 1e6, 100.0 * dfloor_s / dec_s);
            fflush(stdout);
        }
    }
    if (ggml_path) {
        printf("%d of %d errors with the default search are above ggml's\n", missed, compared);
    }
    aq_ctx_free(ctx);
    free(x);
    free(y);
    free(imp);
    free(imp_col);
    free(out);
    free(mine);
    return 0;
}
