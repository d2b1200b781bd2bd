/* The context: parameters with queryable bounds, validated when set. */
#include "quant_internal.h"

#include <inttypes.h>
#include <stdlib.h>

typedef struct ctx_param_info {
    const char *name;
    int64_t lower;
    int64_t upper;
} ctx_param_info;

static const ctx_param_info ctx_params[AQ_PARAM_COUNT] = {
    [AQ_PARAM_BIT_WIDTH] = {"bit_width", 2, 8},
    [AQ_PARAM_GROUP_SIZE] = {"group_size", AQ_MIN_GROUP_SIZE, (int64_t)AQ_GROUP_SIZE_ROW},
    [AQ_PARAM_SCHEME] = {"scheme", 0, AQ_SCHEME_COUNT - 1},
    [AQ_PARAM_THREADS] = {"threads", 0, AQ_MAX_THREADS},
    [AQ_PARAM_PRESERVE_MOMENTS] = {"preserve_moments", 0, 1},
    [AQ_PARAM_GGUF_SEARCH] = {"gguf_search", 0, 1},
};

const char *aq_param_name(aq_param param)
{
    if ((unsigned)param >= AQ_PARAM_COUNT) {
        return "unknown";
    }
    return ctx_params[param].name;
}

aq_status aq_param_bounds(aq_param param, int64_t *lower, int64_t *upper, aq_error *err)
{
    if ((unsigned)param >= AQ_PARAM_COUNT) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "unknown parameter %d", (int)param);
    }
    if (lower == NULL || upper == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_param_bounds: NULL output pointer");
    }
    *lower = ctx_params[param].lower;
    *upper = ctx_params[param].upper;
    return AQ_OK;
}

aq_status aq__check_bit_width(int64_t value, aq_error *err)
{
    if (value != 2 && value != 4 && value != 8) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid bit_width: %" PRId64 ". Must be 2, 4, or 8", value);
    }
    return AQ_OK;
}

aq_status aq__check_group_size(int64_t value, aq_error *err)
{
    if (value < AQ_MIN_GROUP_SIZE || value > (int64_t)AQ_GROUP_SIZE_ROW) {
        return aq__error_set(err, AQ_INVALID_PARAMETER,
                             "Invalid group_size: %" PRId64 ". Must be between %d and %u "
                             "(%u means one group per row)",
                             value, AQ_MIN_GROUP_SIZE, AQ_GROUP_SIZE_ROW, AQ_GROUP_SIZE_ROW);
    }
    return AQ_OK;
}

aq_status aq_ctx_create(aq_ctx **out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ctx_create: NULL output pointer");
    }
    const aq__kernel_table *kernels = aq__kernels_select(err);
    if (kernels == NULL) {
        return err != NULL ? err->code : AQ_UNSUPPORTED;
    }
    aq_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL) {
        return aq__error_set(err, AQ_NO_MEMORY, "aq_ctx_create: out of memory");
    }
    ctx->bit_width = AQ_DEFAULT_BIT_WIDTH;
    ctx->group_size = AQ_DEFAULT_GROUP_SIZE;
    ctx->scheme = AQ_SCHEME_AFFINE;
    ctx->threads = 1;
    ctx->gguf_search = true;
    ctx->kernels = kernels;
    *out = ctx;
    return AQ_OK;
}

void aq_ctx_free(aq_ctx *ctx)
{
    if (ctx == NULL) {
        return;
    }
    aq__pool_free(ctx->pool);
    free(ctx);
}

aq_status aq__ctx_pool(aq_ctx *ctx, aq__pool **out, aq_error *err)
{
    unsigned want = aq__threads_resolve(ctx->threads);
    if (want <= 1) {
        *out = NULL;
        return AQ_OK;
    }
    if (ctx->pool == NULL) {
        aq_status st = aq__pool_create(want, &ctx->pool, err);
        if (st != AQ_OK) {
            return st;
        }
    }
    *out = ctx->pool;
    return AQ_OK;
}

const char *aq_ctx_kernels(const aq_ctx *ctx)
{
    return ctx != NULL ? ctx->kernels->name : "none";
}

aq_status aq_ctx_set_param(aq_ctx *ctx, aq_param param, int64_t value, aq_error *err)
{
    if (ctx == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ctx_set_param: NULL context");
    }
    aq_status st;
    switch (param) {
    case AQ_PARAM_BIT_WIDTH:
        if ((st = aq__check_bit_width(value, err)) != AQ_OK) {
            return st;
        }
        ctx->bit_width = (unsigned)value;
        return AQ_OK;
    case AQ_PARAM_GROUP_SIZE:
        if ((st = aq__check_group_size(value, err)) != AQ_OK) {
            return st;
        }
        ctx->group_size = (size_t)value;
        return AQ_OK;
    case AQ_PARAM_SCHEME:
        if (value < 0 || value >= AQ_SCHEME_COUNT) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid scheme: %" PRId64 ". Must be between 0 and %d", value,
                                 AQ_SCHEME_COUNT - 1);
        }
        ctx->scheme = (aq_scheme)value;
        return AQ_OK;
    case AQ_PARAM_THREADS:
        if (value < 0 || value > AQ_MAX_THREADS) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid threads: %" PRId64
                                 ". Must be between 0 (one per CPU) and %d",
                                 value, AQ_MAX_THREADS);
        }
        if ((unsigned)value != ctx->threads) {
            /* The next call that needs threads starts a pool of the new size. */
            aq__pool_free(ctx->pool);
            ctx->pool = NULL;
        }
        ctx->threads = (unsigned)value;
        return AQ_OK;
    case AQ_PARAM_PRESERVE_MOMENTS:
        if (value != 0 && value != 1) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid preserve_moments: %" PRId64 ". Must be 0 or 1", value);
        }
        ctx->preserve_moments = value != 0;
        return AQ_OK;
    case AQ_PARAM_GGUF_SEARCH:
        if (value != 0 && value != 1) {
            return aq__error_set(err, AQ_INVALID_PARAMETER,
                                 "Invalid gguf_search: %" PRId64 ". Must be 0 or 1", value);
        }
        ctx->gguf_search = value != 0;
        return AQ_OK;
    case AQ_PARAM_COUNT:
        break;
    }
    return aq__error_set(err, AQ_INVALID_ARGUMENT, "unknown parameter %d", (int)param);
}

aq_status aq_ctx_get_param(const aq_ctx *ctx, aq_param param, int64_t *value, aq_error *err)
{
    if (ctx == NULL || value == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_ctx_get_param: NULL argument");
    }
    switch (param) {
    case AQ_PARAM_BIT_WIDTH:
        *value = ctx->bit_width;
        return AQ_OK;
    case AQ_PARAM_GROUP_SIZE:
        *value = (int64_t)ctx->group_size;
        return AQ_OK;
    case AQ_PARAM_SCHEME:
        *value = ctx->scheme;
        return AQ_OK;
    case AQ_PARAM_THREADS:
        *value = ctx->threads;
        return AQ_OK;
    case AQ_PARAM_PRESERVE_MOMENTS:
        *value = ctx->preserve_moments;
        return AQ_OK;
    case AQ_PARAM_GGUF_SEARCH:
        *value = ctx->gguf_search;
        return AQ_OK;
    case AQ_PARAM_COUNT:
        break;
    }
    return aq__error_set(err, AQ_INVALID_ARGUMENT, "unknown parameter %d", (int)param);
}
