/*
 * The context's thread pool: output bytes identical for 1, 2, 3 and 8 threads (and 0, one
 * per CPU), quantize and dequantize; the first non-finite index is the smallest whatever the
 * thread count; the pool itself runs every task exactly once on several threads.
 */
#include "aq_test.h"
#include "quant_internal.h"

#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct tt_out {
    aq_layout l;
    uint8_t *packed;
    float *scales, *zps;
    float *deq32;
    uint16_t *deq16;
} tt_out;

static void tt_free(tt_out *o)
{
    free(o->packed);
    free(o->scales);
    free(o->zps);
    free(o->deq32);
    free(o->deq16);
    memset(o, 0, sizeof *o);
}

/* Quantizes and dequantizes (f32 and bf16) with `threads`; AQ_OK or the failing status. */
static aq_status tt_run(const aq_tensor *t, unsigned bits, size_t g, unsigned threads, tt_out *o,
                        aq_error *err)
{
    memset(o, 0, sizeof *o);
    aq_ctx *ctx;
    aq_status st = aq_ctx_create(&ctx, err);
    if (st != AQ_OK) {
        return st;
    }
    if ((st = aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, (int64_t)g, err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, err)) != AQ_OK ||
        (st = aq_quantize_bound(ctx, t, &o->l, err)) != AQ_OK) {
        goto done;
    }
    o->packed = malloc(o->l.packed_bytes);
    o->scales = malloc(o->l.groups * sizeof(float));
    o->zps = malloc(o->l.groups * sizeof(float));
    o->deq32 = malloc(o->l.elements * sizeof(float));
    o->deq16 = malloc(o->l.elements * sizeof(uint16_t));
    if (!o->packed || !o->scales || !o->zps || !o->deq32 || !o->deq16) {
        st = AQ_NO_MEMORY;
        goto done;
    }
    aq_qbuffers b = {o->packed, o->l.packed_bytes, o->scales, o->zps, o->l.groups};
    if ((st = aq_quantize(ctx, t, &b, err)) != AQ_OK) {
        goto done;
    }
    aq_qtensor q = {t->name,   AQ_SCHEME_AFFINE,  bits,      g,      t->shape,   t->ndim,
                    o->packed, o->l.packed_bytes, o->scales, o->zps, o->l.groups};
    if ((st = aq_dequantize(ctx, &q, AQ_DTYPE_F32, o->deq32, o->l.elements, err)) != AQ_OK) {
        goto done;
    }
    st = aq_dequantize(ctx, &q, AQ_DTYPE_BF16, o->deq16, o->l.elements, err);
done:
    aq_ctx_free(ctx);
    return st;
}

static bool tt_same(const tt_out *a, const tt_out *b)
{
    return memcmp(a->packed, b->packed, a->l.packed_bytes) == 0 &&
           memcmp(a->scales, b->scales, a->l.groups * sizeof(float)) == 0 &&
           memcmp(a->zps, b->zps, a->l.groups * sizeof(float)) == 0 &&
           memcmp(a->deq32, b->deq32, a->l.elements * sizeof(float)) == 0 &&
           memcmp(a->deq16, b->deq16, a->l.elements * sizeof(uint16_t)) == 0;
}

TEST(same_bytes_for_any_thread_count)
{
    /* 301 rows of 1111: spans of about 65,536 elements, so several per tensor, with groups
     * that do not divide the rows. */
    int64_t shape[2] = {301, 1111};
    const size_t n = 301 * 1111;
    float *x = malloc(n * sizeof(float));
    uint16_t *h = malloc(n * sizeof(uint16_t));
    CHECK(x != NULL && h != NULL);
    uint64_t seed = 7;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed) * (i % 1111 == 5 ? 40.0f : 1.0f);
        h[i] = aq__f32_to_f16(x[i]);
    }
    static const unsigned threads[] = {2, 3, 8, 0};
    static const struct {
        unsigned bits;
        size_t g;
        aq_dtype dtype;
    } cases[] = {{4, 64, AQ_DTYPE_F32},
                 {2, 100, AQ_DTYPE_F16},
                 {8, AQ_GROUP_SIZE_ROW, AQ_DTYPE_F32},
                 {4, 9, AQ_DTYPE_F32}};
    aq_error err;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        aq_tensor t = {"w", cases[c].dtype, cases[c].dtype == AQ_DTYPE_F32 ? (void *)x : (void *)h,
                       shape, 2};
        tt_out one, many;
        CHECK_OK(tt_run(&t, cases[c].bits, cases[c].g, 1, &one, &err));
        for (size_t k = 0; k < sizeof threads / sizeof threads[0]; k++) {
            aq_status st = tt_run(&t, cases[c].bits, cases[c].g, threads[k], &many, &err);
            bool same = st == AQ_OK && tt_same(&one, &many);
            tt_free(&many);
            CHECK_MSG(same, "bits %u group %zu: %u threads differ from 1 thread (%s)",
                      cases[c].bits, cases[c].g, threads[k], err.message);
        }
        tt_free(&one);
    }
    free(x);
    free(h);
}

TEST(first_nonfinite_index_whatever_the_threads)
{
    int64_t shape[2] = {400, 1000};
    const size_t n = 400000;
    float *x = malloc(n * sizeof(float));
    CHECK(x != NULL);
    uint64_t seed = 3;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    /* Bad values in several spans, the lowest not in the first span. */
    x[390001] = NAN;
    x[250000] = INFINITY;
    x[150003] = -INFINITY;
    x[150010] = NAN;
    static const unsigned threads[] = {1, 2, 3, 8};
    aq_error err;
    aq_tensor t = {"layer.bad", AQ_DTYPE_F32, x, shape, 2};
    for (size_t k = 0; k < 4; k++) {
        tt_out o;
        CHECK_FAILS(tt_run(&t, 4, 128, threads[k], &o, &err), AQ_NON_FINITE,
                    "Layer 'layer.bad' contains NaN or Inf at index 150003");
        tt_free(&o);
    }
    x[150003] = 0.0f;
    x[150010] = 0.0f;
    x[250000] = 0.0f;
    for (size_t k = 0; k < 4; k++) {
        tt_out o;
        CHECK_FAILS(tt_run(&t, 4, 128, threads[k], &o, &err), AQ_NON_FINITE, "at index 390001");
        tt_free(&o);
    }
    free(x);
}

/* A context whose pool has started, used again in a fork()ed child: the child has none of
 * the pool's threads, so it must run alone (and not wait for them forever), and give the same
 * bytes. */
TEST(pool_in_forked_child)
{
    int64_t shape[2] = {64, 4096};
    const size_t n = 64 * 4096;
    float *x = malloc(n * sizeof(float));
    CHECK(x != NULL);
    uint64_t seed = 11;
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)aq_test_rand_normal(&seed);
    }
    aq_error err;
    aq_ctx *ctx;
    CHECK_OK(aq_ctx_create(&ctx, &err));
    CHECK_OK(aq_ctx_set_param(ctx, AQ_PARAM_THREADS, 3, &err));
    aq_tensor t = {"w", AQ_DTYPE_F32, x, shape, 2};
    aq_layout l;
    CHECK_OK(aq_quantize_bound(ctx, &t, &l, &err));
    uint8_t *p1 = malloc(l.packed_bytes), *p2 = malloc(l.packed_bytes);
    float *s = malloc(l.groups * sizeof(float)), *z = malloc(l.groups * sizeof(float));
    CHECK(p1 != NULL && p2 != NULL && s != NULL && z != NULL);
    aq_qbuffers b1 = {p1, l.packed_bytes, s, z, l.groups};
    CHECK_OK(aq_quantize(ctx, &t, &b1, &err)); /* starts the pool */
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        alarm(60); /* a deadlock fails the test instead of hanging it */
        aq_qbuffers b2 = {p2, l.packed_bytes, s, z, l.groups};
        int code =
            aq_quantize(ctx, &t, &b2, &err) == AQ_OK && memcmp(p1, p2, l.packed_bytes) == 0 ? 0 : 1;
        aq_ctx_free(ctx);
        _exit(code);
    }
    int status = 0;
    CHECK(waitpid(child, &status, 0) == child);
    CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the forked child failed (status 0x%x)", (unsigned)status);
    aq_qbuffers b3 = {p2, l.packed_bytes, s, z, l.groups};
    CHECK_OK(aq_quantize(ctx, &t, &b3, &err)); /* the parent's pool still works */
    CHECK(memcmp(p1, p2, l.packed_bytes) == 0);
    aq_ctx_free(ctx);
    free(p1);
    free(p2);
    free(s);
    free(z);
    free(x);
}

typedef struct tt_pool_arg {
    unsigned *hits;
    pthread_t *who;
} tt_pool_arg;

static void tt_pool_task(void *opaque, size_t i)
{
    tt_pool_arg *a = opaque;
    __atomic_fetch_add(&a->hits[i], 1u, __ATOMIC_RELAXED);
    a->who[i] = pthread_self();
    struct timespec ts = {0, 200000}; /* 0.2 ms: long enough for every worker to join in */
    nanosleep(&ts, NULL);
}

TEST(pool_runs_every_task_once_on_several_threads)
{
    aq_error err;
    aq__pool *pool = NULL;
    CHECK_OK(aq__pool_create(8, &pool, &err));
    CHECK(aq__pool_threads(pool) == 8);
    enum { TASKS = 400 };
    unsigned hits[TASKS];
    pthread_t who[TASKS];
    tt_pool_arg a = {hits, who};
    for (int round = 0; round < 3; round++) {
        memset(hits, 0, sizeof hits);
        aq__pool_run(pool, TASKS, tt_pool_task, &a);
        size_t distinct = 0;
        for (size_t i = 0; i < TASKS; i++) {
            CHECK_MSG(hits[i] == 1, "round %d: task %zu ran %u times", round, i, hits[i]);
            bool seen = false;
            for (size_t j = 0; j < i && !seen; j++) {
                seen = pthread_equal(who[i], who[j]);
            }
            distinct += !seen;
        }
        CHECK_MSG(distinct > 1, "round %d: all tasks ran on one thread", round);
    }
    aq__pool_run(pool, 0, tt_pool_task, &a); /* no tasks: returns at once */
    aq__pool_free(pool);
    aq__pool_free(NULL);
    CHECK(aq__threads_resolve(0) >= 1 && aq__threads_resolve(5) == 5);
}

AQ_TEST_MAIN(AQ_CASE(same_bytes_for_any_thread_count),
             AQ_CASE(first_nonfinite_index_whatever_the_threads), AQ_CASE(pool_in_forked_child),
             AQ_CASE(pool_runs_every_task_once_on_several_threads))
