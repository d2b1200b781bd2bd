/* aq_stream_quantize / aq_stream_dequantize: lazy pulling, schema before data, errors passed
 * on, ownership of the input, rows counted across batches, and output bytes that do not depend
 * on how the input was cut into batches. */
#include "arrow_test_util.h"

#include <errno.h>
#include <math.h>

enum { ROWS = 7, PER = 50 };

/* Rows 0..ROWS-1, "layer.i", PER values each (some with a 2-D shape). */
static float *g_w;
static int64_t g_shape[2] = {5, 10};

static tb_node rows_batch(int first, int count)
{
    tb_row rows[ROWS];
    static char names[ROWS][16];
    for (int i = 0; i < count; i++) {
        int k = first + i;
        snprintf(names[k], sizeof names[k], "layer.%d", k);
        rows[i] = (tb_row){names[k], g_w + k * PER, PER, k % 2 ? g_shape : NULL, 2, false};
    }
    return tb_batch(rows, count);
}

/* A stream of the rows cut at the given boundaries: cuts {0, 3, 3, 7} gives batches of 3, 0
 * and 4 rows. */
static void cut_stream(struct ArrowArrayStream *out, const int *cuts, int n_batches, int fail_at,
                       const char *msg)
{
    tb_node batches[8];
    for (int i = 0; i < n_batches; i++) {
        batches[i] = rows_batch(cuts[i], cuts[i + 1] - cuts[i]);
    }
    tb_stream(out, rows_batch(0, 0), batches, n_batches, fail_at, msg);
}

/* Concatenation of a column's data across batches, for comparison. */
typedef struct concat {
    uint8_t packed[ROWS * PER];
    size_t packed_len;
    float scales[ROWS * PER];
    size_t groups;
    char names[ROWS * 16];
    size_t names_len;
    int64_t rows;
} concat;

static void concat_add(concat *c, const struct ArrowArray *a)
{
    for (int64_t i = 0; i < a->length; i++) {
        rr_row r;
        rr_get(a, false, i, &r);
        memcpy(c->packed + c->packed_len, r.packed, r.packed_len);
        c->packed_len += r.packed_len;
        memcpy(c->scales + c->groups, r.scales, r.groups * 4);
        c->groups += r.groups;
        memcpy(c->names + c->names_len, r.name, r.name_len);
        c->names_len += r.name_len;
        c->rows++;
    }
}

/* Drains a quantize stream over the given cuts into c; returns the number of batches. */
static int drain(aq_ctx *ctx, const int *cuts, int n_batches, concat *c)
{
    aq_error err;
    struct ArrowArrayStream in, out;
    cut_stream(&in, cuts, n_batches, -1, NULL);
    if (aq_stream_quantize(ctx, &in, NULL, &out, &err) != AQ_OK) {
        return -1;
    }
    memset(c, 0, sizeof *c);
    int batches = 0;
    for (;;) {
        struct ArrowArray a;
        if (out.get_next(&out, &a) != 0) {
            batches = -1;
            break;
        }
        if (a.release == NULL) {
            break;
        }
        concat_add(c, &a);
        a.release(&a);
        batches++;
    }
    out.release(&out);
    return batches;
}

TEST(output_bytes_do_not_depend_on_batching)
{
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    g_w = au_normal(ROWS * PER, 77);
    static const int one[2] = {0, ROWS};
    static const int three[4] = {0, 3, 3, ROWS}; /* an empty batch in the middle */
    static const int each[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    concat *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
    int na = drain(ctx, one, 1, a), nb = drain(ctx, three, 3, b), nc = drain(ctx, each, 7, c);
    int ok = na == 1 && nb == 3 && nc == 7 && a->rows == ROWS && b->rows == ROWS &&
             c->rows == ROWS && a->packed_len == b->packed_len && a->packed_len == c->packed_len &&
             memcmp(a->packed, b->packed, a->packed_len) == 0 &&
             memcmp(a->packed, c->packed, a->packed_len) == 0 && a->groups == b->groups &&
             memcmp(a->scales, b->scales, a->groups * 4) == 0 &&
             memcmp(a->scales, c->scales, a->groups * 4) == 0 && a->names_len == c->names_len &&
             memcmp(a->names, c->names, a->names_len) == 0;
    free(a);
    free(b);
    free(c);
    free(g_w);
    aq_ctx_free(ctx);
    CHECK_MSG(ok, "batches %d %d %d", na, nb, nc);
}

TEST(schema_before_the_first_batch_and_lazy_pulls)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(2, 32);
    CHECK(ctx != NULL);
    g_w = au_normal(ROWS * PER, 78);
    static const int cuts[3] = {0, 4, ROWS};
    struct ArrowArrayStream in, out;
    cut_stream(&in, cuts, 2, 1, "producer exploded");
    CHECK_OK(aq_stream_quantize(ctx, &in, NULL, &out, &err));
    CHECK(in.release == NULL); /* moved */
    struct ArrowSchema s;
    CHECK(out.get_schema(&out, &s) == 0);
    CHECK(strcmp(s.format, "+s") == 0 && s.n_children == 6 &&
          strcmp(s.children[1]->format, "z") == 0);
    s.release(&s);
    /* The first batch comes out although the second will fail: nothing is read ahead. */
    struct ArrowArray a;
    CHECK(out.get_next(&out, &a) == 0 && a.release != NULL && a.length == 4);
    a.release(&a);
    /* The input's own error text is passed on. */
    CHECK(out.get_next(&out, &a) == EIO);
    const char *msg = out.get_last_error(&out);
    CHECK_MSG(msg != NULL && strstr(msg, "producer exploded") != NULL, "got '%s'",
              msg != NULL ? msg : "(null)");
    /* And the stream stays failed. */
    CHECK(out.get_next(&out, &a) == EIO);
    out.release(&out);
    CHECK(out.release == NULL);
    free(g_w);
    aq_ctx_free(ctx);
}

TEST(bad_rows_across_batches_report_global_row_index)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    g_w = au_normal(ROWS * PER, 79);
    g_w[5 * PER + 3] = INFINITY; /* row 5, in the second batch */
    static const int cuts[3] = {0, 4, ROWS};
    struct ArrowArrayStream in, out;
    cut_stream(&in, cuts, 2, -1, NULL);
    aq_report *rep;
    CHECK_OK(aq_report_create(&rep, &err));
    aq_batch_options opts = {
        .size = sizeof(aq_batch_options), .continue_on_error = 1, .report = rep};
    CHECK_OK(aq_stream_quantize(ctx, &in, &opts, &out, &err));
    int64_t total = 0;
    for (;;) {
        struct ArrowArray a;
        CHECK(out.get_next(&out, &a) == 0);
        if (a.release == NULL) {
            break;
        }
        total += a.length;
        a.release(&a);
    }
    out.release(&out);
    CHECK(total == ROWS - 1 && aq_report_count(rep) == 1);
    size_t row;
    const char *name, *msg;
    aq_status code;
    CHECK_OK(aq_report_get(rep, 0, &row, &name, &code, &msg, &err));
    CHECK(row == 5 && strcmp(name, "layer.5") == 0 && code == AQ_NON_FINITE &&
          strstr(msg, "Layer 'layer.5' contains NaN or Inf at index 3") != NULL);
    aq_report_free(rep);
    free(g_w);
    aq_ctx_free(ctx);
}

TEST(bad_batch_in_stop_mode_fails_get_next)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    g_w = au_normal(ROWS * PER, 80);
    g_w[6 * PER] = NAN;
    static const int cuts[3] = {0, 4, ROWS};
    struct ArrowArrayStream in, out;
    cut_stream(&in, cuts, 2, -1, NULL);
    CHECK_OK(aq_stream_quantize(ctx, &in, NULL, &out, &err));
    struct ArrowArray a;
    CHECK(out.get_next(&out, &a) == 0 && a.release != NULL);
    a.release(&a);
    CHECK(out.get_next(&out, &a) == EINVAL);
    CHECK(strstr(out.get_last_error(&out), "Layer 'layer.6' contains NaN or Inf at index 0") !=
          NULL);
    out.release(&out);
    free(g_w);
    aq_ctx_free(ctx);
}

TEST(open_errors_release_the_input)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(4, 16);
    CHECK(ctx != NULL);
    /* A schema without weights: refused at once, and the input is released (ASan checks). */
    const char *names[1] = {"a"};
    tb_node cols[1] = {tb_strings("u", "layer_name", names, NULL, 1)};
    tb_node schema = tb_struct("", cols, 1, 1);
    struct ArrowArrayStream in, out;
    tb_stream(&in, schema, NULL, 0, -1, NULL);
    CHECK_FAILS(aq_stream_quantize(ctx, &in, NULL, &out, &err), AQ_INVALID_ARGUMENT,
                "Missing required column 'weights'");
    CHECK(in.release == NULL);
    /* A released input. */
    CHECK_FAILS(aq_stream_quantize(ctx, &in, NULL, &out, &err), AQ_INVALID_ARGUMENT,
                "the input stream was already released");
    /* The dequantize stream wants a result schema. */
    g_w = au_normal(ROWS * PER, 81);
    static const int cuts[2] = {0, ROWS};
    cut_stream(&in, cuts, 1, -1, NULL);
    CHECK_FAILS(aq_stream_dequantize(ctx, &in, NULL, &out, &err), AQ_INVALID_ARGUMENT,
                "Missing required column 'quantized_data' in a quantized batch");
    CHECK(in.release == NULL);
    free(g_w);
    aq_ctx_free(ctx);
}

/* Our quantize stream feeds our dequantize stream: floats come back batch by batch. */
TEST(dequantize_stream_over_quantize_stream)
{
    aq_error err;
    aq_ctx *ctx = au_ctx(8, 16);
    CHECK(ctx != NULL);
    g_w = au_normal(ROWS * PER, 82);
    static const int cuts[3] = {0, 2, ROWS};
    struct ArrowArrayStream in, q, d;
    cut_stream(&in, cuts, 2, -1, NULL);
    CHECK_OK(aq_stream_quantize(ctx, &in, NULL, &q, &err));
    CHECK_OK(aq_stream_dequantize(ctx, &q, NULL, &d, &err));
    CHECK(q.release == NULL);
    struct ArrowSchema s;
    CHECK(d.get_schema(&d, &s) == 0);
    CHECK(s.n_children == 3 && strcmp(s.children[1]->name, "weights") == 0);
    s.release(&s);
    int64_t rows = 0;
    double max_err = 0;
    for (;;) {
        struct ArrowArray a;
        CHECK(d.get_next(&d, &a) == 0);
        if (a.release == NULL) {
            break;
        }
        const float *v = a.children[1]->children[0]->buffers[1];
        const int32_t *o = a.children[1]->buffers[1];
        for (int64_t i = 0; i < a.length; i++) {
            for (int32_t k = o[i]; k < o[i + 1]; k++) {
                double e = fabs((double)v[k] - (double)g_w[(rows + i) * PER + (k - o[i])]);
                max_err = e > max_err ? e : max_err;
            }
        }
        rows += a.length;
        a.release(&a);
    }
    d.release(&d);
    CHECK(rows == ROWS);
    CHECK_MSG(max_err < 0.05, "max error %g", max_err); /* 8 bits over ~6 sigma / 255 */
    free(g_w);
    aq_ctx_free(ctx);
}

AQ_TEST_MAIN(AQ_CASE(output_bytes_do_not_depend_on_batching),
             AQ_CASE(schema_before_the_first_batch_and_lazy_pulls),
             AQ_CASE(bad_rows_across_batches_report_global_row_index),
             AQ_CASE(bad_batch_in_stop_mode_fails_get_next), AQ_CASE(open_errors_release_the_input),
             AQ_CASE(dequantize_stream_over_quantize_stream))
