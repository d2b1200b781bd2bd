/*
 * The schema key arrowquant.row_schemes (docs/format.md section 6): a JSON array with one
 * {"scheme": NAME, "group_size": N} object per row, used instead of arrowquant.scheme and
 * arrowquant.group_size when the rows of a batch differ.
 *
 * The value comes from outside, so the parser is strict and small: it accepts exactly that
 * shape (other keys are skipped when their values are strings, integers, true, false or null)
 * and reports the byte offset of anything else. It is not a general JSON parser.
 */
#include "arrow_internal.h"
#include "quant_internal.h"

#include <stdlib.h>

typedef struct rs_parser {
    const char *s;
    size_t n, at;
    aq_error *err;
} rs_parser;

static aq_status rs_fail(rs_parser *p, const char *what)
{
    return aq__error_set(p->err, AQ_INVALID_DATA,
                         "quantized batch: arrowquant.row_schemes is not valid: %s at byte %zu",
                         what, p->at);
}

static void rs_ws(rs_parser *p)
{
    while (p->at < p->n && (p->s[p->at] == ' ' || p->s[p->at] == '\t' || p->s[p->at] == '\n' ||
                            p->s[p->at] == '\r')) {
        p->at++;
    }
}

static bool rs_eat(rs_parser *p, char c)
{
    rs_ws(p);
    if (p->at < p->n && p->s[p->at] == c) {
        p->at++;
        return true;
    }
    return false;
}

/* A string without escapes that matter here: *str points at its first byte. */
static aq_status rs_string(rs_parser *p, const char **str, size_t *len)
{
    if (!rs_eat(p, '"')) {
        return rs_fail(p, "expected a string");
    }
    size_t start = p->at;
    while (p->at < p->n && p->s[p->at] != '"') {
        if (p->s[p->at] == '\\') {
            p->at++; /* the escaped byte is skipped: such strings never match a key we use */
        }
        p->at++;
    }
    if (p->at >= p->n) {
        return rs_fail(p, "unterminated string");
    }
    *str = p->s + start;
    *len = p->at - start;
    p->at++;
    return AQ_OK;
}

static aq_status rs_integer(rs_parser *p, uint64_t *out)
{
    rs_ws(p);
    size_t start = p->at;
    uint64_t v = 0;
    while (p->at < p->n && p->s[p->at] >= '0' && p->s[p->at] <= '9') {
        if (v > (UINT64_MAX - 9) / 10) {
            return rs_fail(p, "integer too large");
        }
        v = v * 10 + (uint64_t)(p->s[p->at] - '0');
        p->at++;
    }
    if (p->at == start) {
        return rs_fail(p, "expected a non-negative integer");
    }
    *out = v;
    return AQ_OK;
}

static bool rs_word(rs_parser *p, const char *w)
{
    size_t l = strlen(w);
    if (p->n - p->at >= l && memcmp(p->s + p->at, w, l) == 0) {
        p->at += l;
        return true;
    }
    return false;
}

static aq_status rs_skip_value(rs_parser *p)
{
    rs_ws(p);
    if (p->at < p->n && p->s[p->at] == '"') {
        const char *s;
        size_t l;
        return rs_string(p, &s, &l);
    }
    if (rs_word(p, "true") || rs_word(p, "false") || rs_word(p, "null")) {
        return AQ_OK;
    }
    uint64_t v;
    return rs_integer(p, &v);
}

static bool rs_key_is(const char *k, size_t kl, const char *want)
{
    return kl == strlen(want) && memcmp(k, want, kl) == 0;
}

static aq_status rs_object(rs_parser *p, aq__row_scheme *out)
{
    out->raw = false;
    if (!rs_eat(p, '{')) {
        return rs_fail(p, "expected '{'");
    }
    bool have_scheme = false, have_group = false;
    aq_status st;
    if (!rs_eat(p, '}')) {
        do {
            const char *k;
            size_t kl;
            if ((st = rs_string(p, &k, &kl)) != AQ_OK) {
                return st;
            }
            if (!rs_eat(p, ':')) {
                return rs_fail(p, "expected ':'");
            }
            if (rs_key_is(k, kl, "scheme")) {
                const char *v;
                size_t vl;
                if ((st = rs_string(p, &v, &vl)) != AQ_OK) {
                    return st;
                }
                char name[32];
                if (vl >= sizeof name) {
                    return rs_fail(p, "scheme name too long");
                }
                memcpy(name, v, vl);
                name[vl] = '\0';
                out->raw = strcmp(name, "raw") == 0;
                if (out->raw) {
                    out->scheme = AQ_SCHEME_AFFINE;
                } else if (aq_scheme_from_name(name, &out->scheme, NULL) != AQ_OK) {
                    return aq__error_set(p->err, AQ_UNSUPPORTED,
                                         "quantized batch: arrowquant.row_schemes names scheme "
                                         "'%s', which is not supported (known: raw, affine, "
                                         "affine_search, kquant)",
                                         name);
                }
                have_scheme = true;
            } else if (rs_key_is(k, kl, "group_size")) {
                uint64_t g;
                if ((st = rs_integer(p, &g)) != AQ_OK) {
                    return st;
                }
                if (g > AQ_GROUP_SIZE_ROW) {
                    return rs_fail(p, "invalid group size");
                }
                out->group_size = (size_t)g;
                have_group = true;
            } else if ((st = rs_skip_value(p)) != AQ_OK) {
                return st;
            }
        } while (rs_eat(p, ','));
        if (!rs_eat(p, '}')) {
            return rs_fail(p, "expected ',' or '}'");
        }
    }
    if (!have_scheme || !have_group) {
        return rs_fail(p, "an entry lacks \"scheme\" or \"group_size\"");
    }
    /* A kept row's group size is 0; a quantized row's a valid one. */
    if (out->raw ? out->group_size != 0 : out->group_size < AQ_MIN_GROUP_SIZE) {
        return rs_fail(p, out->raw ? "a \"raw\" entry with a group size other than 0"
                                   : "invalid group size");
    }
    return AQ_OK;
}

aq_status aq__arrow_parse_row_schemes(const char *json, size_t len, aq__row_scheme **out,
                                      size_t *count, aq_error *err)
{
    rs_parser p = {json, len, 0, err};
    aq__row_scheme *v = NULL;
    size_t n = 0, cap = 0;
    aq_status st = AQ_OK;
    if (!rs_eat(&p, '[')) {
        st = rs_fail(&p, "expected '['");
        goto done;
    }
    if (!rs_eat(&p, ']')) {
        do {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                aq__row_scheme *g = realloc(v, cap * sizeof *v);
                if (g == NULL) {
                    st = aq__error_set(err, AQ_NO_MEMORY, "out of memory reading row schemes");
                    goto done;
                }
                v = g;
            }
            if ((st = rs_object(&p, &v[n])) != AQ_OK) {
                goto done;
            }
            n++;
        } while (rs_eat(&p, ','));
        if (!rs_eat(&p, ']')) {
            st = rs_fail(&p, "expected ',' or ']'");
            goto done;
        }
    }
    rs_ws(&p);
    if (p.at != p.n) {
        st = rs_fail(&p, "trailing characters");
        goto done;
    }
    *out = v;
    *count = n;
    v = NULL;
done:
    free(v);
    return st;
}
