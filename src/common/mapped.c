/*
 * Input files truncated while they are memory-mapped.
 *
 * The readers map their input files. When another process truncates one, the next read of a
 * page past the new end raises SIGBUS, which kills the host (the command, or a Python process
 * embedding the library) by default. Unwinding out of a fault in any thread of the thread pool
 * is not an option (sigsetjmp buffers per thread, locks held by the kernel that faulted), so
 * the handler does what lets the faulting read finish: it maps anonymous zero pages over the
 * rest of that mapping, marks it, and returns. The read gives zeros; every writer compares the
 * fault count before it renames its output into place, and the readers before they hand out a
 * row, so a run that read such zeros fails with an error naming the file instead of writing or
 * returning them.
 *
 * The handler is installed once, by the first mapping, and never removed (removing it races
 * with other threads installing theirs). A SIGBUS that is not a fault in one of our mappings
 * goes to the handler found at installation, or to the default action.
 *
 * mmap is not on POSIX's list of async-signal-safe functions, but on Linux it is one system
 * call with no lock in user space, which is what makes it usable here.
 */
#include "aq_common.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { MAPPED_SLOTS = 128, MAPPED_LABEL = 512 };

/* A slot's state: 0 free, 1 being written or removed (ignored by the handler), 2 live. */
typedef struct mapped_slot {
    int state;
    uintptr_t start, end;
    int faulted;
    char label[MAPPED_LABEL];
} mapped_slot;

static mapped_slot mapped_slots[MAPPED_SLOTS];
static uint64_t mapped_faults;
/* The file of the latest fault, for messages; written under mapped_label_busy. */
static char mapped_last[MAPPED_LABEL];
static int mapped_label_busy;
static int mapped_installed; /* 0 no, 1 being installed, 2 installed */
static struct sigaction mapped_prev;
static uintptr_t mapped_page;

static void mapped_copy(char *dst, const char *src)
{
    size_t i = 0;
    for (; i + 1 < MAPPED_LABEL && src[i] != '\0'; i++) {
        dst[i] = src[i];
    }
    dst[i] = '\0';
}

/* The previous handler, or the default action. A fault returned from re-executes the
 * faulting instruction, which then takes the default action (the process dies as before). */
static void mapped_chain(int sig, siginfo_t *si, void *uc)
{
    /* sa_handler and sa_sigaction share their storage: SIG_DFL and SIG_IGN are values of it
     * whatever the flags say. */
    if (mapped_prev.sa_handler != SIG_DFL && mapped_prev.sa_handler != SIG_IGN) {
        if ((mapped_prev.sa_flags & SA_SIGINFO) != 0) {
            mapped_prev.sa_sigaction(sig, si, uc);
        } else {
            mapped_prev.sa_handler(sig);
        }
        return;
    }
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (si == NULL || si->si_code <= 0) {
        raise(sig); /* sent by kill or raise: nothing re-executes */
    }
}

static void mapped_on_sigbus(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    uintptr_t a = si != NULL && si->si_code > 0 ? (uintptr_t)si->si_addr : 0;
    for (size_t i = 0; a != 0 && i < MAPPED_SLOTS; i++) {
        mapped_slot *s = &mapped_slots[i];
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != 2 || a < s->start || a >= s->end) {
            continue;
        }
        uintptr_t page = a & ~(mapped_page - 1);
        void *r = mmap((void *)page, s->end - page, PROT_READ,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (r == MAP_FAILED) {
            break;
        }
        __atomic_store_n(&s->faulted, 1, __ATOMIC_SEQ_CST);
        if (!__atomic_exchange_n(&mapped_label_busy, 1, __ATOMIC_ACQUIRE)) {
            mapped_copy(mapped_last, s->label);
            __atomic_store_n(&mapped_label_busy, 0, __ATOMIC_RELEASE);
        }
        __atomic_add_fetch(&mapped_faults, 1, __ATOMIC_SEQ_CST);
        errno = saved;
        return;
    }
    errno = saved;
    mapped_chain(sig, si, uc);
}

static void mapped_install(void)
{
    int expected = 0;
    if (!__atomic_compare_exchange_n(&mapped_installed, &expected, 1, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        while (__atomic_load_n(&mapped_installed, __ATOMIC_ACQUIRE) != 2) {
            /* another thread is installing it: a few system calls */
        }
        return;
    }
    long ps = sysconf(_SC_PAGESIZE);
    mapped_page = ps > 0 ? (uintptr_t)ps : 4096;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = mapped_on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    /* The previous action is read first, so that a fault in another thread just after the
     * installation already finds it. */
    if (sigaction(SIGBUS, NULL, &mapped_prev) != 0) {
        memset(&mapped_prev, 0, sizeof mapped_prev);
        mapped_prev.sa_handler = SIG_DFL;
    }
    (void)sigaction(SIGBUS, &sa, NULL);
    __atomic_store_n(&mapped_installed, 2, __ATOMIC_RELEASE);
}

int aq__mapped_add(const void *addr, size_t size, const char *label)
{
    if (addr == NULL || size == 0) {
        return -1;
    }
    mapped_install();
    for (int i = 0; i < MAPPED_SLOTS; i++) {
        mapped_slot *s = &mapped_slots[i];
        int expected = 0;
        if (__atomic_compare_exchange_n(&s->state, &expected, 1, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            s->start = (uintptr_t)addr;
            s->end = (uintptr_t)addr + size;
            s->faulted = 0;
            mapped_copy(s->label, label != NULL ? label : "(an input file)");
            __atomic_store_n(&s->state, 2, __ATOMIC_RELEASE);
            return i;
        }
    }
    /* More than MAPPED_SLOTS files mapped at once: this one is not guarded. */
    return -1;
}

void aq__mapped_remove(int slot)
{
    if (slot >= 0 && slot < MAPPED_SLOTS) {
        __atomic_store_n(&mapped_slots[slot].state, 1, __ATOMIC_RELEASE);
        __atomic_store_n(&mapped_slots[slot].state, 0, __ATOMIC_RELEASE);
    }
}

bool aq__mapped_faulted(int slot)
{
    return slot >= 0 && slot < MAPPED_SLOTS &&
           __atomic_load_n(&mapped_slots[slot].faulted, __ATOMIC_SEQ_CST) != 0;
}

uint64_t aq_mapped_faults(void)
{
    return __atomic_load_n(&mapped_faults, __ATOMIC_SEQ_CST);
}

/* A mapping that faulted keeps its zeros while it is open: a second run over the same open
 * file must fail too, although it counts no new fault. */
static bool mapped_any_live_fault(void)
{
    for (size_t i = 0; i < MAPPED_SLOTS; i++) {
        if (__atomic_load_n(&mapped_slots[i].state, __ATOMIC_ACQUIRE) == 2 &&
            __atomic_load_n(&mapped_slots[i].faulted, __ATOMIC_SEQ_CST) != 0) {
            return true;
        }
    }
    return false;
}

aq_status aq_mapped_check(uint64_t since, aq_error *err)
{
    if (aq_mapped_faults() == since && !mapped_any_live_fault()) {
        return AQ_OK;
    }
    char label[MAPPED_LABEL] = "an input file";
    while (__atomic_exchange_n(&mapped_label_busy, 1, __ATOMIC_ACQUIRE)) {
    }
    if (mapped_last[0] != '\0') {
        mapped_copy(label, mapped_last);
    }
    __atomic_store_n(&mapped_label_busy, 0, __ATOMIC_RELEASE);
    return aq__error_set(err, AQ_IO,
                         "%s: the file changed while being read (truncated by another "
                         "process?)",
                         label);
}
