/* Internal interfaces of src/io: the safetensors header parser, the mapped file, and atomic
 * output files. */
#ifndef AQ_IO_INTERNAL_H
#define AQ_IO_INTERNAL_H

#include "aq_common.h"

#include <stdio.h>

/* One tensor entry of a parsed header. begin/end are relative to the data region. name, shape
 * and dtype_name point into the header's arena (dtype_name at a static string for known
 * dtypes); they live as long as the header. */
typedef struct aq__st_entry {
    char *name;
    aq_st_dtype dtype;
    char *dtype_name;
    int64_t *shape;
    size_t ndim;
    size_t elements;
    size_t begin;
    size_t end;
} aq__st_entry;

/* A parsed and validated header: entries sorted by data offset (file order). */
typedef struct aq__st_header {
    size_t header_size; /* N, the JSON length */
    size_t data_start;  /* 8 + N */
    size_t data_size;   /* file size - data_start */
    aq__st_entry *entries;
    size_t n;
    char **meta_keys;
    char **meta_values;
    size_t n_meta;
    struct aq__st_block *arena; /* names, shapes and metadata strings, in large blocks */
} aq__st_header;

/* Parses and validates the header of a whole safetensors file held in bytes[0..size): the
 * length field, the size cap, the JSON, every entry, and that the offsets tile the data region
 * exactly. `label` (a file name) starts every message. Used by the file reader and the fuzzer. */
aq_status aq__st_parse(const uint8_t *bytes, size_t size, const char *label, aq__st_header *out,
                       aq_error *err);
void aq__st_header_reset(aq__st_header *h);

/* A safetensors file mapped read-only, with its header. */
typedef struct aq__st_file {
    char *path;
    uint8_t *map;
    size_t size;
    int guard; /* aq__mapped_add's slot + 1; 0: none */
    aq__st_header h;
} aq__st_file;

aq_status aq__st_file_open(const char *path, aq__st_file **out, aq_error *err);
void aq__st_file_free(aq__st_file *f);
/* madvise(MADV_DONTNEED) over the pages of [offset, offset + n) of the mapping. */
void aq__st_file_release(aq__st_file *f, size_t offset, size_t n);

/* An output file written under a temporary name in the target's folder and renamed into
 * place by aq__outfile_commit. aq__outfile_free removes the temporary file if not committed. */
typedef struct aq__outfile {
    char *final_path;
    char *tmp_path;
    int fd;
    int committed;
    uint64_t written;
    uint64_t faults; /* aq_mapped_faults() when opened */
} aq__outfile;

aq_status aq__outfile_open(const char *path, aq__outfile **out, aq_error *err);
aq_status aq__outfile_write(aq__outfile *f, const void *data, size_t n, aq_error *err);
aq_status aq__outfile_commit(aq__outfile *f, aq_error *err);
void aq__outfile_free(aq__outfile *f);

/* Checks an output path before any work: its destination (aq__dest_check), and that it is
 * none of the n input files (compared by device and inode, so that another spelling, a hard
 * link or a symbolic link of an input is refused too). */
aq_status aq__io_check_output(const char *out, const char *const *inputs, size_t n, aq_error *err);
/* aq__io_check_output against every file the model was opened from (safetensors files,
 * indexes, model_index.json). */
aq_status aq__io_model_check_output(const aq_model *model, const char *out, aq_error *err);
/* aq__io_check_output against the files a calibration was read from (none: AQ_OK). */
aq_status aq__io_calib_check_output(const aq_calib *calib, const char *out, aq_error *err);

/* The model's __metadata__ as a JSON object, and its components as a JSON object of
 * component name to relative file ("{}" when none). Both malloc'ed. */
aq_status aq__io_model_meta_json(const aq_model *model, char **meta, char **components,
                                 aq_error *err);

#endif /* AQ_IO_INTERNAL_H */
