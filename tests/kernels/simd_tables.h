/*
 * The SIMD kernel tables this CPU runs, for the tests that compare each with the reference
 * (test_kernels, test_dequant, tests/quality/test_kquant_simd). A table the build has but
 * the CPU cannot run is named on stdout as skipped.
 */
#ifndef AQ_TEST_SIMD_TABLES_H
#define AQ_TEST_SIMD_TABLES_H

#include "kernels.h"

#include <stdio.h>

/* Writes the tables (at most 8) to out and returns how many; with need_kquant, only those
 * with their own kquant kernel. */
static inline size_t aq_test_simd_tables(const aq__kernel_table **out, bool need_kquant)
{
    const aq__kernel_table *all[8];
    bool ok[8];
    size_t n = aq__kernels_list(all, ok, 8), m = 0;
    for (size_t i = 0; i < n; i++) {
        if (all[i] == &aq__kernels_ref ||
            (need_kquant && all[i]->quantize_kquant[AQ_DTYPE_F32] == NULL)) {
            continue;
        }
        if (!ok[i]) {
            printf("skipped: kernel table '%s' (this CPU lacks its instructions)\n", all[i]->name);
            continue;
        }
        out[m++] = all[i];
    }
    return m;
}

#endif /* AQ_TEST_SIMD_TABLES_H */
