/*
 * bench/e2e_io: the floor of the end-to-end benchmark (bench/e2e.sh): the time to
 * read a file's bytes and to write a given number of bytes, with nothing computed between.
 *
 *   build/bench/e2e_io SRC OUT_BYTES DST
 *
 * 1. read: SRC once with read(2) into a 16 MiB buffer (the caller warms the page cache first);
 * 2. write: OUT_BYTES bytes (copies of the data just read) to DST.tmp with write(2) in 16 MiB
 *    pieces, with the drop-behind the model pipeline's IPC writer uses (after each piece its
 *    writeback is started, and the piece before is waited for and dropped from the page cache,
 *    so later pieces reuse freed pages: docs/decisions.md, "The write path"), then exactly
 *    what the IPC writer does when it closes a file (src/ipc/ipc_writer.c): fsync, close,
 *    rename DST.tmp to DST, fsync the folder.
 * Prints one line: "read_s WRITE_S bytes_read" (seconds, wall clock). Exit status 2 on error.
 */
#ifndef _GNU_SOURCE
#    define _GNU_SOURCE /* sync_file_range */
#endif
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK ((size_t)16 << 20)

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int io_fail(const char *what, const char *path)
{
    fprintf(stderr, "e2e_io: %s %s: %s\n", what, path, strerror(errno));
    return 2;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: e2e_io SRC OUT_BYTES DST\n");
        return 2;
    }
    const char *src = argv[1], *dst = argv[3];
    char *end = NULL;
    errno = 0;
    unsigned long long out_bytes = strtoull(argv[2], &end, 10);
    if (errno != 0 || end == argv[2] || *end != '\0') {
        fprintf(stderr, "e2e_io: OUT_BYTES must be a number, got '%s'\n", argv[2]);
        return 2;
    }
    int rc = 2, fd = -1;
    char *tmp = NULL, *dir = NULL;
    uint8_t *buf = malloc(CHUNK);
    if (buf == NULL) {
        fprintf(stderr, "e2e_io: out of memory\n");
        goto done;
    }
    memset(buf, 0x5a, CHUNK);

    /* Read. */
    double t0 = now();
    fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = io_fail("cannot open", src);
        goto done;
    }
    unsigned long long total = 0;
    for (;;) {
        ssize_t r = read(fd, buf, CHUNK);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = io_fail("cannot read", src);
            goto done;
        }
        if (r == 0) {
            break;
        }
        total += (unsigned long long)r;
    }
    close(fd);
    fd = -1;
    double t1 = now();

    /* Write, then close the way the IPC writer does. */
    size_t dlen = strlen(dst);
    tmp = malloc(dlen + 5);
    dir = malloc(dlen + 1);
    if (tmp == NULL || dir == NULL) {
        fprintf(stderr, "e2e_io: out of memory\n");
        goto done;
    }
    snprintf(tmp, dlen + 5, "%s.tmp", dst);
    memcpy(dir, dst, dlen + 1);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = io_fail("cannot create", tmp);
        goto done;
    }
    for (unsigned long long left = out_bytes; left > 0;) {
        size_t n = left < CHUNK ? (size_t)left : CHUNK;
        ssize_t w = write(fd, buf, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            rc = io_fail("cannot write", tmp);
            goto done;
        }
        /* Drop-behind: start this piece's writeback, then wait for the one before and drop
         * it (errors are the final fsync's to report). */
        off_t end_off = (off_t)(out_bytes - left) + (off_t)w;
        (void)sync_file_range(fd, end_off - (off_t)w, (off_t)w, SYNC_FILE_RANGE_WRITE);
        if (end_off - (off_t)w > 0) {
            off_t prev = end_off - (off_t)w;
            off_t lo = prev > (off_t)CHUNK ? prev - (off_t)CHUNK : 0;
            (void)sync_file_range(fd, lo, prev - lo,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER);
            (void)posix_fadvise(fd, lo, prev - lo, POSIX_FADV_DONTNEED);
        }
        left -= (unsigned long long)w;
    }
    if (fsync(fd) != 0) {
        rc = io_fail("cannot fsync", tmp);
        goto done;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        rc = io_fail("cannot close", tmp);
        goto done;
    }
    if (rename(tmp, dst) != 0) {
        rc = io_fail("cannot rename", tmp);
        goto done;
    }
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    double t2 = now();
    printf("%.6f %.6f %llu\n", t1 - t0, t2 - t1, total);
    rc = 0;
done:
    if (fd >= 0) {
        close(fd);
    }
    free(tmp);
    free(dir);
    free(buf);
    return rc;
}
