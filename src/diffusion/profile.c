/*
 * Deployment profiles: edge (2 bits), local (4 bits), cloud (8 bits).
 *
 * The scheme is kquant, the library's most accurate scheme at every width (the quality table
 * in bench/results/quality_*.md), which is what mode="diffusion" promises. Budgets are kquant's own
 * size at the profile's width (2.625, 4.5 and 8.5 bits per weight for full super-blocks), so the
 * budget allocation can trade bits between tensors but never exceeds what a uniform choice costs.
 * The floors sit below kquant's cosine on heavy-tailed weights at that width (0.956 for
 * Laplace weights at 2 bits, 0.9975 for Gaussian at 4, the same table), so they catch
 * tensors that quantize badly without moving ordinary ones.
 */
#include "aq_common.h"

static const aq_profile pf_profiles[AQ_PROFILE_COUNT] = {
    {"edge", 2, AQ_SCHEME_KQUANT, AQ_KQUANT_SUPER_BLOCK, 0.90, 2.625},
    {"local", 4, AQ_SCHEME_KQUANT, AQ_KQUANT_SUPER_BLOCK, 0.99, 4.5},
    {"cloud", 8, AQ_SCHEME_KQUANT, AQ_KQUANT_SUPER_BLOCK, 0.9999, 8.5},
};

aq_status aq_profile_get(const char *name, aq_profile *out, aq_error *err)
{
    if (name == NULL || out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_profile_get: NULL argument");
    }
    for (size_t i = 0; i < AQ_PROFILE_COUNT; i++) {
        if (strcmp(name, pf_profiles[i].name) == 0) {
            *out = pf_profiles[i];
            return AQ_OK;
        }
    }
    return aq__error_set(err, AQ_INVALID_PARAMETER,
                         "Unknown profile '%s'. Known profiles: edge, local, cloud", name);
}

aq_status aq_profile_at(size_t i, aq_profile *out, aq_error *err)
{
    if (out == NULL) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT, "aq_profile_at: NULL argument");
    }
    if (i >= AQ_PROFILE_COUNT) {
        return aq__error_set(err, AQ_INVALID_ARGUMENT,
                             "Profile index %zu out of range (%d profiles)", i, AQ_PROFILE_COUNT);
    }
    *out = pf_profiles[i];
    return AQ_OK;
}
