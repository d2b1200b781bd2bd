/* A program built against the installed header's experimental part: it opts in with
 * AQ_EXPERIMENTAL, sets settings by name, applies a profile and reads the scheme table. */
#define AQ_EXPERIMENTAL
#include <arrowquant.h>

#include <stdio.h>
#include <string.h>

int main(void)
{
    aq_error err;
    aq_settings *s = NULL;
    int64_t bits = 0, group = 0;
    const char *scheme = NULL;
    aq_scheme_info info = AQ_SIZED_INIT(aq_scheme_info);
    int status = 1;
    if (aq_settings_create(&s, &err) != AQ_OK ||
        aq_settings_set_text(s, "threads", "2", &err) != AQ_OK ||
        aq_settings_apply_profile(s, "edge", &err) != AQ_OK ||
        aq_settings_get_int(s, "bit_width", &bits, &err) != AQ_OK ||
        aq_settings_get_int(s, "group_size", &group, &err) != AQ_OK ||
        aq_settings_get_text(s, "scheme", &scheme, &err) != AQ_OK ||
        aq_scheme_get_info(AQ_SCHEME_KQUANT, &info, &err) != AQ_OK) {
        fprintf(stderr, "consumer_experimental: %s\n", err.message);
        goto done;
    }
    if (bits != 2 || strcmp(scheme, "kquant") != 0 || (size_t)group != info.fixed_group_size ||
        aq_settings_set_text(s, "bit_width", "3", &err) != AQ_INVALID_PARAMETER ||
        strstr(err.message, "bit_width") == NULL) {
        fprintf(stderr, "consumer_experimental: edge gave %lld bits, %s, group %lld\n",
                (long long)bits, scheme != NULL ? scheme : "?", (long long)group);
        goto done;
    }
    printf("consumer_experimental: %zu settings, edge = %lld-bit %s\n", aq_setting_count(),
           (long long)bits, scheme);
    status = 0;
done:
    aq_settings_free(s);
    return status;
}
