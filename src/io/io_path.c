/*
 * Output paths checked against the inputs of a run, before any work: an output never
 * replaces one of the files it is made from, whatever spelling, hard link or symbolic link
 * leads there. Files are compared by identity (device and inode), not by name.
 */
#include "calib_internal.h"
#include "io_internal.h"

#include <errno.h>
#include <sys/stat.h>

aq_status aq_output_check(const char *path, const char *const *inputs, size_t n_inputs,
                          aq_error *err)
{
    if (n_inputs > 0 && inputs == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_output_check: NULL inputs");
    }
    return aq__io_check_output(path, inputs, n_inputs, err);
}

aq_status aq__io_check_output(const char *out, const char *const *inputs, size_t n, aq_error *err)
{
    aq_status st = aq__dest_check(out, err);
    if (st != AQ_OK) {
        return st;
    }
    struct stat so;
    if (stat(out, &so) != 0) {
        return AQ_OK; /* a new file cannot be one of the inputs */
    }
    for (size_t i = 0; i < n; i++) {
        struct stat si;
        if (inputs[i] != NULL && stat(inputs[i], &si) == 0 && si.st_dev == so.st_dev &&
            si.st_ino == so.st_ino) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "%s: is the input file %s: refusing to overwrite a source "
                                 "(choose another output)",
                                 out, inputs[i]);
        }
    }
    return AQ_OK;
}

aq_status aq__io_calib_check_output(const aq_calib *calib, const char *out, aq_error *err)
{
    size_t n = aq__calib_source_count(calib);
    for (size_t i = 0; i < n; i++) {
        const char *in = aq__calib_source(calib, i);
        aq_status st = aq__io_check_output(out, &in, 1, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    return AQ_OK;
}
