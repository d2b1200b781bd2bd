/*
 * aqpy.h - shared declarations of the arrow_quant_v2 extension module (python/src).
 *
 * The module includes only the public header, arrowquant.h. Four files:
 *  - aqpy_module.c: module state, exceptions, the ArrowQuantV2 class and its methods;
 *  - aqpy_share.c: sharing and exporting Arrow C structures (holders, capsules, streams) and
 *    joining result batches;
 *  - aqpy_light.c: the light result objects (RecordBatch, Table, Schema) returned when pyarrow
 *    is not importable;
 *  - aqpy_model.c: the model-level functions (_quantize_model, _compare_models).
 */
#ifndef AQPY_H
#define AQPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arrowquant.h>

/* Per-module state (multi-phase init: nothing global). */
typedef struct aqpy_state {
    PyObject *error;          /* arrow_quant_v2.QuantizationError (ValueError) */
    PyTypeObject *quant_type; /* ArrowQuantV2 */
    PyTypeObject *batch_type; /* light RecordBatch */
    PyTypeObject *table_type; /* light Table */
    PyTypeObject *schema_type;
    PyObject *pyarrow; /* the pyarrow module, Py_None when not importable, NULL: unknown */
} aqpy_state;

/* The capsule names of the Arrow PyCapsule interface. */
#define AQPY_CAPSULE_SCHEMA "arrow_schema"
#define AQPY_CAPSULE_ARRAY "arrow_array"
#define AQPY_CAPSULE_STREAM "arrow_array_stream"

/* A reference-counted owner of one released-once ArrowArray (a record batch as a struct
 * array). Exports hand out trees of nodes that borrow its buffers and keep it alive, so one
 * result can be exported any number of times and released from any thread. */
typedef struct aq__py_holder aq__py_holder;

/* Takes *array over (array->release becomes NULL). NULL when out of memory (the array is
 * then released). */
aq__py_holder *aq__py_holder_create(struct ArrowArray *array);
void aq__py_holder_retain(aq__py_holder *h);
/* Accepts NULL. Thread-safe. */
void aq__py_holder_release(aq__py_holder *h);
const struct ArrowArray *aq__py_holder_array(const aq__py_holder *h);

/* Exports the held array as a new tree in *out (release set). 0, or -1 when out of memory. */
int aq__py_holder_export(aq__py_holder *h, struct ArrowArray *out);
/* Size in bytes of C Data Interface schema metadata (int32 count, then length-prefixed keys
 * and values). */
size_t aq__py_metadata_size(const char *metadata);
/* Deep copy of a schema into *out (release set). 0, or -1 when out of memory. */
int aq__py_schema_copy(const struct ArrowSchema *src, struct ArrowSchema *out);

/* A stream over a schema and n holders (each retained). 0, or -1 when out of memory. */
int aq__py_stream_over(const struct ArrowSchema *schema, aq__py_holder *const *holders, size_t n,
                       struct ArrowArrayStream *out);

/* Concatenates the batches of n holders (struct arrays of one schema) into *out: what a
 * stream of result batches needs to become one batch. Columns may be fixed-width primitives,
 * utf8/binary with 32- or 64-bit offsets, lists with 32- or 64-bit offsets and structs, all
 * without nulls (the result schemas of the library). 0; -1 when out of memory; -2 for a type
 * or a null it does not handle. */
int aq__py_concat(const struct ArrowSchema *schema, aq__py_holder *const *holders, size_t n,
                  struct ArrowArray *out);

/* Capsules that own a heap copy of the structure and release it when collected (unless a
 * consumer moved it out and set release to NULL). The structure is moved in. New reference,
 * NULL with an exception set. */
PyObject *aq__py_schema_capsule(struct ArrowSchema *schema);
PyObject *aq__py_array_capsule(struct ArrowArray *array);
PyObject *aq__py_stream_capsule(struct ArrowArrayStream *stream);

/* Light objects. Both take *schema over (moved). batch_new also takes the holder reference;
 * table_new retains each holder. New references, NULL with an exception set. */
PyObject *aq__py_batch_new(aqpy_state *st, struct ArrowSchema *schema, aq__py_holder *holder);
PyObject *aq__py_table_new(aqpy_state *st, struct ArrowSchema *schema,
                           aq__py_holder *const *holders, size_t n);

/* One light batch from a light table (a library result stream): its only batch, or its
 * batches joined (aq__py_concat); Py_None (new reference) when it has none. */
PyObject *aq__py_table_to_batch(aqpy_state *st, PyObject *table);

/* Type specs of the light objects (defined in aqpy_light.c). */
extern PyType_Spec aq__py_batch_spec;
extern PyType_Spec aq__py_table_spec;
extern PyType_Spec aq__py_schema_spec;

/* The module-level functions of aqpy_model.c (_quantize_model, _compare_models). */
extern PyMethodDef aq__py_model_methods[];

/* The module state reachable from a light object's type. */
aqpy_state *aq__py_state_from_type(PyTypeObject *type);

#endif /* AQPY_H */
