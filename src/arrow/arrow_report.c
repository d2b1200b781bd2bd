/* The skipped-row report of continue-on-error mode. */
#include "arrow_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct report_entry {
    size_t row;
    char *name;
    aq_status code;
    char *message;
} report_entry;

typedef struct report_choice {
    size_t row;
    char *name;
    aq_qset_choice choice;
} report_choice;

struct aq_report {
    report_entry *entries;
    size_t count;
    size_t capacity;
    report_choice *choices;
    size_t n_choices;
    size_t choices_capacity;
};

aq_status aq_report_create(aq_report **out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_report_create: NULL output pointer");
    }
    aq_report *r = calloc(1, sizeof *r);
    if (r == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "aq_report_create: out of memory");
    }
    *out = r;
    return AQ_OK;
}

void aq_report_free(aq_report *report)
{
    if (report == NULL) {
        return;
    }
    for (size_t i = 0; i < report->count; i++) {
        free(report->entries[i].name);
        free(report->entries[i].message);
    }
    free(report->entries);
    for (size_t i = 0; i < report->n_choices; i++) {
        free(report->choices[i].name);
    }
    free(report->choices);
    free(report);
}

size_t aq_report_count(const aq_report *report)
{
    return report != NULL ? report->count : 0;
}

aq_status aq_report_get(const aq_report *report, size_t i, size_t *row, const char **layer_name,
                        aq_status *code, const char **message, aq_error *err)
{
    if (report == NULL || i >= report->count) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_report_get: entry %zu out of range (%zu entries)", i,
                             aq_report_count(report));
    }
    const report_entry *e = &report->entries[i];
    if (row != NULL) {
        *row = e->row;
    }
    if (layer_name != NULL) {
        *layer_name = e->name;
    }
    if (code != NULL) {
        *code = e->code;
    }
    if (message != NULL) {
        *message = e->message;
    }
    return AQ_OK;
}

size_t aq_report_choice_count(const aq_report *report)
{
    return report != NULL ? report->n_choices : 0;
}

aq_status aq_report_choice_get(const aq_report *report, size_t i, size_t *row,
                               const char **layer_name, aq_qset_choice *choice, aq_error *err)
{
    if (report == NULL || i >= report->n_choices) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "aq_report_choice_get: entry %zu out of range (%zu entries)", i,
                             aq_report_choice_count(report));
    }
    const report_choice *c = &report->choices[i];
    if (row != NULL) {
        *row = c->row;
    }
    if (layer_name != NULL) {
        *layer_name = c->name;
    }
    if (choice != NULL) {
        *choice = c->choice;
    }
    return AQ_OK;
}

aq_status aq__arrow_report_choice(aq_report *report, size_t row, const char *layer_name,
                                  const aq_qset_choice *choice, aq_error *err)
{
    if (report == NULL) {
        return AQ_OK;
    }
    if (report->n_choices == report->choices_capacity) {
        size_t cap = report->choices_capacity ? report->choices_capacity * 2 : 16;
        report_choice *c = realloc(report->choices, cap * sizeof *c);
        if (c == NULL) {
            return aq__error_set(err, AQ_NO_MEMORY, "out of memory recording a row's choice");
        }
        report->choices = c;
        report->choices_capacity = cap;
    }
    report_choice *c = &report->choices[report->n_choices];
    c->row = row;
    c->choice = *choice;
    c->name = aq__strdup(layer_name != NULL ? layer_name : "");
    if (c->name == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory recording a row's choice");
    }
    report->n_choices++;
    return AQ_OK;
}

aq_status aq__arrow_report_add(aq_report *report, size_t row, const char *layer_name,
                               aq_status code, const char *message)
{
    if (report == NULL) {
        return AQ_OK;
    }
    if (report->count == report->capacity) {
        size_t cap = report->capacity ? report->capacity * 2 : 16;
        report_entry *e = realloc(report->entries, cap * sizeof *e);
        if (e == NULL) {
            return AQ_NO_MEMORY;
        }
        report->entries = e;
        report->capacity = cap;
    }
    report_entry *e = &report->entries[report->count];
    e->row = row;
    e->code = code;
    e->name = aq__strdup(layer_name != NULL ? layer_name : "");
    e->message = aq__strdup(message);
    if (e->name == NULL || e->message == NULL) {
        free(e->name);
        free(e->message);
        return AQ_NO_MEMORY;
    }
    report->count++;
    return AQ_OK;
}

aq_status aq__arrow_row_error(const aq_batch_options *opts, char **message, aq_status *status,
                              const aq_error *row_err, aq_error *err)
{
    if (opts == NULL || !opts->continue_on_error) {
        if (err != NULL) {
            *err = *row_err;
        }
        return row_err->code;
    }
    *message = aq__strdup(row_err->message);
    if (*message == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory recording a skipped row");
    }
    *status = row_err->code;
    return AQ_OK;
}

aq_status aq__arrow_row_skip(const aq_batch_options *opts, size_t row, const char *name,
                             aq_status code, const char *message, aq_error *err)
{
    if (opts == NULL || !opts->continue_on_error) {
        return aq__error_set(err, code, "%s", message);
    }
    if (aq__arrow_report_add(opts->report, row, name, code, message) != AQ_OK) {
        return aq__error_set(err, AQ_NO_MEMORY, "out of memory recording a skipped row");
    }
    return AQ_OK;
}

aq_status aq__arrow_progress(const aq_batch_options *opts, arw_run *run, size_t elements,
                             aq_error *err)
{
    run->rows_done++;
    run->elements_done += elements;
    if (opts != NULL && opts->progress != NULL &&
        opts->progress(opts->progress_user, run->rows_done, run->elements_done) != 0) {
        return aq__error_set(err, AQ_CANCELLED, "cancelled by the progress callback after %zu rows",
                             run->rows_done);
    }
    return AQ_OK;
}

void aq__arrow_format_shape(const int64_t *shape, size_t ndim, char *buf, size_t size)
{
    size_t at = (size_t)snprintf(buf, size, "[");
    for (size_t i = 0; i < ndim && at < size; i++) {
        at += (size_t)snprintf(buf + at, size - at, i ? ", %" PRId64 : "%" PRId64, shape[i]);
    }
    if (at < size) {
        snprintf(buf + at, size - at, "]");
    }
}
