/*
 * arrowquant compare A B [--json]: the error of every tensor of B against A.
 */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cmp_print {
    int json;
    size_t n;
} cmp_print;

static int cmp_print_tensor(void *user, const aq_compare_tensor *t)
{
    cmp_print *p = user;
    const aq_metrics *m = &t->metrics;
    const char *note = t->status == AQ_COMPARE_COMPARED ? NULL : aq_compare_status_name(t->status);
    if (p->json) {
        printf("%s{\"name\": ", p->n ? ", " : "");
        cli_json_str(stdout, t->name);
        if (note != NULL) {
            printf(", \"note\": \"%s\"}", note);
        } else {
            printf(", \"sqnr_db\": ");
            cli_json_num(stdout, "%.4f", m->sqnr_db);
            printf(", \"cosine\": ");
            cli_json_num(stdout, "%.8f", m->cosine);
            printf(", \"max_abs_error\": ");
            cli_json_num(stdout, "%.6g", m->max_abs_error);
            printf("}");
        }
    } else if (note != NULL) {
        printf("%-56s %s\n", t->name, note);
    } else {
        printf("%-56s %10.2f %10.6f %12.6g\n", t->name, m->sqnr_db, m->cosine, m->max_abs_error);
    }
    p->n++;
    return 0;
}

int cmd_compare(int argc, char **argv)
{
    const char *pa = NULL, *pb = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (argv[i][0] == '-') {
            return cli_fail("compare: unknown option '%s'", argv[i]);
        } else if (pa == NULL) {
            pa = argv[i];
        } else if (pb == NULL) {
            pb = argv[i];
        } else {
            return cli_fail("compare: unexpected argument '%s'", argv[i]);
        }
    }
    if (pa == NULL || pb == NULL) {
        return cli_fail("compare needs two files A and B");
    }
    /* Both files are opened (and their headers checked) before anything is printed, so an
     * unreadable file is one error line and no partial table. */
    aq_error err;
    aq_status st;
    aq_model_compare_summary s;
    cmp_print pr = {json, 0};
    aq_model_compare_options o = AQ_SIZED_INIT(aq_model_compare_options);
    o.a_only = 1;
    o.on_tensor = cmp_print_tensor;
    o.on_tensor_user = &pr;
    if ((st = cli_check_open(pa, &err)) != AQ_OK || (st = cli_check_open(pb, &err)) != AQ_OK) {
        return cli_err(st, &err);
    }
    if (json) {
        printf("{\"a\": ");
        cli_json_str(stdout, pa);
        printf(", \"b\": ");
        cli_json_str(stdout, pb);
        printf(", \"tensors\": [");
    } else {
        printf("%-56s %10s %10s %12s\n", "tensor", "SQNR dB", "cosine", "max |err|");
    }
    if ((st = aq_model_compare(pa, pb, &o, &s, &err)) != AQ_OK) {
        fflush(stdout);
        return cli_err(st, &err);
    }
    if (json) {
        printf("], \"compared\": %zu, \"missing\": %zu, \"mismatched\": %zu, \"mean_sqnr_db\": ",
               s.tensors, s.missing_in_b, s.mismatched);
        cli_json_num(stdout, "%.4f", s.mean_sqnr_db);
        printf(", \"min_sqnr_db\": ");
        cli_json_num(stdout, "%.4f", s.min_sqnr_db);
        printf(", \"mean_cosine\": ");
        cli_json_num(stdout, "%.8f", s.mean_cosine);
        printf("}\n");
    } else {
        /* Means over every compared tensor (kept ones included, the SQNR mean over those
         * of finite SQNR): quantize's summary averages its quantized tensors only. */
        printf("total: %zu tensors, %zu missing in B, %zu mismatched; over the compared "
               "tensors (kept ones included): mean SQNR %.2f dB, min %.2f dB, mean cosine "
               "%.6f\n",
               s.tensors, s.missing_in_b, s.mismatched, s.mean_sqnr_db, s.min_sqnr_db,
               s.mean_cosine);
    }
    int rc = (s.missing_in_b > 0 || s.mismatched > 0) ? 3 : 0;
    aq_model_compare_summary_reset(&s);
    return rc;
}
