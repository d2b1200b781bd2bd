/* Status names and messages (generated from AQ_STATUS_MAP), error filling, version. */
#include "aq_common.h"

#include <stdarg.h>
#include <stdio.h>

unsigned aq_version_number(void)
{
    return AQ_VERSION_NUMBER;
}

const char *aq_version_string(void)
{
    return AQ_VERSION_STRING;
}

const char *aq_status_name(aq_status status)
{
    switch (status) {
#define AQ__STATUS_NAME(name, msg) \
    case AQ_##name:                \
        return "AQ_" #name;
        AQ_STATUS_MAP(AQ__STATUS_NAME)
#undef AQ__STATUS_NAME
    case AQ_STATUS_COUNT:
        break;
    }
    return "AQ_UNKNOWN";
}

const char *aq_status_message(aq_status status)
{
    switch (status) {
#define AQ__STATUS_MSG(name, msg) \
    case AQ_##name:               \
        return msg;
        AQ_STATUS_MAP(AQ__STATUS_MSG)
#undef AQ__STATUS_MSG
    case AQ_STATUS_COUNT:
        break;
    }
    return "unknown status";
}

void aq_error_clear(aq_error *err)
{
    if (err != NULL) {
        err->code = AQ_OK;
        err->message[0] = '\0';
    }
}

aq_status aq__error_set(aq_error *err, aq_status code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        /* Truncation of a very long message (a huge layer name) is acceptable. */
        (void)vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

void aq__error_prefix(aq_error *err, const char *fmt, ...)
{
    if (err == NULL) {
        return;
    }
    char prefix[AQ_ERROR_MESSAGE_SIZE];
    char old[AQ_ERROR_MESSAGE_SIZE];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->message, sizeof old);
    old[sizeof old - 1] = '\0';
    /* Truncating a message longer than the buffer is acceptable; build it by pieces so the
     * compiler sees no unchecked format. */
    size_t plen = strnlen(prefix, sizeof err->message - 3);
    memcpy(err->message, prefix, plen);
    memcpy(err->message + plen, ": ", 2);
    size_t room = sizeof err->message - plen - 3;
    size_t olen = strnlen(old, room);
    memcpy(err->message + plen + 2, old, olen);
    err->message[plen + 2 + olen] = '\0';
}
