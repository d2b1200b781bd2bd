/*
 * arrowquant: the command-line tool. quantize, dequantize, inspect, compare, report.
 *
 * Uses the public header only. Every error is one line on stderr and a non-zero exit; output
 * files are written by the library under temporary names and renamed only when complete, so
 * an error or an interrupt (SIGINT, SIGTERM: exit 130) never leaves a partial file behind.
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

static void cli_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = cli_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
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
          "        [--scheme affine] [--keep GLOB]... [--min-elements N] [--threads N]\n"
          "        [--compression zstd|lz4|none] [--json] [--quiet]\n"
          "  arrowquant dequantize IN.arrow -o OUT.safetensors|FOLDER/ [--dtype f16|bf16|f32]\n"
          "  arrowquant inspect FILE [--json]\n"
          "  arrowquant compare A B [--json]\n"
          "  arrowquant report IN.arrow -o report.html\n"
          "SRC is a .safetensors file, a *.safetensors.index.json, or a folder (diffusers\n"
          "pipeline or model folder). See README.md for the default rules.\n",
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
        fprintf(stderr, "\r[%s] %zu/%zu tensors  %s/%s  %s/s  %.0fs left  ", bar, p->tensors_done,
                p->tensors_total, done, total, r, left);
        if (last) {
            fputc('\n', stderr);
        }
        return;
    }
    int decile = (int)(frac * 10.0);
    if (decile > c->last_decile || last) {
        c->last_decile = decile;
        fprintf(stderr, "progress: %zu/%zu tensors, %s of %s, %s/s, %.1fs elapsed\n",
                p->tensors_done, p->tensors_total, done, total, r, el);
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

static int cmd_quantize(int argc, char **argv)
{
    const char *src = NULL, *out = NULL;
    long long bits = AQ_DEFAULT_BIT_WIDTH, group = AQ_DEFAULT_GROUP_SIZE, threads = 1;
    long long min_el = AQ_MODEL_MIN_ELEMENTS;
    const char *scheme = "affine";
    int comp = AQ_IPC_COMPRESSION_ZSTD;
    int json = 0, quiet = 0;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    size_t n_keep = 0;
    int rc = 0;
    aq_ctx *ctx = NULL;
    aq_model *model = NULL;
    aq_error err;
    aq_error_clear(&err);
    if (keep == NULL) {
        return cli_fail("out of memory");
    }
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool needs = strcmp(a, "-o") == 0 || strcmp(a, "--bits") == 0 ||
                     strcmp(a, "--group-size") == 0 || strcmp(a, "--scheme") == 0 ||
                     strcmp(a, "--keep") == 0 || strcmp(a, "--threads") == 0 ||
                     strcmp(a, "--compression") == 0 || strcmp(a, "--min-elements") == 0;
        if (needs && v == NULL) {
            rc = cli_fail("%s needs a value", a);
            goto done;
        }
        if (strcmp(a, "-o") == 0) {
            out = v;
        } else if (strcmp(a, "--bits") == 0) {
            if ((rc = cli_parse_size(a, v, 0, 64, &bits)) != 0) {
                goto done;
            }
        } else if (strcmp(a, "--group-size") == 0) {
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
        } else if (strcmp(a, "--scheme") == 0) {
            scheme = v;
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
    aq_scheme sch;
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
    cli_progress prog = {quiet, isatty(2), t0, -1, 0.0};
    aq_model_quantize_options o;
    memset(&o, 0, sizeof o);
    o.keep = keep;
    o.n_keep = n_keep;
    o.min_elements = (size_t)min_el;
    o.compression = comp;
    o.progress = cli_on_progress;
    o.progress_user = &prog;
    o.cancel = &cli_cancel;
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
    if (json) {
        printf("{\"source\": \"%s\", \"output\": \"%s\", \"tensors\": %zu, \"quantized\": %zu, "
               "\"kept\": %zu, \"parameters\": %zu, \"quantized_parameters\": %zu, "
               "\"bytes_in\": %zu, \"bytes_out\": %zu, \"file_bytes\": %lld, "
               "\"bits_per_weight\": %.4f, \"mean_sqnr_db\": %.4f, \"min_sqnr_db\": %.4f, "
               "\"mean_cosine\": %.6f, \"worst_tensor\": \"%s\", \"record_batches\": %zu, "
               "\"bits\": %lld, \"group_size\": %lld, \"seconds\": %.3f}\n",
               src, out, s.tensors, s.quantized, s.kept, s.params, s.quantized_params, s.bytes_in,
               s.bytes_out, file_size, bpw, s.mean_sqnr_db, s.min_sqnr_db, s.mean_cosine,
               s.worst != NULL ? s.worst : "", s.batches, bits, group, secs);
    } else if (!quiet) {
        char in_b[32], out_b[32], file_b[32];
        cli_bytes((double)s.bytes_in, in_b, sizeof in_b);
        cli_bytes((double)s.bytes_out, out_b, sizeof out_b);
        cli_bytes((double)file_size, file_b, sizeof file_b);
        printf("%s -> %s\n", src, out);
        printf("  tensors      %zu (%zu quantized at %lld bits, group %lld; %zu kept)\n", s.tensors,
               s.quantized, bits, group, s.kept);
        printf("  parameters   %zu (%.1f%% quantized)\n", s.params,
               s.params > 0 ? 100.0 * (double)s.quantized_params / (double)s.params : 0.0);
        printf("  size         %s -> %s (%.2fx), file %s\n", in_b, out_b,
               s.bytes_out > 0 ? (double)s.bytes_in / (double)s.bytes_out : 0.0, file_b);
        printf("  bits/weight  %.3f\n", bpw);
        printf("  SQNR         mean %.2f dB, min %.2f dB (%s)\n", s.mean_sqnr_db, s.min_sqnr_db,
               s.worst != NULL ? s.worst : "-");
        printf("  cosine       mean %.6f\n", s.mean_cosine);
        printf("  time         %.2f s\n", secs);
    }
done:
    aq_model_free(model);
    aq_ctx_free(ctx);
    free(keep);
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
        return cmd_quantize(n, rest);
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
    if (strcmp(cmd, "report") == 0) {
        return cli_report(n, rest);
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("arrowquant %s\n", aq_version_string());
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        cli_usage();
        return 0;
    }
    cli_fail("unknown command '%s'", cmd);
    return cli_usage();
}
