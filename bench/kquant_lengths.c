/*
 * kquant quantize rate by row length: the kquant_rows layout (super-blocks follow rows, so a
 * row that is not a multiple of 512 ends in a short super-block, and one that is not a multiple
 * of the sub-block ends in a partial sub-block) against rows of whole super-blocks, for every
 * kernel table this CPU runs, one thread, float32 N(0, 0.02) input. Each figure is the best of
 * --reps timings of the table's kernel over about --weights weights, the row lengths and rows of
 * 512 timed in turn, with the process CPU clock (the machines are shared); the ratio is to the
 * same table's rate on rows of 512 in the same run.
 *
 *   bench_kquant_lengths [--weights N] [--reps R] [--bits 2,4,8] [--lengths 320,27,...]
 *                        [--kernels NAME]   (one kernel table only, e.g. avx512)
 */
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double kl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts); /* one thread: time off the core left out */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Best weights/s of fn over rows of cols (about n weights). */
static double kl_rate(aq__quantize_kquant_fn fn, const float *x, size_t n, size_t cols,
                      unsigned bits, int reps)
{
    const size_t rows = n / cols > 0 ? n / cols : 1, m = rows * cols;
    const size_t per_row = (cols + AQ__KQ_SUPER - 1) / AQ__KQ_SUPER;
    uint8_t *packed = malloc(m * bits / 8 + 1), *meta = malloc(rows * per_row * 48 + 48);
    float *d = malloc(rows * per_row * 4), *dmin = malloc(rows * per_row * 4);
    const aq__span s = {m, 0, cols, AQ__KQ_SUPER, bits};
    double best = 0.0;
    for (int r = 0; r < reps; r++) {
        double t0 = kl_now();
        fn(x, NULL, &s, packed, meta, d, dmin);
        double wps = (double)m / (kl_now() - t0);
        best = wps > best ? wps : best;
    }
    free(packed);
    free(meta);
    free(d);
    free(dmin);
    return best;
}

static size_t kl_list(const char *s, size_t *out, size_t cap)
{
    size_t k = 0;
    while (*s != '\0' && k < cap) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0) {
            fprintf(stderr, "bench_kquant_lengths: bad list '%s'\n", s);
            exit(2);
        }
        out[k++] = (size_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return k;
}

int main(int argc, char **argv)
{
    size_t n = (size_t)1 << 21, bits_l[3] = {2, 4, 8}, nbits = 3;
    size_t lengths[32] = {320, 640, 1280, 576, 1152, 1000, 100, 37, 27, 16, 4};
    size_t nlen = 11;
    int reps = 5;
    const char *only = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--weights") == 0) {
            n = (size_t)strtoull(argv[i + 1], NULL, 10);
        } else if (strcmp(argv[i], "--reps") == 0) {
            reps = atoi(argv[i + 1]);
        } else if (strcmp(argv[i], "--bits") == 0) {
            nbits = kl_list(argv[i + 1], bits_l, 3);
        } else if (strcmp(argv[i], "--kernels") == 0) {
            only = argv[i + 1];
        } else if (strcmp(argv[i], "--lengths") == 0) {
            nlen = kl_list(argv[i + 1], lengths, 32);
        } else {
            fprintf(stderr, "bench_kquant_lengths: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    float *x = malloc(n * sizeof(float));
    uint64_t state = 88172645463325252ull;
    for (size_t i = 0; i < n; i += 2) { /* Box-Muller over xorshift64 */
        double u[2];
        for (int k = 0; k < 2; k++) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            u[k] = ((double)(state >> 11) + 0.5) / 9007199254740992.0;
        }
        double r = sqrt(-2.0 * log(u[0])), t = 6.283185307179586 * u[1];
        x[i] = (float)(0.02 * r * cos(t));
        if (i + 1 < n) {
            x[i + 1] = (float)(0.02 * r * sin(t));
        }
    }
    const aq__kernel_table *tables[8];
    bool ok[8];
    size_t nt = aq__kernels_list(tables, ok, 8);
    printf("# kquant quantize by row length (kquant_rows), float32, 1 thread, %zu weights, best "
           "of %d\n\n",
           n, reps);
    printf(
        "| kernels | bits | row length | M weights/s | vs rows of 512 |\n|---|---|---|---|---|\n");
    for (size_t t = 0; t < nt; t++) {
        if (!ok[t] || tables[t]->quantize_kquant[AQ_DTYPE_F32] == NULL ||
            (only != NULL && strcmp(tables[t]->name, only) != 0)) {
            continue;
        }
        for (size_t b = 0; b < nbits; b++) {
            const unsigned bits = (unsigned)bits_l[b];
            aq__quantize_kquant_fn fn = tables[t]->quantize_kquant[AQ_DTYPE_F32];
            /* Whole super-blocks and each length timed alternately, the best of each kept. */
            double whole = 0.0, rate[32] = {0};
            for (int r = 0; r < reps; r++) {
                double w = kl_rate(fn, x, n, AQ__KQ_SUPER, bits, 1);
                whole = w > whole ? w : whole;
                for (size_t l = 0; l < nlen; l++) {
                    double v = kl_rate(fn, x, n, lengths[l], bits, 1);
                    rate[l] = v > rate[l] ? v : rate[l];
                }
            }
            printf("| %s | %u | 512 | %.1f | 1.00 |\n", tables[t]->name, bits, whole / 1e6);
            for (size_t l = 0; l < nlen; l++) {
                printf("| %s | %u | %zu | %.1f | %.2f |\n", tables[t]->name, bits, lengths[l],
                       rate[l] / 1e6, rate[l] / whole);
            }
        }
    }
    free(x);
    return 0;
}
