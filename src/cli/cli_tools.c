/*
 * arrowquant inspect, compare and report.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void cli_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            fprintf(f, "\\%c", *p);
        } else if (*p < 0x20) {
            fprintf(f, "\\u%04x", *p);
        } else {
            fputc(*p, f);
        }
    }
    fputc('"', f);
}

void cli_html_str(FILE *f, const char *s)
{
    for (; *s != '\0'; s++) {
        switch (*s) {
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '&':
            fputs("&amp;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        default:
            fputc(*s, f);
        }
    }
}

bool cli_is_arrow(const char *path)
{
    /* A name ending in .arrow is a model file whatever its bytes, so that a damaged one gets
     * the model file's error, not the safetensors reader's. Anything but a regular file goes
     * to the safetensors reader, which refuses it (fopen of a FIFO would block). */
    size_t n = strlen(path);
    if (n > 6 && strcmp(path + n - 6, ".arrow") == 0) {
        return true;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        return false;
    }
    FILE *f = fopen(path, "rb");
    char magic[6] = {0};
    bool yes = false;
    if (f != NULL) {
        yes = fread(magic, 1, 6, f) == 6 && memcmp(magic, "ARROW1", 6) == 0;
        fclose(f);
    }
    return yes;
}

static const char *cli_meta(const aq_qmodel *qm, const char *key)
{
    const char *v = aq_qmodel_metadata(qm, key);
    return v != NULL ? v : "?";
}

static void cli_shape(const int64_t *shape, size_t ndim, char *buf, size_t n)
{
    size_t pos = (size_t)snprintf(buf, n, "[");
    for (size_t d = 0; d < ndim && pos < n; d++) {
        pos += (size_t)snprintf(buf + pos, n - pos, d ? ", %lld" : "%lld", (long long)shape[d]);
    }
    if (pos < n) {
        snprintf(buf + pos, n - pos, "]");
    }
}

static int cli_err(aq_status st, const aq_error *err)
{
    (void)st;
    return cli_fail("%s", err->message);
}

/* Bytes a row of a model file takes for its tensor: codes plus scales and zero points. */
static size_t cli_row_bytes(const aq_qmodel_row *r)
{
    return r->data_size + 2 * r->groups * sizeof(float);
}

static size_t cli_source_bytes(const aq_qmodel_row *r)
{
    size_t es = aq_st_dtype_size(aq_st_dtype_from_name(r->source_dtype));
    return es > 0 ? r->elements * es : r->data_size;
}

/* ---- inspect ---- */

int cli_inspect(int argc, char **argv)
{
    const char *path = NULL;
    int json = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (path == NULL && argv[i][0] != '-') {
            path = argv[i];
        } else {
            return cli_fail("inspect: unexpected argument '%s'", argv[i]);
        }
    }
    if (path == NULL) {
        return cli_fail("inspect needs a FILE");
    }
    if (aq_gguf_is_gguf(path)) {
        return cli_gguf_inspect(path, json);
    }
    aq_error err;
    aq_status st;
    char shape[128];
    size_t tensors = 0, params = 0, bytes = 0, src_bytes = 0;
    if (cli_is_arrow(path)) {
        aq_qmodel *qm;
        if ((st = aq_qmodel_open(path, &qm, &err)) != AQ_OK) {
            return cli_err(st, &err);
        }
        if (json) {
            printf("{\"file\": ");
            cli_json_str(stdout, path);
            printf(", \"format\": \"arrowquant\", \"tensors\": [");
        } else {
            printf("%s: arrowquant model file (tool %s, profile %s)\n", path,
                   cli_meta(qm, "arrowquant.tool_version"), cli_meta(qm, "arrowquant.profile"));
            printf("%-48s %-13s %-6s %4s %10s %-20s %12s %6s %8s\n", "tensor", "scheme", "source",
                   "bits", "group", "shape", "bytes", "bpw", "SQNR dB");
        }
        for (;;) {
            const aq_qmodel_row *r;
            if ((st = aq_qmodel_next(qm, &r, &err)) != AQ_OK) {
                aq_qmodel_free(qm);
                return cli_err(st, &err);
            }
            if (r == NULL) {
                break;
            }
            size_t b = cli_row_bytes(r);
            double bpw = r->elements > 0 ? 8.0 * (double)b / (double)r->elements : 0.0;
            cli_shape(r->shape, r->ndim, shape, sizeof shape);
            if (json) {
                printf("%s{\"name\": ", tensors ? ", " : "");
                cli_json_str(stdout, r->name);
                printf(", \"scheme\": \"%s\", \"source_dtype\": ", r->scheme);
                cli_json_str(stdout, r->source_dtype);
                printf(", \"bit_width\": %u, \"group_size\": %zu, \"shape\": %s, "
                       "\"bytes\": %zu, \"bits_per_weight\": %.4f, \"sqnr_db\": %s%.4f%s}",
                       r->bit_width, r->group_size, shape, b, bpw, isfinite(r->sqnr_db) ? "" : "\"",
                       r->sqnr_db, isfinite(r->sqnr_db) ? "" : "\"");
            } else {
                char gs[16];
                snprintf(gs, sizeof gs, "%zu", r->group_size);
                printf("%-48s %-13s %-6s %4u %10s %-20s %12zu %6.2f %8.2f\n", r->name, r->scheme,
                       r->source_dtype, r->bit_width, r->raw ? "-" : gs, shape, b, bpw, r->sqnr_db);
            }
            tensors++;
            params += r->elements;
            bytes += b;
            src_bytes += cli_source_bytes(r);
        }
        aq_qmodel_free(qm);
    } else {
        aq_model *m;
        if ((st = aq_model_open(path, &m, &err)) != AQ_OK) {
            return cli_err(st, &err);
        }
        if (json) {
            printf("{\"file\": ");
            cli_json_str(stdout, path);
            printf(", \"format\": \"safetensors\", \"tensors\": [");
        } else {
            printf("%s: safetensors checkpoint, %zu tensors\n", path, aq_model_count(m));
            printf("%-56s %-8s %-24s %14s\n", "tensor", "dtype", "shape", "bytes");
        }
        for (size_t i = 0; i < aq_model_count(m); i++) {
            const aq_st_tensor *t = aq_model_tensor(m, i);
            cli_shape(t->shape, t->ndim, shape, sizeof shape);
            if (json) {
                printf("%s{\"name\": ", i ? ", " : "");
                cli_json_str(stdout, t->name);
                printf(", \"dtype\": ");
                cli_json_str(stdout, t->dtype_name);
                printf(", \"shape\": %s, \"bytes\": %zu}", shape, t->nbytes);
            } else {
                printf("%-56s %-8s %-24s %14zu\n", t->name, t->dtype_name, shape, t->nbytes);
            }
            tensors++;
            params += t->elements;
            bytes += t->nbytes;
        }
        src_bytes = bytes;
        if (!json) {
            for (size_t i = 0; i < aq_model_metadata_count(m); i++) {
                const char *k, *v;
                aq_model_metadata_get(m, i, &k, &v);
                printf("metadata: %s = %s\n", k, v);
            }
        }
        aq_model_free(m);
    }
    double bpw = params > 0 ? 8.0 * (double)bytes / (double)params : 0.0;
    if (json) {
        printf("], \"total_tensors\": %zu, \"parameters\": %zu, \"bytes\": %zu, "
               "\"source_bytes\": %zu, \"bits_per_weight\": %.4f}\n",
               tensors, params, bytes, src_bytes, bpw);
    } else {
        printf("total: %zu tensors, %zu parameters, %zu bytes (source %zu), %.3f bits per "
               "weight\n",
               tensors, params, bytes, src_bytes, bpw);
    }
    return 0;
}

/* ---- compare ---- */

aq_status cli_check_open(const char *path, aq_error *err)
{
    aq_status st;
    if (cli_is_arrow(path)) {
        aq_qmodel *q = NULL;
        st = aq_qmodel_open(path, &q, err);
        aq_qmodel_free(q);
    } else if (aq_gguf_is_gguf(path)) {
        aq_gguf *g = NULL;
        st = aq_gguf_open(path, &g, err);
        aq_gguf_free(g);
    } else {
        aq_model *m = NULL;
        st = aq_model_open(path, &m, err);
        aq_model_free(m);
    }
    return st;
}

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
            printf(", \"sqnr_db\": %s%.4f%s, \"cosine\": %.8f, \"max_abs_error\": %.6g}",
                   isfinite(m->sqnr_db) ? "" : "\"", m->sqnr_db, isfinite(m->sqnr_db) ? "" : "\"",
                   m->cosine, m->max_abs_error);
        }
    } else if (note != NULL) {
        printf("%-56s %s\n", t->name, note);
    } else {
        printf("%-56s %10.2f %10.6f %12.6g\n", t->name, m->sqnr_db, m->cosine, m->max_abs_error);
    }
    p->n++;
    return 0;
}

int cli_compare(int argc, char **argv)
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
    aq_model_compare_options o;
    memset(&o, 0, sizeof o);
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
        printf("], \"compared\": %zu, \"missing\": %zu, \"mismatched\": %zu, "
               "\"mean_sqnr_db\": %.4f, \"min_sqnr_db\": %s%.4f%s, \"mean_cosine\": %.8f}\n",
               s.tensors, s.missing_in_b, s.mismatched, s.mean_sqnr_db,
               isfinite(s.min_sqnr_db) ? "" : "\"", s.min_sqnr_db,
               isfinite(s.min_sqnr_db) ? "" : "\"", s.mean_cosine);
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

/* ---- report ---- */

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

int cli_report(int argc, char **argv)
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
    rep_row *rows = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    FILE *f = NULL;
    char *tmp = NULL;
    if ((st = aq_output_check(out, &in, 1, &err)) != AQ_OK ||
        (st = aq_qmodel_open(in, &qm, &err)) != AQ_OK) {
        return cli_err(st, &err);
    }
    size_t tin = 0, tout = 0, params = 0, nq = 0;
    double sum_sqnr = 0.0;
    for (;;) {
        const aq_qmodel_row *r;
        if ((st = aq_qmodel_next(qm, &r, &err)) != AQ_OK) {
            rc = cli_err(st, &err);
            goto done;
        }
        if (r == NULL) {
            break;
        }
        if (n == cap) {
            cap = cap * 2 + 64;
            rep_row *nr = realloc(rows, cap * sizeof *nr);
            if (nr == NULL) {
                rc = cli_fail("out of memory");
                goto done;
            }
            rows = nr;
        }
        rep_row *x = &rows[n++];
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
        tin += x->bytes_in;
        tout += x->bytes_out;
        params += r->elements;
        if (!r->raw) {
            nq++;
            if (isfinite(r->sqnr_db)) {
                sum_sqnr += r->sqnr_db;
            }
        }
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
    double mean = nq > 0 ? sum_sqnr / (double)nq : 0.0;
    double bpw = params > 0 ? 8.0 * (double)tout / (double)params : 0.0;
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
            n, nq, (double)params / 1e6, (double)tin / 1048576.0, (double)tout / 1048576.0, bpw,
            mean);
    /* Chart sizes: one bar per tensor. */
    const double W = 960.0, H = 220.0, L = 50.0, B = 20.0;
    double maxbpw = 1.0, maxsq = 1.0;
    for (size_t i = 0; i < n; i++) {
        maxbpw = fmax(maxbpw, rows[i].bpw);
        if (isfinite(rows[i].sqnr)) {
            maxsq = fmax(maxsq, rows[i].sqnr);
        }
    }
    fprintf(f,
            "<h2>Bits per weight across the model</h2>\n<p>One bar per tensor in model "
            "order; a bar's width is the tensor's share of the parameters.</p>\n<svg "
            "id=\"chart-bits\" xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" "
            "height=\"%.0f\">\n",
            W, H + B);
    for (int t = 0; t <= 4; t++) {
        double v = maxbpw * t / 4.0, y = H - (H - 10.0) * t / 4.0;
        fprintf(f,
                "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"4\" y=\"%.1f\" font-size=\"10\">%.1f</text>\n",
                L, W, y, y, y + 3, v);
    }
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double share = params > 0 ? (double)rows[i].elements / (double)params : 0.0;
        double h = (H - 10.0) * rows[i].bpw / maxbpw;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.3f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                L + (W - L - 10.0) * cum, H - h, fmax((W - L - 10.0) * share, 0.3), h,
                rep_color(rows[i].bits));
        cli_html_str(f, rows[i].name);
        fprintf(f, ": %u-bit %s, %.3f bits/weight, %zu parameters</title></rect>\n", rows[i].bits,
                rows[i].scheme, rows[i].bpw, rows[i].elements);
        cum += share;
    }
    fprintf(f,
            "<text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">red 2-bit, blue 4-bit, green "
            "8-bit, grey kept as is (16 or 32 bits)</text></svg>\n",
            L, H + 15);
    fprintf(f,
            "<h2>SQNR per quantized tensor (dB, higher is better)</h2>\n<p>Quantized "
            "tensors in model order.</p>\n<svg id=\"chart-sqnr\" "
            "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\">\n",
            W, H + B);
    for (int t = 0; t <= 4; t++) {
        double v = maxsq * t / 4.0, y = H - (H - 10.0) * t / 4.0;
        fprintf(f,
                "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                "<text x=\"4\" y=\"%.1f\" font-size=\"10\">%.0f</text>\n",
                L, W, y, y, y + 3, v);
    }
    double qw = nq > 0 ? (W - L - 10.0) / (double)nq : 1.0;
    size_t qi = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(rows[i].scheme, "raw") == 0) {
            continue;
        }
        double v = isfinite(rows[i].sqnr) ? fmax(rows[i].sqnr, 0.0) : maxsq;
        double h = (H - 10.0) * v / maxsq;
        fprintf(f,
                "<rect class=\"bar\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
                "fill=\"%s\"><title>",
                L + qw * (double)qi, H - h, fmax(qw - 0.5, 0.5), h,
                rows[i].sqnr < mean - 3.0 ? "#d62728" : "#1f77b4");
        cli_html_str(f, rows[i].name);
        fprintf(f, ": %.2f dB, cosine %.6f</title></rect>\n", rows[i].sqnr, rows[i].cosine);
        qi++;
    }
    double my = H - (H - 10.0) * mean / maxsq;
    fprintf(f,
            "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#000\" "
            "stroke-dasharray=\"4 3\"/><text x=\"%.0f\" y=\"%.0f\" font-size=\"11\">dashed: "
            "mean; red: more than 3 dB below the mean</text></svg>\n",
            L, W, my, my, L, H + 15);
    double mx = fmax((double)tin, 1.0);
    fprintf(f,
            "<h2>Size before and after</h2>\n<svg id=\"chart-size\" "
            "xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"110\">\n"
            "<rect class=\"bar\" x=\"120\" y=\"10\" width=\"%.1f\" height=\"35\" "
            "fill=\"#7f7f7f\"><title>before</title></rect><text x=\"4\" y=\"32\" "
            "font-size=\"12\">before %.1f MiB</text>\n"
            "<rect class=\"bar\" x=\"120\" y=\"60\" width=\"%.1f\" height=\"35\" "
            "fill=\"#1f77b4\"><title>after</title></rect><text x=\"4\" y=\"82\" "
            "font-size=\"12\">after %.1f MiB</text></svg>\n",
            W, (W - 130.0) * (double)tin / mx, (double)tin / 1048576.0,
            fmax((W - 130.0) * (double)tout / mx, 1.0), (double)tout / 1048576.0);
    /* The table, worst first. */
    qsort(rows, n, sizeof *rows, rep_cmp_sqnr);
    fprintf(f, "<h2>Tensors, lowest SQNR first</h2>\n<table id=\"tensors\"><tr><th>tensor</th>"
               "<th>scheme</th><th>bits</th><th>bits/weight</th><th>SQNR dB</th><th>cosine</th>"
               "<th>bytes before</th><th>bytes after</th></tr>\n");
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "<tr><td>");
        cli_html_str(f, rows[i].name);
        fprintf(f,
                "</td><td>%s</td><td>%u</td><td>%.3f</td><td>%.2f</td><td>%.6f</td>"
                "<td>%zu</td><td>%zu</td></tr>\n",
                rows[i].scheme, rows[i].bits, rows[i].bpw, rows[i].sqnr, rows[i].cosine,
                rows[i].bytes_in, rows[i].bytes_out);
    }
    fprintf(f, "</table>\n</body></html>\n");
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
    for (size_t i = 0; i < n; i++) {
        free(rows[i].name);
    }
    free(rows);
    aq_qmodel_free(qm);
    return rc;
}
