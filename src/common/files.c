/*
 * File-system helpers shared by the readers and the writers: opening an input without
 * blocking on something that is not a file, checking an output's destination before any
 * work, and temporary files that a later run can recognise as stale.
 */
#include "aq_common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

const char *aq__file_kind(unsigned int mode)
{
    if (S_ISREG(mode)) {
        return "a regular file";
    }
    if (S_ISDIR(mode)) {
        return "a folder";
    }
    if (S_ISCHR(mode)) {
        return "a character device";
    }
    if (S_ISBLK(mode)) {
        return "a block device";
    }
    if (S_ISFIFO(mode)) {
        return "a FIFO";
    }
    if (S_ISSOCK(mode)) {
        return "a socket";
    }
    return "not a regular file";
}

aq_status aq__file_open_read(const char *path, int *fd_out, struct stat *sb_out, aq_error *err)
{
    struct stat sb;
    /* stat first: open() of a FIFO for reading blocks until a writer comes. */
    if (stat(path, &sb) != 0) {
        return aq__error_set(err, AQ_IO, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode)) {
        return aq__error_set(err, AQ_IO, "%s: is %s, expected a regular file", path,
                             aq__file_kind(sb.st_mode));
    }
    /* O_NONBLOCK covers a file swapped for a FIFO between the two calls; fstat decides. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        return aq__error_set(err, AQ_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return aq__error_set(err, AQ_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return aq__error_set(err, AQ_IO, "%s: is %s, expected a regular file", path,
                             aq__file_kind(sb.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0) {
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    *fd_out = fd;
    if (sb_out != NULL) {
        *sb_out = sb;
    }
    return AQ_OK;
}

aq_status aq__file_read_all(const char *path, size_t max, char **out, size_t *len, aq_error *err)
{
    int fd;
    struct stat sb;
    aq_status st = aq__file_open_read(path, &fd, &sb, err);
    if (st != AQ_OK) {
        return st;
    }
    if ((uint64_t)sb.st_size > (uint64_t)max) {
        close(fd);
        return aq__error_set(err, AQ_INVALID_DATA, "%s: %lld bytes, more than the %zu allowed",
                             path, (long long)sb.st_size, max);
    }
    size_t cap = (size_t)sb.st_size + 1, n = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
    }
    while (n < cap - 1) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return aq__error_set(err, AQ_IO, "%s: read failed: %s", path, strerror(e));
        }
        if (r == 0) {
            break;
        }
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return AQ_OK;
}

aq_status aq__dest_check(const char *path, aq_error *err)
{
    if (path == NULL || path[0] == '\0') {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "output path is empty: expected a file name");
    }
    size_t n = strlen(path);
    if (path[n - 1] == '/') {
        return aq__error_set(err, AQ_IO, "%s: is a folder, expected a file name", path);
    }
    struct stat sb;
    if (lstat(path, &sb) == 0) {
        if (S_ISLNK(sb.st_mode) && stat(path, &sb) != 0) {
            return aq__error_set(err, AQ_IO,
                                 "%s: is a symbolic link to a missing file (%s): refusing to "
                                 "replace the link",
                                 path, strerror(errno));
        }
        if (S_ISDIR(sb.st_mode)) {
            return aq__error_set(err, AQ_IO, "%s: is a folder, expected a file name", path);
        }
        if (!S_ISREG(sb.st_mode)) {
            return aq__error_set(err, AQ_IO, "%s: is %s: an output can only replace a regular file",
                                 path, aq__file_kind(sb.st_mode));
        }
    } else if (errno != ENOENT) {
        return aq__error_set(err, AQ_IO, "%s: cannot check the output: %s", path, strerror(errno));
    }
    char *dir = aq__strdup(path);
    if (dir == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory");
    }
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash != NULL) {
        *slash = '\0';
        d = dir[0] != '\0' ? dir : "/";
    }
    aq_status st = AQ_OK;
    if (stat(d, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        st = aq__error_set(err, AQ_IO, "%s: output folder '%s' does not exist", path, d);
    } else if (access(d, W_OK) != 0) {
        st = aq__error_set(err, AQ_IO, "%s: cannot write into folder '%s': %s", path, d,
                           strerror(errno));
    }
    free(dir);
    return st;
}

/* The temporaries being written now, for aq_temporaries_remove (a fatal signal's handler):
 * slots set and cleared with atomic operations, read without locks. */
enum { FILES_LIVE = 64 };
static char *files_live[FILES_LIVE];

static void files_remember(char *tmp)
{
    for (size_t i = 0; i < FILES_LIVE; i++) {
        char *expected = NULL;
        if (__atomic_compare_exchange_n(&files_live[i], &expected, tmp, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            return;
        }
    }
    /* More than FILES_LIVE outputs at once: this one is not removed by a fatal signal. */
}

void aq__tmpfile_forget(const char *tmp)
{
    for (size_t i = 0; tmp != NULL && i < FILES_LIVE; i++) {
        char *expected = (char *)tmp;
        if (__atomic_compare_exchange_n(&files_live[i], &expected, NULL, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_SEQ_CST)) {
            return;
        }
    }
}

void aq_temporaries_remove(void)
{
    for (size_t i = 0; i < FILES_LIVE; i++) {
        char *p = __atomic_exchange_n(&files_live[i], NULL, __ATOMIC_SEQ_CST);
        if (p != NULL) {
            (void)unlink(p); /* async-signal-safe */
        }
    }
}

/* True if process pid has ended: it does not exist, or it is a zombie that its parent has not
 * reaped yet (a run killed with its parent is one until a subreaper collects it). */
static bool files_writer_gone(long pid)
{
    if (kill((pid_t)pid, 0) != 0) {
        return errno == ESRCH;
    }
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%ld/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return false;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    (void)close(fd);
    if (n <= 0) {
        return false;
    }
    buf[n] = '\0';
    /* "pid (comm) S ...": the state follows the last ')'. */
    const char *rp = strrchr(buf, ')');
    return rp != NULL && rp[1] == ' ' && (rp[2] == 'Z' || rp[2] == 'X');
}

/* "<base>.tmp-<pid>-XXXXXX": the pid says whether its writer still runs. */
static bool files_stale(const char *name, const char *base, size_t blen)
{
    if (strncmp(name, base, blen) != 0 || strncmp(name + blen, ".tmp-", 5) != 0) {
        return false;
    }
    const char *p = name + blen + 5;
    char *end;
    long pid = strtol(p, &end, 10);
    if (end == p || *end != '-' || strlen(end + 1) != 6 || pid <= 0 || pid == (long)getpid()) {
        return false;
    }
    return files_writer_gone(pid);
}

/* Removes the temporaries of `path` left by runs that were killed (kill -9, power loss). */
static void files_remove_stale(const char *path)
{
    char *dir = aq__strdup(path);
    if (dir == NULL) {
        return;
    }
    char *slash = strrchr(dir, '/');
    const char *d = ".", *base = path;
    if (slash != NULL) {
        *slash = '\0';
        d = dir[0] != '\0' ? dir : "/";
        base = path + (slash - dir) + 1;
    }
    size_t blen = strlen(base);
    DIR *dd = opendir(d);
    if (dd != NULL) {
        struct dirent *de;
        while ((de = readdir(dd)) != NULL) {
            if (files_stale(de->d_name, base, blen)) {
                (void)unlinkat(dirfd(dd), de->d_name, 0);
            }
        }
        closedir(dd);
    }
    free(dir);
}

aq_status aq__tmpfile_create(const char *path, char **tmp_out, int *fd_out, aq_error *err)
{
    aq_status st = aq__dest_check(path, err);
    if (st != AQ_OK) {
        return st;
    }
    files_remove_stale(path);
    size_t len = strlen(path) + 40;
    char *tmp = malloc(len);
    if (tmp == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
    }
    snprintf(tmp, len, "%s.tmp-%ld-XXXXXX", path, (long)getpid());
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return aq__error_set(err, AQ_IO, "%s: cannot create a temporary file beside it: %s", path,
                             strerror(e));
    }
    /* mkostemp creates the file 0600; give the result the usual permissions of a data file. */
    (void)fchmod(fd, 0644);
    files_remember(tmp);
    *tmp_out = tmp;
    *fd_out = fd;
    return AQ_OK;
}
