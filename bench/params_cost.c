/*
 * The per-batch parameter step of the AVX-512 affine kernels, timed alone: how long
 * simd_params takes for one batch of 16 groups, and one of its two min/max reduction trees
 * (avx512_reduce16). It includes kernels_avx512.c to reach those static functions, so it
 * builds only where that file does (bench/CMakeLists.txt) and runs only on a CPU with
 * AVX-512 F/BW/DQ/VL.
 *
 *   build/bench/bench_params [calls]      (default 20,000,000)
 *
 * Each call reads the same 16 x 16 partial minima and maxima; a compiler barrier between calls
 * keeps the compiler from hoisting the work out of the loop. Calls are independent of each
 * other, so the figures are throughput (what the fused pass pays per batch when the
 * out-of-order core overlaps the step with other work), not latency.
 */
#include "kernels_avx512.c"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double bp_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const long calls = argc > 1 ? atol(argv[1]) : 20000000L;
    if (calls <= 0) {
        fprintf(stderr, "usage: bench_params [calls > 0]\n");
        return 2;
    }
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl")) {
        fprintf(stderr, "bench_params: this CPU lacks AVX-512 F/BW/DQ/VL\n");
        return 2;
    }
    SIMD_ALIGN float pmin[16 * 16], pmax[16 * 16];
    SIMD_ALIGN float lo[16], inv[16];
    float scales[16], zps[16];
    bool bounded = false;
    for (int i = 0; i < 16 * 16; i++) {
        pmin[i] = -1.0f - (float)(i % 17) * 0.01f;
        pmax[i] = 1.0f + (float)(i % 13) * 0.01f;
    }
    float sink = 0.0f;
    double t0 = bp_now();
    for (long r = 0; r < calls; r++) {
        __asm__ volatile("" ::: "memory");
        simd_params(pmin, pmax, 16, 4, scales, zps, lo, inv, &bounded);
        sink += inv[r & 15];
    }
    double params = (bp_now() - t0) / (double)calls;
    t0 = bp_now();
    for (long r = 0; r < calls; r++) {
        __asm__ volatile("" ::: "memory");
        sink += _mm512_cvtss_f32(avx512_reduce16(pmin, true));
    }
    double tree = (bp_now() - t0) / (double)calls;
    printf("simd_params, 16 groups: %.1f ns per batch, %.2f ns per group\n", params * 1e9,
           params * 1e9 / 16.0);
    printf("avx512_reduce16 (one of its two trees): %.1f ns per batch\n", tree * 1e9);
    printf("(checksum %g, bounded %d)\n", (double)sink, (int)bounded);
    return 0;
}
