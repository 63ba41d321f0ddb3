/*
 * API conformance: every function of the malloc family with its edge cases
 * and errno values, as POSIX and glibc define them.  Built twice: linked
 * with libmesh.a (test_api) and against libc, run under LD_PRELOAD
 * (api_preload, by programs/test_api_preload.sh).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "mesh.h"
#include "test.h"

typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
static mallctl_fn mallctl;

static int aligned(const void *p, size_t a)
{
    return ((uintptr_t)p & (a - 1)) == 0;
}

static uint64_t stat_u64(const char *name)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    CHECK_EQ(mallctl(name, &v, &len, NULL, 0), 0);
    return v;
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * (sysconf(_SC_PAGESIZE) / 1024);
}

static void test_is_libmesh(void)
{
#ifdef MESH_TEST_PRELOAD
    mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mesh_mallctl");
#else
    mallctl = mesh_mallctl;
#endif
    CHECK(mallctl != NULL); /* we are really testing libmesh */
    if (!mallctl) {
        fprintf(stderr, "libmesh is not loaded\n");
        exit(1);
    }
}

static void test_malloc_basic(void)
{
    void *z1 = malloc(0), *z2 = malloc(0);
    CHECK(z1 && z2 && z1 != z2);
    free(z1);
    free(z2);
    free(NULL);
    for (size_t size = 1; size <= 70000; size += (size < 2048 ? 1 : 997)) {
        unsigned char *p = malloc(size);
        CHECK(p && aligned(p, 16));
        CHECK(malloc_usable_size(p) >= size);
        memset(p, 0xab, size);
        CHECK(p[0] == 0xab && p[size - 1] == 0xab);
        free(p);
        if (test_failures > 5)
            return;
    }
    CHECK_EQ(malloc_usable_size(NULL), 0);
}

static void test_malloc_enomem(void)
{
    struct sysinfo si;
    sysinfo(&si);
    size_t more_than_ram = ((size_t)si.totalram + si.totalswap) * si.mem_unit * 2;
    size_t sizes[] = {SIZE_MAX, SIZE_MAX - 4096, PTRDIFF_MAX, (size_t)1 << 62, more_than_ram};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        errno = 0;
        void *p = malloc(sizes[i]);
        CHECK(p == NULL);
        CHECK_EQ(errno, ENOMEM);
    }
}

static void test_calloc(void)
{
    errno = 0;
    CHECK(calloc(SIZE_MAX, 2) == NULL);
    CHECK_EQ(errno, ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL);
    CHECK_EQ(errno, ENOMEM);
    void *z = calloc(0, 0);
    CHECK(z != NULL);
    free(z);
    /* Reused memory comes back zeroed, small and large. */
    size_t sizes[] = {24, 200, 1000, 5000, 20000, 300000, 3 << 20};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        for (int round = 0; round < 20; round++) {
            unsigned char *d = malloc(sizes[i]);
            memset(d, 0xff, sizes[i]);
            free(d);
            unsigned char *c = calloc(1, sizes[i]);
            size_t bad = 0;
            for (size_t k = 0; k < sizes[i]; k++)
                bad += c[k] != 0;
            CHECK_EQ(bad, 0);
            free(c);
        }
    }
}

static void test_calloc_fresh_not_touched(void)
{
    long before = rss_kb();
    char *p = calloc(1, (size_t)1 << 30);
    CHECK(p != NULL);
    long after = rss_kb();
    CHECK(after - before < 64 * 1024); /* 1 GiB of zeros, not written by us */
    CHECK(p[0] == 0 && p[(1 << 30) - 1] == 0 && p[123456789] == 0);
    free(p);
}

static void test_realloc(void)
{
    unsigned char *p = realloc(NULL, 50);
    CHECK(p != NULL);
    for (int i = 0; i < 50; i++)
        p[i] = (unsigned char)i;
    /* In place within the class (50 -> 64-byte class holds 60). */
    unsigned char *q = realloc(p, 60);
    CHECK(q == p);
    /* Grow through classes and into large, shrink back: contents kept. */
    size_t sizes[] = {100, 1000, 17000, 1 << 20, 3000, 40};
    for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        q = realloc(q, sizes[s]);
        CHECK(q != NULL);
        int bad = 0;
        for (int i = 0; i < 40; i++)
            bad += q[i] != (unsigned char)i;
        CHECK_EQ(bad, 0);
        memset(q + 50, 0x5a, sizes[s] > 50 ? sizes[s] - 50 : 0);
    }
    /* Failure keeps the old block and sets ENOMEM. */
    errno = 0;
    void *r = realloc(q, SIZE_MAX - 100);
    CHECK(r == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(q[0] == 0 && q[39] == 39);
    /* realloc(p, 0) frees and returns NULL, as glibc does. */
    CHECK(realloc(q, 0) == NULL);
}

static void test_reallocarray(void)
{
    int *a = reallocarray(NULL, 10, sizeof(int));
    CHECK(a != NULL);
    for (int i = 0; i < 10; i++)
        a[i] = i;
    errno = 0;
    CHECK(reallocarray(a, SIZE_MAX / 2, 4) == NULL);
    CHECK_EQ(errno, ENOMEM);
    CHECK(a[9] == 9);
    a = reallocarray(a, 1000, sizeof(int));
    CHECK(a && a[9] == 9);
    free(a);
}

static void test_posix_memalign(void)
{
    void *p = (void *)1;
    size_t bad[] = {0, 1, 2, 3, 4, 12, 24, 48, sizeof(void *) + 1};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        errno = 1234;
        CHECK_EQ(posix_memalign(&p, bad[i], 16), EINVAL);
        CHECK_EQ(errno, 1234);
        CHECK(p == (void *)1); /* untouched on failure */
    }
    for (size_t a = sizeof(void *); a <= ((size_t)1 << 24); a *= 2) {
        size_t sizes[] = {0, 1, a / 2 + 1, a, 3 * a + 5, 20000};
        for (unsigned s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            p = NULL;
            CHECK_EQ(posix_memalign(&p, a, sizes[s]), 0);
            CHECK(p && aligned(p, a));
            CHECK(malloc_usable_size(p) >= sizes[s]);
            memset(p, 1, sizes[s]);
            free(p);
        }
    }
    errno = 0;
    CHECK_EQ(posix_memalign(&p, 64, SIZE_MAX - 10), ENOMEM);
}

static void test_aligned_alloc_memalign(void)
{
    errno = 0;
    CHECK(aligned_alloc(3, 64) == NULL);
    CHECK_EQ(errno, EINVAL);
    errno = 0;
    CHECK(aligned_alloc(0, 64) == NULL);
    CHECK_EQ(errno, EINVAL);
    for (size_t a = 1; a <= 65536; a *= 2) {
        void *p = aligned_alloc(a, a * 3);
        CHECK(p && aligned(p, a));
        free(p);
        p = memalign(a, 100);
        CHECK(p && aligned(p, a));
        free(p);
    }
    void *m = memalign(24, 10); /* rounded up to 32, as glibc does */
    CHECK(m && aligned(m, 32));
    free(m);
    errno = 0;
    CHECK(memalign(((size_t)1 << 63) + 1, 10) == NULL);
    CHECK_EQ(errno, EINVAL);
}

static void test_valloc_pvalloc(void)
{
    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(10);
    CHECK(v && aligned(v, (size_t)page));
    free(v);
    void *p = pvalloc(0);
    CHECK(p && aligned(p, (size_t)page) && malloc_usable_size(p) >= (size_t)page);
    free(p);
    p = pvalloc((size_t)page + 1);
    CHECK(p && malloc_usable_size(p) >= 2 * (size_t)page);
    free(p);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL);
    CHECK_EQ(errno, ENOMEM);
}

static void test_glibc_extras(void)
{
    CHECK_EQ(mallopt(M_TRIM_THRESHOLD, 64 << 20), 1);
    CHECK_EQ(mallopt(M_ARENA_MAX, 1), 0); /* no arenas here: refused, honestly */
    struct mallinfo2 a = mallinfo2();
    enum { N = 10000 };
    static void *keep[N];
    for (int i = 0; i < N; i++)
        keep[i] = malloc(64);
    struct mallinfo2 b = mallinfo2();
    CHECK(b.uordblks - a.uordblks == N * 64);
    CHECK(b.arena >= b.uordblks);
    for (int i = 0; i < N; i++)
        free(keep[i]);
    /* Freed pages wait to be punched; malloc_trim punches them now. */
    char *big = malloc(8 << 20);
    memset(big, 1, 8 << 20);
    free(big);
    CHECK_EQ(malloc_trim(0), 1);
    CHECK_EQ(mallinfo2().keepcost, 0);
    void *held = malloc(5000);
    struct mallinfo old = mallinfo();
    CHECK(old.uordblks >= 5000 && old.arena >= old.uordblks);
    free(held);
}

static void test_mallctl(void)
{
    uint64_t v;
    size_t len = sizeof v;
    CHECK_EQ(mallctl("no.such.name", &v, &len, NULL, 0), ENOENT);
    len = 4;
    CHECK_EQ(mallctl("stats.allocated", &v, &len, NULL, 0), EINVAL);
    len = sizeof v;
    CHECK_EQ(mallctl("stats.allocated", &v, &len, &v, sizeof v), EPERM);
    void *p = malloc(1 << 20);
    memset(p, 1, 1 << 20);
    uint64_t allocated = stat_u64("stats.allocated");
    uint64_t active = stat_u64("stats.active");
    uint64_t resident = stat_u64("stats.resident");
    uint64_t mapped = stat_u64("stats.mapped");
    CHECK(allocated >= (1 << 20));
    CHECK(active >= allocated);
    CHECK(resident >= (1 << 20));
    CHECK(mapped >= active);
    CHECK_EQ(stat_u64("stats.meshed_bytes"), 0);
    CHECK_EQ(stat_u64("stats.mesh_count"), 0);
    free(p);
    CHECK(stat_u64("mesh.scavenge") >= (1 << 20));
    /* The periodic work runs at most once per MESH_PERIOD_MS (100 ms). */
    stat_u64("mesh.check_period");
    CHECK_EQ(stat_u64("mesh.check_period"), 0);
    /* The raw system call: usleep is an idle point, which would do the
     * period's work itself once the period is over. */
    struct timespec ts = {0, 150 * 1000000L};
    syscall(SYS_nanosleep, &ts, NULL);
    CHECK_EQ(stat_u64("mesh.check_period"), 1);
    CHECK(stat_u64("mesh.compact") < (uint64_t)1 << 40);
}

int main(void)
{
    TEST_RUN(test_is_libmesh);
    TEST_RUN(test_malloc_basic);
    TEST_RUN(test_malloc_enomem);
    TEST_RUN(test_calloc);
    TEST_RUN(test_calloc_fresh_not_touched);
    TEST_RUN(test_realloc);
    TEST_RUN(test_reallocarray);
    TEST_RUN(test_posix_memalign);
    TEST_RUN(test_aligned_alloc_memalign);
    TEST_RUN(test_valloc_pvalloc);
    TEST_RUN(test_glibc_extras);
    TEST_RUN(test_mallctl);
    TEST_DONE();
}
