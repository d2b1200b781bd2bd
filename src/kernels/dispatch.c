/* Chooses the kernel table for this CPU, or the one forced by AQ_KERNELS. */
#include "kernels.h"

#include <stdlib.h>

#if defined(AQ_HAVE_X86_KERNELS)
#    include <cpuid.h>
#endif

/* Tables compiled into this build, best first, each with a check of the CPU features it
 * needs. */
typedef struct aq__kernel_entry {
    const aq__kernel_table *table;
    bool (*supported)(void);
} aq__kernel_entry;

static bool dispatch_always(void)
{
    return true;
}

#if defined(AQ_HAVE_X86_KERNELS)
/* The OS must save the vector state on context switches, or the registers are unusable even
 * where CPUID lists the instructions: XCR0 says which state components it saves. */
static uint64_t dispatch_xgetbv(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/* Bits of CPUID leaf 1 ECX and leaf 7 EBX. */
#    define DISPATCH_OSXSAVE (1u << 27)
#    define DISPATCH_AVX (1u << 28)
#    define DISPATCH_F16C (1u << 29)
#    define DISPATCH_AVX2 (1u << 5)
#    define DISPATCH_AVX512F (1u << 16)
#    define DISPATCH_AVX512DQ (1u << 17)
#    define DISPATCH_AVX512BW (1u << 30)
#    define DISPATCH_AVX512VL (1u << 31)
/* XCR0: SSE and AVX state; then opmask, upper halves of ZMM0-15, ZMM16-31. */
#    define DISPATCH_XCR0_AVX 0x6u
#    define DISPATCH_XCR0_AVX512 0xe6u

typedef struct dispatch_cpu {
    bool avx2;
    bool avx512;
} dispatch_cpu;

static dispatch_cpu dispatch_probe(void)
{
    dispatch_cpu cpu = {false, false};
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) {
        return cpu;
    }
    const unsigned need1 = DISPATCH_OSXSAVE | DISPATCH_AVX | DISPATCH_F16C;
    if ((c & need1) != need1) {
        return cpu;
    }
    uint64_t xcr0 = dispatch_xgetbv();
    if ((xcr0 & DISPATCH_XCR0_AVX) != DISPATCH_XCR0_AVX) {
        return cpu;
    }
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) {
        return cpu;
    }
    cpu.avx2 = (b & DISPATCH_AVX2) != 0;
    const unsigned need512 =
        DISPATCH_AVX512F | DISPATCH_AVX512DQ | DISPATCH_AVX512BW | DISPATCH_AVX512VL;
    cpu.avx512 = cpu.avx2 && (b & need512) == need512 &&
                 (xcr0 & DISPATCH_XCR0_AVX512) == DISPATCH_XCR0_AVX512;
    return cpu;
}

static bool dispatch_avx2(void)
{
    return dispatch_probe().avx2;
}

static bool dispatch_avx512(void)
{
    return dispatch_probe().avx512;
}
#endif

static const aq__kernel_entry dispatch_entries[] = {
#if defined(AQ_HAVE_X86_KERNELS)
    {&aq__kernels_avx512, dispatch_avx512},
    {&aq__kernels_avx2, dispatch_avx2},
#endif
#if defined(AQ_HAVE_NEON_KERNELS)
    {&aq__kernels_neon, dispatch_always},
#endif
    {&aq__kernels_ref, dispatch_always},
};

#if defined(AQ_HAVE_X86_KERNELS)
#    define DISPATCH_NAMES " avx512 avx2 ref"
#elif defined(AQ_HAVE_NEON_KERNELS)
#    define DISPATCH_NAMES " neon ref"
#else
#    define DISPATCH_NAMES " ref"
#endif

#define DISPATCH_COUNT (sizeof dispatch_entries / sizeof dispatch_entries[0])

size_t aq__kernels_list(const aq__kernel_table **tables, bool *supported, size_t cap)
{
    size_t n = DISPATCH_COUNT < cap ? DISPATCH_COUNT : cap;
    for (size_t i = 0; i < n; i++) {
        tables[i] = dispatch_entries[i].table;
        supported[i] = dispatch_entries[i].supported();
    }
    return n;
}

const aq__kernel_table *aq__kernels_select(aq_error *err)
{
    const char *forced = getenv("AQ_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        for (size_t i = 0; i < DISPATCH_COUNT; i++) {
            if (strcmp(dispatch_entries[i].table->name, forced) == 0) {
                if (!dispatch_entries[i].supported()) {
                    aq__error_set(err, AQ_UNSUPPORTED,
                                  "AQ_KERNELS=%s: this CPU lacks the instructions it needs",
                                  forced);
                    return NULL;
                }
                return dispatch_entries[i].table;
            }
        }
        aq__error_set(err, AQ_UNSUPPORTED,
                      "AQ_KERNELS=%s: no such kernel set in this build (known here:%s)", forced,
                      DISPATCH_NAMES);
        return NULL;
    }
    for (size_t i = 0; i < DISPATCH_COUNT; i++) {
        if (dispatch_entries[i].supported()) {
            return dispatch_entries[i].table;
        }
    }
    return &aq__kernels_ref;
}
