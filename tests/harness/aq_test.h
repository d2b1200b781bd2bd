/*
 * A tiny test runner. A test file defines its tests with TEST(name) and lists them with
 * AQ_TEST_MAIN(name, ...). CMake registers one CTest entry per TEST(name) line (it reads them
 * from the source), and runs each in its own process as `program name`; without arguments a
 * program runs all its tests.
 */
#ifndef AQ_TEST_H
#define AQ_TEST_H

#include "arrowquant.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

typedef struct aq_test_case {
    const char *name;
    void (*fn)(void);
} aq_test_case;

#define TEST(name) static void name(void)

void aq_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int aq_test_run(const aq_test_case *cases, size_t count, int argc, char **argv);
/* The directory of the committed test data (tests/data), from AQ_TEST_DATA. */
const char *aq_test_data_dir(void);
/* A deterministic generator (splitmix64) for test inputs. */
uint64_t aq_test_rand_u64(uint64_t *state);
/* Uniform in [0, 1). */
double aq_test_rand_uniform(uint64_t *state);
/* Standard normal (Box-Muller). */
double aq_test_rand_normal(uint64_t *state);
/* Whether something exists at path. */
bool aq_test_exists(const char *path);
/* Fails the test (at file:line) unless files a and b hold the same bytes, naming the first
 * byte that differs. */
void aq_test_same_file(const char *file, int line, const char *a, const char *b);
#define CHECK_SAME_FILE(a, b) aq_test_same_file(__FILE__, __LINE__, (a), (b))

/* Fails the test and returns from the test function (or helper) when cond is false. */
#define CHECK(cond)                                               \
    do {                                                          \
        if (!(cond)) {                                            \
            aq_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond); \
            return;                                               \
        }                                                         \
    } while (0)

#define CHECK_MSG(cond, ...)                               \
    do {                                                   \
        if (!(cond)) {                                     \
            aq_test_fail(__FILE__, __LINE__, __VA_ARGS__); \
            return;                                        \
        }                                                  \
    } while (0)

/* Expects a call to return AQ_OK; prints the error message otherwise. Needs `aq_error err`. */
#define CHECK_OK(call)                                                    \
    do {                                                                  \
        aq_status check_ok_st_ = (call);                                  \
        if (check_ok_st_ != AQ_OK) {                                      \
            aq_test_fail(__FILE__, __LINE__, "%s returned %s: %s", #call, \
                         aq_status_name(check_ok_st_), err.message);      \
            return;                                                       \
        }                                                                 \
    } while (0)

/* Expects a call to fail with `status` and a message containing `needle`. Needs `err`. */
#define CHECK_FAILS(call, status, needle)                                                        \
    do {                                                                                         \
        aq_error_clear(&err);                                                                    \
        aq_status check_fails_st_ = (call);                                                      \
        if (check_fails_st_ != (status) || err.code != (status) ||                               \
            strstr(err.message, (needle)) == NULL) {                                             \
            aq_test_fail(__FILE__, __LINE__, "%s returned %s (\"%s\"), expected %s with \"%s\"", \
                         #call, aq_status_name(check_fails_st_), err.message,                    \
                         aq_status_name(status), (needle));                                      \
            return;                                                                              \
        }                                                                                        \
    } while (0)

#define AQ_TEST_MAIN(...)                                                      \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const aq_test_case cases[] = {__VA_ARGS__};                     \
        return aq_test_run(cases, sizeof cases / sizeof cases[0], argc, argv); \
    }

#define AQ_CASE(name) \
    {                 \
#        name, name   \
    }

#endif /* AQ_TEST_H */
