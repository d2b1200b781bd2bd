/* The calibration statistics' table, shared by its two files: calib.c (the table, combining
 * and the importance lookup, which the Arrow batch path below the readers calls) and
 * calib_read.c (filling it from Arrow tables and IPC files, above the Arrow and IPC layers). */
#ifndef AQ_CALIB_TABLE_H
#define AQ_CALIB_TABLE_H

#include "calib_internal.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct cb_group {
    int64_t id;
    double *ms; /* channels values */
} cb_group;

typedef struct cb_layer {
    char *name;
    size_t channels;
    cb_group *groups;
    size_t n_groups;
    size_t cap_groups;
    float *combined; /* channels values, after finish */
    double scale_ratio;
    double shape_variation;
} cb_layer;

struct aq_calib {
    cb_layer *layers;
    size_t n_layers;
    size_t cap_layers;
    int64_t declared_groups; /* from arrowquant.timestep_groups, or -1 */
    int64_t max_group;
    bool finished;
    bool broken;    /* a batch was refused half-way: the rows it added are not trustworthy */
    char **sources; /* the files read by aq_calib_add_ipc_file */
    size_t n_sources;
};

/* Adds one row's vector (channels values) for timestep group `group` to the layer named by
 * name[0, len) (creating the layer). ms is taken over on success. */
aq_status aq__calib_add(aq_calib *c, const char *name, size_t len, int64_t group, double *ms,
                        size_t channels, aq_error *err);

#endif
