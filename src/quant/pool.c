/*
 * The context's thread pool: a fixed set of workers that run the tasks 0 .. n-1 of one job
 * together with the calling thread. Tasks are handed out one at a time from an atomic counter,
 * so a slow task (a core shared with another process) does not hold the others up. What a
 * task computes never depends on which thread runs it: callers cut their work into tasks
 * whose boundaries are fixed by the data alone.
 */
#include "quant_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

struct aq__pool {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* workers wait here for a new job (or shutdown) */
    pthread_cond_t idle; /* the caller waits here for the workers to finish a job */
    pthread_t *workers;
    unsigned nworkers; /* threads started (the caller is one more) */
    pid_t owner;       /* the process whose threads these are: a fork()ed child has none */
    /* The current job, published under lock. */
    uint64_t generation;
    bool shutdown;
    unsigned busy; /* workers still inside the current job */
    aq__pool_task_fn fn;
    void *arg;
    size_t ntasks;
    atomic_size_t next;
};

/* Runs tasks until none is left. */
static void pool_drain(aq__pool *p, aq__pool_task_fn fn, void *arg, size_t ntasks)
{
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= ntasks) {
            return;
        }
        fn(arg, i);
    }
}

static void *pool_worker(void *opaque)
{
    aq__pool *p = opaque;
    uint64_t seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->shutdown && p->generation == seen) {
            pthread_cond_wait(&p->wake, &p->lock);
        }
        if (p->shutdown) {
            break;
        }
        seen = p->generation;
        aq__pool_task_fn fn = p->fn;
        void *arg = p->arg;
        size_t ntasks = p->ntasks;
        pthread_mutex_unlock(&p->lock);
        pool_drain(p, fn, arg, ntasks);
        pthread_mutex_lock(&p->lock);
        if (--p->busy == 0) {
            pthread_cond_signal(&p->idle);
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

unsigned aq__threads_resolve(unsigned threads)
{
    if (threads != 0) {
        return threads;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) {
        return 1;
    }
    return n > AQ_MAX_THREADS ? AQ_MAX_THREADS : (unsigned)n;
}

aq_status aq__pool_create(unsigned threads, aq__pool **out, aq_error *err)
{
    aq__pool *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "thread pool: out of memory");
    }
    unsigned want = threads > 1 ? threads - 1 : 0;
    if (want > 0) {
        p->workers = calloc(want, sizeof *p->workers);
        if (p->workers == NULL) {
            free(p);
            return aq__error_set(err, AQ_NO_MEMORY, "thread pool: out of memory");
        }
    }
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        goto fail_mutex;
    }
    if (pthread_cond_init(&p->wake, NULL) != 0) {
        goto fail_wake;
    }
    if (pthread_cond_init(&p->idle, NULL) != 0) {
        goto fail_idle;
    }
    atomic_init(&p->next, 0);
    p->owner = getpid();
    /* A thread that cannot be started leaves a smaller pool: the results are the same with
     * any number of threads, only slower, and running out of threads is no reason to fail. */
    for (unsigned i = 0; i < want; i++) {
        if (pthread_create(&p->workers[p->nworkers], NULL, pool_worker, p) != 0) {
            break;
        }
        p->nworkers++;
    }
    *out = p;
    return AQ_OK;

fail_idle:
    pthread_cond_destroy(&p->wake);
fail_wake:
    pthread_mutex_destroy(&p->lock);
fail_mutex:
    free(p->workers);
    free(p);
    return aq__error_set(err, AQ_NO_MEMORY, "thread pool: cannot create its locks");
}

void aq__pool_free(aq__pool *p)
{
    if (p == NULL) {
        return;
    }
    if (p->owner != getpid()) {
        /* In a fork()ed child the workers do not exist and the lock may have been copied in
         * the locked state: only the memory is ours to release. */
        free(p->workers);
        free(p);
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nworkers; i++) {
        pthread_join(p->workers[i], NULL);
    }
    pthread_cond_destroy(&p->idle);
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
    free(p->workers);
    free(p);
}

unsigned aq__pool_threads(const aq__pool *p)
{
    return p != NULL ? p->nworkers + 1 : 1;
}

void aq__pool_run(aq__pool *p, size_t ntasks, aq__pool_task_fn fn, void *arg)
{
    /* In a fork()ed child (a Python multiprocessing worker, say) the pool's threads are gone:
     * run everything on the caller rather than wait for them. */
    if (p == NULL || p->nworkers == 0 || ntasks <= 1 || p->owner != getpid()) {
        for (size_t i = 0; i < ntasks; i++) {
            fn(arg, i);
        }
        return;
    }
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    p->ntasks = ntasks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->busy = p->nworkers;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);

    pool_drain(p, fn, arg, ntasks);

    pthread_mutex_lock(&p->lock);
    while (p->busy != 0) {
        pthread_cond_wait(&p->idle, &p->lock);
    }
    pthread_mutex_unlock(&p->lock);
}
