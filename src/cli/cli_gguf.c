/*
 * The arrowquant command's GGUF side (docs/gguf.md): `quantize SRC -o OUT.gguf --type T`
 * (uniform, or mixed with --profile: the diffusion layer rules choose each tensor's type),
 * `inspect FILE.gguf` and `dequantize FILE.gguf -o OUT.safetensors`. compare and validate read
 * GGUF through the library's aq_model_compare.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

bool cli_is_gguf_output(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--type") == 0) {
            return true;
        }
        if (strcmp(argv[i], "-o") == 0 && i + 1 < argc) {
            const char *o = argv[i + 1];
            size_t n = strlen(o);
            if (n >= 5 && strcmp(o + n - 5, ".gguf") == 0) {
                return true;
            }
        }
    }
    return false;
}

typedef struct gg_print {
    int json, quiet;
    size_t n;
} gg_print;

static void gg_on_tensor(void *user, const aq_gguf_tensor_result *r)
{
    gg_print *p = user;
    if (p->json) {
        printf("%s{\"name\": ", p->n ? ", " : "");
        cli_json_str(stdout, r->name);
        printf(", \"type\": \"%s\", \"reason\": \"%s\", \"elements\": %zu, \"bytes\": %zu, "
               "\"sqnr_db\": %.4f, \"cosine\": %.8f}",
               aq_gguf_type_name(r->type), r->reason, r->elements, r->bytes,
               r->sqnr_db > 1e300 ? 999.0 : r->sqnr_db, r->cosine);
    } else if (!p->quiet) {
        printf("%-56s %-6s %-14s %12zu %8.2f %10.6f\n", r->name, aq_gguf_type_name(r->type),
               r->reason, r->bytes, r->sqnr_db > 1e300 ? 999.0 : r->sqnr_db, r->cosine);
    }
    p->n++;
}

/* With --profile: the layer rules and their overrides; with --calibration: the table, checked
 * against the model. Sets o's rules and calib; 0 or the exit status of a failure. */
static int gg_prepare(const aq_model *model, const char *profile, const char *family_name,
                      const char **keep, size_t n_keep, const char **bits_for, size_t n_bits,
                      const char *calib_path, const char *combine, const char ***names,
                      aq_rules **rules, aq_calib **calib, aq_gguf_write_options *o)
{
    aq_error err;
    aq_status st;
    if (profile != NULL) {
        aq_profile prof;
        aq_family fam;
        if ((*names = cli_model_names(model)) == NULL) {
            return cli_fail("out of memory");
        }
        if ((st = aq_profile_get(profile, &prof, &err)) != AQ_OK ||
            (st = aq_family_from_name(family_name, &fam, &err)) != AQ_OK ||
            (st = aq_rules_create(fam, &prof, *names, aq_model_count(model), rules, &err)) !=
                AQ_OK ||
            (st = cli_rules_override(*rules, keep, n_keep, bits_for, n_bits, &err)) != AQ_OK) {
            return cli_err(st, &err);
        }
        o->rules = *rules;
    }
    if (calib_path != NULL) {
        aq_calib_combine how =
            strcmp(combine, "mean") == 0 ? AQ_CALIB_COMBINE_MEAN : AQ_CALIB_COMBINE_MAX;
        const char **all = cli_model_names(model);
        if (all == NULL) {
            return cli_fail("out of memory");
        }
        st = cli_calib_load(calib_path, how, calib, &err);
        if (st == AQ_OK) {
            st = aq_calib_check_model(*calib, all, aq_model_count(model), &err);
        }
        free(all);
        if (st != AQ_OK) {
            return cli_err(st, &err);
        }
        o->calib = *calib;
    }
    return 0;
}

/* The summary line (or the JSON's summary, closing the object). */
static void gg_print_summary(const char *out, const aq_model *model, const aq_gguf_write_summary *s,
                             double dt, int json, int quiet)
{
    size_t params = 0;
    for (size_t k = 0; k < aq_model_count(model); k++) {
        params += aq_model_tensor(model, k)->elements;
    }
    if (json) {
        printf("], \"summary\": {\"tensors\": %zu, \"quantized\": %zu, \"bytes_in\": %zu, "
               "\"bytes_out\": %zu, \"seconds\": %.3f, \"types\": {",
               s->tensors, s->quantized, s->bytes_in, s->bytes_out, dt);
        size_t k2 = 0;
        for (size_t t = 0; t <= AQ_GGUF_BF16; t++) {
            if (s->count_by_type[t] > 0) {
                printf("%s\"%s\": %zu", k2++ ? ", " : "", aq_gguf_type_name((aq_gguf_type)t),
                       s->count_by_type[t]);
            }
        }
        printf("}}}\n");
    } else if (!quiet) {
        printf("%s: %zu tensors (", out, s->tensors);
        size_t k2 = 0;
        for (size_t t = 0; t <= AQ_GGUF_BF16; t++) {
            if (s->count_by_type[t] > 0) {
                printf("%s%zu %s", k2++ ? ", " : "", s->count_by_type[t],
                       aq_gguf_type_name((aq_gguf_type)t));
            }
        }
        printf("), %.1f MB -> %.1f MB, %.2f bits per weight, %.1f s\n", (double)s->bytes_in / 1e6,
               (double)s->bytes_out / 1e6,
               params > 0 ? (double)s->bytes_out * 8.0 / (double)params : 0.0, dt);
    }
}

/* The flags of quantize with GGUF output; the settings table's flags go to the aq_settings. */
typedef struct gg_args {
    const char *src, *out, *type_name, *arch, *calib_path, *name, *plan_out, *plan_in;
    const char **rows_in; /* argc + 1 entries */
    size_t n_rows_in;
    int json, quiet;
    const char **keep, **bits_for; /* argc + 1 entries each */
    size_t n_keep, n_bits;
} gg_args;

/* Reads the flags into g (its keep and bits_for allocated by the caller) and the settings
 * table's flags into `settings`, refusing those the GGUF writer does not apply. 0, or the exit
 * code after a message. */
static int gg_parse(int argc, char **argv, aq_settings *settings, gg_args *g)
{
    int rc = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        bool setting = cli_setting_flag(a);
        bool needs = setting || strcmp(a, "-o") == 0 || strcmp(a, "--type") == 0 ||
                     strcmp(a, "--keep") == 0 || strcmp(a, "--bits-for") == 0 ||
                     strcmp(a, "--calibration") == 0 || strcmp(a, "--arch") == 0 ||
                     strcmp(a, "--name") == 0 || strcmp(a, "--plan-out") == 0 ||
                     strcmp(a, "--plan-in") == 0 || strcmp(a, "--rows-in") == 0;
        if (needs && i + 1 >= argc) {
            return cli_fail("%s needs a value", a);
        }
        if (setting) {
            if ((rc = cli_setting_set_gguf(settings, a, argv[++i])) != 0) {
                return rc;
            }
        } else if (strcmp(a, "-o") == 0) {
            g->out = argv[++i];
        } else if (strcmp(a, "--type") == 0) {
            g->type_name = argv[++i];
        } else if (strcmp(a, "--keep") == 0) {
            g->keep[g->n_keep++] = argv[++i];
        } else if (strcmp(a, "--bits-for") == 0) {
            g->bits_for[g->n_bits++] = argv[++i];
        } else if (strcmp(a, "--calibration") == 0) {
            g->calib_path = argv[++i];
        } else if (strcmp(a, "--arch") == 0) {
            g->arch = argv[++i];
        } else if (strcmp(a, "--name") == 0) {
            g->name = argv[++i];
        } else if (strcmp(a, "--plan-out") == 0) {
            g->plan_out = argv[++i];
        } else if (strcmp(a, "--plan-in") == 0) {
            g->plan_in = argv[++i];
        } else if (strcmp(a, "--rows-in") == 0) {
            g->rows_in[g->n_rows_in++] = argv[++i];
        } else if (strcmp(a, "--json") == 0) {
            g->json = 1;
        } else if (strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0) {
            g->quiet = 1;
        } else if (a[0] == '-') {
            return cli_fail("quantize (GGUF output): unknown option '%s' (see docs/gguf.md)", a);
        } else if (g->src == NULL) {
            g->src = a;
        } else {
            return cli_fail("quantize: unexpected argument '%s'", a);
        }
    }
    return cli_plan_flags_check(g->plan_in, g->plan_out, g->n_rows_in);
}

/* --plan-in with --rows-in: the GGUF file written from the rows made elsewhere, each row
 * reported as aq_model_to_gguf reports its tensors. */
static aq_status gg_write_rows(const gg_args *g, const aq_model *model, const aq_model_plan *plan,
                               const aq_gguf_write_options *o, aq_gguf_write_summary *sum,
                               aq_error *err)
{
    aq_model_writer_options wo = AQ_SIZED_INIT(aq_model_writer_options);
    wo.on_gguf_tensor = o->on_tensor;
    wo.on_gguf_tensor_user = o->on_tensor_user;
    wo.model = model;
    wo.calib = o->calib;
    aq_model_writer *w = NULL;
    aq_status st = aq_output_check(g->out, g->rows_in, g->n_rows_in, err);
    if (st == AQ_OK) {
        st = aq_model_writer_open(plan, g->out, &wo, &w, err);
    }
    for (size_t k = 0; k < g->n_rows_in && st == AQ_OK; k++) {
        if (o->cancel != NULL && *o->cancel) {
            st = err->code = AQ_CANCELLED;
            snprintf(err->message, sizeof err->message, "cancelled after %zu row files", k);
        } else {
            st = cli_rows_append(w, g->rows_in[k], err);
        }
    }
    if (st == AQ_OK) {
        st = aq_model_writer_close_gguf(w, sum, err);
    }
    aq_model_writer_free(w);
    return st;
}

/* The settings the GGUF writer applies, read back from the table's values. */
typedef struct gg_settings {
    const char *profile; /* NULL when not given */
    const char *family, *combine;
    int64_t threads, search;
} gg_settings;

static aq_status gg_settings_read(const aq_settings *s, gg_settings *out, aq_error *err)
{
    int profile_set = 0;
    aq_status st;
    if ((st = aq_settings_is_set(s, "profile", &profile_set, err)) != AQ_OK ||
        (st = aq_settings_get_text(s, "profile", &out->profile, err)) != AQ_OK ||
        (st = aq_settings_get_text(s, "family", &out->family, err)) != AQ_OK ||
        (st = aq_settings_get_text(s, "calibration_combine", &out->combine, err)) != AQ_OK ||
        (st = aq_settings_get_int(s, "threads", &out->threads, err)) != AQ_OK ||
        (st = aq_settings_get_int(s, "gguf_search", &out->search, err)) != AQ_OK) {
        return st;
    }
    if (!profile_set) {
        out->profile = NULL;
    }
    return AQ_OK;
}

int cli_gguf_quantize(int argc, char **argv, const volatile int *cancel)
{
    int rc = 0;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    const char **bits_for = calloc((size_t)argc + 1, sizeof *bits_for);
    const char **rows_in = calloc((size_t)argc + 1, sizeof *rows_in);
    aq_model_plan *plan_in = NULL;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_rules *rules = NULL;
    aq_calib *calib = NULL;
    const char **names = NULL;
    aq_error err;
    aq_error_clear(&err);
    aq_status st;
    aq_settings *settings = NULL; /* the flags the settings table holds */
    if ((st = aq_settings_create(&settings, &err)) != AQ_OK) {
        rc = cli_err(st, &err);
        goto done;
    }
    if (keep == NULL || bits_for == NULL || rows_in == NULL) {
        rc = cli_fail("out of memory");
        goto done;
    }
    gg_args g = {.keep = keep, .bits_for = bits_for, .rows_in = rows_in};
    gg_settings gs;
    if ((rc = gg_parse(argc, argv, settings, &g)) != 0) {
        goto done;
    }
    if ((st = gg_settings_read(settings, &gs, &err)) != AQ_OK) {
        rc = cli_err(st, &err);
        goto done;
    }
    const char *src = g.src, *out = g.out, *profile = gs.profile;
    const int json = g.json, quiet = g.quiet;
    if (src == NULL || out == NULL) {
        rc = cli_fail("quantize needs SRC and -o OUT.gguf");
        goto done;
    }
    size_t ol = strlen(out);
    if (ol < 5 || strcmp(out + ol - 5, ".gguf") != 0) {
        rc =
            cli_fail("--type writes a GGUF file: the output name must end in .gguf, not '%s'", out);
        goto done;
    }
    aq_gguf_write_options o = AQ_SIZED_INIT(aq_gguf_write_options);
    o.type = AQ_GGUF_Q8_0;
    if (g.type_name != NULL &&
        (st = aq_gguf_type_from_name(g.type_name, 1, &o.type, &err)) != AQ_OK) {
        rc = cli_fail("--type: %s", err.message);
        goto done;
    }
    if ((g.n_keep > 0 || g.n_bits > 0) && profile == NULL) {
        rc = cli_fail("--keep and --bits-for need --profile with GGUF output (the layer rules "
                      "they override)");
        goto done;
    }
    if ((st = aq_ctx_create(&ctx, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_THREADS, gs.threads, &err)) != AQ_OK ||
        (st = aq_ctx_set_param(ctx, AQ_PARAM_GGUF_SEARCH, gs.search, &err)) != AQ_OK ||
        (st = aq_model_open(src, &model, &err)) != AQ_OK) {
        rc = cli_fail("%s", err.message);
        goto done;
    }
    if ((rc = gg_prepare(model, profile, gs.family, keep, g.n_keep, bits_for, g.n_bits,
                         g.calib_path, gs.combine, &names, &rules, &calib, &o)) != 0) {
        goto done;
    }
    o.architecture = g.arch;
    o.name = g.name;
    if (g.plan_out != NULL) {
        /* The plan only: every tensor's type, what a distributed run executes (docs/gguf.md). */
        aq_model_plan *plan = NULL;
        if ((st = aq_model_plan_create_gguf(ctx, model, &o, &plan, &err)) != AQ_OK) {
            rc = cli_fail("%s", err.message);
        } else {
            rc = cli_plan_write(g.plan_out, plan);
        }
        aq_model_plan_free(plan);
        goto done;
    }
    if (g.plan_in != NULL && (rc = cli_plan_read(g.plan_in, 1, &plan_in)) != 0) {
        goto done;
    }
    gg_print pr = {json, quiet, 0};
    o.on_tensor = gg_on_tensor;
    o.on_tensor_user = &pr;
    o.cancel = cancel;
    if (json) {
        printf("{\"file\": ");
        cli_json_str(stdout, out);
        printf(", \"type\": \"%s\", \"tensors\": [", aq_gguf_type_name(o.type));
    } else if (!quiet) {
        printf("%-56s %-6s %-14s %12s %8s %10s\n", "tensor", "type", "why", "bytes", "SQNR dB",
               "cosine");
    }
    fflush(stdout);
    aq_gguf_write_summary sum;
    double t0 = cli_now();
    st = plan_in == NULL   ? aq_model_to_gguf(ctx, model, out, &o, &sum, &err)
         : g.n_rows_in > 0 ? gg_write_rows(&g, model, plan_in, &o, &sum, &err)
                           : aq_model_to_gguf_plan(ctx, model, plan_in, out, &o, &sum, &err);
    double dt = cli_now() - t0;
    if (st != AQ_OK) {
        if (json) {
            printf("]}\n");
        }
        if (st == AQ_CANCELLED || (cancel != NULL && *cancel)) {
            fputs("arrowquant: interrupted; no output written\n", stderr);
            rc = 130;
        } else {
            rc = cli_fail("%s", err.message);
        }
        goto done;
    }
    gg_print_summary(out, model, &sum, dt, json, quiet);
done:
    aq_settings_free(settings);
    free(keep);
    free(bits_for);
    free(rows_in);
    aq_model_plan_free(plan_in);
    free(names);
    aq_calib_free(calib);
    aq_rules_free(rules);
    aq_model_free(model);
    aq_ctx_free(ctx);
    return rc;
}

int cli_gguf_inspect(const char *path, int json)
{
    aq_gguf *g;
    aq_error err;
    if (aq_gguf_open(path, &g, &err) != AQ_OK) {
        return cli_fail("%s", err.message);
    }
    char shape[160];
    if (json) {
        printf("{\"file\": ");
        cli_json_str(stdout, path);
        printf(", \"format\": \"gguf\", \"version\": %u, \"alignment\": %zu, \"metadata\": {",
               aq_gguf_version(g), aq_gguf_alignment(g));
    } else {
        printf("%s: GGUF version %u, alignment %zu, %zu tensors\n", path, aq_gguf_version(g),
               aq_gguf_alignment(g), aq_gguf_tensor_count(g));
    }
    for (size_t i = 0; i < aq_gguf_metadata_count(g); i++) {
        const char *k, *t, *v;
        if (aq_gguf_metadata_get(g, i, &k, &t, &v, &err) != AQ_OK) {
            break; /* i is below the count: cannot happen */
        }
        if (json) {
            printf("%s", i ? ", " : "");
            cli_json_str(stdout, k);
            printf(": ");
            cli_json_str(stdout, v);
        } else {
            printf("  %-40s %-8s %.100s\n", k, t, v);
        }
    }
    if (json) {
        printf("}, \"tensors\": [");
    } else {
        printf("%-56s %-6s %-24s %12s %6s\n", "tensor", "type", "shape", "bytes", "bpw");
    }
    size_t total = 0, params = 0;
    for (size_t i = 0; i < aq_gguf_tensor_count(g); i++) {
        const aq_gguf_tensor *t = aq_gguf_tensor_at(g, i);
        cli_shape(t->shape, t->ndim, shape, sizeof shape);
        double bpw = t->elements > 0 ? (double)t->nbytes * 8.0 / (double)t->elements : 0.0;
        if (json) {
            printf("%s{\"name\": ", i ? ", " : "");
            cli_json_str(stdout, t->name);
            printf(", \"type\": \"%s\", \"shape\": %s, \"offset\": %llu, \"bytes\": %zu}",
                   aq_gguf_type_name(t->type), shape, (unsigned long long)t->offset, t->nbytes);
        } else {
            printf("%-56s %-6s %-24s %12zu %6.2f\n", t->name, aq_gguf_type_name(t->type), shape,
                   t->nbytes, bpw);
        }
        total += t->nbytes;
        params += t->elements;
    }
    if (json) {
        printf("], \"params\": %zu, \"bytes\": %zu}\n", params, total);
    } else {
        printf("%zu tensors, %zu parameters, %zu bytes of tensor data (%.2f bits per weight)\n",
               aq_gguf_tensor_count(g), params, total,
               params > 0 ? (double)total * 8.0 / (double)params : 0.0);
    }
    aq_gguf_free(g);
    return 0;
}

int cli_gguf_dequantize(const char *in, const char *out, aq_st_dtype dtype)
{
    aq_error err;
    aq_ctx *ctx;
    aq_status st = aq_ctx_create(&ctx, &err);
    if (st == AQ_OK) {
        st = aq_gguf_to_safetensors(ctx, in, out, dtype, &err);
        aq_ctx_free(ctx);
    }
    return st == AQ_OK ? 0 : cli_fail("%s", err.message);
}
