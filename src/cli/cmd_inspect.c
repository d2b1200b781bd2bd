/*
 * arrowquant inspect FILE [--json]: the tensors of a model file, a GGUF file or a source
 * model.
 */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cmd_inspect(int argc, char **argv)
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
                if (aq_model_metadata_get(m, i, &k, &v, NULL) == AQ_OK) {
                    printf("metadata: %s = %s\n", k, v);
                }
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
