/*
 * arrowquant: the command-line tool. quantize, dequantize, inspect, compare, validate, report,
 * one file each (cmd_NAME.c; GGUF's side in cli_gguf.c). This file holds main, the dispatch and
 * the helpers the commands share (cli.h).
 *
 * Uses the public header only. Every error is one line on stderr and a non-zero exit; output
 * files are written by the library under temporary names and renamed only when complete, so
 * an error or an interrupt (SIGINT, SIGTERM, SIGHUP: exit 130) never leaves a partial file
 * behind.
 */
#include <arrowquant.h>

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

volatile int cli_cancel;

static void cli_on_signal(int sig)
{
    (void)sig;
    cli_cancel = 1;
}

/* The library turns a fault in its own mappings into an error (aq_mapped_faults); a SIGBUS
 * it passes on comes from a mapping it does not guard (more than it has slots for). Nothing
 * can go on, but no temporary stays behind. */
static void cli_on_sigbus(int sig)
{
    (void)sig;
    static const char msg[] = "arrowquant: error: an input file changed while being read "
                              "(truncated by another process?); no output written\n";
    aq_temporaries_remove();
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(1);
}

static void cli_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A closed terminal or ssh session: stop cleanly as for TERM, removing the temporary. */
    sigaction(SIGHUP, &sa, NULL);
    sa.sa_handler = cli_on_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    /* A file size limit (RLIMIT_FSIZE) must fail the write with EFBIG, not kill us. */
    signal(SIGXFSZ, SIG_IGN);
}

int cli_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("arrowquant: error: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int cli_status(aq_status st, const aq_error *err)
{
    if (st == AQ_CANCELLED || cli_cancel) {
        fputs("arrowquant: interrupted; no output written\n", stderr);
        return 130;
    }
    return cli_fail("%s", err->message[0] != '\0' ? err->message : aq_status_message(st));
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The setting whose flag is `flag`, or -1. */
static long cli_setting_of(const char *flag, aq_setting_info *out)
{
    for (size_t i = 0; i < aq_setting_count(); i++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        if (aq_setting_at(i, &info, NULL) == AQ_OK && info.flag != NULL &&
            strcmp(info.flag, flag) == 0) {
            *out = info;
            return (long)i;
        }
    }
    return -1;
}

bool cli_setting_flag(const char *flag)
{
    aq_setting_info info;
    return cli_setting_of(flag, &info) >= 0;
}

/* "a,b,c" as "a, b, c". */
static void cli_choices(const char *choices, char *out, size_t cap)
{
    size_t at = 0;
    for (const char *p = choices; *p != '\0' && at + 3 < cap; p++) {
        out[at++] = *p;
        if (*p == ',') {
            out[at++] = ' ';
        }
    }
    out[at] = '\0';
}

int cli_setting_set(aq_settings *s, const char *flag, const char *value)
{
    aq_setting_info info;
    aq_error err;
    if (cli_setting_of(flag, &info) < 0) {
        return cli_fail("%s: not a setting's flag", flag);
    }
    if (aq_settings_set_text(s, info.name, value, &err) == AQ_OK) {
        return 0;
    }
    char list[256];
    if (info.type == AQ_SETTING_CHOICE) {
        cli_choices(info.choices, list, sizeof list);
        return cli_fail("%s: '%s' is not one of %s", flag, value, list);
    }
    if (info.type == AQ_SETTING_FLOAT && info.off_allowed) {
        return cli_fail("%s: '%s' is not 0 (off) or a number in [%g, %g%s", flag, value, info.lower,
                        info.upper, info.upper_open ? ")" : "]");
    }
    return cli_fail("%s: %s", flag, err.message);
}

int cli_setting_set_gguf(aq_settings *s, const char *flag, const char *value)
{
    aq_setting_info info;
    if (cli_setting_of(flag, &info) >= 0 && !info.gguf) {
        return cli_fail("quantize: %s (setting %s) does not apply to GGUF output (--type, -o "
                        "NAME.gguf); see docs/gguf.md",
                        flag, info.name);
    }
    return cli_setting_set(s, flag, value);
}

int cli_plan_flags_check(const char *plan_in, const char *plan_out, size_t n_rows_in)
{
    if (plan_in != NULL && plan_out != NULL) {
        return cli_fail("quantize: --plan-in follows a plan, --plan-out makes one: not both");
    }
    if (n_rows_in > 0 && plan_in == NULL) {
        return cli_fail("--rows-in needs --plan-in PLAN (the plan the rows were made from)");
    }
    return 0;
}

int cli_plan_read(const char *path, int gguf, aq_model_plan **out)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return cli_fail("--plan-in %s: %s", path, strerror(errno));
    }
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    int rc = 0;
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) {
            break;
        }
        unsigned char *more = realloc(buf, cap * 2);
        if (more == NULL) {
            free(buf);
        }
        buf = more;
        cap *= 2;
    }
    if (buf == NULL) {
        rc = cli_fail("out of memory");
    } else if (ferror(f)) {
        rc = cli_fail("--plan-in %s: %s", path, strerror(errno));
    } else {
        aq_error err;
        aq_error_clear(&err);
        aq_status st = aq_model_plan_deserialize(buf, len, out, &err);
        aq_model_plan_tensor t = {.size = sizeof t, .gguf_type = -1};
        if (st != AQ_OK) {
            rc = cli_fail("--plan-in %s: %s", path, err.message);
        } else if (aq_model_plan_count(*out) > 0 &&
                   (st = aq_model_plan_tensor_get(*out, 0, &t, &err)) != AQ_OK) {
            rc = cli_fail("--plan-in %s: %s", path, err.message);
        } else if ((t.gguf_type >= 0) != (gguf != 0)) {
            rc = gguf ? cli_fail("--plan-in %s: the plan is a model file's (quantize -o "
                                 "OUT.arrow --plan-out); GGUF output (--type, -o OUT.gguf) "
                                 "follows a GGUF plan (quantize --type T --plan-out)",
                                 path)
                      : cli_fail("--plan-in %s: the plan is a GGUF file's (quantize --type T "
                                 "--plan-out); give it with --type T -o OUT.gguf, or make a "
                                 "model file's plan (quantize -o OUT.arrow --plan-out)",
                                 path);
        }
        if (rc != 0) {
            aq_model_plan_free(*out);
            *out = NULL;
        }
    }
    free(buf);
    fclose(f);
    return rc;
}

aq_status cli_rows_append(aq_model_writer *w, const char *path, aq_error *err)
{
    aq_ipc_reader *rd = NULL;
    struct ArrowSchema sc;
    memset(&sc, 0, sizeof sc);
    aq_status st = aq_ipc_reader_open(path, &rd, err);
    if (st == AQ_OK) {
        st = aq_ipc_reader_schema(rd, &sc, err);
    }
    while (st == AQ_OK) {
        struct ArrowArray rows;
        memset(&rows, 0, sizeof rows);
        if ((st = aq_ipc_reader_next(rd, &rows, err)) != AQ_OK || rows.release == NULL) {
            break;
        }
        st = aq_model_writer_append(w, &sc, &rows, err);
        rows.release(&rows);
    }
    if (sc.release != NULL) {
        sc.release(&sc);
    }
    aq_ipc_reader_free(rd);
    return st;
}

int cli_plan_write(const char *path, const aq_model_plan *plan)
{
    aq_error err;
    aq_error_clear(&err);
    void *bytes = NULL;
    size_t len = 0;
    aq_status st = aq_model_plan_serialize(plan, &bytes, &len, &err);
    if (st != AQ_OK) {
        return cli_status(st, &err);
    }
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    int rc = 0;
    if (tmp == NULL) {
        rc = cli_fail("out of memory");
    } else {
        snprintf(tmp, n, "%s.tmp-%ld", path, (long)getpid());
        FILE *f = fopen(tmp, "wb");
        bool ok = f != NULL && fwrite(bytes, 1, len, f) == len;
        ok = f != NULL && fclose(f) == 0 && ok;
        if (!ok || rename(tmp, path) != 0) {
            rc = cli_fail("--plan-out %s: %s", path, strerror(errno));
            (void)unlink(tmp);
        }
    }
    free(tmp);
    aq_model_plan_bytes_free(bytes);
    return rc;
}

int cli_setting_check_model_file(const char *flag)
{
    aq_setting_info info;
    if (cli_setting_of(flag, &info) >= 0 && !info.model_file) {
        return cli_fail("quantize: %s (setting %s) applies to GGUF output only (--type, -o "
                        "NAME.gguf); see docs/gguf.md",
                        flag, info.name);
    }
    return 0;
}

void cli_settings_print(FILE *f)
{
    fputs("settings (the library's table; flag, values, default):\n", f);
    for (size_t i = 0; i < aq_setting_count(); i++) {
        aq_setting_info info = AQ_SIZED_INIT(aq_setting_info);
        if (aq_setting_at(i, &info, NULL) != AQ_OK || info.flag == NULL) {
            continue;
        }
        char what[256];
        if (info.choices != NULL) {
            snprintf(what, sizeof what, "%s", info.choices);
            for (char *c = what; *c != '\0'; c++) {
                *c = *c == ',' ? '|' : *c;
            }
        } else if (info.type == AQ_SETTING_FLOAT) {
            snprintf(what, sizeof what, "%s[%g, %g%s",
                     info.off_allowed && info.lower > 0 ? "0 or " : "", info.lower, info.upper,
                     info.upper_open ? ")" : "]");
        } else {
            snprintf(what, sizeof what, "%.0f..%.0f", info.lower, info.upper);
        }
        fprintf(f, "  %-22s %s (default %s): %s\n", info.flag, what, info.default_value, info.help);
    }
}

static int cli_usage(void)
{
    fputs("usage:\n"
          "  arrowquant quantize SRC -o OUT.arrow [--bits 2|4|8] [--group-size N]\n"
          "        [--scheme affine|affine_search|kquant] [--min-accuracy COSINE]\n"
          "        [--target-bpw BPW [--scheme S1,S2,...]] [--keep GLOB]... [--min-elements N]\n"
          "        [--threads N] [--compression zstd|lz4|none] [--json] [--quiet]\n"
          "  arrowquant quantize SRC -o OUT.arrow --profile edge|local|cloud\n"
          "        [--bits-for PATTERN=BITS]... [--keep GLOB]... [--target-bpw BPW|0]\n"
          "        [--min-accuracy COSINE|0] [--budget-scope profile|model]\n"
          "  arrowquant quantize SRC -o OUT.gguf --type Q8_0|Q6_K|Q5_K|Q4_K|Q3_K|Q2_K|Q5_0|Q4_0|\n"
          "        BF16|F16|F32 [--profile edge|local|cloud [--bits-for P=BITS]... [--keep "
          "GLOB]...]\n"
          "        [--calibration TABLE.arrow] [--arch NAME] [--name NAME] [--threads N] [--json]\n"
          "        [--gguf-search full|none (Q8_0, Q5_0, Q4_0: none rounds as ggml does)]\n"
          "        [--scheme S1,S2,... [--group-size N] (the budget's candidates)]\n"
          "        [other options above]\n"
          "  (the first form without --scheme, --group-size, --keep, --min-elements,\n"
          "  --min-accuracy and --target-bpw, or with --bits-for, is the second with the profile\n"
          "  of --bits: 2 edge, 4 local, 8 cloud)\n"
          "  (either form) [--calibration TABLE.arrow [--calibration-combine max|mean]]\n"
          "  arrowquant quantize SRC... -o OUT --ray ADDRESS|local [options above]\n"
          "        (each SRC quantized on a Ray cluster's workers, whole or in ranges of\n"
          "        tensors, with this command's summary of each file; OUT a folder for several\n"
          "        SRC)\n"
          "  arrowquant quantize SRC -o OUT.arrow|OUT.gguf --plan-out PLAN [options above]\n"
          "        (writes the run's plan, what each tensor becomes, to PLAN; quantizes nothing)\n"
          "  arrowquant quantize SRC -o OUT.arrow|OUT.gguf --plan-in PLAN [--rows-in ROWS]...\n"
          "        [options]\n"
          "        (follows PLAN instead of planning, with the options it was made with; with\n"
          "        --rows-in, writes OUT from those rows, Arrow IPC streams of the plan's tensors\n"
          "        quantized elsewhere, in order)\n"
          "  arrowquant dequantize IN.arrow -o OUT.safetensors|FOLDER/ [--dtype f16|bf16|f32]\n"
          "  arrowquant inspect FILE [--json]\n"
          "  arrowquant compare A B [--json]\n"
          "  arrowquant validate ORIGINAL QUANTIZED [--min-accuracy C | --profile P] [--json]\n"
          "  arrowquant report IN.arrow -o report.html\n"
          "SRC is a .safetensors file, a *.safetensors.index.json, or a folder (diffusers\n"
          "pipeline or model folder). See docs/cli.md for the default rules.\n",
          stderr);
    cli_settings_print(stderr);
    return 2;
}

void cli_bytes(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024.0 && i < 4) {
        b /= 1024.0;
        i++;
    }
    snprintf(buf, n, i == 0 ? "%.0f %s" : "%.1f %s", b, u[i]);
}

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

void cli_json_num(FILE *f, const char *fmt, double v)
{
    if (isfinite(v)) {
        fprintf(f, fmt, v);
    } else {
        fprintf(f, "\"%s\"", isnan(v) ? "nan" : v > 0 ? "inf" : "-inf");
    }
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

const char *cli_meta(const aq_qmodel *qm, const char *key)
{
    const char *v = aq_qmodel_metadata(qm, key);
    return v != NULL ? v : "?";
}

void cli_shape(const int64_t *shape, size_t ndim, char *buf, size_t n)
{
    size_t pos = (size_t)snprintf(buf, n, "[");
    for (size_t d = 0; d < ndim && pos < n; d++) {
        pos += (size_t)snprintf(buf + pos, n - pos, d ? ", %lld" : "%lld", (long long)shape[d]);
    }
    if (pos < n) {
        snprintf(buf + pos, n - pos, "]");
    }
}

int cli_err(aq_status st, const aq_error *err)
{
    (void)st;
    return cli_fail("%s", err->message);
}

/* Bytes a row of a model file takes for its tensor: codes plus scales and zero points. */
size_t cli_row_bytes(const aq_qmodel_row *r)
{
    return r->data_size + 2 * r->groups * sizeof(float);
}

size_t cli_source_bytes(const aq_qmodel_row *r)
{
    size_t es = aq_st_dtype_size(aq_st_dtype_from_name(r->source_dtype));
    return es > 0 ? r->elements * es : r->data_size;
}

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

const char **cli_model_names(const aq_model *model)
{
    size_t nt = aq_model_count(model);
    const char **names = calloc(nt + 1, sizeof *names);
    for (size_t k = 0; names != NULL && k < nt; k++) {
        names[k] = aq_model_tensor(model, k)->name;
    }
    return names;
}

aq_status cli_rules_override(aq_rules *rules, const char *const *keep, size_t n_keep,
                             const char *const *bits_for, size_t n_bits_for, aq_error *err)
{
    aq_status st = AQ_OK;
    for (size_t k = 0; k < n_keep && st == AQ_OK; k++) {
        st = aq_rules_add_override(rules, keep[k], AQ_RULES_KEEP, err);
    }
    for (size_t k = 0; k < n_bits_for && st == AQ_OK; k++) {
        st = aq_rules_add_override_spec(rules, bits_for[k], err);
    }
    return st;
}

aq_status cli_calib_load(const char *path, aq_calib_combine how, aq_calib **out, aq_error *err)
{
    aq_calib *calib = NULL;
    aq_status st;
    if ((st = aq_calib_create(&calib, err)) != AQ_OK ||
        (st = aq_calib_add_ipc_file(calib, path, err)) != AQ_OK ||
        (st = aq_calib_finish(calib, how, err)) != AQ_OK) {
        aq_calib_free(calib);
        calib = NULL;
    }
    *out = calib;
    return st;
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    cli_signals();
    if (argc < 2) {
        return cli_usage();
    }
    const char *cmd = argv[1];
    int n = argc - 2;
    char **rest = argv + 2;
    if (strcmp(cmd, "quantize") == 0) {
        if (cli_is_ray(n, rest)) {
            return cli_ray_quantize(n, rest);
        }
        return cli_is_gguf_output(n, rest) ? cli_gguf_quantize(n, rest, &cli_cancel)
                                           : cmd_quantize(n, rest);
    }
    if (strcmp(cmd, "dequantize") == 0) {
        return cmd_dequantize(n, rest);
    }
    if (strcmp(cmd, "inspect") == 0) {
        return cmd_inspect(n, rest);
    }
    if (strcmp(cmd, "compare") == 0) {
        return cmd_compare(n, rest);
    }
    if (strcmp(cmd, "validate") == 0) {
        return cmd_validate(n, rest);
    }
    if (strcmp(cmd, "report") == 0) {
        return cmd_report(n, rest);
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        /* The kernel set this CPU runs (or the one AQ_KERNELS forces): scripts and bug reports
         * read it here. */
        aq_error err;
        aq_ctx *ctx = NULL;
        if (aq_ctx_create(&ctx, &err) != AQ_OK) {
            cli_fail("%s", err.message);
            return 1;
        }
        printf("arrowquant %s\nkernels: %s\n", aq_version_string(), aq_ctx_kernels(ctx));
        aq_ctx_free(ctx);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        cli_usage();
        return 0;
    }
    cli_fail("unknown command '%s'", cmd);
    return cli_usage();
}
