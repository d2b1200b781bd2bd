/*
 * arrowquant report IN.arrow -o report.html: an HTML page of a model file's tensors.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct rep_row {
    char *name;
    char scheme[16];
    unsigned bits;
    double bpw;
    double sqnr;
    double cosine;
    size_t bytes_in;
    size_t bytes_out;
    size_t elements;
} rep_row;

static int rep_cmp_sqnr(const void *x, const void *y)
{
    const rep_row *a = x, *b = y;
    return a->sqnr < b->sqnr ? -1 : a->sqnr > b->sqnr ? 1 : 0;
}

static const char *rep_color(unsigned bits)
{
    switch (bits) {
    case 2:
        return "#d62728";
    case 4:
        return "#1f77b4";
    case 8:
        return "#2ca02c";
    default:
        return "#7f7f7f";
    }
}

/* The model file's rows and their totals. */
typedef struct rep_table {
    rep_row *rows;
    size_t n, cap;
    size_t tin, tout, params, nq;
    double sum_sqnr;
} rep_table;

/* Chart sizes: one bar per tensor. */
static const double W = 960.0, H = 220.0, L = 50.0, B = 20.0;

/* Reads every row of the model file into t; 0 or the exit status of a failure. */
static int rep_read(aq_qmodel *qm, rep_table *t)
{
    aq_error err;
    aq_status st;
    for (;;) {
        const aq_qmodel_row *r;
        if ((st = aq_qmodel_next(qm, &r, &err)) != AQ_OK) {
            return cli_err(st, &err);
        }
        if (r == NULL) {
            return 0;
        }
        if (t->n == t->cap) {
            t->cap = t->cap * 2 + 64;
            rep_row *nr = realloc(t->rows, t->cap * sizeof *nr);
            if (nr == NULL) {
                return cli_fail("out of memory");
            }
            t->rows = nr;
        }
        rep_row *x = &t->rows[t->n++];
        memset(x, 0, sizeof *x);
        x->name = strdup(r->name);
        snprintf(x->scheme, sizeof x->scheme, "%s", r->scheme);
        x->bits = r->bit_width;
        x->bytes_out = cli_row_bytes(r);
        x->bytes_in = cli_source_bytes(r);
        x->elements = r->elements;
        x->bpw = r->elements > 0 ? 8.0 * (double)x->bytes_out / (double)r->elements : 0.0;
        x->sqnr = r->sqnr_db;
        x->cosine = r->cosine;
        t->tin += x->bytes_in;
        t->tout += x->bytes_out;
        t->params += r->elements;
        if (!r->raw) {
            t->nq++;
            if (isfinite(r->sqnr_db)) {
                t->sum_sqnr += r->sqnr_db;
            }
        }
    }
}

/* A chart's horizontal grid lines and their labels, 0 to max in quarters. */
static void rep_axis(FILE *f, double max, int decimals)
{
    for (int t = 0; t <= 4; t++) {
        double v = max * t / 4.0, y = H - (H - 10.0) * t / 4.0;
        fprintf(f,
                "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"4\" y=\"%.1f\" font-size=\"10\">%.*f</text>\n",
                L, W, y, y, y + 3, decimals, v);
    }
}

/* The page's head and the summary figures. */
static void rep_head(FILE *f, const char *in, const aq_qmodel *qm, const rep_table *t, double mean)
{
    double bpw = t->params > 0 ? 8.0 * (double)t->tout / (double)t->params : 0.0;
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
               "<title>arrowquant report: ");
    cli_html_str(f, in);
    fprintf(f, "</title>\n<style>body{font-family:sans-serif;margin:2em;color:#222}"
               "table{border-collapse:collapse;font-size:13px}td,th{padding:2px 8px;"
               "border-bottom:1px solid #ddd;text-align:right}td:first-child,th:first-child"
               "{text-align:left}.kpi{display:inline-block;margin:0 2em 1em 0}.kpi b{display:"
               "block;font-size:22px}svg{background:#fafafa;border:1px solid #eee}</style>\n"
               "</head><body>\n<h1>arrowquant report</h1>\n<p>");
    cli_html_str(f, in);
    fprintf(f, " &mdash; tool %s, profile %s</p>\n", cli_meta(qm, "arrowquant.tool_version"),
            cli_meta(qm, "arrowquant.profile"));
    fprintf(f,
            "<div id=\"summary\"><span class=\"kpi\">tensors<b>%zu</b></span>"
            "<span class=\"kpi\">quantized<b>%zu</b></span><span class=\"kpi\">parameters<b>"
            "%.2f M</b></span><span class=\"kpi\">size before<b>%.2f MiB</b></span><span "
            "class=\"kpi\">size after<b>%.2f MiB</b></span><span class=\"kpi\">bits per weight"
            "<b>%.3f</b></span><span class=\"kpi\">mean SQNR<b>%.2f dB</b></span></div>\n",
            t->n, t->nq, (double)t->params / 1e6, (double)t->tin / 1048576.0,
            (double)t->tout / 1048576.0, bpw, mean);
}

/* The bits per weight of every tensor, as wide as its share of the parameters. */
static void rep_chart_bits(FILE *f, const rep_table *t, double maxbpw)
{
    fprintf(f,
            "<h2>Bits per weight across the model</h2>\n<p>One bar per tensor in model "
            "order; a bar's width is the tensor's share of the parameters.</p>\n<svg "
            "id=\"chart-bits\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
            "height=\"%.0f\">\n",
            W, H + B);
    rep_axis(f, maxbpw, 1);
    double cum = 0.0;
    for (size_t i = 0; i < t->n; i++) {
        double share = t->params > 0 ? (double)t->rows[i].elements / (double)t->params : 0.0;
        double h = (H - 10.0) * t->rows[i].bpw / maxbpw;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.3f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                L + (W - L - 10.0) * cum, H - h, fmax((W - L - 10.0) * share, 0.3), h,
                rep_color(t->rows[i].bits));
        cli_html_str(f, t->rows[i].name);
        fprintf(f, ": %u-bit %s, %.3f bits/weight, %zu parameters</title></rect>\n",
                t->rows[i].bits, t->rows[i].scheme, t->rows[i].bpw, t->rows[i].elements);
        cum += share;
    }
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">red 2-bit, blue 4-bit, green "
            "8-bit, grey kept as is (16 or 32 bits)</text></svg>\n",
            L, H + 15);
}

/* The SQNR of every quantized tensor, against the mean. */
static void rep_chart_sqnr(FILE *f, const rep_table *t, double maxsq, double mean)
{
    fprintf(f,
            "<h2>SQNR per quantized tensor (dB, higher is better)</h2>\n<p>Quantized "
            "tensors in model order.</p>\n<svg id=\"chart-sqnr\" "
            "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\">\n",
            W, H + B);
    rep_axis(f, maxsq, 0);
    double qw = t->nq > 0 ? (W - L - 10.0) / (double)t->nq : 1.0;
    size_t qi = 0;
    for (size_t i = 0; i < t->n; i++) {
        if (strcmp(t->rows[i].scheme, "raw") == 0) {
            continue;
        }
        double v = isfinite(t->rows[i].sqnr) ? fmax(t->rows[i].sqnr, 0.0) : maxsq;
        double h = (H - 10.0) * v / maxsq;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                L + qw * (double)qi, H - h, fmax(qw - 0.5, 0.5), h,
                t->rows[i].sqnr < mean - 3.0 ? "#d62728" : "#1f77b4");
        cli_html_str(f, t->rows[i].name);
        fprintf(f, ": %.2f dB, cosine %.6f</title></rect>\n", t->rows[i].sqnr, t->rows[i].cosine);
        qi++;
    }
    double my = H - (H - 10.0) * mean / maxsq;
    fprintf(f,
            "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" "
            "stroke-dasharray=\"4 3\"/><text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">dashed: "
            "mean; red: more than 3 dB below the mean</text></svg>\n",
            L, W, my, my, L, H + 15);
}

/* The size before and after, and the table of tensors, worst first. */
static void rep_size_and_table(FILE *f, rep_table *t)
{
    double mx = fmax((double)t->tin, 1.0);
    fprintf(f,
            "<h2>Size before and after</h2>\n<svg id=\"chart-size\" "
            "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"110\">\n"
            "<rect class=\"bar\" x=\"120\" y=\"10\" width=\"%.1f\" height=\"35\" "
            "fill=\"#7f7f7f\"><title>before</title></rect><text x=\"4\" y=\"32\" "
            "font-size=\"12\">before %.1f MiB</text>\n"
            "<rect class=\"bar\" x=\"120\" y=\"60\" width=\"%.1f\" height=\"35\" "
            "fill=\"#1f77b4\"><title>after</title></rect><text x=\"4\" y=\"82\" "
            "font-size=\"12\">after %.1f MiB</text></svg>\n",
            W, (W - 130.0) * (double)t->tin / mx, (double)t->tin / 1048576.0,
            fmax((W - 130.0) * (double)t->tout / mx, 1.0), (double)t->tout / 1048576.0);
    /* The table, worst first. */
    qsort(t->rows, t->n, sizeof *t->rows, rep_cmp_sqnr);
    fprintf(f, "<h2>Tensors, lowest SQNR first</h2>\n<table id=\"tensors\"><tr><th>tensor</th>"
               "<th>scheme</th><th>bits</th><th>bits/weight</th><th>SQNR dB</th><th>cosine</th>"
               "<th>bytes before</th><th>bytes after</th></tr>\n");
    for (size_t i = 0; i < t->n; i++) {
        fprintf(f, "<tr><td>");
        cli_html_str(f, t->rows[i].name);
        fprintf(f,
                "</td><td>%s</td><td>%u</td><td>%.3f</td><td>%.2f</td><td>%.6f</td>"
                "<td>%zu</td><td>%zu</td></tr>\n",
                t->rows[i].scheme, t->rows[i].bits, t->rows[i].bpw, t->rows[i].sqnr,
                t->rows[i].cosine, t->rows[i].bytes_in, t->rows[i].bytes_out);
    }
    fprintf(f, "</table>\n</body></html>\n");
}

/* Writes the page to f. */
static void rep_write(FILE *f, const char *in, const aq_qmodel *qm, rep_table *t)
{
    double mean = t->nq > 0 ? t->sum_sqnr / (double)t->nq : 0.0;
    rep_head(f, in, qm, t, mean);
    double maxbpw = 1.0, maxsq = 1.0;
    for (size_t i = 0; i < t->n; i++) {
        maxbpw = fmax(maxbpw, t->rows[i].bpw);
        if (isfinite(t->rows[i].sqnr)) {
            maxsq = fmax(maxsq, t->rows[i].sqnr);
        }
    }
    rep_chart_bits(f, t, maxbpw);
    rep_chart_sqnr(f, t, maxsq, mean);
    rep_size_and_table(f, t);
}

int cmd_report(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (argv[i][0] != '-' && in == NULL) {
            in = argv[i];
        } else {
            return cli_fail("report: unexpected argument '%s'", argv[i]);
        }
    }
    if (in == NULL || out == NULL) {
        return cli_fail("report needs IN.arrow and -o report.html");
    }
    aq_error err;
    aq_status st;
    aq_qmodel *qm = NULL;
    int rc = 0;
    FILE *f = NULL;
    char *tmp = NULL;
    if ((st = aq_output_check(out, &in, 1, &err)) != AQ_OK ||
        (st = aq_qmodel_open(in, &qm, &err)) != AQ_OK) {
        return cli_err(st, &err);
    }
    rep_table t;
    memset(&t, 0, sizeof t);
    if ((rc = rep_read(qm, &t)) != 0) {
        goto done;
    }
    size_t len = strlen(out) + 16;
    tmp = malloc(len);
    if (tmp == NULL) {
        rc = cli_fail("out of memory");
        goto done;
    }
    snprintf(tmp, len, "%s.tmp", out);
    if ((f = fopen(tmp, "w")) == NULL) {
        rc = cli_fail("%s: cannot write: %s", out, strerror(errno));
        goto done;
    }
    rep_write(f, in, qm, &t);
    if (ferror(f) || fclose(f) != 0) {
        f = NULL;
        rc = cli_fail("%s: write failed: %s", out, strerror(errno));
        goto done;
    }
    f = NULL;
    if (rename(tmp, out) != 0) {
        rc = cli_fail("%s: cannot rename into place: %s", out, strerror(errno));
        goto done;
    }
    free(tmp);
    tmp = NULL;
done:
    if (f != NULL) {
        fclose(f);
    }
    if (tmp != NULL) {
        remove(tmp);
        free(tmp);
    }
    for (size_t i = 0; i < t.n; i++) {
        free(t.rows[i].name);
    }
    free(t.rows);
    aq_qmodel_free(qm);
    return rc;
}
