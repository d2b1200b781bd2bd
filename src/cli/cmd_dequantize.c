/*
 * arrowquant dequantize IN.arrow|IN.gguf -o OUT.safetensors|FOLDER/ [--dtype f16|bf16|f32].
 */
#include "cli.h"

#include <string.h>
#include <sys/stat.h>

int cmd_dequantize(int argc, char **argv)
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
