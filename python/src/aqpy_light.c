/*
 * aqpy_light.c - the light result objects (RecordBatch, Table, Schema) that the module returns
 * when pyarrow is not importable: reading result columns into Python values, and the types.
 * Their data is shared with every export (aqpy_share.c).
 */
#include "aqpy.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* Reading values of the result types into Python objects                                     */
/* ------------------------------------------------------------------------------------------ */

static int lt_is_null(const struct ArrowArray *a, int64_t i)
{
    if (a->null_count == 0 || a->n_buffers == 0 || a->buffers[0] == NULL) {
        return 0;
    }
    int64_t k = a->offset + i;
    const uint8_t *bits = a->buffers[0];
    return !((bits[k / 8] >> (k % 8)) & 1);
}

static PyObject *lt_value(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i);

static PyObject *lt_list(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t begin,
                         int64_t end)
{
    const struct ArrowSchema *cs = s->children[0];
    const struct ArrowArray *ca = a->children[0];
    PyObject *list = PyList_New((Py_ssize_t)(end - begin));
    if (list == NULL) {
        return NULL;
    }
    /* The common case, list<float32> weights and scales, without a call per element. */
    if (strcmp(cs->format, "f") == 0 && ca->null_count == 0) {
        const float *v = (const float *)ca->buffers[1] + ca->offset;
        for (int64_t j = begin; j < end; j++) {
            PyObject *x = PyFloat_FromDouble((double)v[j]);
            if (x == NULL) {
                Py_DECREF(list);
                return NULL;
            }
            PyList_SET_ITEM(list, (Py_ssize_t)(j - begin), x);
        }
        return list;
    }
    for (int64_t j = begin; j < end; j++) {
        PyObject *x = lt_value(cs, ca, j);
        if (x == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)(j - begin), x);
    }
    return list;
}

static PyObject *lt_value(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t i)
{
    const char *f = s->format;
    int64_t k = a->offset + i;
    if (lt_is_null(a, i) || strcmp(f, "n") == 0) {
        Py_RETURN_NONE;
    }
    if (f[1] == '\0') {
        const void *v = a->n_buffers > 1 ? a->buffers[1] : NULL;
        switch (f[0]) {
        case 'u':
        case 'z': {
            const int32_t *off = v;
            const char *data = a->buffers[2];
            Py_ssize_t n = (Py_ssize_t)(off[k + 1] - off[k]);
            return f[0] == 'u' ? PyUnicode_DecodeUTF8(data + off[k], n, "strict")
                               : PyBytes_FromStringAndSize(data + off[k], n);
        }
        case 'U':
        case 'Z': {
            const int64_t *off = v;
            const char *data = a->buffers[2];
            Py_ssize_t n = (Py_ssize_t)(off[k + 1] - off[k]);
            return f[0] == 'U' ? PyUnicode_DecodeUTF8(data + off[k], n, "strict")
                               : PyBytes_FromStringAndSize(data + off[k], n);
        }
        case 'b': {
            const uint8_t *bits = v;
            return PyBool_FromLong((bits[k / 8] >> (k % 8)) & 1);
        }
        case 'c':
            return PyLong_FromLong(((const int8_t *)v)[k]);
        case 'C':
            return PyLong_FromLong(((const uint8_t *)v)[k]);
        case 's':
            return PyLong_FromLong(((const int16_t *)v)[k]);
        case 'S':
            return PyLong_FromLong(((const uint16_t *)v)[k]);
        case 'i':
            return PyLong_FromLong(((const int32_t *)v)[k]);
        case 'I':
            return PyLong_FromUnsignedLong(((const uint32_t *)v)[k]);
        case 'l':
            return PyLong_FromLongLong(((const int64_t *)v)[k]);
        case 'L':
            return PyLong_FromUnsignedLongLong(((const uint64_t *)v)[k]);
        case 'f':
            return PyFloat_FromDouble((double)((const float *)v)[k]);
        case 'g':
            return PyFloat_FromDouble(((const double *)v)[k]);
        default:
            break;
        }
    } else if (strcmp(f, "+l") == 0) {
        const int32_t *off = a->buffers[1];
        return lt_list(s, a, off[k], off[k + 1]);
    } else if (strcmp(f, "+L") == 0) {
        const int64_t *off = a->buffers[1];
        return lt_list(s, a, off[k], off[k + 1]);
    } else if (strncmp(f, "+w:", 3) == 0) {
        int64_t w = strtoll(f + 3, NULL, 10);
        return lt_list(s, a, k * w, (k + 1) * w);
    }
    return PyErr_Format(PyExc_TypeError,
                        "the light result objects cannot convert Arrow format '%s' to Python "
                        "(column '%s'); install pyarrow for full Arrow support",
                        f, s->name ? s->name : "");
}

/* A readable type name: string, binary, list<float32>, list<int64>, uint8, ... */
static int lt_type_name(const struct ArrowSchema *s, char *buf, size_t size)
{
    static const struct {
        const char *format, *name;
    } names[] = {
        {"n", "null"},         {"b", "bool"},         {"c", "int8"},         {"C", "uint8"},
        {"s", "int16"},        {"S", "uint16"},       {"i", "int32"},        {"I", "uint32"},
        {"l", "int64"},        {"L", "uint64"},       {"e", "float16"},      {"f", "float32"},
        {"g", "float64"},      {"u", "string"},       {"U", "large_string"}, {"z", "binary"},
        {"Z", "large_binary"}, {"vu", "string_view"}, {"vz", "binary_view"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(s->format, names[i].format) == 0) {
            return snprintf(buf, size, "%s", names[i].name);
        }
    }
    const char *outer = NULL;
    if (strcmp(s->format, "+l") == 0) {
        outer = "list";
    } else if (strcmp(s->format, "+L") == 0) {
        outer = "large_list";
    }
    if (outer != NULL && s->n_children == 1) {
        char inner[128];
        lt_type_name(s->children[0], inner, sizeof inner);
        return snprintf(buf, size, "%s<%s>", outer, inner);
    }
    return snprintf(buf, size, "%s", s->format);
}

static int64_t lt_find_column(const struct ArrowSchema *s, PyObject *key)
{
    if (PyLong_Check(key)) {
        Py_ssize_t i = PyLong_AsSsize_t(key);
        if (i == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (i < 0) {
            i += (Py_ssize_t)s->n_children;
        }
        if (i < 0 || i >= s->n_children) {
            PyErr_Format(PyExc_IndexError, "column index %zd out of range (%lld columns)", i,
                         (long long)s->n_children);
            return -1;
        }
        return i;
    }
    const char *name = PyUnicode_AsUTF8(key);
    if (name == NULL) {
        return -1;
    }
    for (int64_t j = 0; j < s->n_children; j++) {
        if (s->children[j]->name != NULL && strcmp(s->children[j]->name, name) == 0) {
            return j;
        }
    }
    PyErr_Format(PyExc_KeyError, "no column named '%s'", name);
    return -1;
}

/* Appends column j of a struct array (a record batch) to list. */
static int lt_append_column(const struct ArrowSchema *s, const struct ArrowArray *a, int64_t j,
                            PyObject *list)
{
    for (int64_t i = 0; i < a->length; i++) {
        PyObject *x = lt_value(s->children[j], a->children[j], a->offset + i);
        if (x == NULL || PyList_Append(list, x) != 0) {
            Py_XDECREF(x);
            return -1;
        }
        Py_DECREF(x);
    }
    return 0;
}

/* Appends one dict per row of a struct array to list. */
static int lt_append_rows(const struct ArrowSchema *s, const struct ArrowArray *a, PyObject *list)
{
    for (int64_t i = 0; i < a->length; i++) {
        PyObject *row = PyDict_New();
        if (row == NULL) {
            return -1;
        }
        for (int64_t j = 0; j < s->n_children; j++) {
            PyObject *x = lt_value(s->children[j], a->children[j], a->offset + i);
            if (x == NULL || PyDict_SetItemString(row, s->children[j]->name, x) != 0) {
                Py_XDECREF(x);
                Py_DECREF(row);
                return -1;
            }
            Py_DECREF(x);
        }
        int rc = PyList_Append(list, row);
        Py_DECREF(row);
        if (rc != 0) {
            return -1;
        }
    }
    return 0;
}

aqpy_state *aq__py_state_from_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModule(type);
    return module == NULL ? NULL : PyModule_GetState(module);
}

/* ------------------------------------------------------------------------------------------ */
/* Schema                                                                                     */
/* ------------------------------------------------------------------------------------------ */

typedef struct lt_schema_obj {
    PyObject_HEAD struct ArrowSchema schema;
} lt_schema_obj;

static PyObject *lt_schema_new(aqpy_state *st, const struct ArrowSchema *schema)
{
    lt_schema_obj *self = PyObject_New(lt_schema_obj, st->schema_type);
    if (self == NULL) {
        return NULL;
    }
    if (aq__py_schema_copy(schema, &self->schema) != 0) {
        self->schema.release = NULL;
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void lt_schema_dealloc(lt_schema_obj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->schema.release != NULL) {
        self->schema.release(&self->schema);
    }
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *lt_schema_names(const struct ArrowSchema *s)
{
    PyObject *list = PyList_New((Py_ssize_t)s->n_children);
    for (int64_t j = 0; list != NULL && j < s->n_children; j++) {
        PyObject *name = PyUnicode_FromString(s->children[j]->name ? s->children[j]->name : "");
        if (name == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)j, name);
    }
    return list;
}

static PyObject *lt_schema_get_names(lt_schema_obj *self, void *closure)
{
    (void)closure;
    return lt_schema_names(&self->schema);
}

static PyObject *lt_schema_get_types(lt_schema_obj *self, void *closure)
{
    (void)closure;
    const struct ArrowSchema *s = &self->schema;
    PyObject *list = PyList_New((Py_ssize_t)s->n_children);
    for (int64_t j = 0; list != NULL && j < s->n_children; j++) {
        char buf[256];
        lt_type_name(s->children[j], buf, sizeof buf);
        PyObject *name = PyUnicode_FromString(buf);
        if (name == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)j, name);
    }
    return list;
}

static PyObject *lt_schema_get_metadata(lt_schema_obj *self, void *closure)
{
    (void)closure;
    const char *m = self->schema.metadata;
    if (m == NULL) {
        Py_RETURN_NONE;
    }
    PyObject *dict = PyDict_New();
    int32_t n, len;
    size_t pos = sizeof n;
    memcpy(&n, m, sizeof n);
    for (int32_t i = 0; dict != NULL && i < n; i++) {
        memcpy(&len, m + pos, sizeof len);
        PyObject *k = PyBytes_FromStringAndSize(m + pos + sizeof len, len);
        pos += sizeof len + (size_t)len;
        memcpy(&len, m + pos, sizeof len);
        PyObject *v = PyBytes_FromStringAndSize(m + pos + sizeof len, len);
        pos += sizeof len + (size_t)len;
        if (k == NULL || v == NULL || PyDict_SetItem(dict, k, v) != 0) {
            Py_CLEAR(dict);
        }
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return dict;
}

static PyObject *lt_schema_arrow_c_schema(lt_schema_obj *self, PyObject *unused)
{
    (void)unused;
    struct ArrowSchema copy;
    if (aq__py_schema_copy(&self->schema, &copy) != 0) {
        return PyErr_NoMemory();
    }
    return aq__py_schema_capsule(&copy);
}

static int lt_schema_equal(const struct ArrowSchema *a, const struct ArrowSchema *b)
{
    if (strcmp(a->format, b->format) != 0 || a->n_children != b->n_children ||
        (a->name == NULL) != (b->name == NULL) || (a->name && strcmp(a->name, b->name) != 0) ||
        (a->metadata == NULL) != (b->metadata == NULL)) {
        return 0;
    }
    if (a->metadata != NULL) {
        size_t na = aq__py_metadata_size(a->metadata), nb = aq__py_metadata_size(b->metadata);
        if (na != nb || memcmp(a->metadata, b->metadata, na) != 0) {
            return 0;
        }
    }
    for (int64_t i = 0; i < a->n_children; i++) {
        if (!lt_schema_equal(a->children[i], b->children[i])) {
            return 0;
        }
    }
    return 1;
}

static PyObject *lt_schema_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !Py_IS_TYPE(b, Py_TYPE(a))) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int eq = lt_schema_equal(&((lt_schema_obj *)a)->schema, &((lt_schema_obj *)b)->schema);
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *lt_schema_repr(lt_schema_obj *self)
{
    const struct ArrowSchema *s = &self->schema;
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    for (int64_t j = 0; j < s->n_children; j++) {
        char buf[256];
        lt_type_name(s->children[j], buf, sizeof buf);
        PyObject *line = PyUnicode_FromFormat("%s: %s", s->children[j]->name, buf);
        if (line == NULL || PyList_Append(parts, line) != 0) {
            Py_XDECREF(line);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(line);
    }
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *body = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (body == NULL) {
        return NULL;
    }
    PyObject *r = PyUnicode_FromFormat("arrow_quant_v2.Schema({%U})", body);
    Py_DECREF(body);
    return r;
}

static PyGetSetDef lt_schema_getset[] = {
    {"names", (getter)lt_schema_get_names, NULL, "Column names, in order.", NULL},
    {"types", (getter)lt_schema_get_types, NULL,
     "Column types as readable names (string, binary, list<float32>, ...).", NULL},
    {"metadata", (getter)lt_schema_get_metadata, NULL,
     "Schema key/value metadata as a dict of bytes to bytes, or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef lt_schema_methods[] = {{"__arrow_c_schema__",
                                           (PyCFunction)lt_schema_arrow_c_schema, METH_NOARGS,
                                           "Exports the schema as an 'arrow_schema' PyCapsule."},
                                          {NULL, NULL, 0, NULL}};

static PyType_Slot lt_schema_slots[] = {
    {Py_tp_dealloc, lt_schema_dealloc},
    {Py_tp_repr, lt_schema_repr},
    {Py_tp_richcompare, lt_schema_richcompare},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_getset, lt_schema_getset},
    {Py_tp_methods, lt_schema_methods},
    {Py_tp_doc, "The schema of a light result object: column names, types and metadata."},
    {0, NULL}};

PyType_Spec aq__py_schema_spec = {
    .name = "arrow_quant_v2.Schema",
    .basicsize = sizeof(lt_schema_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = lt_schema_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* RecordBatch                                                                                */
/* ------------------------------------------------------------------------------------------ */

typedef struct lt_batch_obj {
    PyObject_HEAD struct ArrowSchema schema;
    aq__py_holder *holder;
} lt_batch_obj;

PyObject *aq__py_batch_new(aqpy_state *st, struct ArrowSchema *schema, aq__py_holder *holder)
{
    lt_batch_obj *self = PyObject_New(lt_batch_obj, st->batch_type);
    if (self == NULL) {
        schema->release(schema);
        aq__py_holder_release(holder);
        return NULL;
    }
    self->schema = *schema;
    schema->release = NULL;
    self->holder = holder;
    return (PyObject *)self;
}

static void lt_batch_dealloc(lt_batch_obj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->schema.release != NULL) {
        self->schema.release(&self->schema);
    }
    aq__py_holder_release(self->holder);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *lt_batch_get_num_rows(lt_batch_obj *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(aq__py_holder_array(self->holder)->length);
}

static PyObject *lt_batch_get_num_columns(lt_batch_obj *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(self->schema.n_children);
}

static PyObject *lt_batch_get_column_names(lt_batch_obj *self, void *closure)
{
    (void)closure;
    return lt_schema_names(&self->schema);
}

static PyObject *lt_batch_get_schema(lt_batch_obj *self, void *closure)
{
    (void)closure;
    return lt_schema_new(aq__py_state_from_type(Py_TYPE(self)), &self->schema);
}

static Py_ssize_t lt_batch_len(lt_batch_obj *self)
{
    return (Py_ssize_t)aq__py_holder_array(self->holder)->length;
}

static PyObject *lt_batch_column(lt_batch_obj *self, PyObject *key)
{
    int64_t j = lt_find_column(&self->schema, key);
    if (j < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list != NULL &&
        lt_append_column(&self->schema, aq__py_holder_array(self->holder), j, list) != 0) {
        Py_CLEAR(list);
    }
    return list;
}

static PyObject *lt_batch_to_pylist(lt_batch_obj *self, PyObject *unused)
{
    (void)unused;
    PyObject *list = PyList_New(0);
    if (list != NULL &&
        lt_append_rows(&self->schema, aq__py_holder_array(self->holder), list) != 0) {
        Py_CLEAR(list);
    }
    return list;
}

static PyObject *lt_batch_to_pydict(lt_batch_obj *self, PyObject *unused)
{
    (void)unused;
    PyObject *dict = PyDict_New();
    for (int64_t j = 0; dict != NULL && j < self->schema.n_children; j++) {
        PyObject *list = PyList_New(0);
        if (list == NULL ||
            lt_append_column(&self->schema, aq__py_holder_array(self->holder), j, list) != 0 ||
            PyDict_SetItemString(dict, self->schema.children[j]->name, list) != 0) {
            Py_CLEAR(dict);
        }
        Py_XDECREF(list);
    }
    return dict;
}

/* __arrow_c_array__(requested_schema=None): the schema and a shared export of the array. The
 * requested schema is a best-effort request (PyCapsule interface); results have one fixed
 * schema, so it is not applied. */
static PyObject *lt_batch_arrow_c_array(lt_batch_obj *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:__arrow_c_array__", kwlist, &requested)) {
        return NULL;
    }
    struct ArrowSchema schema;
    struct ArrowArray array;
    if (aq__py_schema_copy(&self->schema, &schema) != 0) {
        return PyErr_NoMemory();
    }
    if (aq__py_holder_export(self->holder, &array) != 0) {
        schema.release(&schema);
        return PyErr_NoMemory();
    }
    PyObject *sc = aq__py_schema_capsule(&schema);
    if (sc == NULL) {
        array.release(&array);
        return NULL;
    }
    PyObject *ac = aq__py_array_capsule(&array);
    if (ac == NULL) {
        Py_DECREF(sc);
        return NULL;
    }
    PyObject *r = PyTuple_Pack(2, sc, ac);
    Py_DECREF(sc);
    Py_DECREF(ac);
    return r;
}

static PyObject *lt_stream_capsule_over(const struct ArrowSchema *schema,
                                        aq__py_holder *const *holders, size_t n, PyObject *args,
                                        PyObject *kwargs)
{
    static char *kwlist[] = {"requested_schema", NULL};
    PyObject *requested = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:__arrow_c_stream__", kwlist, &requested)) {
        return NULL;
    }
    struct ArrowArrayStream stream;
    if (aq__py_stream_over(schema, holders, n, &stream) != 0) {
        return PyErr_NoMemory();
    }
    return aq__py_stream_capsule(&stream);
}

static PyObject *lt_batch_arrow_c_stream(lt_batch_obj *self, PyObject *args, PyObject *kwargs)
{
    return lt_stream_capsule_over(&self->schema, &self->holder, 1, args, kwargs);
}

static PyObject *lt_batch_repr(lt_batch_obj *self)
{
    return PyUnicode_FromFormat("arrow_quant_v2.RecordBatch(num_rows=%lld, num_columns=%lld)",
                                (long long)aq__py_holder_array(self->holder)->length,
                                (long long)self->schema.n_children);
}

static PyGetSetDef lt_batch_getset[] = {
    {"num_rows", (getter)lt_batch_get_num_rows, NULL, "Number of rows.", NULL},
    {"num_columns", (getter)lt_batch_get_num_columns, NULL, "Number of columns.", NULL},
    {"column_names", (getter)lt_batch_get_column_names, NULL, "Column names, in order.", NULL},
    {"schema", (getter)lt_batch_get_schema, NULL, "The schema (arrow_quant_v2.Schema).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef lt_batch_methods[] = {
    {"column", (PyCFunction)lt_batch_column, METH_O,
     "column(name_or_index) -> list\n\nThe values of one column as a Python list."},
    {"to_pylist", (PyCFunction)lt_batch_to_pylist, METH_NOARGS,
     "to_pylist() -> list[dict]\n\nOne dict per row, keyed by column name."},
    {"to_pydict", (PyCFunction)lt_batch_to_pydict, METH_NOARGS,
     "to_pydict() -> dict[str, list]\n\nOne list per column, keyed by column name."},
    {"__arrow_c_array__", (PyCFunction)(void (*)(void))lt_batch_arrow_c_array,
     METH_VARARGS | METH_KEYWORDS,
     "Exports the batch as ('arrow_schema', 'arrow_array') PyCapsules (no copy)."},
    {"__arrow_c_stream__", (PyCFunction)(void (*)(void))lt_batch_arrow_c_stream,
     METH_VARARGS | METH_KEYWORDS,
     "Exports the batch as an 'arrow_array_stream' PyCapsule of one batch (no copy)."},
    {NULL, NULL, 0, NULL}};

static PyType_Slot lt_batch_slots[] = {
    {Py_tp_dealloc, lt_batch_dealloc},
    {Py_tp_repr, lt_batch_repr},
    {Py_sq_length, lt_batch_len},
    {Py_tp_getset, lt_batch_getset},
    {Py_tp_methods, lt_batch_methods},
    {Py_tp_doc, "A result record batch, returned when pyarrow is not importable.\n\n"
                "It speaks the Arrow PyCapsule interface, so pyarrow.record_batch(obj), "
                "polars.DataFrame(obj) or nanoarrow.Array(obj) take it without copying."},
    {0, NULL}};

PyType_Spec aq__py_batch_spec = {
    .name = "arrow_quant_v2.RecordBatch",
    .basicsize = sizeof(lt_batch_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = lt_batch_slots,
};

/* ------------------------------------------------------------------------------------------ */
/* Table                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct lt_table_obj {
    PyObject_HEAD struct ArrowSchema schema;
    aq__py_holder **holders;
    size_t n;
} lt_table_obj;

PyObject *aq__py_table_new(aqpy_state *st, struct ArrowSchema *schema,
                           aq__py_holder *const *holders, size_t n)
{
    lt_table_obj *self = PyObject_New(lt_table_obj, st->table_type);
    if (self == NULL) {
        schema->release(schema);
        return NULL;
    }
    self->schema = *schema;
    schema->release = NULL;
    self->n = 0;
    self->holders = n > 0 ? malloc(n * sizeof *self->holders) : NULL;
    if (n > 0 && self->holders == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    for (size_t i = 0; i < n; i++) {
        aq__py_holder_retain(holders[i]);
        self->holders[i] = holders[i];
    }
    self->n = n;
    return (PyObject *)self;
}

static void lt_table_dealloc(lt_table_obj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    if (self->schema.release != NULL) {
        self->schema.release(&self->schema);
    }
    for (size_t i = 0; i < self->n; i++) {
        aq__py_holder_release(self->holders[i]);
    }
    free(self->holders);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static int64_t lt_table_rows(const lt_table_obj *self)
{
    int64_t rows = 0;
    for (size_t i = 0; i < self->n; i++) {
        rows += aq__py_holder_array(self->holders[i])->length;
    }
    return rows;
}

static PyObject *lt_table_get_num_rows(lt_table_obj *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(lt_table_rows(self));
}

static PyObject *lt_table_get_num_columns(lt_table_obj *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(self->schema.n_children);
}

static PyObject *lt_table_get_column_names(lt_table_obj *self, void *closure)
{
    (void)closure;
    return lt_schema_names(&self->schema);
}

static PyObject *lt_table_get_schema(lt_table_obj *self, void *closure)
{
    (void)closure;
    return lt_schema_new(aq__py_state_from_type(Py_TYPE(self)), &self->schema);
}

static Py_ssize_t lt_table_len(lt_table_obj *self)
{
    return (Py_ssize_t)lt_table_rows(self);
}

static PyObject *lt_table_column(lt_table_obj *self, PyObject *key)
{
    int64_t j = lt_find_column(&self->schema, key);
    if (j < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < self->n; i++) {
        if (lt_append_column(&self->schema, aq__py_holder_array(self->holders[i]), j, list) != 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

static PyObject *lt_table_to_pylist(lt_table_obj *self, PyObject *unused)
{
    (void)unused;
    PyObject *list = PyList_New(0);
    for (size_t i = 0; list != NULL && i < self->n; i++) {
        if (lt_append_rows(&self->schema, aq__py_holder_array(self->holders[i]), list) != 0) {
            Py_CLEAR(list);
        }
    }
    return list;
}

static PyObject *lt_table_to_batches(lt_table_obj *self, PyObject *unused)
{
    (void)unused;
    aqpy_state *st = aq__py_state_from_type(Py_TYPE(self));
    PyObject *list = PyList_New((Py_ssize_t)self->n);
    for (size_t i = 0; list != NULL && i < self->n; i++) {
        struct ArrowSchema schema;
        if (aq__py_schema_copy(&self->schema, &schema) != 0) {
            Py_DECREF(list);
            return PyErr_NoMemory();
        }
        aq__py_holder_retain(self->holders[i]);
        PyObject *b = aq__py_batch_new(st, &schema, self->holders[i]);
        if (b == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, b);
    }
    return list;
}

static PyObject *lt_table_arrow_c_stream(lt_table_obj *self, PyObject *args, PyObject *kwargs)
{
    return lt_stream_capsule_over(&self->schema, self->holders, self->n, args, kwargs);
}

static PyObject *lt_table_repr(lt_table_obj *self)
{
    return PyUnicode_FromFormat(
        "arrow_quant_v2.Table(num_rows=%lld, num_columns=%lld, num_batches=%zu)",
        (long long)lt_table_rows(self), (long long)self->schema.n_children, self->n);
}

static PyGetSetDef lt_table_getset[] = {
    {"num_rows", (getter)lt_table_get_num_rows, NULL, "Number of rows, over all batches.", NULL},
    {"num_columns", (getter)lt_table_get_num_columns, NULL, "Number of columns.", NULL},
    {"column_names", (getter)lt_table_get_column_names, NULL, "Column names, in order.", NULL},
    {"schema", (getter)lt_table_get_schema, NULL, "The schema (arrow_quant_v2.Schema).", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PyMethodDef lt_table_methods[] = {
    {"column", (PyCFunction)lt_table_column, METH_O,
     "column(name_or_index) -> list\n\nThe values of one column, over all batches."},
    {"to_pylist", (PyCFunction)lt_table_to_pylist, METH_NOARGS,
     "to_pylist() -> list[dict]\n\nOne dict per row, keyed by column name."},
    {"to_batches", (PyCFunction)lt_table_to_batches, METH_NOARGS,
     "to_batches() -> list[RecordBatch]\n\nThe batches of the table (no copy)."},
    {"__arrow_c_stream__", (PyCFunction)(void (*)(void))lt_table_arrow_c_stream,
     METH_VARARGS | METH_KEYWORDS,
     "Exports the table as an 'arrow_array_stream' PyCapsule (no copy)."},
    {NULL, NULL, 0, NULL}};

static PyType_Slot lt_table_slots[] = {
    {Py_tp_dealloc, lt_table_dealloc},
    {Py_tp_repr, lt_table_repr},
    {Py_sq_length, lt_table_len},
    {Py_tp_getset, lt_table_getset},
    {Py_tp_methods, lt_table_methods},
    {Py_tp_doc, "A result table (a sequence of record batches), returned when pyarrow is not "
                "importable.\n\nIt speaks the Arrow PyCapsule interface (__arrow_c_stream__)."},
    {0, NULL}};

PyType_Spec aq__py_table_spec = {
    .name = "arrow_quant_v2.Table",
    .basicsize = sizeof(lt_table_obj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = lt_table_slots,
};

PyObject *aq__py_table_to_batch(aqpy_state *st, PyObject *table)
{
    lt_table_obj *t = (lt_table_obj *)table;
    if (t->n == 0) {
        Py_RETURN_NONE;
    }
    struct ArrowSchema schema;
    if (aq__py_schema_copy(&t->schema, &schema) != 0) {
        return PyErr_NoMemory();
    }
    if (t->n == 1) {
        aq__py_holder_retain(t->holders[0]);
        return aq__py_batch_new(st, &schema, t->holders[0]);
    }
    struct ArrowArray array;
    int rc = aq__py_concat(&t->schema, t->holders, t->n, &array);
    if (rc != 0) {
        schema.release(&schema);
        if (rc == -1) {
            return PyErr_NoMemory();
        }
        return PyErr_Format(st->error,
                            "cannot join the %zu result batches of this stream into one record "
                            "batch; use quantize_arrow for tables of several batches",
                            t->n);
    }
    aq__py_holder *h = aq__py_holder_create(&array);
    if (h == NULL) {
        schema.release(&schema);
        return PyErr_NoMemory();
    }
    return aq__py_batch_new(st, &schema, h);
}
