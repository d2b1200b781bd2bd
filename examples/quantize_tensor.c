/* The C quick start: quantize one tensor, restore it, measure what was lost.
 * Generates 1,048,576 N(0,1) float32 values as a [1024, 1024] tensor and quantizes them at
 * 2, 4 and 8 bits with groups of 128. */
#include <arrowquant.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static double normal(uint64_t *state)
{
    /* splitmix64 into Box-Muller: deterministic, no dependency. */
    double u[2];
    for (int i = 0; i < 2; i++) {
        uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        u[i] = (double)((z ^ (z >> 31)) >> 11) * 0x1p-53;
    }
    return sqrt(-2.0 * log(u[0] + 1e-300)) * cos(6.283185307179586 * u[1]);
}

int main(void)
{
    enum { ROWS = 1024, COLS = 1024 };
    int64_t shape[2] = {ROWS, COLS};
    float *weights = malloc(sizeof(float) * ROWS * COLS);
    float *restored = malloc(sizeof(float) * ROWS * COLS);
    if (weights == NULL || restored == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    uint64_t seed = 42;
    for (size_t i = 0; i < (size_t)ROWS * COLS; i++) {
        weights[i] = (float)normal(&seed);
    }
    aq_tensor tensor = {"example.weight", AQ_DTYPE_F32, weights, shape, 2};

    aq_error err;
    aq_ctx *ctx = NULL;
    if (aq_ctx_create(&ctx, &err) != AQ_OK) {
        fprintf(stderr, "error: %s\n", err.message);
        return 1;
    }
    printf("arrowquant %s: [%d, %d] N(0,1) float32, group size 128\n", aq_version_string(), ROWS,
           COLS);
    printf("%4s %10s %12s %10s %10s %10s\n", "bits", "bytes", "bits/weight", "cosine", "SQNR dB",
           "max err");
    int status = 0;
    static const unsigned bits[3] = {2, 4, 8};
    for (int b = 0; b < 3 && status == 0; b++) {
        aq_layout layout;
        aq_metrics m;
        uint8_t *packed = NULL;
        float *scales = NULL, *zero_points = NULL;
        if (aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits[b], &err) != AQ_OK ||
            aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, 128, &err) != AQ_OK ||
            aq_quantize_bound(ctx, &tensor, &layout, &err) != AQ_OK) {
            goto fail;
        }
        packed = malloc(layout.packed_bytes);
        scales = malloc(layout.groups * sizeof(float));
        zero_points = malloc(layout.groups * sizeof(float));
        if (packed == NULL || scales == NULL || zero_points == NULL) {
            aq_error_clear(&err);
            snprintf(err.message, sizeof err.message, "out of memory");
            goto fail;
        }
        aq_qbuffers out = {packed, layout.packed_bytes, scales, zero_points, layout.groups};
        if (aq_quantize(ctx, &tensor, &out, &err) != AQ_OK) {
            goto fail;
        }
        aq_qtensor q = {"example.weight",
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
        aq_tensor back = {"restored", AQ_DTYPE_F32, restored, shape, 2};
        if (aq_dequantize(ctx, &q, AQ_DTYPE_F32, restored, layout.elements, &err) != AQ_OK ||
            aq_metrics_compute(&tensor, &back, &m, &err) != AQ_OK) {
            goto fail;
        }
        size_t bytes = layout.packed_bytes + 2 * layout.groups * sizeof(float);
        printf("%4u %10zu %12.3f %10.6f %10.2f %10.4f\n", bits[b], bytes,
               8.0 * (double)bytes / (double)layout.elements, m.cosine, m.sqnr_db, m.max_abs_error);
        goto next;
    fail:
        fprintf(stderr, "error: %s\n", err.message);
        status = 1;
    next:
        free(packed);
        free(scales);
        free(zero_points);
    }
    aq_ctx_free(ctx);
    free(weights);
    free(restored);
    return status;
}
