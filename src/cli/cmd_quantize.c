/*
 * arrowquant quantize SRC -o OUT.arrow: options, the run, and its summary (text or JSON).
 * GGUF output (--type, -o NAME.gguf) is cli_gguf.c's.
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- progress ---- */

typedef struct cli_progress {
    int quiet;
    int tty;
    double t0;
    int last_decile;
    double last_draw;
    int planning;
} cli_progress;

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

/* The options as given (qz_parse), then as the profile and the budget settle them
 * (qz_resolve). */
typedef struct qz_opts {
    const char *src, *out;
    long long bits, group, threads, min_el;
    const char *scheme;
    double min_cos, target;
    bool min_set, target_set, bits_set, group_set, min_el_set;
    const char *calib_path, *combine, *scope_name, *profile;
    const char *plan_out; /* --plan-out: write the run's plan there, quantize nothing */
    const char *plan_in;  /* --plan-in: follow this plan (--plan-out's) instead of planning */
    /* --rows-in (with --plan-in): the file is written from these rows (Arrow IPC streams of
     * aq_model_execute's rows, in tensor order), quantizing nothing here. */
    const char **rows_in;
    size_t n_rows_in;
    int comp, json, quiet;
    const char **keep;
    size_t n_keep;
    const char **bits_for;
    size_t n_bits_for;
    /* Settled: */
    aq_scheme sch, cands[AQ_SCHEME_COUNT];
    size_t n_cands;
    aq_profile prof;
    aq_calib_combine how;
    aq_budget_scope scope;
    aq_settings *settings; /* the flags backed by the library's settings table */
} qz_opts;

/* A flag backed by the settings table: checked there, its value read back as an integer
 * (INT, BOOL, a CHOICE's index) or a number. */
static int qz_setting(qz_opts *q, const char *flag, const char *v, const char *name,
                      long long *as_int, double *as_num)
{
    int rc = cli_setting_set(q->settings, flag, v);
    if (rc != 0) {
        return rc;
    }
    aq_error err;
    aq_status st;
    if (as_int != NULL) {
        int64_t x;
        st = aq_settings_get_int(q->settings, name, &x, &err);
        *as_int = (long long)x;
    } else {
        st = aq_settings_get_float(q->settings, name, as_num, &err);
    }
    return st == AQ_OK ? 0 : cli_status(st, &err);
}

/* The run's objects and results. */
typedef struct qz_run {
    aq_ctx *ctx;
    aq_model *model;
    aq_calib *calib;
    aq_rules *rules;
    const char **names;
    aq_model_plan *plan; /* --plan-in's; the summary's names point into it */
    cli_alloc alloc;
    aq_model_summary s;
    double secs;
} qz_run;

/* The summary's figures, from the run. */
enum { QZ_TOP = 3 };
typedef struct qz_figures {
    long long file_size;
    double bpw, qbpw;
    bool budget, whole;
    size_t sc_bytes, sc_params;
    double sc_bpw, fl_bpw;
    /* With a calibration: the layers whose inputs vary most along the trajectory. */
    aq_calib_layer_info top[QZ_TOP];
    size_t n_top, n_layers;
} qz_figures;

/* The command line into q; 0 or the exit status of a failure. */
static int qz_parse(int argc, char **argv, qz_opts *q)
{
    int rc;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool needs = strcmp(a, "-o") == 0 || strcmp(a, "--keep") == 0 ||
                     strcmp(a, "--bits-for") == 0 || strcmp(a, "--calibration") == 0 ||
                     strcmp(a, "--scheme") == 0 || strcmp(a, "--plan-out") == 0 ||
                     strcmp(a, "--plan-in") == 0 || strcmp(a, "--rows-in") == 0 ||
                     cli_setting_flag(a);
        if (needs && v == NULL) {
            return cli_fail("%s needs a value", a);
        }
        if ((rc = cli_setting_check_model_file(a)) != 0) {
            return rc;
        }
        if (strcmp(a, "-o") == 0) {
            q->out = v;
        } else if (strcmp(a, "--profile") == 0) {
            q->profile = v;
        } else if (strcmp(a, "--bits-for") == 0) {
            q->bits_for[q->n_bits_for++] = v;
        } else if (strcmp(a, "--bits") == 0) {
            q->bits_set = true;
            if ((rc = qz_setting(q, a, v, "bit_width", &q->bits, NULL)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--group-size") == 0) {
            q->group_set = true;
            if ((rc = qz_setting(q, a, v, "group_size", &q->group, NULL)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--threads") == 0) {
            if ((rc = qz_setting(q, a, v, "threads", &q->threads, NULL)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--min-elements") == 0) {
            if ((rc = qz_setting(q, a, v, "min_elements", &q->min_el, NULL)) != 0) {
                return rc;
            }
            q->min_el_set = true;
        } else if (strcmp(a, "--scheme") == 0) {
            q->scheme = v;
        } else if (strcmp(a, "--min-accuracy") == 0) {
            q->min_set = true;
            if ((rc = qz_setting(q, a, v, "min_cosine", NULL, &q->min_cos)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--target-bpw") == 0) {
            q->target_set = true;
            if ((rc = qz_setting(q, a, v, "target_bpw", NULL, &q->target)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--calibration") == 0) {
            q->calib_path = v;
        } else if (strcmp(a, "--calibration-combine") == 0) {
            q->combine = v;
            if ((rc = cli_setting_set(q->settings, a, v)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--budget-scope") == 0) {
            q->scope_name = v;
            if ((rc = cli_setting_set(q->settings, a, v)) != 0) {
                return rc;
            }
        } else if (strcmp(a, "--keep") == 0) {
            q->keep[q->n_keep++] = v;
        } else if (strcmp(a, "--plan-out") == 0) {
            q->plan_out = v;
        } else if (strcmp(a, "--plan-in") == 0) {
            q->plan_in = v;
        } else if (strcmp(a, "--rows-in") == 0) {
            q->rows_in[q->n_rows_in++] = v;
        } else if (strcmp(a, "--compression") == 0) {
            long long comp;
            if ((rc = qz_setting(q, a, v, "compression", &comp, NULL)) != 0) {
                return rc;
            }
            q->comp = (int)comp; /* the choices follow aq_ipc_compression */
        } else if (strcmp(a, "--json") == 0) {
            q->json = 1;
            continue;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            q->quiet = 1;
            continue;
        } else if (a[0] == '-' && a[1] != '\0') {
            return cli_fail("quantize: unknown option '%s'", a);
        } else if (q->src == NULL) {
            q->src = a;
            continue;
        } else {
            return cli_fail("quantize: unexpected argument '%s'", a);
        }
        i++;
    }
    if (q->src == NULL || q->out == NULL) {
        return cli_fail("quantize needs SRC and -o OUT.arrow");
    }
    return cli_plan_flags_check(q->plan_in, q->plan_out, q->n_rows_in);
}

/* The profile (given, or the one of --bits), the calibration's combine, the budget's scope
 * and candidates, and the scheme; 0 or the exit status of a failure. */
static int qz_resolve(qz_opts *q)
{
    aq_status st;
    aq_error err;
    int rc;
    /* Without --profile the command applies the layer rules, floor and budget of the profile
     * of the bit width asked for (2: edge, 4: local, 8: cloud), as the Python diffusion mode
     * does, unless an option asks for one treatment of every tensor (--scheme, --group-size,
     * --min-elements, --keep) or a floor or budget of its own (--min-accuracy, --target-bpw,
     * which then cover every quantized tensor). --bits-for always means the rules. */
    if (q->profile == NULL && (q->bits == 2 || q->bits == 4 || q->bits == 8) &&
        (q->n_bits_for > 0 || (q->scheme == NULL && !q->group_set && !q->min_el_set &&
                               q->n_keep == 0 && !q->min_set && !q->target_set))) {
        q->profile = q->bits == 2 ? "edge" : q->bits == 8 ? "cloud" : "local";
        q->bits_set = false;
    }
    if (q->combine != NULL) {
        if (q->calib_path == NULL) {
            return cli_fail("--calibration-combine needs --calibration TABLE.arrow");
        }
        q->how = strcmp(q->combine, "mean") == 0 ? AQ_CALIB_COMBINE_MEAN : AQ_CALIB_COMBINE_MAX;
    }
    if (q->scope_name != NULL) {
        q->scope =
            strcmp(q->scope_name, "model") == 0 ? AQ_BUDGET_SCOPE_MODEL : AQ_BUDGET_SCOPE_PROFILE;
    }
    const char *cand_list = NULL; /* with --profile: the budget's candidate schemes */
    if (q->profile != NULL) {
        /* The profile and the layer rules choose every tensor's bits and scheme; by default
         * the profile's floor and budget apply too (docs/decisions.md). */
        if ((st = aq_profile_get(q->profile, &q->prof, &err)) != AQ_OK) {
            return cli_status(st, &err);
        }
        if (q->bits_set) {
            return cli_fail("--profile %s sets the bits and scheme of every tensor: it cannot be "
                            "combined with --bits (use --bits-for PATTERN=BITS)",
                            q->profile);
        }
        if (!q->min_set) {
            q->min_cos = q->prof.min_cosine;
        }
        if (!q->target_set) {
            /* The profile's budget: its own size on this model (prof.target_bpw where every
             * row is whole kquant super-blocks), see AQ_TARGET_BPW_PROFILE. */
            q->target = AQ_TARGET_BPW_PROFILE;
        }
        if (q->scheme != NULL && q->target == 0.0) {
            return cli_fail("--profile %s sets the scheme of every tensor: --scheme lists the "
                            "budget's candidates and needs a budget (--target-bpw is 0)",
                            q->profile);
        }
        cand_list = q->scheme != NULL ? q->scheme : aq_scheme_name(q->prof.scheme);
        q->bits = (long long)q->prof.bit_width;
        q->scheme = aq_scheme_name(q->prof.scheme);
        /* --group-size: the group of affine and affine_search budget candidates (kquant's
         * is its 512-element super-block). */
        aq_scheme_info pinfo = AQ_SIZED_INIT(aq_scheme_info);
        if ((st = aq_scheme_get_info(q->prof.scheme, &pinfo, &err)) != AQ_OK) {
            return cli_status(st, &err);
        }
        if (!q->group_set && pinfo.fixed_group_size == 0 && q->prof.group_size > 0) {
            q->group = (long long)q->prof.group_size;
        }
    }
    if (q->scope_name != NULL && q->target == 0.0) {
        return cli_fail("--budget-scope needs a budget (--target-bpw, or a profile's)");
    }
    if (q->target != 0.0) {
        /* The budget chooses among these; by default the fast scheme and the accurate one
         * (with a profile: the profile's scheme). */
        const char *list = cand_list != NULL   ? cand_list
                           : q->scheme != NULL ? q->scheme
                                               : "affine,kquant";
        if ((rc = cli_parse_schemes(list, q->cands, &q->n_cands)) != 0) {
            return rc;
        }
        if (q->profile == NULL) {
            q->scheme = aq_scheme_name(q->cands[0]);
        }
    } else if (q->scheme != NULL && strchr(q->scheme, ',') != NULL) {
        return cli_fail("--scheme: a list of schemes ('%s') needs --target-bpw", q->scheme);
    }
    if (q->scheme == NULL) {
        q->scheme = "affine";
    }
    return 0;
}

/* Whether a calibration's importance steers the scheme's search (the table's trait). */
static bool qz_scheme_weighted(aq_scheme scheme)
{
    aq_scheme_info info;
    memset(&info, 0, sizeof info);
    info.size = sizeof info;
    return aq_scheme_get_info(scheme, &info, NULL) == AQ_OK && info.importance;
}

/* --plan-out FILE: the run's plan (aq_model_plan_create with the options o), into FILE; what a
 * distributed run executes on its workers (docs/ray.md). 0 or the exit status of a failure. */
static int qz_plan_out(const qz_opts *q, qz_run *r, const aq_model_quantize_options *o)
{
    aq_error err;
    aq_error_clear(&err);
    aq_model_quantize_options po = *o;
    po.on_tensor = NULL;
    po.progress = NULL;
    aq_model_plan *plan = NULL;
    aq_status st = aq_model_plan_create(r->ctx, r->model, &po, &plan, &err);
    int rc = st == AQ_OK ? cli_plan_write(q->plan_out, plan) : cli_status(st, &err);
    aq_model_plan_free(plan);
    return rc;
}

/* --plan-in with --rows-in: the file written from the rows made elsewhere, each row reported
 * as the run reports its tensors. */
static aq_status qz_write_rows(const qz_opts *q, qz_run *r, const aq_model_quantize_options *o,
                               aq_error *err)
{
    aq_model_writer_options wo = AQ_SIZED_INIT(aq_model_writer_options);
    wo.on_tensor = o->on_tensor;
    wo.on_tensor_user = o->on_tensor_user;
    wo.progress = o->progress;
    wo.progress_user = o->progress_user;
    wo.model = r->model;
    wo.calib = r->calib;
    aq_model_writer *w = NULL;
    aq_status st = aq_output_check(q->out, q->rows_in, q->n_rows_in, err);
    if (st == AQ_OK) {
        st = aq_model_writer_open(r->plan, q->out, &wo, &w, err);
    }
    for (size_t k = 0; k < q->n_rows_in && st == AQ_OK; k++) {
        st = cli_rows_append(w, q->rows_in[k], err);
    }
    if (st == AQ_OK) {
        st = aq_model_writer_close(w, &r->s, err);
    }
    aq_model_writer_free(w);
    return st;
}

/* Opens the model and the calibration, makes the layer rules and quantizes; 0 or the exit
 * status of a failure (r's objects are the caller's to free either way). */
static int qz_execute(qz_opts *q, qz_run *r)
{
    aq_status st;
    aq_error err;
    aq_error_clear(&err);
    if ((st = aq_ctx_create(&r->ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(r->ctx, AQ_PARAM_BIT_WIDTH, q->bits, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(r->ctx, AQ_PARAM_GROUP_SIZE, q->group, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(r->ctx, AQ_PARAM_THREADS, q->threads, &err)) != AQ_OK ||
        (st = aq_scheme_from_name(q->scheme, &q->sch, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(r->ctx, AQ_PARAM_SCHEME, (int64_t)q->sch, &err)) != AQ_OK) {
        return cli_status(st, &err);
    }
    double t0 = cli_now();
    if ((st = aq_model_open(q->src, &r->model, &err)) != AQ_OK) {
        return cli_status(st, &err);
    }
    r->alloc.model = r->model;
    if (q->calib_path != NULL) {
        if ((st = cli_calib_load(q->calib_path, q->how, &r->calib, &err)) != AQ_OK) {
            return cli_status(st, &err);
        }
        bool weighted = qz_scheme_weighted(q->sch);
        for (size_t k = 0; k < q->n_cands; k++) {
            weighted = weighted || qz_scheme_weighted(q->cands[k]);
        }
        if (!weighted && !q->quiet) {
            fputs("arrowquant: warning: --calibration: plain affine ignores importance (use "
                  "--scheme affine_search or kquant)\n",
                  stderr);
        }
    }
    /* No rules for a model without tensors: aq_model_quantize says it holds none. */
    if (q->profile != NULL && aq_model_count(r->model) > 0) {
        if ((r->names = cli_model_names(r->model)) == NULL) {
            return cli_fail("out of memory");
        }
        if ((st = aq_rules_create(AQ_FAMILY_AUTO, &q->prof, r->names, aq_model_count(r->model),
                                  &r->rules, &err)) != AQ_OK ||
            (st = cli_rules_override(r->rules, q->keep, q->n_keep, q->bits_for, q->n_bits_for,
                                     &err)) != AQ_OK) {
            return cli_status(st, &err);
        }
    }
    cli_progress prog = {q->quiet, isatty(2), t0, -1, 0.0, 0};
    aq_model_quantize_options o = AQ_SIZED_INIT(aq_model_quantize_options);
    o.keep = r->rules == NULL ? q->keep : NULL;
    o.n_keep = r->rules == NULL ? q->n_keep : 0;
    o.rules = r->rules;
    o.profile = q->profile;
    o.min_elements = (size_t)q->min_el;
    o.compression = q->comp;
    o.progress = cli_on_progress;
    o.progress_user = &prog;
    o.cancel = &cli_cancel;
    o.min_cosine = q->min_cos;
    o.target_bpw = q->target;
    o.schemes = q->n_cands > 0 ? q->cands : NULL;
    o.n_schemes = q->n_cands;
    o.on_tensor = cli_on_tensor;
    o.on_tensor_user = &r->alloc;
    o.calib = r->calib;
    o.budget_scope = q->scope;
    if (q->plan_out != NULL) {
        return qz_plan_out(q, r, &o);
    }
    int rc;
    if (q->plan_in != NULL && (rc = cli_plan_read(q->plan_in, 0, &r->plan)) != 0) {
        return rc;
    }
    st = q->plan_in == NULL ? aq_model_quantize(r->ctx, r->model, q->out, &o, &r->s, &err)
         : q->n_rows_in > 0
             ? qz_write_rows(q, r, &o, &err)
             : aq_model_quantize_plan(r->ctx, r->model, r->plan, q->out, &o, &r->s, &err);
    if (st != AQ_OK) {
        if (prog.tty && !q->quiet) {
            fputc('\n', stderr);
        }
        return cli_status(st, &err);
    }
    r->secs = cli_now() - t0;
    return 0;
}

/* The summary's figures: sizes, bits per weight, the budget's scope, the calibration's
 * most varying layers. */
static void qz_measure(const qz_opts *q, const qz_run *r, qz_figures *f)
{
    const aq_model_summary *s = &r->s;
    const cli_alloc *a = &r->alloc;
    FILE *fp = fopen(q->out, "rb");
    f->file_size = -1;
    if (fp != NULL && fseek(fp, 0, SEEK_END) == 0) {
        f->file_size = ftell(fp);
    }
    if (fp != NULL) {
        fclose(fp);
    }
    f->bpw = s->params > 0 ? 8.0 * (double)s->bytes_out / (double)s->params : 0.0;
    f->qbpw = s->quantized_params > 0
                  ? 8.0 * (double)s->quantized_bytes / (double)s->quantized_params
                  : 0.0;
    f->budget = q->target != 0.0;
    f->whole = q->scope == AQ_BUDGET_SCOPE_MODEL;
    /* The budget's figures: over its scope (the tensors it chose for, or every float tensor)
     * and over every float tensor of the model. */
    f->sc_bytes = f->whole ? a->float_bytes : a->scope_bytes;
    f->sc_params = f->whole ? a->float_params : a->scope_params;
    f->sc_bpw = f->sc_params > 0 ? 8.0 * (double)f->sc_bytes / (double)f->sc_params : 0.0;
    f->fl_bpw = a->float_params > 0 ? 8.0 * (double)a->float_bytes / (double)a->float_params : 0.0;
    f->n_top = 0;
    f->n_layers = r->calib != NULL ? aq_calib_layer_count(r->calib) : 0;
    for (size_t k = 0; k < f->n_layers; k++) {
        aq_calib_layer_info info;
        aq_error err;
        if (aq_calib_layer_get(r->calib, k, &info, &err) != AQ_OK) {
            continue;
        }
        size_t at = f->n_top < QZ_TOP ? f->n_top++ : QZ_TOP;
        while (at > 0 && f->top[at - 1].shape_variation < info.shape_variation) {
            if (at < QZ_TOP) {
                f->top[at] = f->top[at - 1];
            }
            at--;
        }
        if (at < QZ_TOP) {
            f->top[at] = info;
        }
    }
}

/* --json: the summary as one JSON object on stdout. */
static void qz_print_json(const qz_opts *q, const qz_run *r, const qz_figures *f)
{
    const aq_model_summary *s = &r->s;
    const cli_alloc *a = &r->alloc;
    printf("{\"source\": ");
    cli_json_str(stdout, q->src);
    printf(", \"output\": ");
    cli_json_str(stdout, q->out);
    printf(", \"tensors\": %zu, \"quantized\": %zu, \"kept\": %zu, \"parameters\": %zu, "
           "\"quantized_parameters\": %zu, \"bytes_in\": %zu, \"bytes_out\": %zu, "
           "\"file_bytes\": %lld, \"bits_per_weight\": ",
           s->tensors, s->quantized, s->kept, s->params, s->quantized_params, s->bytes_in,
           s->bytes_out, f->file_size);
    cli_json_num(stdout, "%.4f", f->bpw);
    printf(", \"mean_sqnr_db\": ");
    cli_json_num(stdout, "%.4f", s->mean_sqnr_db);
    printf(", \"min_sqnr_db\": ");
    cli_json_num(stdout, "%.4f", s->min_sqnr_db);
    printf(", \"mean_cosine\": ");
    cli_json_num(stdout, "%.6f", s->mean_cosine);
    printf(", \"worst_tensor\": ");
    cli_json_str(stdout, s->worst != NULL ? s->worst : "");
    printf(", \"record_batches\": %zu, \"bits\": %lld, \"group_size\": %lld, \"seconds\": %.3f",
           s->batches, q->bits, q->group, r->secs);
    printf(", \"scheme\": \"%s\", \"quantized_bits_per_weight\": %.4f, \"min_accuracy\": %g, ",
           f->budget || q->profile != NULL ? "mixed" : q->scheme, f->qbpw, q->min_cos);
    if (q->target == AQ_TARGET_BPW_PROFILE) {
        printf("\"target_bpw\": null, ");
    } else {
        printf("\"target_bpw\": %g, ", q->target);
    }
    if (f->budget) {
        printf("\"budget\": {\"scope\": \"%s\", \"target_bpw\": ", f->whole ? "model" : "profile");
        if (q->target == AQ_TARGET_BPW_PROFILE) {
            printf("\"profile\"");
        } else {
            printf("%g", q->target);
        }
        printf(", \"scope_parameters\": %zu, \"scope_bytes\": %zu, \"bits_per_weight\": %.4f, "
               "\"float_parameters\": %zu, \"float_bytes\": %zu, "
               "\"model_bits_per_weight\": %.4f}, ",
               f->sc_params, f->sc_bytes, f->sc_bpw, a->float_params, a->float_bytes, f->fl_bpw);
    } else {
        printf("\"budget\": null, ");
    }
    if (r->calib != NULL) {
        printf("\"calibration\": {\"file\": ");
        cli_json_str(stdout, q->calib_path);
        printf(", \"combine\": \"%s\", \"layers\": %zu, \"most_varying\": [",
               q->how == AQ_CALIB_COMBINE_MAX ? "max" : "mean", f->n_layers);
        for (size_t k = 0; k < f->n_top; k++) {
            printf("%s{\"layer\": ", k > 0 ? ", " : "");
            cli_json_str(stdout, f->top[k].name);
            printf(", \"shape_variation\": %.6f, \"scale_ratio\": ", f->top[k].shape_variation);
            if (isfinite(f->top[k].scale_ratio)) {
                printf("%.6g}", f->top[k].scale_ratio);
            } else {
                printf("null}");
            }
        }
        printf("]}, ");
    } else {
        printf("\"calibration\": null, ");
    }
    if (q->profile != NULL) {
        printf("\"profile\": \"%s\", \"rules\": {", q->prof.name);
        for (size_t k = 0; k < a->n_rules; k++) {
            printf("%s\"%s\": %zu", k > 0 ? ", " : "", a->rule_names[k], a->rule_counts[k]);
        }
        printf("}, \"moved\": [");
    } else {
        printf("\"moved\": [");
    }
    for (size_t k = 0; k < a->n_moved; k++) {
        const cli_moved *m = &a->moved[k];
        printf("%s{\"name\": ", k > 0 ? ", " : "");
        cli_json_str(stdout, m->name);
        printf(", \"from_bits\": %u, \"to_bits\": %u, \"cosine_before\": ", m->from, m->to);
        cli_json_num(stdout, "%.6f", m->cos_from);
        printf(", \"cosine\": ");
        cli_json_num(stdout, "%.6f", m->cos_to);
        printf("}");
    }
    printf("], \"skipped\": [");
    for (size_t k = 0; k < aq_model_skipped_count(r->model); k++) {
        const char *sn, *sr;
        if (aq_model_skipped_get(r->model, k, &sn, &sr, NULL) != AQ_OK) {
            break; /* k is below the count: cannot happen */
        }
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
            if (a->tensors[sc][b] == 0) {
                continue;
            }
            printf("%s{\"scheme\": \"%s\", \"bits\": %u, \"tensors\": %zu, "
                   "\"parameters\": %zu, \"bytes\": %zu}",
                   first ? "" : ", ", aq_scheme_name((aq_scheme)sc), b, a->tensors[sc][b],
                   a->params[sc][b], a->bytes[sc][b]);
            first = 0;
        }
    }
    printf("]}\n");
}

/* The budget's lines of the text summary: its scope and target, and the allocation. */
static void qz_print_budget(const qz_opts *q, const qz_run *r, const qz_figures *f)
{
    const cli_alloc *a = &r->alloc;
    printf("  quantized    %.3f bits/weight%s\n", f->qbpw, f->budget ? " (budget)" : "");
    if (f->budget) {
        char tgt[64];
        if (q->target == AQ_TARGET_BPW_PROFILE) {
            snprintf(tgt, sizeof tgt, "the profile's own size");
        } else {
            snprintf(tgt, sizeof tgt, "%.3f bits/weight", q->target);
        }
        printf("  budget       scope %s, target %s: %.3f bits/weight over %s (%zu "
               "parameters), %.3f over every float tensor\n",
               f->whole ? "model" : "profile", tgt, f->sc_bpw,
               f->whole           ? "every float tensor"
               : r->rules != NULL ? "the tensors that follow the profile"
                                  : "the quantized tensors",
               f->sc_params, f->fl_bpw);
    }
    for (int sc = 0; sc < AQ_SCHEME_COUNT; sc++) {
        for (unsigned b = 2; b <= 8; b *= 2) {
            if (a->tensors[sc][b] > 0) {
                printf("  allocation   %-13s %u bits: %zu tensors, %zu parameters\n",
                       aq_scheme_name((aq_scheme)sc), b, a->tensors[sc][b], a->params[sc][b]);
            }
        }
    }
}

/* The summary as text on stdout. */
static void qz_print_text(const qz_opts *q, const qz_run *r, const qz_figures *f)
{
    const aq_model_summary *s = &r->s;
    const cli_alloc *a = &r->alloc;
    char in_b[32], out_b[32], file_b[32];
    cli_bytes((double)s->bytes_in, in_b, sizeof in_b);
    cli_bytes((double)s->bytes_out, out_b, sizeof out_b);
    cli_bytes((double)f->file_size, file_b, sizeof file_b);
    printf("%s -> %s\n", q->src, q->out);
    if (q->profile != NULL) {
        printf("  tensors      %zu (%zu quantized, bits and scheme per layer rule, profile %s "
               "(%u bits, %s); %zu kept)\n",
               s->tensors, s->quantized, q->prof.name, q->prof.bit_width,
               aq_scheme_name(q->prof.scheme), s->kept);
        for (size_t k = 0; k < a->n_rules; k++) {
            printf("  rule         %-15s %zu tensor%s\n", a->rule_names[k], a->rule_counts[k],
                   a->rule_counts[k] == 1 ? "" : "s");
        }
    } else if (f->budget) {
        printf("  tensors      %zu (%zu quantized, bits and scheme per tensor; %zu kept)\n",
               s->tensors, s->quantized, s->kept);
    } else {
        printf("  tensors      %zu (%zu quantized at %lld bits, %s, group %lld; %zu kept)\n",
               s->tensors, s->quantized, q->bits, q->scheme, q->group, s->kept);
    }
    for (size_t k = 0; k < aq_model_skipped_count(r->model); k++) {
        const char *sn, *sr;
        if (aq_model_skipped_get(r->model, k, &sn, &sr, NULL) != AQ_OK) {
            break; /* k is below the count: cannot happen */
        }
        printf("  skipped      %s: %s\n", sn, sr);
    }
    printf("  parameters   %zu (%.1f%% quantized)\n", s->params,
           s->params > 0 ? 100.0 * (double)s->quantized_params / (double)s->params : 0.0);
    printf("  size         %s -> %s (%.2fx), file %s\n", in_b, out_b,
           s->bytes_out > 0 ? (double)s->bytes_in / (double)s->bytes_out : 0.0, file_b);
    printf("  bits/weight  %.3f\n", f->bpw);
    /* Over the quantized tensors only (compare's means include the kept ones). */
    printf("  SQNR         mean %.2f dB over the %zu quantized tensors, min %.2f dB (%s)\n",
           s->mean_sqnr_db, s->quantized, s->min_sqnr_db, s->worst != NULL ? s->worst : "-");
    printf("  cosine       mean %.6f over the quantized tensors\n", s->mean_cosine);
    if (f->budget || q->profile != NULL || a->n_moved > 0) {
        qz_print_budget(q, r, f);
    }
    if (q->min_cos > 0.0) {
        printf("  min accuracy cosine %g: %zu tensor%s moved to more bits\n", q->min_cos,
               a->n_moved, a->n_moved == 1 ? "" : "s");
        for (size_t k = 0; k < a->n_moved; k++) {
            const cli_moved *m = &a->moved[k];
            printf("    %s: %u -> %u bits (cosine %.6f -> %.6f)\n", m->name, m->from, m->to,
                   m->cos_from, m->cos_to);
        }
    }
    if (r->calib != NULL) {
        printf("  calibration  %s: %zu layers (combine %s); varying most across timesteps:",
               q->calib_path, f->n_layers, q->how == AQ_CALIB_COMBINE_MAX ? "max" : "mean");
        for (size_t k = 0; k < f->n_top; k++) {
            printf("%s %s (%.3f)", k > 0 ? "," : "", f->top[k].name, f->top[k].shape_variation);
        }
        printf("\n");
    }
    printf("  time         %.2f s\n", r->secs);
}

int cmd_quantize(int argc, char **argv)
{
    qz_opts q;
    memset(&q, 0, sizeof q);
    q.bits = AQ_DEFAULT_BIT_WIDTH;
    q.group = AQ_DEFAULT_GROUP_SIZE;
    q.threads = 1;
    q.min_el = AQ_MODEL_MIN_ELEMENTS;
    q.comp = AQ_IPC_COMPRESSION_ZSTD;
    q.how = AQ_CALIB_COMBINE_MAX;
    q.scope = AQ_BUDGET_SCOPE_PROFILE;
    qz_run r;
    memset(&r, 0, sizeof r);
    int rc = 0;
    q.keep = calloc((size_t)argc + 1, sizeof *q.keep);
    q.bits_for = calloc((size_t)argc + 1, sizeof *q.bits_for);
    q.rows_in = calloc((size_t)argc + 1, sizeof *q.rows_in);
    aq_error err;
    aq_status st = aq_settings_create(&q.settings, &err);
    if (st != AQ_OK) {
        rc = cli_status(st, &err);
        goto done;
    }
    if (q.keep == NULL || q.bits_for == NULL || q.rows_in == NULL) {
        rc = cli_fail("out of memory");
        goto done;
    }
    if ((rc = qz_parse(argc, argv, &q)) != 0 || (rc = qz_resolve(&q)) != 0 ||
        (rc = qz_execute(&q, &r)) != 0 || q.plan_out != NULL) {
        goto done;
    }
    if (r.alloc.oom) {
        rc = cli_fail("out of memory");
        goto done;
    }
    /* The group size the rows carry: a scheme's own where it fixes one. */
    aq_scheme_info sinfo = AQ_SIZED_INIT(aq_scheme_info);
    if (aq_scheme_get_info(q.sch, &sinfo, NULL) == AQ_OK && sinfo.fixed_group_size != 0) {
        q.group = (long long)sinfo.fixed_group_size;
    }
    qz_figures f;
    memset(&f, 0, sizeof f);
    qz_measure(&q, &r, &f);
    if (q.json) {
        qz_print_json(&q, &r, &f);
    } else if (!q.quiet) {
        qz_print_text(&q, &r, &f);
    }
done:
    aq_model_free(r.model);
    aq_ctx_free(r.ctx);
    aq_rules_free(r.rules);
    aq_calib_free(r.calib);
    free(r.names);
    free(q.keep);
    free(q.bits_for);
    free(q.rows_in);
    free(r.alloc.moved);
    aq_model_plan_free(r.plan);
    aq_settings_free(q.settings);
    return rc;
}
