/* Output paths, temporary files and the memory probe: the checks every writer and the C Data
 * importer rely on, through the public aq_output_check and the internal helpers. */
#include "aq_test.h"
#include "io_internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

static void make_dir(void)
{
    snprintf(dir, sizeof dir, "/tmp/aq_files_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
    }
}

static void touch(const char *p)
{
    FILE *f = fopen(p, "w");
    if (f != NULL) {
        fputs("x", f);
        fclose(f);
    }
}

TEST(output_is_an_input_by_any_name)
{
    aq_error err;
    make_dir();
    CHECK(dir[0] != '\0');
    char in[128], dot[160], hard[128], sym[128], other[128];
    snprintf(in, sizeof in, "%s/in.safetensors", dir);
    snprintf(dot, sizeof dot, "%s/./in.safetensors", dir);
    snprintf(hard, sizeof hard, "%s/hard", dir);
    snprintf(sym, sizeof sym, "%s/sym", dir);
    snprintf(other, sizeof other, "%s/other", dir);
    touch(in);
    touch(other);
    CHECK(link(in, hard) == 0);
    CHECK(symlink("in.safetensors", sym) == 0);
    const char *inputs[1] = {in};
    CHECK_FAILS(aq_output_check(in, inputs, 1, &err), AQ_INVALID_ARGUMENT,
                "refusing to overwrite a source");
    CHECK_FAILS(aq_output_check(dot, inputs, 1, &err), AQ_INVALID_ARGUMENT, "is the input");
    CHECK_FAILS(aq_output_check(hard, inputs, 1, &err), AQ_INVALID_ARGUMENT, "is the input");
    CHECK_FAILS(aq_output_check(sym, inputs, 1, &err), AQ_INVALID_ARGUMENT, "is the input");
    CHECK_OK(aq_output_check(other, inputs, 1, &err));
    char fresh[128];
    snprintf(fresh, sizeof fresh, "%s/new.arrow", dir);
    CHECK_OK(aq_output_check(fresh, inputs, 1, &err));
    unlink(in);
    unlink(hard);
    unlink(sym);
    unlink(other);
    rmdir(dir);
}

TEST(destination_must_be_a_regular_file)
{
    aq_error err;
    make_dir();
    CHECK(dir[0] != '\0');
    char fifo[128], dangling[128], dev[128], missing[128];
    snprintf(fifo, sizeof fifo, "%s/fifo", dir);
    snprintf(dangling, sizeof dangling, "%s/dangling", dir);
    snprintf(dev, sizeof dev, "%s/dev", dir);
    snprintf(missing, sizeof missing, "%s/no/x.arrow", dir);
    CHECK(mkfifo(fifo, 0600) == 0);
    CHECK(symlink("nowhere", dangling) == 0);
    CHECK(symlink("/dev/null", dev) == 0);
    CHECK_FAILS(aq_output_check(fifo, NULL, 0, &err), AQ_IO, "is a FIFO");
    CHECK_FAILS(aq_output_check(dangling, NULL, 0, &err), AQ_IO, "missing file");
    CHECK_FAILS(aq_output_check(dev, NULL, 0, &err), AQ_IO, "is a character device");
    CHECK_FAILS(aq_output_check(dir, NULL, 0, &err), AQ_IO, "is a folder");
    CHECK_FAILS(aq_output_check("", NULL, 0, &err), AQ_INVALID_ARGUMENT, "empty");
    CHECK_FAILS(aq_output_check(missing, NULL, 0, &err), AQ_IO, "does not exist");
    /* An input that is a FIFO is refused without blocking. */
    int fd;
    CHECK_FAILS(aq__file_open_read(fifo, &fd, NULL, &err), AQ_IO, "is a FIFO");
    unlink(fifo);
    unlink(dangling);
    unlink(dev);
    rmdir(dir);
}

TEST(temporaries_name_their_writer)
{
    aq_error err;
    make_dir();
    CHECK(dir[0] != '\0');
    char out[128], stale[160], live[160];
    snprintf(out, sizeof out, "%s/m.arrow", dir);
    /* PID 2^22 + 1 is above Linux's largest pid_max: no process has it. */
    snprintf(stale, sizeof stale, "%s/m.arrow.tmp-4194305-abcdef", dir);
    snprintf(live, sizeof live, "%s/m.arrow.tmp-%ld-abcdef", dir, (long)getppid());
    touch(stale);
    touch(live);
    char *tmp = NULL;
    int fd = -1;
    CHECK_OK(aq__tmpfile_create(out, &tmp, &fd, &err));
    char want[64];
    snprintf(want, sizeof want, "m.arrow.tmp-%ld-", (long)getpid());
    CHECK(strstr(tmp, want) != NULL);
    CHECK(access(stale, F_OK) != 0);
    CHECK(access(live, F_OK) == 0);
    /* A fatal signal's handler removes what is being written. */
    aq_temporaries_remove();
    CHECK(access(tmp, F_OK) != 0);
    aq__tmpfile_forget(tmp);
    close(fd);
    free(tmp);
    unlink(live);
    rmdir(dir);
}

TEST(memory_probe)
{
    long page = sysconf(_SC_PAGESIZE);
    uint8_t *m =
        mmap(NULL, (size_t)page * 3, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(m != MAP_FAILED);
    CHECK(munmap(m + 2 * page, (size_t)page) == 0); /* the third page is gone */
    CHECK(aq__mem_mapped(m, (size_t)page * 2));
    CHECK(aq__mem_mapped(m + page + 10, 20));
    CHECK(!aq__mem_mapped(m + page, (size_t)page + 1));
    CHECK(!aq__mem_mapped(m + 2 * page, 1));
    CHECK(aq__mem_mapped(m, 0));
    CHECK(!aq__mem_mapped((const void *)(uintptr_t)-16, 64)); /* wraps around */
    munmap(m, (size_t)page * 2);
}

/* XXH64 against the specification's values (the last one is the content checksum zstd
 * writes for those bytes: its low 32 bits). */
TEST(xxh64_vectors)
{
    CHECK(aq__xxh64("", 0, 0) == UINT64_C(0xef46db3751d8e999));
    CHECK(aq__xxh64("a", 1, 0) == UINT64_C(0xd24ec4f1a98c6e5b));
    CHECK(aq__xxh64("abc", 3, 0) == UINT64_C(0x44bc2cf5ad770999));
    uint8_t b[101];
    for (int i = 0; i < 101; i++) {
        b[i] = (uint8_t)i;
    }
    CHECK((uint32_t)aq__xxh64(b, sizeof b, 0) == UINT32_C(0x5f85381e));
    /* Each part of a row counts, and where one ends. */
    aq__row_bytes r = {.name = "ab", .name_len = 2, .data = "c", .data_len = 1};
    uint64_t h = aq__row_checksum(&r);
    r.name_len = 1;
    r.data = "bc";
    r.data_len = 2;
    CHECK(aq__row_checksum(&r) != h);
}

AQ_TEST_MAIN(AQ_CASE(output_is_an_input_by_any_name), AQ_CASE(destination_must_be_a_regular_file),
             AQ_CASE(temporaries_name_their_writer), AQ_CASE(memory_probe), AQ_CASE(xxh64_vectors))
