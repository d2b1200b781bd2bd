/* The test runner behind aq_test.h. */
#include "aq_test.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int test_failures;

void aq_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s:%d: FAILED: ", file, line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    test_failures++;
}

int aq_test_run(const aq_test_case *cases, size_t count, int argc, char **argv)
{
    size_t ran = 0;
    int failed_tests = 0;
    for (size_t i = 0; i < count; i++) {
        if (argc > 1 && strcmp(argv[1], cases[i].name) != 0) {
            continue;
        }
        int before = test_failures;
        cases[i].fn();
        ran++;
        if (test_failures != before) {
            failed_tests++;
            fprintf(stderr, "[FAIL] %s\n", cases[i].name);
        } else {
            printf("[ OK ] %s\n", cases[i].name);
        }
    }
    if (ran == 0) {
        fprintf(stderr, "no test named '%s'\n", argc > 1 ? argv[1] : "");
        return 2;
    }
    return failed_tests == 0 ? 0 : 1;
}

const char *aq_test_data_dir(void)
{
    const char *dir = getenv("AQ_TEST_DATA");
    return dir != NULL ? dir : "tests/data";
}

uint64_t aq_test_rand_u64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double aq_test_rand_uniform(uint64_t *state)
{
    return (double)(aq_test_rand_u64(state) >> 11) * 0x1p-53;
}

double aq_test_rand_normal(uint64_t *state)
{
    double u1 = aq_test_rand_uniform(state);
    double u2 = aq_test_rand_uniform(state);
    if (u1 < 1e-300) {
        u1 = 1e-300;
    }
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

bool aq_test_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* The bytes of the file at path (malloc'ed; NULL when it cannot be read). */
static unsigned char *test_slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc(len > 0 ? (size_t)len : 1);
    if (p != NULL && fread(p, 1, (size_t)len, f) != (size_t)len) {
        free(p);
        p = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return p;
}

void aq_test_same_file(const char *file, int line, const char *a, const char *b)
{
    size_t na = 0, nb = 0;
    unsigned char *pa = test_slurp(a, &na), *pb = test_slurp(b, &nb);
    if (pa == NULL || pb == NULL) {
        aq_test_fail(file, line, "cannot read %s or %s", a, b);
    } else {
        size_t at = 0;
        while (at < na && at < nb && pa[at] == pb[at]) {
            at++;
        }
        if (na != nb || at != na) {
            aq_test_fail(file, line, "%s (%zu bytes) and %s (%zu bytes) differ at byte %zu", a, na,
                         b, nb, at);
        }
    }
    free(pa);
    free(pb);
}
