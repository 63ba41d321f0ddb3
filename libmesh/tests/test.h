/*
 * The tests' whole framework: CHECK counts and reports failures, main()
 * returns nonzero if any check failed.  Tests link libmesh.a, so the test
 * program's own malloc is libmesh too.
 */
#ifndef MESH_TEST_H
#define MESH_TEST_H

#include <stdio.h>
#include <stdlib.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        test_checks++;                                                               \
        if (!(cond)) {                                                               \
            test_failures++;                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                            \
    } while (0)

#define CHECK_EQ(a, b)                                                                        \
    do {                                                                                      \
        long long a_ = (long long)(a), b_ = (long long)(b);                                   \
        test_checks++;                                                                        \
        if (a_ != b_) {                                                                       \
            test_failures++;                                                                  \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", __FILE__, \
                    __LINE__, #a, #b, a_, b_);                                                \
        }                                                                                     \
    } while (0)

#define TEST_RUN(fn)                                  \
    do {                                              \
        int before_ = test_failures;                  \
        fn();                                         \
        fprintf(stderr, "%-40s %s\n", #fn,            \
                test_failures == before_ ? "ok" : "FAILED"); \
    } while (0)

#define TEST_DONE()                                                             \
    do {                                                                        \
        fprintf(stderr, "%d checks, %d failed\n", test_checks, test_failures); \
        return test_failures ? 1 : 0;                                           \
    } while (0)

#endif
