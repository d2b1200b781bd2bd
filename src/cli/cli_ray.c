/*
 * arrowquant quantize SRC... -o OUT --ray ADDRESS|local: the job runs on a Ray cluster.
 *
 * Ray is a Python library, so the command hands the job to the Python package's Ray module
 * (python -m arrow_quant_v2.ray, docs/ray.md), which runs this very command on each checkpoint
 * on the workers and prints the same progress display and summaries. The interpreter is the
 * one of the environment the command was installed into: AQ_PYTHON when set, else the python3
 * beside this executable (pip install puts both in the environment's bin/), else python3 on
 * PATH.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool cli_is_ray(int argc, char **argv)
{
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--ray") == 0) {
            return true;
        }
    }
    return false;
}

/* This executable's path (NULL when /proc is not there: the workers then look for the
 * command themselves). */
static char *ray_self(void)
{
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) {
        return NULL;
    }
    buf[n] = '\0';
    return strdup(buf);
}

int cli_ray_quantize(int argc, char **argv)
{
    char *self = ray_self();
    char *python = NULL;
    const char *env = getenv("AQ_PYTHON");
    if (env != NULL && env[0] != '\0') {
        python = strdup(env);
    } else if (self != NULL) {
        const char *slash = strrchr(self, '/');
        size_t dir = (size_t)(slash - self);
        python = malloc(dir + sizeof "/python3");
        if (python != NULL) {
            memcpy(python, self, dir);
            memcpy(python + dir, "/python3", sizeof "/python3");
            if (access(python, X_OK) != 0) {
                free(python);
                python = strdup("python3");
            }
        }
    } else {
        python = strdup("python3");
    }
    char **args = calloc((size_t)argc + 6, sizeof *args);
    if (python == NULL || args == NULL) {
        free(self);
        free(python);
        free(args);
        return cli_fail("out of memory");
    }
    size_t k = 0;
    args[k++] = python;
    args[k++] = "-m";
    args[k++] = "arrow_quant_v2.ray";
    if (self != NULL) {
        args[k++] = "--command";
        args[k++] = self;
    }
    for (int i = 0; i < argc; i++) {
        args[k++] = argv[i];
    }
    args[k] = NULL;
    fflush(NULL);
    execvp(python, args);
    int e = errno;
    cli_fail("--ray: cannot run %s (%s): set AQ_PYTHON to the Python of the environment where "
             "arrow_quant_v2 and ray are installed",
             python, strerror(e));
    free(self);
    free(python);
    free(args);
    return 1;
}
