/*
 * arrowquant validate ORIGINAL QUANTIZED: every tensor of the original must be in the
 * quantized model, of the same shape, with a cosine similarity at or above a floor. Exit 0
 * when all are, 1 when some are not (listed), 2 on errors.
 */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct val_state {
    int json;
    size_t n;       /* tensors printed (JSON) */
    size_t failing; /* tensors listed as failing */
    char **fail_names;
    size_t cap;
    int oom;
} val_state;

static int val_fails(const aq_compare_tensor *t)
{
    return t->status == AQ_COMPARE_MISSING_IN_A || t->status == AQ_COMPARE_MISSING_IN_B ||
           t->status == AQ_COMPARE_SHAPE_MISMATCH || t->status == AQ_COMPARE_BYTES_DIFFER ||
           t->below_min_cosine;
}

static void val_side_json(const char *key, const aq_compare_side *s)
{
    printf(", \"%s\": ", key);
    if (s->dtype == NULL) {
        printf("null");
        return;
    }
    printf("{\"dtype\": ");
    cli_json_str(stdout, s->dtype);
    printf(", \"scheme\": ");
    if (s->scheme != NULL) {
        cli_json_str(stdout, s->scheme);
    } else {
        printf("null");
    }
    printf(", \"bit_width\": %u}", s->bit_width);
}

static int val_tensor(void *user, const aq_compare_tensor *t)
{
    val_state *v = user;
    int fails = val_fails(t);
    if (fails) {
        if (v->failing == v->cap) {
            size_t cap = v->cap * 2 + 16;
            char **nn = realloc(v->fail_names, cap * sizeof *nn);
            if (nn == NULL) {
                v->oom = 1;
                return 1;
            }
            v->fail_names = nn;
            v->cap = cap;
        }
        size_t len = strlen(t->name) + 1;
        char *name = malloc(len);
        if (name == NULL) {
            v->oom = 1;
            return 1;
        }
        memcpy(name, t->name, len);
        v->fail_names[v->failing++] = name;
    }
    if (v->json) {
        printf("%s{\"name\": ", v->n ? ", " : "");
        cli_json_str(stdout, t->name);
        printf(", \"status\": \"%s\"", aq_compare_status_name(t->status));
        val_side_json("original", &t->a);
        val_side_json("quantized", &t->b);
        if (t->status == AQ_COMPARE_COMPARED) {
            printf(", \"sqnr_db\": ");
            cli_json_num(stdout, "%.17g", t->metrics.sqnr_db);
            printf(", \"cosine\": ");
            cli_json_num(stdout, "%.17g", t->metrics.cosine);
            printf(", \"max_abs_error\": ");
            cli_json_num(stdout, "%.17g", t->metrics.max_abs_error);
        }
        printf(", \"passed\": %s}", fails ? "false" : "true");
    } else if (fails) {
        if (t->status == AQ_COMPARE_COMPARED) {
            printf("FAIL %-56s cosine %.6f, SQNR %.2f dB (%u-bit %s)\n", t->name, t->metrics.cosine,
                   t->metrics.sqnr_db, t->b.bit_width,
                   t->b.scheme != NULL ? t->b.scheme : t->b.dtype);
        } else {
            printf("FAIL %-56s %s\n", t->name,
                   t->status == AQ_COMPARE_MISSING_IN_A   ? "missing in the original"
                   : t->status == AQ_COMPARE_MISSING_IN_B ? "missing in the quantized model"
                                                          : aq_compare_status_name(t->status));
        }
    }
    v->n++;
    return 0;
}

static int val_error(const char *msg)
{
    cli_fail("%s", msg);
    return 2;
}

/* --min-accuracy's value, within the settings table's min_cosine bounds (0: no floor), as
 * quantize's. */
static aq_status val_min_accuracy(const char *text, double *floor, aq_error *err)
{
    aq_settings *set = NULL;
    aq_status st = aq_settings_create(&set, err);
    if (st == AQ_OK && (st = aq_settings_set_text(set, "min_cosine", text, err)) == AQ_OK) {
        st = aq_settings_get_float(set, "min_cosine", floor, err);
    }
    aq_settings_free(set);
    return st;
}

int cmd_validate(int argc, char **argv)
{
    const char *orig = NULL, *quant = NULL, *profile = NULL, *acc = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            json = 1;
        } else if ((strcmp(a, "--min-accuracy") == 0 || strcmp(a, "--profile") == 0)) {
            if (i + 1 >= argc) {
                cli_fail("validate: %s needs a value", a);
                return 2;
            }
            *(a[2] == 'm' ? &acc : &profile) = argv[++i];
        } else if (a[0] == '-') {
            cli_fail("validate: unknown option '%s'", a);
            return 2;
        } else if (orig == NULL) {
            orig = a;
        } else if (quant == NULL) {
            quant = a;
        } else {
            cli_fail("validate: unexpected argument '%s'", a);
            return 2;
        }
    }
    if (orig == NULL || quant == NULL) {
        return val_error("validate needs ORIGINAL and QUANTIZED");
    }
    if (acc != NULL && profile != NULL) {
        return val_error("validate: give --min-accuracy or --profile, not both");
    }
    aq_error err;
    aq_status st;
    aq_profile prof;
    double floor = 0.0;
    char source[96];
    if (acc != NULL) {
        if ((st = val_min_accuracy(acc, &floor, &err)) != AQ_OK) {
            cli_fail("validate: --min-accuracy: %s", err.message);
            return 2;
        }
        snprintf(source, sizeof source, "--min-accuracy");
    } else if (profile != NULL) {
        if ((st = aq_profile_get(profile, &prof, &err)) != AQ_OK) {
            return val_error(err.message);
        }
        floor = prof.min_cosine;
        snprintf(source, sizeof source, "profile %s", prof.name);
    } else {
        aq_model_floor mf;
        if ((st = aq_model_default_floor(quant, &mf, &err)) != AQ_OK) {
            return val_error(err.message);
        }
        floor = mf.min_cosine;
        if (strcmp(mf.source, "file") == 0) {
            snprintf(source, sizeof source, "the quantized file's metadata");
        } else {
            snprintf(source, sizeof source, "profile %s (%s)", mf.profile,
                     strcmp(mf.source, "profile") == 0 ? "the quantized file's" : "default");
        }
    }
    if ((st = cli_check_open(orig, &err)) != AQ_OK || (st = cli_check_open(quant, &err)) != AQ_OK) {
        return val_error(err.message);
    }
    val_state v;
    memset(&v, 0, sizeof v);
    v.json = json;
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.min_cosine = floor;
    o.on_tensor = val_tensor;
    o.on_tensor_user = &v;
    aq_model_compare_summary s;
    memset(&s, 0, sizeof s);
    if (json) {
        printf("{\"original\": ");
        cli_json_str(stdout, orig);
        printf(", \"quantized\": ");
        cli_json_str(stdout, quant);
        printf(", \"tensors\": [");
    }
    int rc;
    st = aq_model_compare(orig, quant, &o, &s, &err);
    if (st != AQ_OK) {
        fflush(stdout);
        if (json) {
            putchar('\n');
        }
        rc = val_error(v.oom ? "out of memory" : err.message);
        goto done;
    }
    int passed = v.failing == 0;
    if (json) {
        printf("], \"min_cosine\": ");
        cli_json_num(stdout, "%.17g", floor);
        printf(", \"floor_source\": ");
        cli_json_str(stdout, source);
        printf(", \"passed\": %s, \"tensors_total\": %zu, \"compared\": %zu, "
               "\"missing_in_original\": %zu, \"missing_in_quantized\": %zu, "
               "\"mismatched\": %zu, \"below_min_cosine\": %zu, \"mean_cosine\": ",
               passed ? "true" : "false", s.tensors, s.compared, s.missing_in_a, s.missing_in_b,
               s.mismatched, s.below_min_cosine);
        cli_json_num(stdout, "%.17g", s.mean_cosine);
        printf(", \"min_cosine_seen\": ");
        cli_json_num(stdout, "%.17g", s.min_cosine);
        printf(", \"mean_sqnr_db\": ");
        cli_json_num(stdout, "%.17g", s.mean_sqnr_db);
        printf(", \"min_sqnr_db\": ");
        cli_json_num(stdout, "%.17g", s.min_sqnr_db);
        printf(", \"worst\": ");
        if (s.worst != NULL) {
            cli_json_str(stdout, s.worst);
        } else {
            printf("null");
        }
        printf(", \"failing\": [");
        for (size_t i = 0; i < v.failing; i++) {
            if (i > 0) {
                printf(", ");
            }
            cli_json_str(stdout, v.fail_names[i]);
        }
        printf("]}\n");
    } else {
        printf("%s: %zu tensors, %zu compared, %zu missing in the quantized model, %zu missing "
               "in the original, %zu mismatched, %zu below the cosine floor %.6g (%s); min "
               "cosine %.6f%s%s%s, mean cosine %.6f, min SQNR %.2f dB\n",
               passed ? "PASS" : "FAIL", s.tensors, s.compared, s.missing_in_b, s.missing_in_a,
               s.mismatched, s.below_min_cosine, floor, source, s.min_cosine,
               s.worst != NULL ? " (" : "", s.worst != NULL ? s.worst : "",
               s.worst != NULL ? ")" : "", s.mean_cosine, s.min_sqnr_db);
    }
    rc = passed ? 0 : 1;
done:
    for (size_t i = 0; i < v.failing; i++) {
        free(v.fail_names[i]);
    }
    free(v.fail_names);
    aq_model_compare_summary_reset(&s);
    return rc;
}
