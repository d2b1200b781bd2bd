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

aq_status aq__sized_read(void *dst, size_t dst_size, const void *src, size_t min_size,
                         const char *type, aq_error *err)
{
    memset(dst, 0, dst_size);
    if (src != NULL) {
        size_t n;
        memcpy(&n, src, sizeof n);
        if (n < min_size) {
            return aq__error_set(err, AQ_INVALID_ARGUMENT,
                                 "%s.size is %zu, expected at least %zu: start the struct with "
                                 "AQ_SIZED_INIT(%s)",
                                 type, n, min_size, type);
        }
        /* A newer caller's struct: its extra fields must be at their (zero) defaults, or the
         * caller would silently lose what it asked for. */
        const unsigned char *extra = (const unsigned char *)src;
        for (size_t i = dst_size; i < n; i++) {
            if (extra[i] != 0) {
                return aq__error_set(err, AQ_UNSUPPORTED,
                                     "%s: the caller's struct (%zu bytes) sets a field at byte %zu "
                                     "that this library (%s, %zu bytes) does not know",
                                     type, n, i, AQ_VERSION_STRING, dst_size);
            }
        }
        memcpy(dst, src, n < dst_size ? n : dst_size);
    }
    memcpy(dst, &dst_size, sizeof dst_size);
    return AQ_OK;
}
