/* Checks glibc-shim.so from inside a process that preloads it: every entry
 * point resolves to the shim, memory really comes from glibc's heap, and
 * the alignment calls keep their EINVAL / ENOMEM contracts. Prints one line
 * per failed check; exits 0 only if all pass. */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);         \
            failures++;                                                    \
        }                                                                  \
    } while (0)

static int aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

/* Opaque to the optimiser, so that checks on impossible sizes are not
 * folded away at compile time. */
static volatile size_t huge = SIZE_MAX - 4096;

int main(void)
{
    static const char *names[] = {
        "malloc", "free", "calloc", "realloc", "memalign", "valloc",
        "pvalloc", "posix_memalign", "aligned_alloc", "malloc_usable_size",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info info;
        int found = sym && dladdr(sym, &info) && info.dli_fname &&
                    strstr(info.dli_fname, "glibc-shim.so");
        if (!found)
            printf("FAIL %s does not resolve to glibc-shim.so\n", names[i]);
        failures += !found;
    }

    /* glibc's own statistics see the allocation: it is glibc's heap. */
    struct mallinfo2 before = mallinfo2();
    char *p = malloc(1000);
    struct mallinfo2 after = mallinfo2();
    CHECK(p != NULL);
    CHECK(after.uordblks >= before.uordblks + 1000);
    /* glibc's chunk arithmetic: request + 8 bytes of header, rounded up to
     * 16, less the header; jemalloc would say 1024 for both. */
    CHECK(malloc_usable_size(p) == 1000);
    void *q = malloc(1001);
    CHECK(q != NULL && malloc_usable_size(q) == 1016);
    free(q);
    CHECK(malloc_usable_size(NULL) == 0);
    memset(p, 'x', 1000);
    p = realloc(p, 100000);
    CHECK(p != NULL && p[0] == 'x' && p[999] == 'x');
    free(p);

    int *z = calloc(1000, sizeof *z);
    int zero = 1;
    for (int i = 0; z && i < 1000; i++)
        zero &= z[i] == 0;
    CHECK(z != NULL && zero);
    free(z);
    errno = 0;
    CHECK(calloc(huge, 16) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(huge) == NULL && errno == ENOMEM);

    void *a = NULL;
    errno = 1234;
    CHECK(posix_memalign(&a, 3, 8) == EINVAL);
    CHECK(posix_memalign(&a, 24, 8) == EINVAL);
    CHECK(posix_memalign(&a, sizeof(void *) / 2, 8) == EINVAL);
    CHECK(posix_memalign(&a, 64, huge) == ENOMEM && a == NULL);
    CHECK(errno == 1234);
    CHECK(posix_memalign(&a, 4096, 100) == 0 && aligned(a, 4096));
    free(a);

    errno = 0;
    CHECK(aligned_alloc(3, 8) == NULL && errno == EINVAL);
    a = aligned_alloc(256, 512);
    CHECK(a != NULL && aligned(a, 256));
    free(a);
    a = memalign(128, 10);
    CHECK(a != NULL && aligned(a, 128));
    free(a);
    long page = sysconf(_SC_PAGESIZE);
    a = valloc(10);
    CHECK(a != NULL && aligned(a, (size_t)page));
    free(a);
    a = pvalloc(10);
    CHECK(a != NULL && aligned(a, (size_t)page) && malloc_usable_size(a) >= (size_t)page);
    free(a);

    /* glibc's own functions that allocate (strdup, reallocarray) work on
     * the same heap as the shim's pointers. */
    char *s = strdup("shim");
    CHECK(s != NULL && strcmp(s, "shim") == 0);
    s = reallocarray(s, 100, 10);
    CHECK(s != NULL && strcmp(s, "shim") == 0);
    free(s);

    if (failures == 0)
        printf("ok: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
