/* Element type names and sizes. */
#include "aq_common.h"

const char *aq_dtype_name(aq_dtype dtype)
{
    switch (dtype) {
    case AQ_DTYPE_F32:
        return "f32";
    case AQ_DTYPE_F16:
        return "f16";
    case AQ_DTYPE_BF16:
        return "bf16";
    case AQ_DTYPE_F64:
        return "f64";
    case AQ_DTYPE_COUNT:
        break;
    }
    return "unknown";
}

size_t aq_dtype_size(aq_dtype dtype)
{
    switch (dtype) {
    case AQ_DTYPE_F32:
        return 4;
    case AQ_DTYPE_F16:
    case AQ_DTYPE_BF16:
        return 2;
    case AQ_DTYPE_F64:
        return 8;
    case AQ_DTYPE_COUNT:
        break;
    }
    return 0;
}
