/*
 * arrowquant: the command-line tool. quantize, dequantize, inspect, compare, validate, report.
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

static volatile int cli_cancel;

static void cli_on_signal(int sig)
{
    (void)sig;
    cli_cancel = 1;
}

/* A memory-mapped input truncated by another process while it is read: the next touch of a
 * page past its new end raises SIGBUS. Nothing can go on, but no temporary stays behind. */
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

static int cli_status(aq_status st, const aq_error *err)
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
          "        [--scheme S1,S2,... [--group-size N] (the budget's candidates)]\n"
          "        [other options above]\n"
          "  (the first form without --scheme, --group-size, --keep, --min-elements,\n"
          "  --min-accuracy and --target-bpw, or with --bits-for, is the second with the profile\n"
          "  of --bits: 2 edge, 4 local, 8 cloud)\n"
          "  (either form) [--calibration TABLE.arrow [--calibration-combine max|mean]]\n"
          "  arrowquant dequantize IN.arrow -o OUT.safetensors|FOLDER/ [--dtype f16|bf16|f32]\n"
          "  arrowquant inspect FILE [--json]\n"
          "  arrowquant compare A B [--json]\n"
          "  arrowquant validate ORIGINAL QUANTIZED [--min-accuracy C | --profile P] [--json]\n"
          "  arrowquant report IN.arrow -o report.html\n"
          "SRC is a .safetensors file, a *.safetensors.index.json, or a folder (diffusers\n"
          "pipeline or model folder). See docs/cli.md for the default rules.\n",
          stderr);
    return 2;
}

/* ---- progress ---- */

typedef struct cli_progress {
    int quiet;
    int tty;
    double t0;
    int last_decile;
    double last_draw;
    int planning;
} cli_progress;

static void cli_bytes(double b, char *buf, size_t n)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int i = 0;
    while (b >= 1024.0 && i < 4) {
        b /= 1024.0;
        i++;
    }
    snprintf(buf, n, i == 0 ? "%.0f %s" : "%.1f %s", b, u[i]);
}

static void cli_on_progress(void *user, const aq_model_progress *p)
{
    cli_progress *c = user;
    if (c->quiet) {
        return;
    }
    double now = cli_now();
    if (p->planning != c->planning) {
        /* The budget's measuring pass is over: the real pass starts its own count. */
        c->planning = p->planning;
        c->t0 = now;
        c->last_decile = -1;
    }
    const char *what = p->planning ? "planning" : "tensors";
    double el = now - c->t0;
    double frac = p->bytes_total > 0 ? (double)p->bytes_done / (double)p->bytes_total : 1.0;
    double rate = el > 0 ? (double)p->bytes_done / el : 0.0;
    double left = rate > 0 ? (double)(p->bytes_total - p->bytes_done) / rate : 0.0;
    char done[32], total[32], r[32];
    cli_bytes((double)p->bytes_done, done, sizeof done);
    cli_bytes((double)p->bytes_total, total, sizeof total);
    cli_bytes(rate, r, sizeof r);
    bool last = p->tensors_done == p->tensors_total;
    if (c->tty) {
        if (!last && now - c->last_draw < 0.1) {
            return;
        }
        c->last_draw = now;
        char bar[31];
        int fill = (int)(frac * 30.0);
        for (int i = 0; i < 30; i++) {
            bar[i] = i < fill ? '#' : '.';
        }
        bar[30] = '\0';
        fprintf(stderr, "\r[%s] %zu/%zu %s  %s/%s  %s/s  %.0fs left  ", bar, p->tensors_done,
                p->tensors_total, what, done, total, r, left);
        if (last) {
            fputc('\n', stderr);
        }
        return;
    }
    int decile = (int)(frac * 10.0);
    if (decile > c->last_decile || last) {
        c->last_decile = decile;
        fprintf(stderr, "progress: %zu/%zu %s, %s of %s, %s/s, %.1fs elapsed\n", p->tensors_done,
                p->tensors_total, what, done, total, r, el);
    }
}

/* ---- quantize ---- */

static int cli_parse_size(const char *opt, const char *v, long long lo, long long hi,
                          long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno != 0 || end == v || *end != '\0' || x < lo || x > hi) {
        return cli_fail("%s: '%s' is not a number in [%lld, %lld]", opt, v, lo, hi);
    }
    *out = x;
    return 0;
}

/* --min-accuracy and --target-bpw: 0 (off) or a number in (0, hi]. */
static int cli_parse_off(const char *opt, const char *v, double hi, double *out)
{
    char *end = NULL;
    errno = 0;
    double x = strtod(v, &end);
    if (errno != 0 || end == v || *end != '\0' || !(x >= 0.0 && x <= hi)) {
        return cli_fail("%s: '%s' is not 0 (off) or a number in (0, %g]", opt, v, hi);
    }
    *out = x;
    return 0;
}

/* What the run did, tensor by tensor: the moved tensors and the allocation by (scheme, bits). */
typedef struct cli_moved {
    const char *name;
    unsigned from, to;
    double cos_from, cos_to;
} cli_moved;

typedef struct cli_alloc {
    size_t tensors[AQ_SCHEME_COUNT][9];
    size_t params[AQ_SCHEME_COUNT][9];
    size_t bytes[AQ_SCHEME_COUNT][9];
    cli_moved *moved;
    size_t n_moved, cap_moved;
    int oom;
    /* With --profile: how many tensors each rule decided (names are static strings). */
    const char *rule_names[AQ_RULE_COUNT + 1];
    size_t rule_counts[AQ_RULE_COUNT + 1];
    size_t n_rules;
    /* The budget's scopes: the tensors it chooses for (rule "profile", or every quantized
     * tensor without rules) and every float tensor. */
    const aq_model *model;
    size_t scope_bytes, scope_params, float_bytes, float_params;
} cli_alloc;

static void cli_on_tensor(void *user, const aq_model_tensor_result *r)
{
    cli_alloc *a = user;
    if (r->rule != NULL ? (!r->kept && strcmp(r->rule, "profile") == 0) : !r->kept) {
        a->scope_bytes += r->bytes;
        a->scope_params += r->elements;
    }
    const aq_st_tensor *t = a->model != NULL ? aq_model_tensor(a->model, r->index) : NULL;
    if (t != NULL && aq_st_dtype_to_aq(t->dtype, NULL)) {
        a->float_bytes += r->bytes;
        a->float_params += r->elements;
    }
    if (r->rule != NULL) {
        size_t k = 0;
        while (k < a->n_rules && strcmp(a->rule_names[k], r->rule) != 0) {
            k++;
        }
        if (k == a->n_rules && k < AQ_RULE_COUNT + 1) {
            a->rule_names[a->n_rules++] = r->rule;
        }
        if (k < a->n_rules) {
            a->rule_counts[k]++;
        }
    }
    if (r->kept || (unsigned)r->scheme >= AQ_SCHEME_COUNT || r->bit_width > 8) {
        return;
    }
    a->tensors[r->scheme][r->bit_width]++;
    a->params[r->scheme][r->bit_width] += r->elements;
    a->bytes[r->scheme][r->bit_width] += r->bytes;
    if (!r->moved) {
        return;
    }
    if (a->n_moved == a->cap_moved) {
        size_t cap = a->cap_moved > 0 ? 2 * a->cap_moved : 16;
        cli_moved *m = realloc(a->moved, cap * sizeof *m);
        if (m == NULL) {
            a->oom = 1;
            return;
        }
        a->moved = m;
        a->cap_moved = cap;
    }
    cli_moved x = {r->name, r->initial_bit_width, r->bit_width, r->initial_cosine, r->cosine};
    a->moved[a->n_moved++] = x;
}

/* "affine,kquant" -> schemes; 0 or the exit status of a failure. */
static int cli_parse_schemes(const char *v, aq_scheme *out, size_t *n)
{
    char buf[256];
    if (strlen(v) >= sizeof buf) {
        return cli_fail("--scheme: '%s' is too long", v);
    }
    snprintf(buf, sizeof buf, "%s", v);
    *n = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        aq_error e;
        aq_scheme sc;
        if (aq_scheme_from_name(tok, &sc, &e) != AQ_OK) {
            return cli_fail("--scheme: %s", e.message);
        }
        if (*n >= AQ_SCHEME_COUNT) {
            return cli_fail("--scheme: '%s' names a scheme twice", v);
        }
        for (size_t k = 0; k < *n; k++) {
            if (out[k] == sc) {
                return cli_fail("--scheme: '%s' names a scheme twice", v);
            }
        }
        out[(*n)++] = sc;
    }
    if (*n == 0) {
        return cli_fail("--scheme: no scheme in '%s'", v);
    }
    return 0;
}

static int cmd_quantize(int argc, char **argv)
{
    const char *src = NULL, *out = NULL;
    long long bits = AQ_DEFAULT_BIT_WIDTH, group = AQ_DEFAULT_GROUP_SIZE, threads = 1;
    long long min_el = AQ_MODEL_MIN_ELEMENTS;
    const char *scheme = NULL;
    double min_cos = 0.0, target = 0.0;
    bool min_set = false, target_set = false;
    const char *calib_path = NULL, *combine = NULL, *scope_name = NULL;
    aq_calib *calib = NULL;
    aq_budget_scope scope = AQ_BUDGET_SCOPE_PROFILE;
    cli_alloc alloc;
    memset(&alloc, 0, sizeof alloc);
    int comp = AQ_IPC_COMPRESSION_ZSTD;
    int json = 0, quiet = 0;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    size_t n_keep = 0;
    const char **bits_for = calloc((size_t)argc + 1, sizeof *bits_for);
    size_t n_bits_for = 0;
    const char *profile = NULL;
    bool bits_set = false, group_set = false, min_el_set = false;
    aq_rules *rules = NULL;
    const char **names = NULL;
    int rc = 0;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_error err;
    aq_error_clear(&err);
    if (keep == NULL || bits_for == NULL) {
        free(keep);
        free(bits_for);
        return cli_fail("out of memory");
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool needs = strcmp(a, "-o") == 0 || strcmp(a, "--bits") == 0 ||
                     strcmp(a, "--group-size") == 0 || strcmp(a, "--scheme") == 0 ||
                     strcmp(a, "--keep") == 0 || strcmp(a, "--threads") == 0 ||
                     strcmp(a, "--compression") == 0 || strcmp(a, "--min-elements") == 0 ||
                     strcmp(a, "--min-accuracy") == 0 || strcmp(a, "--target-bpw") == 0 ||
                     strcmp(a, "--profile") == 0 || strcmp(a, "--bits-for") == 0 ||
                     strcmp(a, "--calibration") == 0 || strcmp(a, "--calibration-combine") == 0 ||
                     strcmp(a, "--budget-scope") == 0;
        if (needs && v == NULL) {
            rc = cli_fail("%s needs a value", a);
            goto done;
        }
        if (strcmp(a, "-o") == 0) {
            out = v;
        } else if (strcmp(a, "--profile") == 0) {
            profile = v;
        } else if (strcmp(a, "--bits-for") == 0) {
            bits_for[n_bits_for++] = v;
        } else if (strcmp(a, "--bits") == 0) {
            bits_set = true;
            if ((rc = cli_parse_size(a, v, 0, 64, &bits)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--group-size") == 0) {
            group_set = true;
            if ((rc = cli_parse_size(a, v, 0, 4294967295LL, &group)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--threads") == 0) {
            if ((rc = cli_parse_size(a, v, 0, AQ_MAX_THREADS, &threads)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--min-elements") == 0) {
            if ((rc = cli_parse_size(a, v, 1, 1LL << 62, &min_el)) != 0) {
                goto done;
            }
            min_el_set = true;
        } else if (strcmp(a, "--scheme") == 0) {
            scheme = v;
        } else if (strcmp(a, "--min-accuracy") == 0) {
            min_set = true;
            if ((rc = cli_parse_off(a, v, 1.0, &min_cos)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--target-bpw") == 0) {
            target_set = true;
            if ((rc = cli_parse_off(a, v, 64.0, &target)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--calibration") == 0) {
            calib_path = v;
        } else if (strcmp(a, "--calibration-combine") == 0) {
            combine = v;
        } else if (strcmp(a, "--budget-scope") == 0) {
            scope_name = v;
        } else if (strcmp(a, "--keep") == 0) {
            keep[n_keep++] = v;
        } else if (strcmp(a, "--compression") == 0) {
            if (strcmp(v, "zstd") == 0) {
                comp = AQ_IPC_COMPRESSION_ZSTD;
            } else if (strcmp(v, "lz4") == 0) {
                comp = AQ_IPC_COMPRESSION_LZ4_FRAME;
            } else if (strcmp(v, "none") == 0) {
                comp = AQ_IPC_COMPRESSION_NONE;
            } else {
                rc = cli_fail("--compression: '%s' is not one of zstd, lz4, none", v);
                goto done;
            }
        } else if (strcmp(a, "--json") == 0) {
            json = 1;
            continue;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            quiet = 1;
            continue;
        } else if (a[0] == '-' && a[1] != '\0') {
            rc = cli_fail("quantize: unknown option '%s'", a);
            goto done;
        } else if (src == NULL) {
            src = a;
            continue;
        } else {
            rc = cli_fail("quantize: unexpected argument '%s'", a);
            goto done;
        }
        i++;
    }
    if (src == NULL || out == NULL) {
        rc = cli_fail("quantize needs SRC and -o OUT.arrow");
        goto done;
    }
    aq_status st;
    aq_scheme sch, cands[AQ_SCHEME_COUNT];
    size_t n_cands = 0;
    aq_profile prof;
    memset(&prof, 0, sizeof prof);
    aq_calib_combine how = AQ_CALIB_COMBINE_MAX;
    /* Without --profile the command applies the layer rules, floor and budget of the profile
     * of the bit width asked for (2: edge, 4: local, 8: cloud), as the Python diffusion mode
     * does, unless an option asks for one treatment of every tensor (--scheme, --group-size,
     * --min-elements, --keep) or a floor or budget of its own (--min-accuracy, --target-bpw,
     * which then cover every quantized tensor). --bits-for always means the rules. */
    if (profile == NULL && (bits == 2 || bits == 4 || bits == 8) &&
        (n_bits_for > 0 ||
         (scheme == NULL && !group_set && !min_el_set && n_keep == 0 && !min_set && !target_set))) {
        profile = bits == 2 ? "edge" : bits == 8 ? "cloud" : "local";
        bits_set = false;
    }
    if (combine != NULL) {
        if (calib_path == NULL) {
            rc = cli_fail("--calibration-combine needs --calibration TABLE.arrow");
            goto done;
        }
        if (strcmp(combine, "max") == 0) {
            how = AQ_CALIB_COMBINE_MAX;
        } else if (strcmp(combine, "mean") == 0) {
            how = AQ_CALIB_COMBINE_MEAN;
        } else {
            rc = cli_fail("--calibration-combine: '%s' is not one of max, mean", combine);
            goto done;
        }
    }
    if (scope_name != NULL) {
        if (strcmp(scope_name, "profile") == 0) {
            scope = AQ_BUDGET_SCOPE_PROFILE;
        } else if (strcmp(scope_name, "model") == 0) {
            scope = AQ_BUDGET_SCOPE_MODEL;
        } else {
            rc = cli_fail("--budget-scope: '%s' is not one of profile, model", scope_name);
            goto done;
        }
    }
    const char *cand_list = NULL; /* with --profile: the budget's candidate schemes */
    if (profile != NULL) {
        /* The profile and the layer rules choose every tensor's bits and scheme; by default
         * the profile's floor and budget apply too (docs/decisions.md). */
        if ((st = aq_profile_get(profile, &prof, &err)) != AQ_OK) {
            rc = cli_status(st, &err);
            goto done;
        }
        if (bits_set) {
            rc = cli_fail("--profile %s sets the bits and scheme of every tensor: it cannot be "
                          "combined with --bits (use --bits-for PATTERN=BITS)",
                          profile);
            goto done;
        }
        if (!min_set) {
            min_cos = prof.min_cosine;
        }
        if (!target_set) {
            /* The profile's budget: its own size on this model (prof.target_bpw where every
             * row is whole kquant super-blocks), see AQ_TARGET_BPW_PROFILE. */
            target = AQ_TARGET_BPW_PROFILE;
        }
        if (scheme != NULL && target == 0.0) {
            rc = cli_fail("--profile %s sets the scheme of every tensor: --scheme lists the "
                          "budget's candidates and needs a budget (--target-bpw is 0)",
                          profile);
            goto done;
        }
        cand_list = scheme != NULL ? scheme : aq_scheme_name(prof.scheme);
        bits = (long long)prof.bit_width;
        scheme = aq_scheme_name(prof.scheme);
        /* --group-size: the group of affine and affine_search budget candidates (kquant's
         * is its 512-element super-block). */
        if (!group_set && !aq_scheme_is_kquant(prof.scheme) && prof.group_size > 0) {
            group = (long long)prof.group_size;
        }
    }
    if (scope_name != NULL && target == 0.0) {
        rc = cli_fail("--budget-scope needs a budget (--target-bpw, or a profile's)");
        goto done;
    }
    if (target != 0.0) {
        /* The budget chooses among these; by default the fast scheme and the accurate one
         * (with a profile: the profile's scheme). */
        const char *list = cand_list != NULL ? cand_list
                           : scheme != NULL  ? scheme
                                             : "affine,kquant";
        if ((rc = cli_parse_schemes(list, cands, &n_cands)) != 0) {
            goto done;
        }
        if (profile == NULL) {
            scheme = aq_scheme_name(cands[0]);
        }
    } else if (scheme != NULL && strchr(scheme, ',') != NULL) {
        rc = cli_fail("--scheme: a list of schemes ('%s') needs --target-bpw", scheme);
        goto done;
    }
    if (scheme == NULL) {
        scheme = "affine";
    }
    if ((st = aq_ctx_create(&ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_BIT_WIDTH, bits, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GROUP_SIZE, group, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, threads, &err)) != AQ_OK ||
        (st = aq_scheme_from_name(scheme, &sch, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_SCHEME, (int64_t)sch, &err)) != AQ_OK) {
        rc = cli_status(st, &err);
        goto done;
    }
    double t0 = cli_now();
    if ((st = aq_model_open(src, &model, &err)) != AQ_OK) {
        rc = cli_status(st, &err);
        goto done;
    }
    alloc.model = model;
    if (calib_path != NULL) {
        if ((st = aq_calib_create(&calib, &err)) != AQ_OK ||
            (st = aq_calib_add_ipc_file(calib, calib_path, &err)) != AQ_OK ||
            (st = aq_calib_finish(calib, how, &err)) != AQ_OK) {
            rc = cli_status(st, &err);
            goto done;
        }
        bool weighted = sch != AQ_SCHEME_AFFINE;
        for (size_t k = 0; k < n_cands; k++) {
            weighted = weighted || cands[k] != AQ_SCHEME_AFFINE;
        }
        if (!weighted && !quiet) {
            fputs("arrowquant: warning: --calibration: plain affine ignores importance (use "
                  "--scheme affine_search or kquant)\n",
                  stderr);
        }
    }
    /* No rules for a model without tensors: aq_model_quantize says it holds none. */
    if (profile != NULL && aq_model_count(model) > 0) {
        size_t nt = aq_model_count(model);
        if ((names = calloc(nt + 1, sizeof *names)) == NULL) {
            rc = cli_fail("out of memory");
            goto done;
        }
        for (size_t k = 0; k < nt; k++) {
            names[k] = aq_model_tensor(model, k)->name;
        }
        if ((st = aq_rules_create(AQ_FAMILY_AUTO, &prof, names, nt, &rules, &err)) != AQ_OK) {
            rc = cli_status(st, &err);
            goto done;
        }
        for (size_t k = 0; k < n_keep; k++) {
            if ((st = aq_rules_add_override(rules, keep[k], AQ_RULES_KEEP, &err)) != AQ_OK) {
                rc = cli_status(st, &err);
                goto done;
            }
        }
        for (size_t k = 0; k < n_bits_for; k++) {
            if ((st = aq_rules_add_override_spec(rules, bits_for[k], &err)) != AQ_OK) {
                rc = cli_status(st, &err);
                goto done;
            }
        }
    }
    cli_progress prog = {quiet, isatty(2), t0, -1, 0.0, 0};
    aq_model_quantize_options o;
    memset(&o, 0, sizeof o);
    o.keep = rules == NULL ? keep : NULL;
    o.n_keep = rules == NULL ? n_keep : 0;
    o.rules = rules;
    o.profile = profile;
    o.min_elements = (size_t)min_el;
    o.compression = comp;
    o.progress = cli_on_progress;
    o.progress_user = &prog;
    o.cancel = &cli_cancel;
    o.min_cosine = min_cos;
    o.target_bpw = target;
    o.schemes = n_cands > 0 ? cands : NULL;
    o.n_schemes = n_cands;
    o.on_tensor = cli_on_tensor;
    o.on_tensor_user = &alloc;
    o.calib = calib;
    o.budget_scope = scope;
    aq_model_summary s;
    if ((st = aq_model_quantize(ctx, model, out, &o, &s, &err)) != AQ_OK) {
        if (prog.tty && !quiet) {
            fputc('\n', stderr);
        }
        rc = cli_status(st, &err);
        goto done;
    }
    double secs = cli_now() - t0;
    FILE *f = fopen(out, "rb");
    long long file_size = -1;
    if (f != NULL && fseek(f, 0, SEEK_END) == 0) {
        file_size = ftell(f);
    }
    if (f != NULL) {
        fclose(f);
    }
    double bpw = s.params > 0 ? 8.0 * (double)s.bytes_out / (double)s.params : 0.0;
    double qbpw =
        s.quantized_params > 0 ? 8.0 * (double)s.quantized_bytes / (double)s.quantized_params : 0.0;
    if (alloc.oom) {
        rc = cli_fail("out of memory");
        goto done;
    }
    /* The group size the rows carry: kquant's is its super-block. */
    if (aq_scheme_is_kquant(sch)) {
        group = AQ_KQUANT_SUPER_BLOCK;
    }
    const bool budget = target != 0.0;
    const bool whole = scope == AQ_BUDGET_SCOPE_MODEL;
    /* The budget's figures: over its scope (the tensors it chose for, or every float tensor)
     * and over every float tensor of the model. */
    size_t sc_bytes = whole ? alloc.float_bytes : alloc.scope_bytes;
    size_t sc_params = whole ? alloc.float_params : alloc.scope_params;
    double sc_bpw = sc_params > 0 ? 8.0 * (double)sc_bytes / (double)sc_params : 0.0;
    double fl_bpw =
        alloc.float_params > 0 ? 8.0 * (double)alloc.float_bytes / (double)alloc.float_params : 0.0;
    /* With a calibration: the layers whose inputs vary most along the trajectory. */
    enum { CLI_TOP = 3 };
    aq_calib_layer_info top[CLI_TOP];
    size_t n_top = 0, n_layers = calib != NULL ? aq_calib_layer_count(calib) : 0;
    for (size_t k = 0; k < n_layers; k++) {
        aq_calib_layer_info info;
        if (aq_calib_layer_get(calib, k, &info, &err) != AQ_OK) {
            continue;
        }
        size_t at = n_top < CLI_TOP ? n_top++ : CLI_TOP;
        while (at > 0 && top[at - 1].shape_variation < info.shape_variation) {
            if (at < CLI_TOP) {
                top[at] = top[at - 1];
            }
            at--;
        }
        if (at < CLI_TOP) {
            top[at] = info;
        }
    }
    if (json) {
        printf("{\"source\": \"%s\", \"output\": \"%s\", \"tensors\": %zu, \"quantized\": %zu, "
               "\"kept\": %zu, \"parameters\": %zu, \"quantized_parameters\": %zu, "
               "\"bytes_in\": %zu, \"bytes_out\": %zu, \"file_bytes\": %lld, "
               "\"bits_per_weight\": %.4f, \"mean_sqnr_db\": %.4f, \"min_sqnr_db\": %.4f, "
               "\"mean_cosine\": %.6f, \"worst_tensor\": \"%s\", \"record_batches\": %zu, "
               "\"bits\": %lld, \"group_size\": %lld, \"seconds\": %.3f",
               src, out, s.tensors, s.quantized, s.kept, s.params, s.quantized_params, s.bytes_in,
               s.bytes_out, file_size, bpw, s.mean_sqnr_db, s.min_sqnr_db, s.mean_cosine,
               s.worst != NULL ? s.worst : "", s.batches, bits, group, secs);
        printf(", \"scheme\": \"%s\", \"quantized_bits_per_weight\": %.4f, \"min_accuracy\": %g, ",
               budget || profile != NULL ? "mixed" : scheme, qbpw, min_cos);
        if (target == AQ_TARGET_BPW_PROFILE) {
            printf("\"target_bpw\": null, ");
        } else {
            printf("\"target_bpw\": %g, ", target);
        }
        if (budget) {
            printf("\"budget\": {\"scope\": \"%s\", \"target_bpw\": ", whole ? "model" : "profile");
            if (target == AQ_TARGET_BPW_PROFILE) {
                printf("\"profile\"");
            } else {
                printf("%g", target);
            }
            printf(", \"scope_parameters\": %zu, \"scope_bytes\": %zu, \"bits_per_weight\": %.4f, "
                   "\"float_parameters\": %zu, \"float_bytes\": %zu, "
                   "\"model_bits_per_weight\": %.4f}, ",
                   sc_params, sc_bytes, sc_bpw, alloc.float_params, alloc.float_bytes, fl_bpw);
        } else {
            printf("\"budget\": null, ");
        }
        if (calib != NULL) {
            printf("\"calibration\": {\"file\": ");
            cli_json_str(stdout, calib_path);
            printf(", \"combine\": \"%s\", \"layers\": %zu, \"most_varying\": [",
                   how == AQ_CALIB_COMBINE_MAX ? "max" : "mean", n_layers);
            for (size_t k = 0; k < n_top; k++) {
                printf("%s{\"layer\": ", k > 0 ? ", " : "");
                cli_json_str(stdout, top[k].name);
                printf(", \"shape_variation\": %.6f, \"scale_ratio\": ", top[k].shape_variation);
                if (isfinite(top[k].scale_ratio)) {
                    printf("%.6g}", top[k].scale_ratio);
                } else {
                    printf("null}");
                }
            }
            printf("]}, ");
        } else {
            printf("\"calibration\": null, ");
        }
        if (profile != NULL) {
            printf("\"profile\": \"%s\", \"rules\": {", prof.name);
            for (size_t k = 0; k < alloc.n_rules; k++) {
                printf("%s\"%s\": %zu", k > 0 ? ", " : "", alloc.rule_names[k],
                       alloc.rule_counts[k]);
            }
            printf("}, \"moved\": [");
        } else {
            printf("\"moved\": [");
        }
        for (size_t k = 0; k < alloc.n_moved; k++) {
            const cli_moved *m = &alloc.moved[k];
            printf("%s{\"name\": ", k > 0 ? ", " : "");
            cli_json_str(stdout, m->name);
            printf(", \"from_bits\": %u, \"to_bits\": %u, \"cosine_before\": %.6f, "
                   "\"cosine\": %.6f}",
                   m->from, m->to, m->cos_from, m->cos_to);
        }
        printf("], \"skipped\": [");
        for (size_t k = 0; k < aq_model_skipped_count(model); k++) {
            const char *sn, *sr;
            aq_model_skipped_get(model, k, &sn, &sr);
            printf("%s{\"component\": ", k > 0 ? ", " : "");
            cli_json_str(stdout, sn);
            printf(", \"reason\": ");
            cli_json_str(stdout, sr);
            printf("}");
        }
        printf("], \"allocation\": [");
        int first = 1;
        for (int sc = 0; sc < AQ_SCHEME_COUNT; sc++) {
            for (unsigned b = 2; b <= 8; b *= 2) {
                if (alloc.tensors[sc][b] == 0) {
                    continue;
                }
                printf("%s{\"scheme\": \"%s\", \"bits\": %u, \"tensors\": %zu, "
                       "\"parameters\": %zu, \"bytes\": %zu}",
                       first ? "" : ", ", aq_scheme_name((aq_scheme)sc), b, alloc.tensors[sc][b],
                       alloc.params[sc][b], alloc.bytes[sc][b]);
                first = 0;
            }
        }
        printf("]}\n");
    } else if (!quiet) {
        char in_b[32], out_b[32], file_b[32];
        cli_bytes((double)s.bytes_in, in_b, sizeof in_b);
        cli_bytes((double)s.bytes_out, out_b, sizeof out_b);
        cli_bytes((double)file_size, file_b, sizeof file_b);
        printf("%s -> %s\n", src, out);
        if (profile != NULL) {
            printf("  tensors      %zu (%zu quantized, bits and scheme per layer rule, profile %s "
                   "(%u bits, %s); %zu kept)\n",
                   s.tensors, s.quantized, prof.name, prof.bit_width, aq_scheme_name(prof.scheme),
                   s.kept);
            for (size_t k = 0; k < alloc.n_rules; k++) {
                printf("  rule         %-15s %zu tensor%s\n", alloc.rule_names[k],
                       alloc.rule_counts[k], alloc.rule_counts[k] == 1 ? "" : "s");
            }
        } else if (budget) {
            printf("  tensors      %zu (%zu quantized, bits and scheme per tensor; %zu kept)\n",
                   s.tensors, s.quantized, s.kept);
        } else {
            printf("  tensors      %zu (%zu quantized at %lld bits, %s, group %lld; %zu kept)\n",
                   s.tensors, s.quantized, bits, scheme, group, s.kept);
        }
        for (size_t k = 0; k < aq_model_skipped_count(model); k++) {
            const char *sn, *sr;
            aq_model_skipped_get(model, k, &sn, &sr);
            printf("  skipped      %s: %s\n", sn, sr);
        }
        printf("  parameters   %zu (%.1f%% quantized)\n", s.params,
               s.params > 0 ? 100.0 * (double)s.quantized_params / (double)s.params : 0.0);
        printf("  size         %s -> %s (%.2fx), file %s\n", in_b, out_b,
               s.bytes_out > 0 ? (double)s.bytes_in / (double)s.bytes_out : 0.0, file_b);
        printf("  bits/weight  %.3f\n", bpw);
        /* Over the quantized tensors only (compare's means include the kept ones). */
        printf("  SQNR         mean %.2f dB over the %zu quantized tensors, min %.2f dB (%s)\n",
               s.mean_sqnr_db, s.quantized, s.min_sqnr_db, s.worst != NULL ? s.worst : "-");
        printf("  cosine       mean %.6f over the quantized tensors\n", s.mean_cosine);
        if (budget || profile != NULL || alloc.n_moved > 0) {
            printf("  quantized    %.3f bits/weight%s\n", qbpw, budget ? " (budget)" : "");
            if (budget) {
                char tgt[64];
                if (target == AQ_TARGET_BPW_PROFILE) {
                    snprintf(tgt, sizeof tgt, "the profile's own size");
                } else {
                    snprintf(tgt, sizeof tgt, "%.3f bits/weight", target);
                }
                printf("  budget       scope %s, target %s: %.3f bits/weight over %s (%zu "
                       "parameters), %.3f over every float tensor\n",
                       whole ? "model" : "profile", tgt, sc_bpw,
                       whole           ? "every float tensor"
                       : rules != NULL ? "the tensors that follow the profile"
                                       : "the quantized tensors",
                       sc_params, fl_bpw);
            }
            for (int sc = 0; sc < AQ_SCHEME_COUNT; sc++) {
                for (unsigned b = 2; b <= 8; b *= 2) {
                    if (alloc.tensors[sc][b] > 0) {
                        printf("  allocation   %-13s %u bits: %zu tensors, %zu parameters\n",
                               aq_scheme_name((aq_scheme)sc), b, alloc.tensors[sc][b],
                               alloc.params[sc][b]);
                    }
                }
            }
        }
        if (min_cos > 0.0) {
            printf("  min accuracy cosine %g: %zu tensor%s moved to more bits\n", min_cos,
                   alloc.n_moved, alloc.n_moved == 1 ? "" : "s");
            for (size_t k = 0; k < alloc.n_moved; k++) {
                const cli_moved *m = &alloc.moved[k];
                printf("    %s: %u -> %u bits (cosine %.6f -> %.6f)\n", m->name, m->from, m->to,
                       m->cos_from, m->cos_to);
            }
        }
        if (calib != NULL) {
            printf("  calibration  %s: %zu layers (combine %s); varying most across timesteps:",
                   calib_path, n_layers, how == AQ_CALIB_COMBINE_MAX ? "max" : "mean");
            for (size_t k = 0; k < n_top; k++) {
                printf("%s %s (%.3f)", k > 0 ? "," : "", top[k].name, top[k].shape_variation);
            }
            printf("\n");
        }
        printf("  time         %.2f s\n", secs);
    }
done:
    aq_model_free(model);
    aq_ctx_free(ctx);
    aq_rules_free(rules);
    aq_calib_free(calib);
    free(names);
    free(keep);
    free(bits_for);
    free(alloc.moved);
    return rc;
}

/* ---- dequantize ---- */

static int cmd_dequantize(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    aq_st_dtype dtype = AQ_ST_UNKNOWN;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            out = argv[++i];
        } else if (strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
            const char *v = argv[++i];
            if (strcmp(v, "f32") == 0) {
                dtype = AQ_ST_F32;
            } else if (strcmp(v, "f16") == 0) {
                dtype = AQ_ST_F16;
            } else if (strcmp(v, "bf16") == 0) {
                dtype = AQ_ST_BF16;
            } else {
                return cli_fail("--dtype: '%s' is not one of f16, bf16, f32", v);
            }
        } else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
            continue; /* dequantize prints nothing but errors anyway */
        } else if (argv[i][0] == '-') {
            return cli_fail("dequantize: unknown option or missing value '%s'", argv[i]);
        } else if (in == NULL) {
            in = argv[i];
        } else {
            return cli_fail("dequantize: unexpected argument '%s'", argv[i]);
        }
    }
    if (in == NULL || out == NULL) {
        return cli_fail("dequantize needs IN.arrow and -o OUT.safetensors");
    }
    if (aq_gguf_is_gguf(in)) {
        return cli_gguf_dequantize(in, out, dtype);
    }
    aq_error err;
    aq_ctx *ctx;
    aq_status st = aq_ctx_create(&ctx, &err);
    if (st == AQ_OK) {
        struct stat sb;
        size_t ol = strlen(out);
        bool folder =
            (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) || (ol > 0 && out[ol - 1] == '/');
        st = folder ? aq_qmodel_to_folder(ctx, in, out, dtype, &cli_cancel, &err)
                    : aq_qmodel_to_safetensors(ctx, in, out, dtype, &cli_cancel, &err);
        aq_ctx_free(ctx);
    }
    return st == AQ_OK ? 0 : cli_status(st, &err);
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
        return cli_is_gguf_output(n, rest) ? cli_gguf_quantize(n, rest, &cli_cancel)
                                           : cmd_quantize(n, rest);
    }
    if (strcmp(cmd, "dequantize") == 0) {
        return cmd_dequantize(n, rest);
    }
    if (strcmp(cmd, "inspect") == 0) {
        return cli_inspect(n, rest);
    }
    if (strcmp(cmd, "compare") == 0) {
        return cli_compare(n, rest);
    }
    if (strcmp(cmd, "validate") == 0) {
        return cli_validate(n, rest);
    }
    if (strcmp(cmd, "report") == 0) {
        return cli_report(n, rest);
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
