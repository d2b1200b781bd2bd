/* Reads the tensor-name fixtures of tests/data/diffusion (written by make_fixtures.py): a JSON
 * object whose "tensors" array holds {"name", "shape", "dtype"} objects. The reader knows only
 * that layout; it is test code, not a JSON parser. */
#ifndef AQ_TEST_FIXTURE_H
#define AQ_TEST_FIXTURE_H

#include "arrowquant.h"

typedef struct fx_tensor {
    char *name;
    int64_t shape[AQ_MAX_NDIM];
    size_t ndim;
    aq_dtype dtype;
} fx_tensor;

typedef struct fx_model {
    fx_tensor *tensors;
    size_t n;
    const char **names; /* tensors[i].name, for aq_rules_create */
} fx_model;

/* Loads tests/data/diffusion/<stem>.json; returns 0 on success, prints why otherwise. */
int fx_load(const char *stem, fx_model *out);
void fx_free(fx_model *m);
/* Index of the tensor with this name, or -1. */
long fx_find(const fx_model *m, const char *name);

#endif
