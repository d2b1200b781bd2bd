/* Shared between the files of the arrowquant command. */
#ifndef AQ_CLI_H
#define AQ_CLI_H

#define AQ_EXPERIMENTAL
#include <arrowquant.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Set by SIGINT, SIGTERM and SIGHUP: the running command stops and writes nothing. */
extern volatile int cli_cancel;

/* Prints "arrowquant: error: ..." on stderr and returns 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A failed call: "interrupted; no output written" and 130 when cancelled, else the error's
 * message (or the status's) through cli_fail. */
int cli_status(aq_status st, const aq_error *err);

/* The library's settings table (arrowquant.h, experimental part) behind the command's flags. */
/* True when `flag` is a setting's flag (it then takes a value). */
bool cli_setting_flag(const char *flag);
/* Checks `value` of `flag` against its setting and stores it in s; 0, or the exit status of a
 * failure whose message names the flag and what it accepts. */
int cli_setting_set(aq_settings *s, const char *flag, const char *value);
/* cli_setting_set for GGUF output: a setting the GGUF writer does not apply (the table's `gguf`)
 * is refused, naming the flag. */
int cli_setting_set_gguf(aq_settings *s, const char *flag, const char *value);
/* 0 unless `flag` is the flag of a setting that the model file's writer does not apply (the
 * table's `model_file`): then the exit status of a failure naming the flag. */
int cli_setting_check_model_file(const char *flag);
/* --plan-out: the plan serialised into path, through a temporary name; 0 or the exit status of
 * a failure. */
int cli_plan_write(const char *path, const aq_model_plan *plan);
/* --plan-in: the plan read back from path into *out (the caller's to free), refused unless it
 * is a GGUF plan (gguf 1) or a model file's (gguf 0); 0 or the exit status of a failure. */
int cli_plan_read(const char *path, int gguf, aq_model_plan **out);
/* --plan-in, --plan-out and --rows-in together: not a plan both followed and made, no rows
 * without the plan they were made from; 0 or the exit status of a failure. */
int cli_plan_flags_check(const char *plan_in, const char *plan_out, size_t n_rows_in);
/* --rows-in: every batch of the Arrow IPC stream at path (aq_model_execute's rows) appended. */
aq_status cli_rows_append(aq_model_writer *w, const char *path, aq_error *err);
/* The settings with a flag, one line each (flag, what it takes, default, help). */
void cli_settings_print(FILE *f);
/* A failed call: the error's message through cli_fail. */
int cli_err(aq_status st, const aq_error *err);
double cli_now(void);
/* b bytes with a binary unit ("12.3 MiB"). */
void cli_bytes(double b, char *buf, size_t n);
/* A shape as "[a, b, c]". */
void cli_shape(const int64_t *shape, size_t ndim, char *buf, size_t n);
/* Writes s as a JSON string (quoted, escaped) to f. */
void cli_json_str(FILE *f, const char *s);
/* Writes v as a JSON number in the printf format fmt; JSON has no infinity or NaN, so those
 * are written as the strings "inf", "-inf" and "nan". */
void cli_json_num(FILE *f, const char *fmt, double v);
/* Writes s with HTML special characters escaped. */
void cli_html_str(FILE *f, const char *s);
/* True if the file starts with the Arrow IPC file magic. */
bool cli_is_arrow(const char *path);

/* Opens a model (safetensors file, index or folder; or a model file) to check it, and closes
 * it again. */
aq_status cli_check_open(const char *path, aq_error *err);

/* A model file's metadata value, or "?". */
const char *cli_meta(const aq_qmodel *qm, const char *key);
/* Bytes a row of a model file takes for its tensor (codes, scales and zero points), and the
 * bytes of its source tensor. */
size_t cli_row_bytes(const aq_qmodel_row *r);
size_t cli_source_bytes(const aq_qmodel_row *r);

/* The names of the model's tensors, NULL-terminated (free() it; the names are the model's),
 * or NULL when out of memory. */
const char **cli_model_names(const aq_model *model);
/* Adds the --keep GLOB and --bits-for PATTERN=BITS overrides to the layer rules. */
aq_status cli_rules_override(aq_rules *rules, const char *const *keep, size_t n_keep,
                             const char *const *bits_for, size_t n_bits_for, aq_error *err);
/* Reads a calibration table (--calibration) and combines its timesteps; *out is NULL on
 * failure. */
aq_status cli_calib_load(const char *path, aq_calib_combine how, aq_calib **out, aq_error *err);

/* The commands (cmd_NAME.c), each given the arguments after its name. */
int cmd_quantize(int argc, char **argv);
int cmd_dequantize(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_validate(int argc, char **argv);

/* GGUF (cli_gguf.c). cli_is_gguf_output: the quantize arguments ask for a GGUF file (--type,
 * or -o NAME.gguf). */
bool cli_is_gguf_output(int argc, char **argv);
int cli_gguf_quantize(int argc, char **argv, const volatile int *cancel);
int cli_gguf_inspect(const char *path, int json);
int cli_gguf_dequantize(const char *in, const char *out, aq_st_dtype dtype);

/* Ray (cli_ray.c). cli_is_ray: the quantize arguments ask for a Ray job (--ray ADDRESS);
 * cli_ray_quantize runs it through the Python package's Ray module (returns only on failure). */
bool cli_is_ray(int argc, char **argv);
int cli_ray_quantize(int argc, char **argv);

#endif /* AQ_CLI_H */
