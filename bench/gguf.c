/*
 * bench/gguf: the GGUF block encoders (aq_gguf_encode) on four synthetic weight distributions,
 * against ggml's own reference quantizers' figures: relative RMSE (rms error / std) of the
 * decoded floats, and encode speed on one thread in millions of weights per second of the
 * process's CPU time (per core; see bench/quality.c). For Q8_0 and Q4_0 also the ratio to a
 * memory floor measured in the same run: one pass that reads the float32 input and writes the
 * output's bytes (the least any encoder must do), timed the same way.
 *
 * The distributions are those of bench/quality.c, with the same generator (splitmix64, seeds
 * 1..4, Box-Muller; the header of bench/quality.c gives every formula), std 0.02.
 *
 * Usage: bench_gguf [--rows R] [--cols C] [--reps N] [--only TYPE]   (default 4096 x 4096)
 */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t bg_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double bg_uniform(uint64_t *s)
{
    return (double)(bg_next(s) >> 11) * 0x1p-53;
}

static double bg_normal(uint64_t *s)
{
    double u1 = bg_uniform(s), u2 = bg_uniform(s);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

enum { BG_GAUSS, BG_LAPLACE, BG_OUTLIER, BG_STUDENT, BG_DISTS };
static const char *const bg_dist_names[BG_DISTS] = {"gaussian", "laplace", "outliers",
                                                    "student-t3"};

static void bg_generate(int dist, float *w, size_t n)
{
    const double sigma = 0.02;
    uint64_t s = (uint64_t)dist + 1;
    for (size_t i = 0; i < n; i++) {
        double x = 0.0;
        if (dist == BG_GAUSS) {
            x = sigma * bg_normal(&s);
        } else if (dist == BG_LAPLACE) {
            double b = sigma / sqrt(2.0), v = bg_uniform(&s) - 0.5;
            x = -b * (v < 0 ? -1.0 : 1.0) * log(1.0 - 2.0 * fabs(v));
        } else if (dist == BG_OUTLIER) {
            x = sigma * bg_normal(&s);
            double u = bg_uniform(&s);
            if (u < 0.0005) {
                x = 20.0 * sigma;
            } else if (u < 0.001) {
                x = -20.0 * sigma;
            }
        } else {
            double z0 = bg_normal(&s), z1 = bg_normal(&s), z2 = bg_normal(&s), z3 = bg_normal(&s);
            x = z0 / sqrt((z1 * z1 + z2 * z2 + z3 * z3) / 3.0) * sigma / sqrt(3.0);
        }
        w[i] = (float)x;
    }
}

static double bg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ggml's reference quantizers' relative RMSE on these distributions, and their encode speed
 * per core (M weights/s, the low end of the range measured), as given with the targets. */
typedef struct bg_type {
    const char *name;
    double ggml_rmse[BG_DISTS];
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
    printf("%-5s %-11s %9s %9s %7s %9s %9s %8s\n", "type", "dist", "rel_rmse", "ggml", "ratio",
           "Mw/s", "ggml Mw/s", "x ggml");
    const int64_t shape[2] = {(int64_t)rows, (int64_t)cols};
    int missed = 0;
    for (int d = 0; d < BG_DISTS; d++) {
        bg_generate(d, x, n);
        double mean = 0.0, var = 0.0;
        for (size_t i = 0; i < n; i++) {
            mean += (double)x[i];
        }
        mean /= (double)n;
        for (size_t i = 0; i < n; i++) {
            var += ((double)x[i] - mean) * ((double)x[i] - mean);
        }
        const double sd = sqrt(var / (double)n);
        /* The memory floor: read every input float, write every output byte. */
        double floor_s = (double)INFINITY;
        for (int r = 0; r < reps; r++) {
            double t0 = bg_now();
            double acc = 0.0;
            for (size_t i = 0; i < n; i++) {
                acc += (double)x[i];
            }
            memset(out, acc > 0.0 ? 1 : 0, n * 34 / 32);
            floor_s = fmin(floor_s, bg_now() - t0);
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
                double t0 = bg_now();
                if (aq_gguf_encode(ctx, t, &src, NULL, out, n * 4, &err) != AQ_OK) {
                    fprintf(stderr, "bench_gguf: %s\n", err.message);
                    return 2;
                }
                best = fmin(best, bg_now() - t0);
            }
            if (aq_gguf_decode(ctx, t, out, n / block * bytes, n, y, &err) != AQ_OK) {
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
                printf("%-5s %-11s %9.5f %9.5f %7.3f %9.1f", bt->name, bg_dist_names[d], rr, ref,
                       rr / ref, speed);
                missed += rr > ref;
            } else {
                printf("%-5s %-11s %9.5f %9s %7s %9.1f", bt->name, bg_dist_names[d], rr, "-", "-",
                       speed);
            }
            if (bt->ggml_speed > 0) {
                printf(" %9.0f %8.2f", bt->ggml_speed, speed / bt->ggml_speed);
            } else if (strcmp(bt->name, "Q8_0") == 0 || strcmp(bt->name, "Q4_0") == 0) {
                printf("  floor %.0f Mw/s: %.2f of it", (double)n / floor_s / 1e6, floor_s / best);
            }
            printf("\n");
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
