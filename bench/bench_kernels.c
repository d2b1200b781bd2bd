/*
 * Kernel benchmark: weights per second for quantize and dequantize per (bits, group size,
 * dtype, instruction set, threads), and the ratio to a memory-bandwidth floor measured in the
 * same process (floor = probe bytes/s / bytes moved per weight). Runs through the public API
 * (aq_quantize / aq_dequantize, the span driver and the context's thread pool), with
 * AQ_KERNELS forcing each instruction set in turn. Ratios from one run are what to compare:
 * the machines are shared and absolute figures drift.
 *
 *   bench_kernels [--weights N] [--reps R] [--probe-mib 256] [--threads 1,2] [--isa ...]
 *                 [--bits 2,4,8] [--groups 64,128] [--dtypes f32,f16,bf16,f64]
 *                 [--ops quantize,dequantize] [--clock wall|cpu]
 *                 [--scheme affine|kquant|kquant_rows]
 *
 * --clock cpu times with the process's CPU clock instead of the wall clock: on a shared, loaded
 * machine the time other jobs hold the core is then left out (memory contention is not). Only
 * one-thread rows mean anything with it (it adds up the CPU time of all threads).
 */
#include "aq_common.h"
#include "arrowquant.h"
#include "kernels.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BK_MAX_LIST 16

typedef struct bk_list {
    size_t n;
    char item[BK_MAX_LIST][32];
} bk_list;

static void bk_split(const char *s, bk_list *l)
{
    l->n = 0;
    while (*s != '\0' && l->n < BK_MAX_LIST) {
        size_t len = strcspn(s, ",");
        if (len > 0 && len < sizeof l->item[0]) {
            memcpy(l->item[l->n], s, len);
            l->item[l->n][len] = '\0';
            l->n++;
        }
        s += len;
        if (*s == ',') {
            s++;
        }
    }
}

static clockid_t bk_clock = CLOCK_MONOTONIC;

static double bk_now(void)
{
    struct timespec ts;
    clock_gettime(bk_clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- memory-bandwidth probe: a streaming read of a buffer much larger than the caches ---- */

typedef struct bk_probe_part {
    const uint64_t *p;
    size_t words;
    uint64_t sum;
} bk_probe_part;

/* 32-byte vectors with GCC's vector extension: baseline code on every target, and enough
 * loads in flight that one core reads at its memory-bound rate. */
typedef uint64_t bk_v4 __attribute__((vector_size(32)));

static void *bk_probe_read(void *opaque)
{
    bk_probe_part *part = opaque;
    const bk_v4 *v = (const bk_v4 *)(const void *)part->p;
    const size_t nv = part->words / 4;
    bk_v4 a = {0, 0, 0, 0}, b = a, c = a, d = a;
    size_t i = 0;
    for (; i + 4 <= nv; i += 4) {
        a += v[i];
        b += v[i + 1];
        c += v[i + 2];
        d += v[i + 3];
    }
    for (; i < nv; i++) {
        a += v[i];
    }
    a += b + c + d;
    part->sum = a[0] + a[1] + a[2] + a[3];
    return NULL;
}

/* Best of `reps` read passes over buf (pages already touched) with `threads` threads, in
 * bytes per second. */
static double bk_probe(const void *buf, size_t bytes, unsigned threads, int reps)
{
    const size_t words = bytes / 8;
    bk_probe_part parts[64];
    pthread_t tid[64];
    double best = 0.0;
    uint64_t sink = 0;
    if (threads > 64) {
        threads = 64;
    }
    for (int r = 0; r < reps; r++) {
        for (unsigned t = 0; t < threads; t++) {
            size_t a = words * t / threads / 4 * 4, b = words * (t + 1) / threads / 4 * 4;
            parts[t] = (bk_probe_part){(const uint64_t *)buf + a, b - a, 0};
        }
        double t0 = bk_now();
        for (unsigned t = 1; t < threads; t++) {
            pthread_create(&tid[t], NULL, bk_probe_read, &parts[t]);
        }
        bk_probe_read(&parts[0]);
        for (unsigned t = 1; t < threads; t++) {
            pthread_join(tid[t], NULL);
        }
        double dt = bk_now() - t0;
        for (unsigned t = 0; t < threads; t++) {
            sink += parts[t].sum;
        }
        if ((double)bytes / dt > best) {
            best = (double)bytes / dt;
        }
    }
    if (sink == 42) {
        printf(" "); /* keeps the sums alive */
    }
    return best;
}

/* ---- the benchmark matrix ---- */

typedef struct bk_cfg {
    size_t weights;
    size_t probe_mib; /* 0: no probe (in-cache compute rates; floor columns empty) */
    int reps;
    bk_list threads, isa, bits, groups, dtypes, ops;
    aq_scheme scheme; /* kquant's group is its super-block: --groups is ignored */
} bk_cfg;

static aq_dtype bk_dtype(const char *name)
{
    for (int d = 0; d < AQ_DTYPE_COUNT; d++) {
        if (strcmp(aq_dtype_name((aq_dtype)d), name) == 0) {
            return (aq_dtype)d;
        }
    }
    fprintf(stderr, "bench_kernels: unknown dtype '%s' (f32, f16, bf16, f64)\n", name);
    exit(2);
}

static aq_ctx *bk_ctx(const char *isa, aq_scheme scheme, unsigned bits, size_t g, unsigned threads)
{
    aq_error err;
    aq_ctx *ctx;
    setenv("AQ_KERNELS", isa, 1);
    if (aq_ctx_create(&ctx, &err) != AQ_OK) {
        return NULL;
    }
    if (aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)g, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, scheme, &err) != AQ_OK) {
        fprintf(stderr, "bench_kernels: %s\n", err.message);
        exit(2);
    }
    return ctx;
}

int main(int argc, char **argv)
{
    bk_cfg c;
    c.weights = (size_t)1 << 25;
    c.reps = 5;
    c.probe_mib = 256;
    bk_split("1,2", &c.threads);
    bk_split("avx512,avx2,neon,ref", &c.isa);
    bk_split("2,4,8", &c.bits);
    bk_split("64,128", &c.groups);
    bk_split("f32,f16,bf16", &c.dtypes);
    bk_split("quantize,dequantize", &c.ops);
    c.scheme = AQ_SCHEME_AFFINE;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--weights") == 0) {
            c.weights = (size_t)strtoull(v, NULL, 10);
        } else if (strcmp(k, "--probe-mib") == 0) {
            c.probe_mib = (size_t)strtoull(v, NULL, 10);
        } else if (strcmp(k, "--reps") == 0) {
            c.reps = atoi(v);
        } else if (strcmp(k, "--threads") == 0) {
            bk_split(v, &c.threads);
        } else if (strcmp(k, "--isa") == 0) {
            bk_split(v, &c.isa);
        } else if (strcmp(k, "--bits") == 0) {
            bk_split(v, &c.bits);
        } else if (strcmp(k, "--groups") == 0) {
            bk_split(v, &c.groups);
        } else if (strcmp(k, "--dtypes") == 0) {
            bk_split(v, &c.dtypes);
        } else if (strcmp(k, "--ops") == 0) {
            bk_split(v, &c.ops);
        } else if (strcmp(k, "--scheme") == 0) {
            if (strcmp(v, "affine") == 0) {
                c.scheme = AQ_SCHEME_AFFINE;
            } else if (strcmp(v, "kquant") == 0) {
                c.scheme = AQ_SCHEME_KQUANT;
            } else if (strcmp(v, "kquant_rows") == 0) {
                c.scheme = AQ_SCHEME_KQUANT_ROWS;
            } else {
                fprintf(stderr,
                        "bench_kernels: unknown scheme '%s' (affine, kquant, "
                        "kquant_rows)\n",
                        v);
                return 2;
            }
        } else if (strcmp(k, "--clock") == 0 && strcmp(v, "wall") == 0) {
            bk_clock = CLOCK_MONOTONIC;
        } else if (strcmp(k, "--clock") == 0 && strcmp(v, "cpu") == 0) {
            bk_clock = CLOCK_PROCESS_CPUTIME_ID;
        } else {
            fprintf(stderr, "bench_kernels: unknown option %s\n", k);
            return 2;
        }
    }
    if (c.weights < 4096 || c.reps < 1) {
        fprintf(stderr, "bench_kernels: --weights must be >= 4096 and --reps >= 1\n");
        return 2;
    }
    /* Rows of 4096 so that every group size up to 4096 divides them. */
    const size_t cols = 4096;
    c.weights = (c.weights + cols - 1) / cols * cols;
    int64_t shape[2] = {(int64_t)(c.weights / cols), (int64_t)cols};

    /* Inputs: N(0, 1) values in every dtype; outputs at their final size. */
    float *f32 = malloc(c.weights * sizeof(float));
    uint16_t *f16 = malloc(c.weights * 2), *bf16 = malloc(c.weights * 2);
    double *f64 = NULL;
    for (size_t i = 0; i < c.dtypes.n; i++) {
        if (strcmp(c.dtypes.item[i], "f64") == 0) {
            f64 = malloc(c.weights * sizeof(double));
        }
    }
    if (c.scheme != AQ_SCHEME_AFFINE) {
        bk_split("512", &c.groups); /* the super-block */
    }
    /* Codes, plus kquant's sub-block parameters (at most 1/16 byte per weight). */
    const size_t packed_cap = c.weights + c.weights / 8;
    uint8_t *packed = malloc(packed_cap);
    float *scales = malloc(c.weights / 8 * sizeof(float));
    float *zps = malloc(c.weights / 8 * sizeof(float));
    float *out = malloc(c.weights * sizeof(float));
    size_t probe_bytes = c.probe_mib << 20;
    uint8_t *probe_buf = malloc(probe_bytes > 0 ? probe_bytes : 1);
    if (!f32 || !f16 || !bf16 || !packed || !scales || !zps || !out || !probe_buf) {
        fprintf(stderr, "bench_kernels: out of memory\n");
        return 1;
    }
    uint64_t seed = 1;
    for (size_t i = 0; i < c.weights; i++) {
        seed += 0x9e3779b97f4a7c15ull;
        uint64_t z = seed;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        /* Sum of four uniforms, centred: close enough to normal for timing. */
        double u = (double)(z & 0xffff) + (double)((z >> 16) & 0xffff) +
                   (double)((z >> 32) & 0xffff) + (double)(z >> 48);
        f32[i] = (float)((u / 65536.0 - 2.0) * 1.7);
        f16[i] = aq__f32_to_f16(f32[i]);
        bf16[i] = aq__f32_to_bf16(f32[i]);
        if (f64 != NULL) {
            f64[i] = (double)f32[i];
        }
    }
    memset(packed, 0, packed_cap);
    memset(out, 0, c.weights * sizeof(float));
    memset(probe_buf, 1, probe_bytes);

    printf("# bench_kernels: %zu weights ([%lld, %lld]), scheme %s, best of %d runs, %s clock\n",
           c.weights, (long long)shape[0], (long long)shape[1], aq_scheme_name(c.scheme), c.reps,
           bk_clock == CLOCK_MONOTONIC ? "wall" : "process CPU");
    for (size_t t = 0; t < c.threads.n && probe_bytes > 0; t++) {
        unsigned th = (unsigned)atoi(c.threads.item[t]);
        printf("# memory probe (streaming read of %zu MiB), %u thread(s): %.2f GB/s\n", c.probe_mib,
               th, bk_probe(probe_buf, probe_bytes, th, c.reps) / 1e9);
    }
    if (probe_bytes == 0) {
        printf("# no memory probe (--probe-mib 0): the data stays in cache between runs\n");
    }
    printf("\n| op | isa | dtype | bits | group | threads | G weights/s | bytes/weight | "
           "probe GB/s | floor G/s | of floor | vs 1 thread |\n");
    printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");

    for (size_t o = 0; o < c.ops.n; o++) {
        bool quant = strcmp(c.ops.item[o], "quantize") == 0;
        for (size_t ii = 0; ii < c.isa.n; ii++) {
            const char *isa = c.isa.item[ii];
            aq_ctx *probe_ctx =
                bk_ctx(isa, c.scheme, 4, c.scheme == AQ_SCHEME_AFFINE ? 64 : 512, 1);
            if (probe_ctx == NULL) {
                printf("# %s: not available on this build or CPU, skipped\n", isa);
                continue;
            }
            aq_ctx_free(probe_ctx);
            for (size_t di = 0; di < c.dtypes.n; di++) {
                aq_dtype dt = bk_dtype(c.dtypes.item[di]);
                if (!quant && (dt == AQ_DTYPE_F64)) {
                    continue;
                }
                const void *in = dt == AQ_DTYPE_F32    ? (const void *)f32
                                 : dt == AQ_DTYPE_F16  ? (const void *)f16
                                 : dt == AQ_DTYPE_BF16 ? (const void *)bf16
                                                       : (const void *)f64;
                for (size_t bi = 0; bi < c.bits.n; bi++) {
                    unsigned bits = (unsigned)atoi(c.bits.item[bi]);
                    for (size_t gi = 0; gi < c.groups.n; gi++) {
                        size_t g = (size_t)strtoull(c.groups.item[gi], NULL, 10);
                        double one_thread = 0.0;
                        for (size_t ti = 0; ti < c.threads.n; ti++) {
                            unsigned th = (unsigned)atoi(c.threads.item[ti]);
                            aq_ctx *ctx = bk_ctx(isa, c.scheme, bits, g, th);
                            aq_error err;
                            aq_tensor t = {"bench", quant ? dt : AQ_DTYPE_F32, quant ? in : f32,
                                           shape, 2};
                            aq_layout l;
                            if (ctx == NULL || aq_quantize_bound(ctx, &t, &l, &err) != AQ_OK) {
                                fprintf(stderr, "bench_kernels: cannot set up %s\n", isa);
                                return 1;
                            }
                            aq_qbuffers qb = {packed, packed_cap, scales, zps, c.weights / 8};
                            aq_qtensor q = {"bench", c.scheme,       bits,   g,   shape,   2,
                                            packed,  l.packed_bytes, scales, zps, l.groups};
                            if (aq_quantize(ctx, &t, &qb, &err) != AQ_OK) {
                                fprintf(stderr, "bench_kernels: %s\n", err.message);
                                return 1;
                            }
                            /* Probe and kernel passes alternate, so that both see the same
                             * load from whatever else runs on the machine. */
                            double best = 1e30, bw = 0.0;
                            for (int r = 0; r < c.reps; r++) {
                                if (probe_bytes > 0) {
                                    double p = bk_probe(probe_buf, probe_bytes, th, 1);
                                    bw = p > bw ? p : bw;
                                }
                                double t0 = bk_now();
                                aq_status st =
                                    quant ? aq_quantize(ctx, &t, &qb, &err)
                                          : aq_dequantize(ctx, &q, dt, out, c.weights, &err);
                                double dt_s = bk_now() - t0;
                                if (st != AQ_OK) {
                                    fprintf(stderr, "bench_kernels: %s\n", err.message);
                                    return 1;
                                }
                                best = dt_s < best ? dt_s : best;
                            }
                            aq_ctx_free(ctx);
                            double wps = (double)c.weights / best;
                            /* Output, codes (and kquant's sub-block parameters), 8 bytes of
                             * parameters per group. */
                            double bpw = (double)aq_dtype_size(dt) +
                                         ((double)l.packed_bytes + 8.0 * (double)l.groups) /
                                             (double)c.weights;
                            double floor_wps = bw / bpw;
                            if (th == 1) {
                                one_thread = wps;
                            }
                            char vs1[32] = "";
                            if (th != 1 && one_thread > 0.0) {
                                snprintf(vs1, sizeof vs1, "%.2fx", wps / one_thread);
                            }
                            char floor_cols[64] = "- | - | -";
                            if (bw > 0.0) {
                                snprintf(floor_cols, sizeof floor_cols, "%.1f | %.2f | %.0f%%",
                                         bw / 1e9, floor_wps / 1e9, 100.0 * wps / floor_wps);
                            }
                            printf("| %s | %s | %s | %u | %zu | %u | %.3f | %.3f | %s | %s |\n",
                                   quant ? "quantize" : "dequantize", isa, aq_dtype_name(dt), bits,
                                   g, th, wps / 1e9, bpw, floor_cols, vs1);
                            fflush(stdout);
                        }
                    }
                }
            }
        }
    }
    free(f32);
    free(f16);
    free(bf16);
    free(f64);
    free(packed);
    free(scales);
    free(zps);
    free(out);
    free(probe_buf);
    return 0;
}
