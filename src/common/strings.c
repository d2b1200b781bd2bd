/* String helpers shared by every module. */
#include "aq_common.h"

#include <stdlib.h>

char *aq__strdup(const char *s)
{
    if (s == NULL) {
        return NULL;
    }
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}
