/*
 * bench/quality: quantization quality and speed of every scheme and bit width on four
 * synthetic weight distributions, printed next to ggml's reference points.
 *
 * The distributions and their generator are those of bench/weights_gen.h (documented there
 * so that the figures can be reproduced anywhere).
 *
 * Usage: bench_quality [--rows R] [--cols C] [--reps N] [--only SCHEME] [--importance 1]
 * (--only keeps the affine rows, the speed reference, and the rows of that scheme.
 * --importance 1 passes one importance weight per element, 0.5 + u with u uniform from
 * splitmix64 seed 99, to every call, so that the weighted searches are timed; plain affine
 * ignores it, and the errors reported stay unweighted.)
 * Errors: relative RMSE = sqrt(MSE) / std(w); SQNR and cosine as in aq_metrics_compute; bits
 * per weight count codes, float32 scales and zero points and kquant's sub-block parameters.
 * Speed: aq_quantize on one thread, the best of --reps runs, in millions of weights per second
 * of the process's CPU time (so, per core, and little affected by other load on a shared
 * machine; on an idle machine it equals wall-clock speed).
 */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "weights_gen.h"

/* ggml's reference points (relative RMSE of Q2_K, Q4_K, Q8_0), per distribution. */
static const double bq_q4k[WG_DISTS] = {0.0714, 0.0846, 0.0832, 0.0922};
static const double bq_q2k[WG_DISTS] = {0.2965, 0.3440, 0.2854, 0.3502};
static const double bq_q80_gauss = 0.0054;

typedef struct bq_config {
    aq_scheme scheme;
    unsigned bits;
    size_t group;
    int moments;
} bq_config;

static const bq_config bq_configs[] = {
    {AQ_SCHEME_AFFINE, 2, 128, 0},
    {AQ_SCHEME_AFFINE_SEARCH, 2, 128, 0},
    {AQ_SCHEME_KQUANT, 2, 512, 0},
    {AQ_SCHEME_AFFINE, 4, 128, 0},
    {AQ_SCHEME_AFFINE_SEARCH, 4, 128, 0},
    {AQ_SCHEME_AFFINE_SEARCH, 4, 128, 1},
    {AQ_SCHEME_KQUANT, 4, 512, 0},
    {AQ_SCHEME_AFFINE, 8, 128, 0},
    {AQ_SCHEME_AFFINE_SEARCH, 8, 128, 0},
    {AQ_SCHEME_KQUANT, 8, 512, 0},
    /* The row-by-row layout of format version 1: with rows that are not a multiple of 512
     * (--cols 320) it shows what laying super-blocks over the flattened tensor saves. */
    {AQ_SCHEME_KQUANT_ROWS, 2, 512, 0},
    {AQ_SCHEME_KQUANT_ROWS, 4, 512, 0},
};

#define BQ_CHECK(call)                                                      \
    do {                                                                    \
        if ((call) != AQ_OK) {                                              \
            fprintf(stderr, "bench_quality: %s: %s\n", #call, err.message); \
            exit(1);                                                        \
        }                                                                   \
    } while (0)

int main(int argc, char **argv)
{
    size_t rows = 4096, cols = 4096;
    int reps = 1;
    unsigned threads = 0; /* 0: no thread-scaling table */
    const char *only = NULL;
    int importance = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--rows") == 0) {
            rows = (size_t)strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--cols") == 0) {
            cols = (size_t)strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--threads") == 0) {
            threads = (unsigned)strtoul(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--only") == 0) {
            only = argv[i + 1];
        } else if (strcmp(argv[i], "--importance") == 0) {
            importance = atoi(argv[i + 1]);
        } else {
            fprintf(stderr,
                    "usage: %s [--rows R] [--cols C] [--reps N] [--threads T] [--only SCHEME] "
                    "[--importance 1]\n",
                    argv[0]);
            return 2;
        }
    }
    const size_t n = rows * cols;
    int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    float *w = malloc(n * sizeof *w), *deq = malloc(n * sizeof *deq);
    float *imp = importance ? malloc(n * sizeof *imp) : NULL;
    if (importance && imp != NULL) {
        uint64_t seed = 99;
        for (size_t i = 0; i < n; i++) {
            imp[i] = (float)(0.5 + wg_uniform(&seed));
        }
    }
    aq_quantize_options qopts = {.size = sizeof(aq_quantize_options), .importance = imp};
    aq_layout big;
    aq_error err;
    BQ_CHECK(aq_layout_compute_scheme(AQ_SCHEME_KQUANT_ROWS, shape, 2, 8, 512, &big, &err));
    uint8_t *packed = malloc(big.packed_bytes + n);
    float *scales = malloc(n / 8 * sizeof *scales + 64), *zps = malloc(n / 8 * sizeof *zps + 64);
    if (!w || !deq || !packed || !scales || !zps || (importance && !imp)) {
        fprintf(stderr, "bench_quality: out of memory\n");
        return 1;
    }
    aq_ctx *ctx;
    BQ_CHECK(aq_ctx_create(&ctx, &err));
    printf("# bench/quality: %zu x %zu, sigma 0.02, kernels %s, 1 thread, best of %d%s\n", rows,
           cols, aq_ctx_kernels(ctx), reps, importance ? ", with importance weights" : "");
    printf("| distribution | scheme | bits | bpw | rel RMSE | ggml ref (bpw) | SQNR dB | cosine "
           "| KL(fit) | M weights/s | speed / affine |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n");
    /* Per target (bits 4, 2, 8) and distribution: the best relative RMSE within the bit
     * budget, its configuration and speed. */
    double best_rmse[3][WG_DISTS], best_speed[3][WG_DISTS];
    const char *best_name[3][WG_DISTS];
    for (int k = 0; k < 3; k++) {
        for (int d = 0; d < WG_DISTS; d++) {
            best_rmse[k][d] = (double)INFINITY;
            best_speed[k][d] = 0.0;
            best_name[k][d] = "";
        }
    }
    static const double bpw_limit[3] = {4.5, 2.625, 8.5};
    static char names[WG_DISTS][sizeof bq_configs / sizeof bq_configs[0]][64];
    for (int d = 0; d < WG_DISTS; d++) {
        double affine_speed = 0.0;
        wg_generate(d, w, n);
        aq_tensor t = {wg_dist_names[d], AQ_DTYPE_F32, w, shape, 2};
        for (size_t c = 0; c < sizeof bq_configs / sizeof bq_configs[0]; c++) {
            const bq_config *cf = &bq_configs[c];
            if (only != NULL && cf->scheme != AQ_SCHEME_AFFINE &&
                strcmp(aq_scheme_name(cf->scheme), only) != 0) {
                continue;
            }
            BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, cf->scheme, &err));
            BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, cf->bits, &err));
            BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)cf->group, &err));
            BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, cf->moments, &err));
            aq_layout l;
            BQ_CHECK(aq_quantize_bound(ctx, &t, &l, &err));
            aq_qbuffers b = {packed, l.packed_bytes, scales, zps, l.groups};
            double best = 1e30;
            for (int r = 0; r < reps; r++) {
                double t0 = wg_now();
                BQ_CHECK(importance ? aq_quantize_ex(ctx, &t, &qopts, &b, NULL, &err)
                                    : aq_quantize(ctx, &t, &b, &err));
                double dt = wg_now() - t0;
                best = dt < best ? dt : best;
            }
            aq_quantize_stats stats;
            BQ_CHECK(aq_quantize_ex(ctx, &t, importance ? &qopts : NULL, &b, &stats, &err));
            aq_qtensor q = {t.name, cf->scheme,     l.bit_width, l.group_size, shape,   2,
                            packed, l.packed_bytes, scales,      zps,          l.groups};
            BQ_CHECK(aq_dequantize(ctx, &q, AQ_DTYPE_F32, deq, n, &err));
            aq_tensor r = {t.name, AQ_DTYPE_F32, deq, shape, 2};
            aq_metrics m;
            BQ_CHECK(aq_metrics_compute(&t, &r, &m, &err));
            double bpw = (double)(l.packed_bytes + 8 * l.groups) * 8.0 / (double)n;
            char ref[48] = "";
            if (cf->bits == 4) {
                snprintf(ref, sizeof ref, "Q4_K %.4f (4.5)", bq_q4k[d]);
            } else if (cf->bits == 2) {
                snprintf(ref, sizeof ref, "Q2_K %.4f (2.625)", bq_q2k[d]);
            } else if (d == WG_GAUSS) {
                snprintf(ref, sizeof ref, "Q8_0 %.4f (8.5)", bq_q80_gauss);
            }
            char *name = names[d][c];
            snprintf(name, 64, "%s%s g%zu", aq_scheme_name(cf->scheme),
                     cf->moments ? "+moments" : "", l.group_size);
            double speed = (double)n / best * 1e-6;
            if (cf->scheme == AQ_SCHEME_AFFINE) {
                affine_speed = speed;
            }
            printf("| %s | %s | %u | %.3f | %.4f | %s | %.2f | %.6f | %.2e | %.1f | %.3f |\n",
                   wg_dist_names[d], name, cf->bits, bpw, m.rel_rmse, ref, m.sqnr_db, m.cosine,
                   cf->moments ? stats.kl_after : stats.kl_before, speed, speed / affine_speed);
            int k = cf->bits == 4 ? 0 : (cf->bits == 2 ? 1 : 2);
            if (bpw <= bpw_limit[k] + 1e-12 && m.rel_rmse < best_rmse[k][d]) {
                best_rmse[k][d] = m.rel_rmse;
                best_speed[k][d] = speed;
                best_name[k][d] = name;
            }
            fflush(stdout);
        }
    }
    printf("\n## Targets (best configuration within the bit budget)\n\n"
           "| target | distribution | ggml | measured | configuration | M weights/s | met |\n"
           "|---|---|---|---|---|---|---|\n");
    for (int k = 0; k < 3; k++) {
        for (int d = 0; d < WG_DISTS; d++) {
            if (k == 2 && d != WG_GAUSS) {
                continue;
            }
            double ref = k == 0 ? bq_q4k[d] : (k == 1 ? bq_q2k[d] : bq_q80_gauss);
            const char *what = k == 0 ? "<= 4.5 bpw, <= Q4_K"
                                      : (k == 1 ? "<= 2.625 bpw, <= Q2_K" : "<= 8.5 bpw, <= Q8_0");
            printf("| %s | %s | %.4f | %.4f | %s | %.1f | %s |\n", what, wg_dist_names[d], ref,
                   best_rmse[k][d], best_name[k][d], best_speed[k][d],
                   best_rmse[k][d] <= ref ? "yes" : "no");
        }
    }
    printf("\nSpeed targets: >= 200 M weights/s per core at <= 4.5 bpw, >= 100 at <= 2.625 bpw "
           "(compare the column above).\n");
    if (threads > 1) {
        /* The quality drivers on the context's thread pool: 1 thread against `threads`, the
         * same tensor (Gaussian) and buffers, interleaved, in this one run. */
        printf("\n## Threads: 1 against %u (Gaussian, best of %d, interleaved)\n\n"
               "| scheme | bits | 1 thread s | %u threads s | speed-up | same bytes |\n"
               "|---|---|---|---|---|---|\n",
               threads, reps, threads);
        wg_generate(WG_GAUSS, w, n);
        aq_tensor t = {"gaussian", AQ_DTYPE_F32, w, shape, 2};
        static const bq_config tc[] = {{AQ_SCHEME_AFFINE_SEARCH, 4, 128, 0},
                                       {AQ_SCHEME_KQUANT, 4, 512, 0},
                                       {AQ_SCHEME_KQUANT, 2, 512, 0},
                                       {AQ_SCHEME_AFFINE, 4, 128, 1}};
        uint8_t *packed2 = malloc(big.packed_bytes + n);
        if (packed2 == NULL) {
            fprintf(stderr, "bench_quality: out of memory\n");
            return 1;
        }
        for (size_t c = 0; c < sizeof tc / sizeof tc[0]; c++) {
            double best[2] = {1e30, 1e30};
            aq_layout l;
            for (int r = 0; r < reps; r++) {
                for (int k = 0; k < 2; k++) {
                    BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, k == 0 ? 1 : threads, &err));
                    BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, tc[c].scheme, &err));
                    BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, tc[c].bits, &err));
                    BQ_CHECK(
                        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)tc[c].group, &err));
                    BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_PRESERVE_MOMENTS, tc[c].moments, &err));
                    BQ_CHECK(aq_quantize_bound(ctx, &t, &l, &err));
                    aq_qbuffers b = {k == 0 ? packed : packed2, l.packed_bytes, scales, zps,
                                     l.groups};
                    double t0 = wg_now();
                    BQ_CHECK(aq_quantize(ctx, &t, &b, &err));
                    double dt = wg_now() - t0;
                    best[k] = dt < best[k] ? dt : best[k];
                }
            }
            printf("| %s%s | %u | %.4f | %.4f | %.2f | %s |\n", aq_scheme_name(tc[c].scheme),
                   tc[c].moments ? "+moments" : "", tc[c].bits, best[0], best[1], best[0] / best[1],
                   memcmp(packed, packed2, l.packed_bytes) == 0 ? "yes" : "no");
        }
        free(packed2);
        BQ_CHECK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 1, &err));
    }
    aq_ctx_free(ctx);
    free(w);
    free(imp);
    free(deq);
    free(packed);
    free(scales);
    free(zps);
    return 0;
}
