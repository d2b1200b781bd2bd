/* The IPC writer's drop-behind (aq__ipc_writer_drop_behind, used by the model pipeline): the
 * file's bytes are those written without it, and its pages leave the page cache as it goes. */
#include "aq_common.h"
#include "aq_test.h"
#include "arrow_owned.h"
#include "ipc_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

/* Batches of one uint8 column larger than the writer's 8 MiB step (W_DROP_CHUNK), of an odd
 * length, so steps fall inside a buffer's write and off page boundaries. */
#define TD_ROWS ((int64_t)(9 << 20) + 5)
#define TD_BATCHES 3
#define TMPFS_MAGIC_ 0x01021994

static char td_dir[256];

static const char *td_path(const char *name)
{
    static char path[512];
    if (td_dir[0] == '\0') {
        /* In the working directory (the build folder), not /tmp: a tmpfs keeps its pages. */
        snprintf(td_dir, sizeof td_dir, "aq_test_drop_XXXXXX");
        if (mkdtemp(td_dir) == NULL) {
            abort();
        }
    }
    snprintf(path, sizeof path, "%s/%s", td_dir, name);
    return path;
}

static void td_cleanup(const char *a, const char *b)
{
    unlink(a);
    unlink(b);
    rmdir(td_dir);
    td_dir[0] = '\0';
}

static aq_status td_write(const char *path, bool drop, aq_error *err)
{
    struct ArrowSchema s;
    struct ArrowArray a;
    memset(&s, 0, sizeof s);
    memset(&a, 0, sizeof a);
    aq_ipc_writer *w = NULL;
    aq_status st;
    if ((st = aq__schema_alloc(&s, "+s", NULL, 0, 1, err)) != AQ_OK ||
        (st = aq__schema_alloc(s.children[0], "C", "b", 0, 0, err)) != AQ_OK ||
        (st = aq__array_alloc(&a, TD_ROWS, 1, 1, err)) != AQ_OK ||
        (st = aq__array_alloc(a.children[0], TD_ROWS, 2, 0, err)) != AQ_OK) {
        goto done;
    }
    uint8_t *v = aq__array_buffer_alloc(a.children[0], 1, (size_t)TD_ROWS);
    if (v == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "out of memory");
        goto done;
    }
    uint64_t seed = 7;
    for (int64_t i = 0; i < TD_ROWS; i++) {
        v[i] = (uint8_t)aq_test_rand_u64(&seed);
    }
    aq_ipc_write_options o = {.size = sizeof(aq_ipc_write_options),
                              .format = AQ_IPC_FORMAT_FILE,
                              .compression = AQ_IPC_COMPRESSION_NONE,
                              .compression_level = 0};
    if ((st = aq_ipc_writer_open(path, &s, &o, &w, err)) != AQ_OK) {
        goto done;
    }
    aq__ipc_writer_drop_behind(w, drop);
    for (int i = 0; i < TD_BATCHES && st == AQ_OK; i++) {
        v[0] = (uint8_t)i;
        st = aq_ipc_writer_write(w, &a, err);
    }
    if (st == AQ_OK) {
        st = aq_ipc_writer_close(w, err);
    }
done:
    aq_ipc_writer_free(w);
    aq__schema_release_if(&s);
    aq__array_release_if(&a);
    return st;
}

static uint8_t *td_load(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n);
    if (p != NULL && fread(p, 1, *n, f) != *n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

/* Pages of [0, n) of the file in the page cache (mincore of a fresh mapping), or -1. */
static long td_resident(const char *path, size_t n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return -1;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, n, PROT_READ, MAP_SHARED, fileno(f), 0);
    fclose(f);
    if (m == MAP_FAILED) {
        return -1;
    }
    size_t pages = (n + page - 1) / page;
    unsigned char *vec = malloc(pages);
    long count = -1;
    if (vec != NULL && mincore(m, n, vec) == 0) {
        count = 0;
        for (size_t i = 0; i < pages; i++) {
            count += vec[i] & 1;
        }
    }
    free(vec);
    munmap(m, n);
    return count;
}

TEST(drop_behind_writes_the_same_bytes)
{
    aq_error err;
    char on[512], off[512];
    snprintf(on, sizeof on, "%s", td_path("on.arrow"));
    snprintf(off, sizeof off, "%s", td_path("off.arrow"));
    CHECK_OK(td_write(on, true, &err));
    CHECK_OK(td_write(off, false, &err));
    size_t na = 0, nb = 0;
    uint8_t *a = td_load(on, &na), *b = td_load(off, &nb);
    bool same = a != NULL && b != NULL && na == nb && memcmp(a, b, na) == 0;
    free(a);
    free(b);
    CHECK_MSG(same, "the file differs with drop-behind (%zu and %zu bytes)", na, nb);
    CHECK(na > (size_t)TD_BATCHES * (size_t)TD_ROWS);
    /* And it reads back: every batch, its first value the batch's number. */
    aq_ipc_reader *r = NULL;
    CHECK_OK(aq_ipc_reader_open(on, &r, &err));
    int batches = 0;
    bool ok = true;
    for (;;) {
        struct ArrowArray x;
        aq_status st = aq_ipc_reader_next(r, &x, &err);
        if (st != AQ_OK || x.release == NULL) {
            ok = ok && st == AQ_OK;
            break;
        }
        const uint8_t *v = x.children[0]->buffers[1];
        ok = ok && x.length == TD_ROWS && v[0] == (uint8_t)batches;
        batches++;
        x.release(&x);
    }
    aq_ipc_reader_free(r);
    td_cleanup(on, off);
    CHECK_MSG(ok && batches == TD_BATCHES, "read back %d batches (%s)", batches, err.message);
}

TEST(drop_behind_leaves_the_pages_out_of_the_cache)
{
    aq_error err;
    char on[512], off[512];
    snprintf(on, sizeof on, "%s", td_path("on.arrow"));
    snprintf(off, sizeof off, "%s", td_path("off.arrow"));
    struct statfs fs;
    if (statfs(td_dir, &fs) == 0 && (unsigned long)fs.f_type == TMPFS_MAGIC_) {
        /* A tmpfs has no writeback: its pages are the file. */
        fprintf(stderr, "note: %s is a tmpfs; drop-behind has nothing to drop there\n", td_dir);
        td_cleanup(on, off);
        return;
    }
    CHECK_OK(td_write(on, true, &err));
    CHECK_OK(td_write(off, false, &err));
    /* The first batch: dropped with drop-behind (two steps came after it), still in the cache
     * without (the control: just written, nothing evicts 27 MiB here). */
    size_t first = (size_t)TD_ROWS;
    long with = td_resident(on, first), without = td_resident(off, first);
    td_cleanup(on, off);
    size_t pages = first / (size_t)sysconf(_SC_PAGESIZE);
    CHECK_MSG(without >= 0 && (size_t)without > pages / 2,
              "without drop-behind %ld of %zu pages are cached", without, pages);
    CHECK_MSG(with >= 0 && (size_t)with < pages / 16, "with drop-behind %ld of %zu pages cached",
              with, pages);
}

AQ_TEST_MAIN(AQ_CASE(drop_behind_writes_the_same_bytes),
             AQ_CASE(drop_behind_leaves_the_pages_out_of_the_cache))
