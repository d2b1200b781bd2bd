/*
 * Whether an address range is mapped, asked of the kernel (mincore) instead of touched: the
 * Arrow C Data Interface carries no buffer sizes, so an offset a producer got wrong points
 * anywhere, and reading there would kill the process hosting the library.
 */
#include "aq_common.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

bool aq__mem_mapped(const void *p, size_t n)
{
    if (n == 0) {
        return true;
    }
    uintptr_t a = (uintptr_t)p;
    if (p == NULL || a + n < a) {
        return false;
    }
    long ps = sysconf(_SC_PAGESIZE);
    uintptr_t page = ps > 0 ? (uintptr_t)ps : 4096;
    uintptr_t lo = a / page * page;
    uintptr_t hi = a + n;
    enum { PROBE_PAGES = 512 };
    unsigned char vec[PROBE_PAGES];
    while (lo < hi) {
        uintptr_t len = hi - lo < PROBE_PAGES * page ? hi - lo : PROBE_PAGES * page;
        if (mincore((void *)lo, (size_t)len, vec) != 0) {
            if (errno == EAGAIN) {
                continue;
            }
            /* ENOMEM: part of the range is not mapped. Anything else (no mincore here): the
             * question cannot be asked, and the range is taken as the producer states it. */
            return errno != ENOMEM;
        }
        lo += len;
    }
    return true;
}
