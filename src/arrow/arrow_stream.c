/*
 * C Stream Interface: an output stream that owns an input stream and turns each input batch
 * into one result batch when the consumer asks for it. Nothing is read ahead, so memory holds
 * one input batch and its result at a time, whatever the size of the table.
 */
#include "arrow_internal.h"
#include "quant_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct stream_private {
    aq_ctx *ctx;
    bool dequantize;
    struct ArrowArrayStream input;
    struct ArrowSchema in_schema; /* the input's schema: batches arrive without one */
    aq_batch_options opts;
    bool has_opts;
    arw_run run;
    int error; /* errno-style code of the first failure; sticky */
    bool finished;
    char last_error[AQ_ERROR_MESSAGE_SIZE];
} stream_private;

static int stream_errno(aq_status st)
{
    switch (st) {
    case AQ_OK:
        return 0;
    case AQ_NO_MEMORY:
        return ENOMEM;
    case AQ_IO:
        return EIO;
    case AQ_UNSUPPORTED:
        return ENOTSUP;
    case AQ_OVERFLOW:
        return EOVERFLOW;
    case AQ_CANCELLED:
        return ECANCELED;
    default:
        return EINVAL;
    }
}

/* The input stream's own message for a failed call, or a generic one. */
static void stream_input_error(stream_private *p, const char *call, int rc, aq_error *err)
{
    const char *msg = NULL;
    if (p->input.get_last_error != NULL) {
        msg = p->input.get_last_error(&p->input);
    }
    aq__error_set(err, rc == ENOMEM ? AQ_NO_MEMORY : AQ_IO, "input stream: %s failed (%s): %s",
                  call, strerror(rc), msg != NULL ? msg : "no message");
}

static void stream_fail(stream_private *p, int rc, const aq_error *e)
{
    p->error = rc;
    memcpy(p->last_error, e->message, sizeof p->last_error);
}

static int stream_get_schema(struct ArrowArrayStream *self, struct ArrowSchema *out)
{
    stream_private *p = self->private_data;
    aq_error e;
    aq_error_clear(&e);
    aq_status st = p->dequantize ? aq__arrow_restored_schema(out, &e)
                                 : aq__arrow_result_schema(p->ctx, p->has_opts ? &p->opts : NULL,
                                                           false, out, &e);
    if (st != AQ_OK) {
        memcpy(p->last_error, e.message, sizeof p->last_error);
        return stream_errno(st);
    }
    return 0;
}

static int stream_get_next(struct ArrowArrayStream *self, struct ArrowArray *out)
{
    stream_private *p = self->private_data;
    if (p->error != 0) {
        return p->error;
    }
    if (p->finished) {
        out->release = NULL;
        return 0;
    }
    aq_error e;
    aq_error_clear(&e);
    struct ArrowArray in;
    memset(&in, 0, sizeof in);
    int rc = p->input.get_next(&p->input, &in);
    if (rc != 0) {
        stream_input_error(p, "get_next", rc, &e);
        stream_fail(p, rc, &e);
        return rc;
    }
    if (in.release == NULL) {
        p->finished = true;
        out->release = NULL;
        return 0;
    }
    const aq_batch_options *opts = p->has_opts ? &p->opts : NULL;
    aq_status st;
    if (p->dequantize) {
        st = aq__arrow_dequantize_batch(p->ctx, &p->in_schema, &in, opts, &p->run, out, &e);
    } else {
        st = aq__arrow_quantize_batch(p->ctx, &p->in_schema, &in, opts, &p->run,
                                      AQ__ARROW_BINARY_LIMIT, false, out, NULL, &e);
    }
    in.release(&in);
    if (st != AQ_OK) {
        stream_fail(p, stream_errno(st), &e);
        return p->error;
    }
    return 0;
}

static const char *stream_get_last_error(struct ArrowArrayStream *self)
{
    stream_private *p = self->private_data;
    return p->last_error[0] != '\0' ? p->last_error : NULL;
}

static void stream_release(struct ArrowArrayStream *self)
{
    if (self == NULL || self->release == NULL) {
        return;
    }
    stream_private *p = self->private_data;
    if (p->input.release != NULL) {
        p->input.release(&p->input);
    }
    aq__schema_release_if(&p->in_schema);
    free(p);
    self->release = NULL;
    self->private_data = NULL;
}

static aq_status stream_open(aq_ctx *ctx, struct ArrowArrayStream *input,
                             const aq_batch_options *opts, bool dequantize,
                             struct ArrowArrayStream *out, aq_error *err)
{
    const char *fn = dequantize ? "aq_stream_dequantize" : "aq_stream_quantize";
    if (input == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: input stream is NULL", fn);
    }
    if (input->release == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the input stream was already released",
                             fn);
    }
    aq_status st = AQ_OK;
    stream_private *p = NULL;
    if (ctx == NULL || out == NULL) {
        st = aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: NULL argument", fn);
        goto done;
    }
    if (input->get_schema == NULL || input->get_next == NULL) {
        st = aq__error_set(err, AQ_INVALID_ARGUMENT, "%s: the input stream has NULL callbacks", fn);
        goto done;
    }
    aq_batch_options own;
    if ((st = AQ__OPTS_READ(aq_batch_options, calib, own, opts, err)) != AQ_OK) {
        goto done;
    }
    opts = opts != NULL ? &own : NULL;
    if (!dequantize && (st = aq__arrow_check_calib(opts, err)) != AQ_OK) {
        goto done;
    }
    if (!dequantize && opts != NULL &&
        (opts->target_bpw > 0.0 || opts->target_bpw == AQ_TARGET_BPW_PROFILE) &&
        opts->budget_schemes != NULL) {
        /* The schema names one scheme: the rules' profile's with rules, else the context's. */
        aq_scheme base;
        unsigned bits;
        size_t group;
        aq__arrow_base_params(ctx, opts, &base, &bits, &group);
        for (size_t i = 0; i < opts->n_budget_schemes; i++) {
            if (opts->budget_schemes[i] != base) {
                st = aq__error_set(err, AQ_UNSUPPORTED,
                                   "%s: target_bpw with budget schemes other than %s (the %s) "
                                   "needs aq_batch_quantize (a stream's schema, scheme included, "
                                   "is fixed before its first batch)",
                                   fn, aq_scheme_name(base),
                                   opts->rules != NULL ? "rules' profile's scheme"
                                                       : "context's scheme");
                goto done;
            }
        }
    }
    p = calloc(1, sizeof *p);
    if (p == NULL) {
        st = aq__error_set(err, AQ_NO_MEMORY, "%s: out of memory", fn);
        goto done;
    }
    p->ctx = ctx;
    p->dequantize = dequantize;
    if (opts != NULL) {
        p->opts = *opts;
        p->has_opts = true;
    }
    /* The input is ours from here on, whatever happens. */
    p->input = *input;
    input->release = NULL;
    int rc = p->input.get_schema(&p->input, &p->in_schema);
    if (rc != 0) {
        p->in_schema.release = NULL;
        stream_input_error(p, "get_schema", rc, err);
        st = rc == ENOMEM ? AQ_NO_MEMORY : AQ_IO;
        goto done;
    }
    st = dequantize ? aq__arrow_check_result_schema(&p->in_schema, err)
                    : aq__arrow_check_input_schema(&p->in_schema, err);
    if (st != AQ_OK) {
        goto done;
    }
    out->get_schema = stream_get_schema;
    out->get_next = stream_get_next;
    out->get_last_error = stream_get_last_error;
    out->release = stream_release;
    out->private_data = p;
    p = NULL;
done:
    if (st != AQ_OK) {
        if (p != NULL) {
            struct ArrowArrayStream tmp = {NULL, NULL, NULL, stream_release, p};
            stream_release(&tmp);
        } else if (input->release != NULL) {
            input->release(input);
        }
    }
    return st;
}

aq_status aq_stream_quantize(aq_ctx *ctx, struct ArrowArrayStream *input,
                             const aq_batch_options *opts, struct ArrowArrayStream *out,
                             aq_error *err)
{
    return stream_open(ctx, input, opts, false, out, err);
}

aq_status aq_stream_dequantize(aq_ctx *ctx, struct ArrowArrayStream *input,
                               const aq_batch_options *opts, struct ArrowArrayStream *out,
                               aq_error *err)
{
    return stream_open(ctx, input, opts, true, out, err);
}
