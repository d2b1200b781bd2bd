/*
 * aqpy.h - shared declarations of the arrow_quant_v2 extension module (python/src).
 *
 * The module includes only the public header, arrowquant.h, with its experimental part.
 * Files:
 *  - aqpy_module.c: module state, exceptions, the ArrowQuantV2 class and its methods;
 *  - aqpy_share.c: sharing and exporting Arrow C structures (holders, capsules, streams) and
 *    joining result batches;
 *  - aqpy_light.c: the light result objects (RecordBatch, Table, Schema) returned when pyarrow
 *    is not importable;
 *  - aqpy_model.c: the model-level functions (_quantize_model, _compare_models);
 *  - aqpy_settings.c: the library's settings table and profiles (_settings, _profiles,
 *    _setting_check), which DiffusionQuantConfig reads;
 *  - aqpy_runtime.c: what the torch runtime needs (model file rows, dequantization into a
 *    caller's buffer).
 */
#ifndef AQPY_H
#define AQPY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define AQ_EXPERIMENTAL
#include <arrowquant.h>

/* Per-module state (multi-phase init: nothing global). */
typedef struct aqpy_state {
    PyObject *error;          /* arrow_quant_v2.QuantizationError (ValueError) */
    PyTypeObject *quant_type; /* ArrowQuantV2 */
    PyTypeObject *batch_type; /* light RecordBatch */
    PyTypeObject *table_type; /* light Table */
    PyTypeObject *schema_type;
    PyTypeObject *held_type; /* _HeldBuffer (aqpy_runtime.c) */
    PyObject *pyarrow;       /* the pyarrow module, Py_None when not importable, NULL: unknown */
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
/* _HeldBuffer, the in-place rows of _model_rows(..., hold=True) (aqpy_runtime.c). */
extern PyType_Spec aq__py_held_spec;

/* The module-level functions of aqpy_model.c (_quantize_model, _compare_models), with those
 * of aqpy_gguf.c (_quantize_gguf, _gguf_encode, _gguf_decode, _gguf_to_safetensors). */
extern PyMethodDef aq__py_model_methods[];
/* The module-level functions of aqpy_runtime.c (_dequantize_into, _model_rows,
 * _model_metadata), added by the module's exec slot. */
extern PyMethodDef aq__py_runtime_methods[];
/* The settings functions of aqpy_settings.c, added by the exec slot. */
extern PyMethodDef aq__py_settings_methods[];

/* The index of a choice setting's value, checked by the settings table. */
int aq__py_run_choice(PyObject *module, const char *setting, const char *value, int *out);

/* What the model-level entry points (_quantize_model, _quantize_gguf, the batch methods'
 * diffusion config) share, in aqpy_settings.c. Each returns 0, or -1 with an exception set. */
/* A sequence of str as UTF-8 pointers borrowed from *keep (a new reference the caller drops;
 * *out is the caller's to free). None gives none; one str is refused. */
int aq__py_strings(PyObject *module, PyObject *obj, const char *what, PyObject **keep,
                   const char ***out, size_t *n);
/* The keywords of an entry point whose settings come from the library's settings table:
 * every setting of the table is a keyword by its name (None: not given), parsed by the
 * setting's type and checked by the table (aq_settings_set_text, whose message names the
 * setting, that is the keyword, and what it accepts), besides the function's own arguments. */
typedef struct aq__py_kwspec {
    const char *fname;             /* "_quantize_model", for the messages */
    const char *const *positional; /* required, positional or keyword; NULL-terminated */
    const char *const *own;        /* the function's own keyword-only arguments; NULL-terminated */
    const char *const *applies;    /* the settings the function applies (NULL: every one); a
                                      value given for another is refused with `why` */
    const char *why;
} aq__py_kwspec;
/* pos[i] and own[i] get borrowed references, NULL where not given; *out the settings with the
 * given values set (the caller frees it). A missing positional, an unknown keyword or a value
 * of the wrong type is TypeError; a value the table refuses, QuantizationError. */
int aq__py_kw_parse(PyObject *module, const aq__py_kwspec *spec, PyObject *args, PyObject *kwargs,
                    PyObject **pos, PyObject **own, aq_settings **out);
/* aq_settings_apply_profile with the profile the settings hold. */
int aq__py_kw_profile(PyObject *module, aq_settings *s);
/* The keywords of _quantize_model and _quantize_gguf, also read by _keywords(). */
extern const aq__py_kwspec aq__py_quantize_model_kw, aq__py_quantize_gguf_kw;
/* Fills out[0..cap) with the names of the settings that GGUF output (gguf) or the model
 * file's writer applies, from the table's columns, NULL-terminated. */
void aq__py_applies_fill(const char **out, size_t cap, int gguf);
/* Fill the settings _quantize_gguf and _quantize_model apply (the module's exec). */
void aq__py_gguf_init(void);
/* A GGUF file's summary as _quantize_gguf gives it (tensors, quantized, bytes_in, bytes_out,
 * types: {type name: count}); NULL with an exception set. */
PyObject *aq__py_gguf_summary(const aq_gguf_write_summary *sum);
void aq__py_model_init(void);
/* The profile of the settings `s` (aq_settings_apply_profile already called): its bits,
 * scheme and group size from the settings; the context's scheme and group size set from it
 * when ctx is not NULL. */
int aq__py_settings_profile(PyObject *module, aq_settings *s, aq_ctx *ctx, aq_profile *out);
/* A context with `threads`, the model at src (opened without the GIL) and its tensor names
 * (borrowed from the model; the array is the caller's to free). On failure what was made is
 * in the outputs, for the caller to free. */
int aq__py_run_open(PyObject *module, const char *src, int threads, aq_ctx **ctx, aq_model **model,
                    const char ***names, size_t *n);
/* A float keyword whose bounds are those of the settings table's `setting` (the keyword's own
 * name may differ: ArrowQuantV2's min_accuracy is the table's min_cosine). None is 0 (off);
 * anything else must be a number (not a bool) that the setting accepts, else TypeError or
 * the library's QuantizationError, naming the keyword. */
int aq__py_setting_float(aqpy_state *st, PyObject *obj, const char *keyword, const char *setting,
                         double *out);
/* The profile with the run's own bits, scheme and group size (0 / NULL: the profile's),
 * resolved by the settings table; the context's scheme and group size set from it when ctx is
 * not NULL. */
int aq__py_run_profile(PyObject *module, const char *profile, unsigned bit_width,
                       const char *scheme, size_t group_size, aq_ctx *ctx, aq_profile *out);
/* The layer rules of family_name over the names, with keep and bits_for overrides. */
int aq__py_run_rules(PyObject *module, const aq_profile *prof, const char *family_name,
                     const char *const *names, size_t n, const char *const *keep, size_t n_keep,
                     const char *const *bits_for, size_t n_bits, aq_rules **out);
/* A finished calibration from a path or an object with __arrow_c_stream__, its timestep
 * groups combined as `combine` says ("max" or "mean"). */
int aq__py_run_calib(PyObject *module, PyObject *calibration, const char *combine, aq_calib **out);

PyObject *aq__py_quantize_gguf(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *aq__py_gguf_encode(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *aq__py_gguf_decode(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *aq__py_gguf_to_safetensors(PyObject *module, PyObject *args, PyObject *kwargs);
extern const char aq__py_quantize_gguf_doc[], aq__py_gguf_encode_doc[], aq__py_gguf_decode_doc[],
    aq__py_gguf_to_safetensors_doc[];
#define AQ__PY_GGUF_METHODS                                                               \
    {"_quantize_gguf", (PyCFunction)(void (*)(void))aq__py_quantize_gguf,                 \
     METH_VARARGS | METH_KEYWORDS, aq__py_quantize_gguf_doc},                             \
        {"_gguf_encode", (PyCFunction)(void (*)(void))aq__py_gguf_encode,                 \
         METH_VARARGS | METH_KEYWORDS, aq__py_gguf_encode_doc},                           \
        {"_gguf_decode", (PyCFunction)(void (*)(void))aq__py_gguf_decode,                 \
         METH_VARARGS | METH_KEYWORDS, aq__py_gguf_decode_doc},                           \
        {"_gguf_to_safetensors", (PyCFunction)(void (*)(void))aq__py_gguf_to_safetensors, \
         METH_VARARGS | METH_KEYWORDS, aq__py_gguf_to_safetensors_doc},

/* The model pipeline in three steps (aqpy_plan.c): _model_plan_tensors, _model_execute,
 * _model_write. */
PyObject *aq__py_model_plan_tensors(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *aq__py_model_execute(PyObject *module, PyObject *args, PyObject *kwargs);
PyObject *aq__py_model_write(PyObject *module, PyObject *args, PyObject *kwargs);
extern const char aq__py_model_plan_tensors_doc[], aq__py_model_execute_doc[],
    aq__py_model_write_doc[];
#define AQ__PY_PLAN_METHODS                                                         \
    {"_model_plan_tensors", (PyCFunction)(void (*)(void))aq__py_model_plan_tensors, \
     METH_VARARGS | METH_KEYWORDS, aq__py_model_plan_tensors_doc},                  \
        {"_model_execute", (PyCFunction)(void (*)(void))aq__py_model_execute,       \
         METH_VARARGS | METH_KEYWORDS, aq__py_model_execute_doc},                   \
        {"_model_write", (PyCFunction)(void (*)(void))aq__py_model_write,           \
         METH_VARARGS | METH_KEYWORDS, aq__py_model_write_doc},

/* Feeds an object speaking __arrow_c_stream__ to calib (aqpy_model.c). -1 with an exception
 * set on failure. */
int aq__py_calib_from_stream(PyObject *module, aq_calib *calib, PyObject *obj);

/* config= and calibration= of ArrowQuantV2's quantize methods (aqpy_model.c): the layer rules
 * and calibration of a DiffusionQuantConfig (or profile name), made with the GIL held. */
typedef struct aq__py_names {
    char **v;
    size_t n, cap;
} aq__py_names;

typedef struct aq__py_diffusion {
    int active;                    /* config or calibration given */
    int has_rules;                 /* config given */
    int needs_names;               /* family 'auto': the rules need the layer names first */
    double min_cosine, target_bpw; /* the config's (used unless given explicitly) */
    PyObject *spec;                /* arrow_quant_v2.model._batch_spec's dict */
    aq_rules *rules;
    aq_calib *calib;
} aq__py_diffusion;

/* 0 (inactive when both are None), or -1 with an exception set. */
int aq__py_diffusion_open(PyObject *module, PyObject *config, PyObject *calibration,
                          aq__py_diffusion *d);
/* Creates the rules from the names (may be NULL unless needs_names) and sets the context's
 * scheme and group size to the configuration's. 0, or -1 with an exception set. */
int aq__py_diffusion_rules(PyObject *module, aq__py_diffusion *d, const aq__py_names *names,
                           aq_ctx *ctx);
void aq__py_diffusion_reset(aq__py_diffusion *d);
/* Appends the layer_name values of a batch (utf8 / large_utf8). 0; 1 for another column
 * type; -1 when out of memory. */
int aq__py_batch_names(const struct ArrowSchema *schema, const struct ArrowArray *array,
                       aq__py_names *names);
void aq__py_names_reset(aq__py_names *names);
/* Reads a whole stream into memory (in is released), collecting its layer names, and gives a
 * stream over the held batches. Without the GIL. */
aq_status aq__py_stream_buffer(struct ArrowArrayStream *in, aq__py_names *names,
                               struct ArrowArrayStream *out, aq_error *err);

/* The module state reachable from a light object's type. */
aqpy_state *aq__py_state_from_type(PyTypeObject *type);

/* strdup (not in C11): NULL when out of memory. */
char *aq__py_strdup(const char *s);

/* Raises the Python exception for a library error (aqpy_module.c): MemoryError for
 * allocation, OSError for files, RuntimeError for an internal error, QuantizationError (a
 * ValueError, with the status name in .status) for everything else; the library's message. */
void aq__py_raise(aqpy_state *st, const aq_error *err);

/* The pending exception, normalised with its traceback, taken out (a new reference; the
 * error indicator is cleared): for holding an exception across a GIL release. */
PyObject *aq__py_exc_take(void);
/* Makes exc (stolen) the pending exception again. */
void aq__py_exc_raise(PyObject *exc);

#endif /* AQPY_H */
