/*
 * The synthetic weight distributions of bench/quality.c and bench/gguf.c, one generator so
 * that both benchmarks see the same floats (documented so that the figures can be reproduced
 * anywhere):
 *  - splitmix64 with seed 1 (Gaussian), 2 (Laplace), 3 (outliers), 4 (Student-t);
 *    uniform u = (next() >> 11) * 2^-53 in [0, 1).
 *  - normal: Box-Muller from two uniforms, z = sqrt(-2 ln(1 - u1)) * cos(2 pi u2).
 *  - Gaussian: sigma * z, sigma = 0.02.
 *  - Laplace with standard deviation sigma: b = sigma / sqrt(2), v = u - 0.5,
 *    x = -b * sign(v) * ln(1 - 2 |v|).
 *  - outliers: a Gaussian draw, then one more uniform per element: below 0.0005 the element
 *    becomes +20 sigma, below 0.001 it becomes -20 sigma (0.1% outliers).
 *  - Student-t with 3 degrees of freedom scaled to standard deviation sigma:
 *    t = z0 / sqrt((z1^2 + z2^2 + z3^2) / 3), x = t * sigma / sqrt(3).
 */
#ifndef AQ_BENCH_WEIGHTS_GEN_H
#define AQ_BENCH_WEIGHTS_GEN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t wg_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline double wg_uniform(uint64_t *s)
{
    return (double)(wg_next(s) >> 11) * 0x1p-53;
}

static inline double wg_normal(uint64_t *s)
{
    double u1 = wg_uniform(s), u2 = wg_uniform(s);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * 3.14159265358979323846 * u2);
}

enum { WG_GAUSS, WG_LAPLACE, WG_OUTLIER, WG_STUDENT, WG_DISTS };
static const char *const wg_dist_names[WG_DISTS] = {"gaussian", "laplace", "outliers",
                                                    "student-t3"};

/* n draws of distribution dist (WG_GAUSS ...), standard deviation 0.02. */
static inline void wg_generate(int dist, float *w, size_t n)
{
    const double sigma = 0.02;
    uint64_t s = (uint64_t)dist + 1;
    for (size_t i = 0; i < n; i++) {
        double x = 0.0;
        switch (dist) {
        case WG_GAUSS:
            x = sigma * wg_normal(&s);
            break;
        case WG_LAPLACE: {
            double b = sigma / sqrt(2.0), v = wg_uniform(&s) - 0.5;
            x = -b * (v < 0 ? -1.0 : 1.0) * log(1.0 - 2.0 * fabs(v));
            break;
        }
        case WG_OUTLIER: {
            x = sigma * wg_normal(&s);
            double u = wg_uniform(&s);
            if (u < 0.0005) {
                x = 20.0 * sigma;
            } else if (u < 0.001) {
                x = -20.0 * sigma;
            }
            break;
        }
        case WG_STUDENT: {
            double z0 = wg_normal(&s), z1 = wg_normal(&s), z2 = wg_normal(&s), z3 = wg_normal(&s);
            x = z0 / sqrt((z1 * z1 + z2 * z2 + z3 * z3) / 3.0) * sigma / sqrt(3.0);
            break;
        }
        default:
            break;
        }
        w[i] = (float)x;
    }
}

/* The process's CPU time in seconds (per-core speeds, little affected by other load). */
static inline double wg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif /* AQ_BENCH_WEIGHTS_GEN_H */
