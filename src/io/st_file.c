/*
 * Mapped safetensors files and atomic output files.
 *
 * Input files are mapped read-only and private: tensor data is used in place, and each tensor's
 * pages are dropped (MADV_DONTNEED) once it has been processed. For a read-only file mapping
 * that only forgets clean page-cache pages; touching them again reads them back from the file.
 *
 * Output files are created next to their final name (so the rename stays on one file system)
 * and renamed only once complete.
 */
#include "io_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

aq_status aq__st_file_open(const char *path, aq__st_file **out, aq_error *err)
{
    aq_status st = AQ_OK;
    int fd = -1;
    aq__st_file *f = calloc(1, sizeof *f);
    if (f == NULL || (f->path = aq__strdup(path)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    struct stat sb;
    if ((st = aq__file_open_read(path, &fd, &sb, err)) != AQ_OK) {
        fd = -1;
        goto done;
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        st = aq__error_set(err, AQ_OVERFLOW, "%s: file too large for this platform", path);
        goto done;
    }
    f->size = (size_t)sb.st_size;
    if (f->size < 8) {
        st = aq__st_parse(NULL, f->size, path, &f->h, err);
        goto done;
    }
    void *map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        st = aq__error_set(err, AQ_IO, "%s: cannot map %zu bytes: %s", path, f->size,
                           strerror(errno));
        goto done;
    }
    f->map = map;
    f->guard = aq__mapped_add(map, f->size, path) + 1;
    /* Tensors are read front to back, once. */
    (void)madvise(f->map, f->size, MADV_SEQUENTIAL);
    if ((st = aq__st_parse(f->map, f->size, path, &f->h, err)) != AQ_OK) {
        goto done;
    }
    /* The header pages are not needed any more. */
    aq__st_file_release(f, 0, f->h.data_start);
    *out = f;
    f = NULL;
done:
    if (fd >= 0) {
        close(fd);
    }
    aq__st_file_free(f);
    return st;
}

void aq__st_file_free(aq__st_file *f)
{
    if (f == NULL) {
        return;
    }
    if (f->map != NULL) {
        aq__mapped_remove(f->guard - 1);
        munmap(f->map, f->size);
    }
    aq__st_header_reset(&f->h);
    free(f->path);
    free(f);
}

void aq__st_file_release(aq__st_file *f, size_t offset, size_t n)
{
    if (f == NULL || f->map == NULL || n == 0 || offset >= f->size) {
        return;
    }
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t lo = offset / page * page;
    size_t hi = offset + n > f->size ? f->size : offset + n;
    /* Round outwards: neighbours' pages are clean and come back from the file if needed. */
    hi = (hi + page - 1) / page * page;
    (void)madvise(f->map + lo, hi - lo, MADV_DONTNEED);
}

aq_status aq__outfile_open(const char *path, aq__outfile **out, aq_error *err)
{
    aq_status st = AQ_OK;
    aq__outfile *f = calloc(1, sizeof *f);
    if (f == NULL || (f->final_path = aq__strdup(path)) == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", path);
        goto done;
    }
    f->fd = -1;
    f->faults = aq_mapped_faults();
    if ((st = aq__tmpfile_create(path, &f->tmp_path, &f->fd, err)) != AQ_OK) {
        goto done;
    }
    *out = f;
    f = NULL;
done:
    aq__outfile_free(f);
    return st;
}

aq_status aq__outfile_write(aq__outfile *f, const void *data, size_t n, aq_error *err)
{
    const uint8_t *p = data;
    while (n > 0) {
        size_t chunk = n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n;
        ssize_t w = write(f->fd, p, chunk);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return aq__error_set(err, AQ_IO, "%s: write failed after %" PRIu64 " bytes: %s",
                                 f->final_path, f->written, strerror(errno));
        }
        p += w;
        n -= (size_t)w;
        f->written += (uint64_t)w;
    }
    return AQ_OK;
}

aq_status aq__outfile_commit(aq__outfile *f, aq_error *err)
{
    /* An input truncated while it was read gave zeros: they must not land under the name. */
    aq_status st = aq_mapped_check(f->faults, err);
    if (st != AQ_OK) {
        return st;
    }
    if (fsync(f->fd) != 0 && errno != EINVAL) {
        return aq__error_set(err, AQ_IO, "%s: fsync failed: %s", f->final_path, strerror(errno));
    }
    if (close(f->fd) != 0) {
        f->fd = -1;
        return aq__error_set(err, AQ_IO, "%s: close failed: %s", f->final_path, strerror(errno));
    }
    f->fd = -1;
    aq__tmpfile_forget(f->tmp_path);
    if (rename(f->tmp_path, f->final_path) != 0) {
        return aq__error_set(err, AQ_IO, "%s: cannot rename the temporary file into place: %s",
                             f->final_path, strerror(errno));
    }
    f->committed = 1;
    return AQ_OK;
}

void aq__outfile_free(aq__outfile *f)
{
    if (f == NULL) {
        return;
    }
    if (f->fd >= 0) {
        close(f->fd);
    }
    aq__tmpfile_forget(f->tmp_path);
    if (!f->committed && f->tmp_path != NULL) {
        unlink(f->tmp_path);
    }
    free(f->tmp_path);
    free(f->final_path);
    free(f);
}
