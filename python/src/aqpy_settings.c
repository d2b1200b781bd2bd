/*
 * The library's settings table and profiles, read by the Python side (DiffusionQuantConfig)
 * instead of keeping copies: _settings(), _profiles(), _settings_resolve(profile, given),
 * _setting_check(name, text).
 */
#include "aqpy.h"

static const char *const aqpy_setting_types[] = {"int", "float", "bool", "choice"};

static PyObject *aqpy_setting_dict(const aq_setting_info *i)
{
    PyObject *choices;
    if (i->choices != NULL) {
        PyObject *sep = PyUnicode_FromString(",");
        PyObject *text = PyUnicode_FromString(i->choices);
        PyObject *list = sep != NULL && text != NULL ? PyUnicode_Split(text, sep, -1) : NULL;
        Py_XDECREF(sep);
        Py_XDECREF(text);
        choices = list != NULL ? PyList_AsTuple(list) : NULL;
        Py_XDECREF(list);
        if (choices == NULL) {
            return NULL;
        }
    } else {
        choices = Py_NewRef(Py_None);
    }
    PyObject *d = Py_BuildValue("{s:s,s:s,s:d,s:d,s:O,s:O,s:N,s:s,s:z,s:O,s:s}", "name", i->name,
                                "type", aqpy_setting_types[i->type], "lower", i->lower, "upper",
                                i->upper, "upper_open", i->upper_open ? Py_True : Py_False,
                                "off_allowed", i->off_allowed ? Py_True : Py_False, "choices",
                                choices, "default", i->default_value, "flag", i->flag, "in_profile",
                                i->in_profile ? Py_True : Py_False, "help", i->help);
    return d;
}

static PyObject *aqpy_settings(PyObject *module, PyObject *unused)
{
    (void)unused;
    size_t n = aq_setting_count();
    PyObject *out = PyTuple_New((Py_ssize_t)n);
    if (out == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < n; k++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        aq_error err;
        if (aq_setting_at(k, &info, &err) != AQ_OK) {
            aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *d = aqpy_setting_dict(&info);
        if (d == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, (Py_ssize_t)k, d);
    }
    return out;
}

static PyObject *aqpy_profiles(PyObject *module, PyObject *unused)
{
    (void)unused;
    PyObject *out = PyDict_New();
    if (out == NULL) {
        return NULL;
    }
    for (size_t k = 0; k < AQ_PROFILE_COUNT; k++) {
        aq_profile p;
        aq_error err;
        if (aq_profile_at(k, &p, &err) != AQ_OK) {
            aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
            Py_DECREF(out);
            return NULL;
        }
        PyObject *v = Py_BuildValue("(Isndd)", p.bit_width, aq_scheme_name(p.scheme),
                                    (Py_ssize_t)p.group_size, p.min_cosine, p.target_bpw);
        if (v == NULL || PyDict_SetItemString(out, p.name, v) != 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
    }
    return out;
}

/* The value of one setting as a Python object: int, float or str by the setting's type. */
static PyObject *aqpy_setting_value(const aq_settings *s, const aq_setting_info *info,
                                    aq_error *err)
{
    if (info->type == AQ_SETTING_CHOICE) {
        const char *v;
        return aq_settings_get_text(s, info->name, &v, err) == AQ_OK ? PyUnicode_FromString(v)
                                                                     : NULL;
    }
    if (info->type == AQ_SETTING_FLOAT) {
        double v;
        return aq_settings_get_float(s, info->name, &v, err) == AQ_OK ? PyFloat_FromDouble(v)
                                                                      : NULL;
    }
    int64_t v;
    return aq_settings_get_int(s, info->name, &v, err) == AQ_OK ? PyLong_FromLongLong(v) : NULL;
}

/* _settings_resolve(profile, given): the library's settings with `given` ({name: text}, set in
 * order) and then the profile applied (explicit values win), checked together; {name: value}
 * of every setting, or QuantizationError naming the setting. */
static PyObject *aqpy_settings_resolve(PyObject *module, PyObject *args)
{
    const char *profile;
    PyObject *given;
    if (!PyArg_ParseTuple(args, "sO!:_settings_resolve", &profile, &PyDict_Type, &given)) {
        return NULL;
    }
    aqpy_state *st = (aqpy_state *)PyModule_GetState(module);
    aq_settings *s = NULL;
    aq_error err;
    PyObject *out = NULL, *key, *value;
    Py_ssize_t pos = 0;
    if (aq_settings_create(&s, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        return NULL;
    }
    while (PyDict_Next(given, &pos, &key, &value)) {
        const char *k = PyUnicode_AsUTF8(key), *v = PyUnicode_AsUTF8(value);
        if (k == NULL || v == NULL) {
            goto done;
        }
        if (aq_settings_set_text(s, k, v, &err) != AQ_OK) {
            aq__py_raise(st, &err);
            goto done;
        }
    }
    if (aq_settings_apply_profile(s, profile, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        goto done;
    }
    if ((out = PyDict_New()) == NULL) {
        goto done;
    }
    for (size_t k = 0; k < aq_setting_count(); k++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        PyObject *v = NULL;
        if (aq_setting_at(k, &info, &err) != AQ_OK ||
            (v = aqpy_setting_value(s, &info, &err)) == NULL) {
            if (!PyErr_Occurred()) {
                aq__py_raise(st, &err);
            }
            Py_CLEAR(out);
            goto done;
        }
        int rc = PyDict_SetItemString(out, info.name, v);
        Py_DECREF(v);
        if (rc != 0) {
            Py_CLEAR(out);
            goto done;
        }
    }
done:
    aq_settings_free(s);
    return out;
}

/* _setting_check(name, text): the library's check of one value given as text; the value as
 * the library reads it back (int, float or str), or QuantizationError with its message. */
static PyObject *aqpy_setting_check(PyObject *module, PyObject *args)
{
    const char *name, *text;
    if (!PyArg_ParseTuple(args, "ss:_setting_check", &name, &text)) {
        return NULL;
    }
    aq_settings *s = NULL;
    aq_error err;
    aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
    PyObject *out = NULL;
    if (aq_setting_find(name, &info, &err) != AQ_OK || aq_settings_create(&s, &err) != AQ_OK ||
        aq_settings_set_text(s, name, text, &err) != AQ_OK) {
        aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
        goto done;
    }
    out = aqpy_setting_value(s, &info, &err);
    if (out == NULL && !PyErr_Occurred()) {
        aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
    }
done:
    aq_settings_free(s);
    return out;
}

/* ---- the keywords of the entry points, from the table ---- */

static long aqpy_kw_index(const char *const *v, const char *name)
{
    for (long i = 0; v != NULL && v[i] != NULL; i++) {
        if (strcmp(v[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

/* One keyword's value into its setting: the Python value's text (a bool as 1 or 0), parsed
 * and checked by the table as the command's flags are. */
static int aqpy_kw_setting(aqpy_state *st, aq_settings *s, const aq_setting_info *info,
                           PyObject *value)
{
    static const char *const want[] = {"an int", "a float", "a bool", "a str"};
    int is_int = PyIndex_Check(value) && !PyBool_Check(value);
    int ok = info->type == AQ_SETTING_INT     ? is_int
             : info->type == AQ_SETTING_FLOAT ? is_int || PyFloat_Check(value)
             : info->type == AQ_SETTING_BOOL  ? PyIndex_Check(value)
                                              : PyUnicode_Check(value);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "%s must be %s or None, not %.100s", info->name,
                     want[info->type], Py_TYPE(value)->tp_name);
        return -1;
    }
    PyObject *text;
    if (PyBool_Check(value)) {
        text = PyUnicode_FromString(value == Py_True ? "1" : "0");
    } else if (PyIndex_Check(value)) {
        PyObject *i = PyNumber_Index(value);
        text = i != NULL ? PyObject_Str(i) : NULL;
        Py_XDECREF(i);
    } else if (PyFloat_Check(value)) {
        PyObject *f = PyFloat_FromDouble(PyFloat_AS_DOUBLE(value));
        text = f != NULL ? PyObject_Repr(f) : NULL; /* round-trips, as the library reads it */
        Py_XDECREF(f);
    } else {
        text = PyObject_Str(value);
    }
    const char *t = text != NULL ? PyUnicode_AsUTF8(text) : NULL;
    if (t == NULL) {
        Py_XDECREF(text);
        return -1;
    }
    aq_error err;
    aq_status rc = aq_settings_set_text(s, info->name, t, &err);
    Py_DECREF(text);
    if (rc != AQ_OK) {
        aq__py_raise(st, &err);
        return -1;
    }
    return 0;
}

int aq__py_kw_parse(PyObject *module, const aq__py_kwspec *spec, PyObject *args, PyObject *kwargs,
                    PyObject **pos, PyObject **own, aq_settings **out)
{
    aqpy_state *st = (aqpy_state *)PyModule_GetState(module);
    size_t n_pos = 0, n_own = 0;
    while (spec->positional[n_pos] != NULL) {
        pos[n_pos++] = NULL;
    }
    while (spec->own[n_own] != NULL) {
        own[n_own++] = NULL;
    }
    *out = NULL;
    Py_ssize_t n_args = PyTuple_GET_SIZE(args);
    if ((size_t)n_args > n_pos) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zu positional arguments but %zd were given",
                     spec->fname, n_pos, n_args);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n_args; i++) {
        pos[i] = PyTuple_GET_ITEM(args, i);
    }
    aq_settings *s = NULL;
    aq_error err;
    if (aq_settings_create(&s, &err) != AQ_OK) {
        aq__py_raise(st, &err);
        return -1;
    }
    PyObject *key, *value;
    Py_ssize_t at = 0;
    while (kwargs != NULL && PyDict_Next(kwargs, &at, &key, &value)) {
        const char *name = PyUnicode_AsUTF8(key);
        if (name == NULL) {
            goto fail;
        }
        long k;
        if ((k = aqpy_kw_index(spec->positional, name)) >= 0) {
            if (pos[k] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             spec->fname, name);
                goto fail;
            }
            pos[k] = value;
            continue;
        }
        if ((k = aqpy_kw_index(spec->own, name)) >= 0) {
            own[k] = value;
            continue;
        }
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        if (aq_setting_find(name, &info, &err) != AQ_OK) {
            PyErr_Format(PyExc_TypeError,
                         "%s() got an unexpected keyword argument '%s' (it takes its own "
                         "arguments and the settings of _settings())",
                         spec->fname, name);
            goto fail;
        }
        if (value == Py_None) {
            continue;
        }
        if (aqpy_kw_setting(st, s, &info, value) != 0) {
            goto fail;
        }
        if (spec->applies != NULL && aqpy_kw_index(spec->applies, name) < 0) {
            err.code = AQ_INVALID_ARGUMENT;
            snprintf(err.message, sizeof err.message, "%s() does not apply the setting %s: %s",
                     spec->fname, name, spec->why);
            aq__py_raise(st, &err);
            goto fail;
        }
    }
    for (size_t i = 0; i < n_pos; i++) {
        if (pos[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s' (pos %zu)",
                         spec->fname, spec->positional[i], i + 1);
            goto fail;
        }
    }
    *out = s;
    return 0;
fail:
    aq_settings_free(s);
    return -1;
}

int aq__py_kw_profile(PyObject *module, aq_settings *s)
{
    aq_error err;
    const char *profile;
    char name[64];
    aq_status rc = aq_settings_get_text(s, "profile", &profile, &err);
    if (rc == AQ_OK) {
        snprintf(name, sizeof name, "%s", profile); /* applying the profile rewrites it */
        rc = aq_settings_apply_profile(s, name, &err);
    }
    if (rc != AQ_OK) {
        aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
        return -1;
    }
    return 0;
}

static PyObject *aqpy_names_tuple(const char *const *v)
{
    Py_ssize_t n = 0;
    while (v[n] != NULL) {
        n++;
    }
    PyObject *t = PyTuple_New(n);
    for (Py_ssize_t i = 0; t != NULL && i < n; i++) {
        PyObject *x = PyUnicode_FromString(v[i]);
        if (x == NULL) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, i, x);
    }
    return t;
}

void aq__py_applies_fill(const char **out, size_t cap, int gguf)
{
    size_t n = 0;
    for (size_t i = 0; i < aq_setting_count() && n + 1 < cap; i++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        if (aq_setting_at(i, &info, NULL) == AQ_OK && (gguf ? info.gguf : info.model_file)) {
            out[n++] = info.name;
        }
    }
    out[n] = NULL;
}

/* _keywords(): {function: (positional, own, applies or None)}. */
static PyObject *aqpy_keywords(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    const aq__py_kwspec *specs[] = {&aq__py_quantize_model_kw, &aq__py_quantize_gguf_kw};
    PyObject *out = PyDict_New();
    for (size_t i = 0; out != NULL && i < sizeof specs / sizeof specs[0]; i++) {
        PyObject *applies =
            specs[i]->applies != NULL ? aqpy_names_tuple(specs[i]->applies) : Py_NewRef(Py_None);
        PyObject *v = applies == NULL
                          ? NULL
                          : Py_BuildValue("(NNN)", aqpy_names_tuple(specs[i]->positional),
                                          aqpy_names_tuple(specs[i]->own), applies);
        if (v == NULL || PyDict_SetItemString(out, specs[i]->fname, v) != 0) {
            Py_XDECREF(v);
            Py_CLEAR(out);
            break;
        }
        Py_DECREF(v);
    }
    return out;
}

PyMethodDef aq__py_settings_methods[] = {
    {"_settings", aqpy_settings, METH_NOARGS,
     "_settings() -> tuple of dicts: the library's settings table (name, type, lower, upper, "
     "upper_open, off_allowed, choices, default, flag, in_profile, help)."},
    {"_profiles", aqpy_profiles, METH_NOARGS,
     "_profiles() -> {name: (bit_width, scheme, group_size, min_cosine, target_bpw)}: the "
     "library's profiles."},
    {"_settings_resolve", aqpy_settings_resolve, METH_VARARGS,
     "_settings_resolve(profile, {name: text}) -> {name: value} of every setting: the given "
     "values, then the profile (explicit values win), checked together by the library."},
    {"_setting_check", aqpy_setting_check, METH_VARARGS,
     "_setting_check(name, text) -> the value as the library reads it, or QuantizationError "
     "naming the setting and what it accepts."},
    {"_keywords", aqpy_keywords, METH_NOARGS,
     "_keywords() -> {function: (positional, own, applies)}: the arguments of the entry points "
     "whose other keywords are the settings of _settings(); applies: the settings the function "
     "applies (None: every one)."},
    {NULL, NULL, 0, NULL},
};

/* ---- what the model-level entry points share ---- */

static int aqpy_fail(PyObject *module, const aq_error *err)
{
    aq__py_raise((aqpy_state *)PyModule_GetState(module), err);
    return -1;
}

static void aqpy_value_error(PyObject *module, const char *fmt, const char *what)
{
    aq_error err;
    err.code = AQ_INVALID_ARGUMENT;
    snprintf(err.message, sizeof err.message, fmt, what);
    aq__py_raise((aqpy_state *)PyModule_GetState(module), &err);
}

int aq__py_setting_float(aqpy_state *st, PyObject *obj, const char *keyword, const char *setting,
                         double *out)
{
    *out = 0.0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    double v = PyBool_Check(obj) ? -1.0 : PyFloat_AsDouble(obj);
    if (PyBool_Check(obj) || (v == -1.0 && PyErr_Occurred())) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a float or None, not %.100s", keyword,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    aq_settings *s = NULL;
    aq_error err;
    aq_status rc = aq_settings_create(&s, &err);
    if (rc == AQ_OK) {
        rc = aq_settings_set_float(s, setting, v, &err);
    }
    aq_settings_free(s);
    if (rc != AQ_OK) {
        /* "Invalid <setting>: ..." is about the keyword the caller wrote. */
        size_t n = strlen(setting);
        if (strcmp(keyword, setting) != 0 && strncmp(err.message, "Invalid ", 8) == 0 &&
            strncmp(err.message + 8, setting, n) == 0) {
            char msg[AQ_ERROR_MESSAGE_SIZE];
            snprintf(msg, sizeof msg, "Invalid %s%s", keyword, err.message + 8 + n);
            snprintf(err.message, sizeof err.message, "%s", msg);
        }
        aq__py_raise(st, &err);
        return -1;
    }
    *out = v;
    return 0;
}

/* A sequence of str as UTF-8 pointers borrowed from *keep (a new reference the caller
 * drops). None gives none. */
int aq__py_strings(PyObject *module, PyObject *obj, const char *what, PyObject **keep,
                   const char ***out, size_t *n)
{
    *keep = NULL;
    *out = NULL;
    *n = 0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        aqpy_value_error(module, "%s must be a sequence of strings, not one string", what);
        return -1;
    }
    PyObject *seq = PySequence_Fast(obj, "a sequence of strings");
    if (seq == NULL) {
        return -1;
    }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    const char **v = malloc(((size_t)len + 1) * sizeof *v);
    if (v == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyUnicode_Check(item) || (v[i] = PyUnicode_AsUTF8(item)) == NULL) {
            if (!PyErr_Occurred()) {
                aqpy_value_error(module, "%s must hold strings only", what);
            }
            free(v);
            Py_DECREF(seq);
            return -1;
        }
    }
    *keep = seq;
    *out = v;
    *n = (size_t)len;
    return 0;
}

int aq__py_settings_profile(PyObject *module, aq_settings *s, aq_ctx *ctx, aq_profile *out)
{
    aq_error err;
    aq_status st;
    int64_t bits = 0, group = 0;
    const char *prof_name = NULL, *sch_name = NULL;
    aq_profile prof;
    if ((st = aq_settings_get_text(s, "profile", &prof_name, &err)) != AQ_OK ||
        (st = aq_profile_get(prof_name, &prof, &err)) != AQ_OK ||
        (st = aq_settings_get_int(s, "bit_width", &bits, &err)) != AQ_OK ||
        (st = aq_settings_get_int(s, "group_size", &group, &err)) != AQ_OK ||
        (st = aq_settings_get_text(s, "scheme", &sch_name, &err)) != AQ_OK ||
        (st = aq_scheme_from_name(sch_name, &prof.scheme, &err)) != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    prof.bit_width = (unsigned)bits;
    prof.group_size = (size_t)group;
    /* The rules give each tensor its bits and scheme; the context's scheme is the budget's
     * candidate and its group size the layout of schemes that do not fix their own. */
    aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
    if ((st = aq_scheme_get_info(prof.scheme, &info, &err)) != AQ_OK ||
        (ctx != NULL &&
         ((st = aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, (int64_t)prof.scheme, &err)) != AQ_OK ||
          (info.fixed_group_size == 0 &&
           (st = aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, group, &err)) != AQ_OK)))) {
        return aqpy_fail(module, &err);
    }
    *out = prof;
    return 0;
}

/* The index of a choice setting's value, checked by the table (its message on error). */
int aq__py_run_choice(PyObject *module, const char *setting, const char *value, int *out)
{
    aq_settings *s = NULL;
    aq_error err;
    int64_t k = 0;
    aq_status st;
    if ((st = aq_settings_create(&s, &err)) == AQ_OK &&
        (st = aq_settings_set_text(s, setting, value, &err)) == AQ_OK) {
        st = aq_settings_get_int(s, setting, &k, &err);
    }
    aq_settings_free(s);
    if (st != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    *out = (int)k;
    return 0;
}

int aq__py_run_profile(PyObject *module, const char *profile, unsigned bit_width,
                       const char *scheme, size_t group_size, aq_ctx *ctx, aq_profile *out)
{
    aq_settings *s = NULL;
    aq_error err;
    aq_status st;
    if ((st = aq_settings_create(&s, &err)) != AQ_OK ||
        (bit_width != 0 && (st = aq_settings_set_int(s, "bit_width", bit_width, &err)) != AQ_OK) ||
        (scheme != NULL && (st = aq_settings_set_text(s, "scheme", scheme, &err)) != AQ_OK) ||
        (group_size != 0 &&
         (st = aq_settings_set_int(s, "group_size", (int64_t)group_size, &err)) != AQ_OK) ||
        (st = aq_settings_apply_profile(s, profile, &err)) != AQ_OK) {
        aq_settings_free(s);
        return aqpy_fail(module, &err);
    }
    int rc = aq__py_settings_profile(module, s, ctx, out);
    aq_settings_free(s);
    return rc;
}

int aq__py_run_rules(PyObject *module, const aq_profile *prof, const char *family_name,
                     const char *const *names, size_t n, const char *const *keep, size_t n_keep,
                     const char *const *bits_for, size_t n_bits, aq_rules **out)
{
    aq_error err;
    aq_family family;
    aq_rules *rules = NULL;
    aq_status st = aq_family_from_name(family_name, &family, &err);
    if (st != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    if (family == AQ_FAMILY_AUTO && n == 0) {
        family = AQ_FAMILY_GENERIC; /* nothing to detect from (an empty input) */
    }
    if ((st = aq_rules_create(family, prof, names, n, &rules, &err)) != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    for (size_t i = 0; i < n_keep + n_bits && st == AQ_OK; i++) {
        st = i < n_keep ? aq_rules_add_override(rules, keep[i], AQ_RULES_KEEP, &err)
                        : aq_rules_add_override_spec(rules, bits_for[i - n_keep], &err);
    }
    if (st != AQ_OK) {
        aq_rules_free(rules);
        return aqpy_fail(module, &err);
    }
    *out = rules;
    return 0;
}

int aq__py_run_calib(PyObject *module, PyObject *calibration, const char *combine, aq_calib **out)
{
    aq_error err;
    aq_calib *calib = NULL;
    aq_settings *s = NULL;
    int64_t how = 0;
    aq_status st;
    if ((st = aq_settings_create(&s, &err)) != AQ_OK ||
        (st = aq_settings_set_text(s, "calibration_combine", combine, &err)) != AQ_OK ||
        (st = aq_settings_get_int(s, "calibration_combine", &how, &err)) != AQ_OK ||
        (st = aq_calib_create(&calib, &err)) != AQ_OK) {
        goto fail;
    }
    if (PyUnicode_Check(calibration) || PyBytes_Check(calibration) ||
        PyObject_HasAttrString(calibration, "__fspath__")) {
        PyObject *pb = NULL;
        if (!PyUnicode_FSConverter(calibration, &pb)) {
            goto error;
        }
        const char *path = PyBytes_AS_STRING(pb);
        PyThreadState *ts = PyEval_SaveThread();
        st = aq_calib_add_ipc_file(calib, path, &err);
        PyEval_RestoreThread(ts);
        Py_DECREF(pb);
        if (st != AQ_OK) {
            goto fail;
        }
    } else if (PyObject_HasAttrString(calibration, "__arrow_c_stream__")) {
        if (aq__py_calib_from_stream(module, calib, calibration) != 0) {
            goto error;
        }
    } else {
        PyErr_Format(PyExc_TypeError,
                     "calibration must be a calibration table (an object with "
                     "__arrow_c_stream__, such as CalibrationResult.table) or the path of an "
                     "Arrow IPC file, not %.100s",
                     Py_TYPE(calibration)->tp_name);
        goto error;
    }
    /* The choices of calibration_combine follow aq_calib_combine. */
    if ((st = aq_calib_finish(calib, (aq_calib_combine)how, &err)) != AQ_OK) {
        goto fail;
    }
    aq_settings_free(s);
    *out = calib;
    return 0;
fail:
    aqpy_fail(module, &err);
error:
    aq_settings_free(s);
    aq_calib_free(calib);
    return -1;
}

int aq__py_run_open(PyObject *module, const char *src, int threads, aq_ctx **ctx, aq_model **model,
                    const char ***names, size_t *n)
{
    aq_error err;
    aq_status st;
    if ((st = aq_ctx_create(ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(*ctx, AQ_PARAM_THREADS, threads, &err)) != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    PyThreadState *ts = PyEval_SaveThread();
    st = aq_model_open(src, model, &err);
    PyEval_RestoreThread(ts);
    if (st != AQ_OK) {
        return aqpy_fail(module, &err);
    }
    *n = aq_model_count(*model);
    if ((*names = calloc(*n + 1, sizeof **names)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < *n; i++) {
        (*names)[i] = aq_model_tensor(*model, i)->name;
    }
    return 0;
}
