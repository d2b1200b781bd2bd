/* Shared between the files of the arrowquant command. */
#ifndef AQ_CLI_H
#define AQ_CLI_H

#include <arrowquant.h>

#include <stdbool.h>
#include <stdio.h>

/* Prints "arrowquant: error: ..." on stderr and returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
double cli_now(void);
/* Writes s as a JSON string (quoted, escaped) to f. */
void cli_json_str(FILE *f, const char *s);
/* Writes s with HTML special characters escaped. */
void cli_html_str(FILE *f, const char *s);
/* True if the file starts with the Arrow IPC file magic. */
bool cli_is_arrow(const char *path);

/* Opens a model (safetensors file, index or folder; or a model file) to check it, and closes
 * it again. */
aq_status cli_check_open(const char *path, aq_error *err);

int cli_inspect(int argc, char **argv);
int cli_compare(int argc, char **argv);
int cli_report(int argc, char **argv);
int cli_validate(int argc, char **argv);

/* GGUF (cli_gguf.c). cli_is_gguf_output: the quantize arguments ask for a GGUF file (--type,
 * or -o NAME.gguf). */
bool cli_is_gguf_output(int argc, char **argv);
int cli_gguf_quantize(int argc, char **argv, const volatile int *cancel);
int cli_gguf_inspect(const char *path, int json);
int cli_gguf_dequantize(const char *in, const char *out, aq_st_dtype dtype);

#endif /* AQ_CLI_H */
