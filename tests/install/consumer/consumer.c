/* A program built against the installed package (find_package and pkg-config): it includes
 * the installed header, checks that the library it runs with is the version the header names,
 * quantizes a small tensor to 4 bits (with a sized options struct) and restores it within half a
 * step of each group. */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { ROWS = 4, COLS = 300, GROUP = 128, GROUPS_PER_ROW = (COLS + GROUP - 1) / GROUP };

int main(void)
{
    static float weights[ROWS * COLS], restored[ROWS * COLS];
    static uint8_t packed[ROWS * COLS];
    static float scales[ROWS * GROUPS_PER_ROW], zero_points[ROWS * GROUPS_PER_ROW];
    int64_t shape[2] = {ROWS, COLS};
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
        weights[i] = (float)sin(0.37 * (double)i) * (float)(1 + i % 7);
    }
    if (aq_version_number() != AQ_VERSION_NUMBER ||
        strcmp(aq_version_string(), AQ_VERSION_STRING) != 0) {
        fprintf(stderr, "header %s, library %s\n", AQ_VERSION_STRING, aq_version_string());
        return 1;
    }

    aq_error err;
    aq_ctx *ctx = NULL;
    aq_layout layout;
    aq_tensor tensor = {"consumer.weight", AQ_DTYPE_F32, weights, shape, 2};
    int status = 1;
    if (aq_ctx_create(&ctx, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, 4, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, GROUP, &err) != AQ_OK ||
        aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, AQ_SCHEME_AFFINE, &err) != AQ_OK ||
        aq_quantize_bound(ctx, &tensor, &layout, &err) != AQ_OK) {
        goto done;
    }
    if (layout.packed_bytes > sizeof packed || layout.groups != ROWS * GROUPS_PER_ROW) {
        fprintf(stderr, "unexpected layout: %zu bytes, %zu groups\n", layout.packed_bytes,
                layout.groups);
        goto done_quiet;
    }
    aq_qbuffers out = {packed, layout.packed_bytes, scales, zero_points, layout.groups};
    /* An options struct from the stable header, started as every caller starts one. */
    aq_quantize_options qopts = AQ_SIZED_INIT(aq_quantize_options);
    if (aq_quantize_ex(ctx, &tensor, &qopts, &out, NULL, &err) != AQ_OK) {
        goto done;
    }
    aq_qtensor q = {"consumer.weight",
                    AQ_SCHEME_AFFINE,
                    layout.bit_width,
                    layout.group_size,
                    shape,
                    2,
                    packed,
                    layout.packed_bytes,
                    scales,
                    zero_points,
                    layout.groups};
    if (aq_dequantize(ctx, &q, AQ_DTYPE_F32, restored, layout.elements, &err) != AQ_OK) {
        goto done;
    }
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
        size_t group = (i / COLS) * GROUPS_PER_ROW + (i % COLS) / GROUP;
        if (fabsf(restored[i] - weights[i]) > 0.5f * scales[group] * 1.001f + 1e-6f) {
            fprintf(stderr, "element %zu: %g restored as %g (scale %g)\n", i, (double)weights[i],
                    (double)restored[i], (double)scales[group]);
            goto done_quiet;
        }
    }
    printf("arrowquant %s: %zu weights in %zu bytes\n", aq_version_string(), layout.elements,
           layout.packed_bytes);
    status = 0;
    goto done_quiet;
done:
    fprintf(stderr, "error: %s\n", err.message);
done_quiet:
    aq_ctx_free(ctx);
    return status;
}
