/* Chooses the kernel table for this CPU, or the one forced by AQ_KERNELS. */
#include "kernels.h"

#include <stdlib.h>

/* Tables compiled into this build, best first. SIMD tables are added here (issue "Speed"),
 * each with a check of the CPU features it needs. */
typedef struct aq__kernel_entry {
    const aq__kernel_table *table;
    bool (*supported)(void);
} aq__kernel_entry;

static bool dispatch_always(void)
{
    return true;
}

static const aq__kernel_entry dispatch_entries[] = {
    {&aq__kernels_ref, dispatch_always},
};

#define DISPATCH_COUNT (sizeof dispatch_entries / sizeof dispatch_entries[0])

const aq__kernel_table *aq__kernels_select(aq_error *err)
{
    const char *forced = getenv("AQ_KERNELS");
    if (forced != NULL && forced[0] != '\0') {
        for (size_t i = 0; i < DISPATCH_COUNT; i++) {
            if (strcmp(dispatch_entries[i].table->name, forced) == 0) {
                if (!dispatch_entries[i].supported()) {
                    aq__error_set(err, AQ_UNSUPPORTED,
                                  "AQ_KERNELS=%s: this CPU lacks the instructions it needs",
                                  forced);
                    return NULL;
                }
                return dispatch_entries[i].table;
            }
        }
        aq__error_set(err, AQ_UNSUPPORTED, "AQ_KERNELS=%s: no such kernel set in this build",
                      forced);
        return NULL;
    }
    for (size_t i = 0; i < DISPATCH_COUNT; i++) {
        if (dispatch_entries[i].supported()) {
            return dispatch_entries[i].table;
        }
    }
    return &aq__kernels_ref;
}
