/*
 * fork, posix_spawn, vfork: a fork child gets its own copy of the arena
 * (the arena is a MAP_SHARED file, which fork alone would share), so writes
 * after fork are private in both directions; forks from a busy
 * multithreaded parent do not deadlock; untouched reservations are not
 * copied; posix_spawn and vfork+exec work.  A child of a multithreaded
 * parent sees the heap as it was at the fork, no older than the rest of
 * its memory; a parent with no descriptor to spare can fork.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "deny_memfd.h"
#include "mesh.h"
#include "test.h"

extern char **environ;

#define NOBJ 2000

static unsigned char *objs[NOBJ];
static size_t sizes[NOBJ];

static void fill(unsigned char v)
{
    for (int i = 0; i < NOBJ; i++)
        memset(objs[i], v, sizes[i]);
}

static int all_are(unsigned char v)
{
    for (int i = 0; i < NOBJ; i++)
        for (size_t k = 0; k < sizes[i]; k += 7)
            if (objs[i][k] != v)
                return 0;
    return 1;
}

static int wait_ok(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "  child status %#x\n", status);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_isolation(void)
{
    for (int i = 0; i < NOBJ; i++) {
        sizes[i] = i % 10 == 0 ? 20000 + (size_t)i * 100 : 16 + (size_t)(i * 37) % 2000;
        objs[i] = malloc(sizes[i]);
    }
    fill('A');
    int to_child[2], to_parent[2];
    CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        alarm(30);
        int ok = all_are('A');
        fill('B');
        if (write(to_parent[1], "x", 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(3);
        ok = ok && all_are('B'); /* the parent's 'C' must not show here */
        for (int i = 0; i < 100000; i++)
            free(malloc((size_t)i % 3000));
        for (int i = 0; i < NOBJ; i++)
            free(objs[i]);
        _exit(ok ? 0 : 1);
    }
    char c;
    CHECK(read(to_parent[0], &c, 1) == 1);
    CHECK(all_are('A')); /* the child's 'B' must not show here */
    fill('C');
    CHECK(write(to_child[1], "x", 1) == 1);
    CHECK(wait_ok(pid));
    CHECK(all_are('C'));
    for (int i = 0; i < NOBJ; i++)
        free(objs[i]);
    mesh_global_check();
}

static _Atomic int stop;

static void *churn(void *arg)
{
    void *keep[256] = {0};
    unsigned x = (unsigned)(uintptr_t)arg;
    while (!atomic_load(&stop)) {
        x = x * 1103515245 + 12345;
        unsigned k = (x >> 8) % 256;
        free(keep[k]);
        keep[k] = malloc(16 + (x >> 16) % 5000);
        memset(keep[k], 1, 16);
    }
    for (int k = 0; k < 256; k++)
        free(keep[k]);
    return NULL;
}

static void test_fork_while_threads_allocate(void)
{
    pthread_t t[2];
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, churn, (void *)(i + 1));
    int ok = 1;
    for (int n = 0; n < 30; n++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);
            void *p[1000];
            for (int i = 0; i < 1000; i++)
                p[i] = malloc((size_t)i * 13 % 4000 + 1);
            for (int i = 0; i < 1000; i++)
                free(p[i]);
            /* a grandchild, too */
            pid_t g = fork();
            if (g == 0) {
                free(malloc(100));
                _exit(0);
            }
            _exit(wait_ok(g) ? 0 : 1);
        }
        ok &= wait_ok(pid);
    }
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK(ok);
    mesh_global_check();
}

/* ---- the child's heap is the heap at the fork ---- */

/* Each writer stores k into a counter in the heap, then into a global, and
 * publishes objects it filled completely through a global pointer.  A
 * child must see the heap no older than the rest of its memory: the heap
 * counter at least the global one, every published object whole. */
#define WRITERS 2
#define PUBLISHED 64
#define OBJ_BYTES 200

static _Atomic uint64_t *heap_counter[WRITERS];
static _Atomic uint64_t global_counter[WRITERS];
static unsigned char *_Atomic published[WRITERS][PUBLISHED];
static _Atomic int writers_stop;

static void *counting_writer(void *arg)
{
    uintptr_t w = (uintptr_t)arg;
    for (uint64_t k = 1; !atomic_load_explicit(&writers_stop, memory_order_relaxed); k++) {
        atomic_store_explicit(heap_counter[w], k, memory_order_release);
        atomic_store_explicit(&global_counter[w], k, memory_order_release);
        unsigned i = (unsigned)(k % PUBLISHED);
        unsigned char *o = malloc(OBJ_BYTES);
        memset(o, (unsigned char)k, OBJ_BYTES);
        o[0] = (unsigned char)(k >> 8);
        unsigned char *old = atomic_exchange_explicit(&published[w][i], o, memory_order_acq_rel);
        free(old);
    }
    return NULL;
}

static int child_sees_fork_time_heap(void)
{
    for (int w = 0; w < WRITERS; w++) {
        uint64_t g = atomic_load_explicit(&global_counter[w], memory_order_acquire);
        uint64_t h = atomic_load_explicit(heap_counter[w], memory_order_acquire);
        if (h < g) {
            fprintf(stderr, "  child: heap counter %llu behind global %llu\n", (unsigned long long)h,
                    (unsigned long long)g);
            return 1;
        }
        for (int i = 0; i < PUBLISHED; i++) {
            unsigned char *o = atomic_load_explicit(&published[w][i], memory_order_acquire);
            if (!o)
                continue;
            for (int b = 2; b < OBJ_BYTES; b++)
                if (o[b] != o[1]) {
                    fprintf(stderr, "  child: published object %p torn at byte %d\n", (void *)o, b);
                    return 1;
                }
        }
    }
    return 0;
}

static void test_fork_sees_heap_at_fork(void)
{
    pthread_t t[WRITERS];
    atomic_store(&writers_stop, 0);
    for (uintptr_t w = 0; w < WRITERS; w++) {
        heap_counter[w] = malloc(sizeof *heap_counter[w]);
        atomic_store(heap_counter[w], 0);
        pthread_create(&t[w], NULL, counting_writer, (void *)w);
    }
    int stale = 0;
    for (int n = 0; n < 100; n++) {
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
        pid_t pid = fork();
        if (pid == 0)
            _exit(child_sees_fork_time_heap());
        stale += !wait_ok(pid);
    }
    atomic_store(&writers_stop, 1);
    for (int w = 0; w < WRITERS; w++) {
        pthread_join(t[w], NULL);
        for (int i = 0; i < PUBLISHED; i++)
            free(atomic_exchange(&published[w][i], NULL));
        free((void *)heap_counter[w]);
    }
    CHECK_EQ(stale, 0);
    mesh_global_check();
}

/* ---- fork with no descriptor to spare ---- */

static void test_fork_without_descriptors(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        /* Use up every descriptor, as a program at EMFILE has. */
        struct rlimit rl = {1024, 1024};
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            _exit(2);
        int fd;
        while ((fd = open("/dev/null", O_RDONLY)) >= 0)
            ;
        if (errno != EMFILE)
            _exit(3);
        char *p = malloc(5000);
        memset(p, 'x', 5000);
        pid_t g = fork();
        if (g == 0) {
            int ok = p[4999] == 'x';
            memset(p, 'y', 5000); /* the child's own copy */
            char *q = malloc(300);
            memset(q, 1, 300);
            free(q);
            _exit(ok ? 0 : 1);
        }
        if (g < 0)
            _exit(4);
        int ok = wait_ok(g) && p[0] == 'x';
        free(p);
        _exit(ok ? 0 : 1);
    }
    CHECK(wait_ok(pid));
}

/* ---- fork once memfd_create is denied ---- */

/* A sandbox that denies memfd_create after start-up: the child keeps the
 * staged copy as private memory, meshed spans included, and works on. */
static void *sparse_256(void *arg)
{
    char **kept = arg;
    char *all[4000];
    for (int i = 0; i < 4000; i++)
        all[i] = malloc(256);
    for (int i = 0; i < 4000; i++) {
        if (i % 4 == 1) {
            memset(all[i], (unsigned char)i, 256);
            kept[i / 4] = all[i];
        } else {
            free(all[i]);
        }
    }
    return NULL;
}

static int kept_intact(char **kept)
{
    for (int k = 0; k < 1000; k++)
        for (int b = 0; b < 256; b++)
            if ((unsigned char)kept[k][b] != (unsigned char)(4 * k + 1))
                return 0;
    return 1;
}

static void test_fork_after_memfd_denied(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        static char *kept[1000];
        pthread_t t;
        pthread_create(&t, NULL, sparse_256, kept);
        pthread_join(t, NULL);
        uint64_t pairs = 0;
        size_t len = sizeof pairs;
        mesh_mallctl("mesh.compact", &pairs, &len, NULL, 0);
        if (pairs == 0 || deny_memfd(EPERM) != 0)
            _exit(2);
        pid_t g = fork();
        if (g == 0) {
            int ok = kept_intact(kept);
            if (!ok)
                fprintf(stderr, "  grandchild: the objects it inherited changed\n");
            for (int k = 0; k < 1000; k++) {
                memset(kept[k], 'g', 256); /* the child's own copy */
                free(kept[k]);
            }
            char *z = calloc(1000, 256);
            for (size_t i = 0; i < 256000 && ok; i++)
                ok = z[i] == 0;
            free(z);
            _exit(ok ? 0 : 1);
        }
        int ok = g > 0 && wait_ok(g) && kept_intact(kept);
        _exit(ok ? 0 : 1);
    }
    CHECK(wait_ok(pid));
}

static void test_untouched_not_copied(void)
{
    char *big = malloc((size_t)2 << 30); /* reserved, not touched */
    CHECK(big != NULL);
    big[0] = 1;
    uint64_t before = atomic_load(&mesh_stats.fork_copy_bytes);
    pid_t pid = fork();
    if (pid == 0)
        _exit(big[0] == 1 && big[(size_t)1 << 30] == 0 ? 0 : 1);
    CHECK(wait_ok(pid));
    uint64_t copied = atomic_load(&mesh_stats.fork_copy_bytes) - before;
    CHECK(copied < (64u << 20));
    free(big);
}

static void test_spawn_and_vfork(void)
{
    pid_t pid;
    char *argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    CHECK(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0);
    CHECK(wait_ok(pid));
    CHECK(system("true") == 0);
    pid = vfork();
    if (pid == 0) {
        execve("/bin/true", (char *[]){"true", NULL}, environ);
        _exit(127);
    }
    CHECK(wait_ok(pid));
    /* The heap is intact after all of it. */
    void *p = malloc(100);
    memset(p, 0, 100);
    free(p);
    mesh_global_check();
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_isolation);
    TEST_RUN(test_fork_while_threads_allocate);
    TEST_RUN(test_fork_sees_heap_at_fork);
    TEST_RUN(test_fork_without_descriptors);
    TEST_RUN(test_fork_after_memfd_denied);
    TEST_RUN(test_untouched_not_copied);
    TEST_RUN(test_spawn_and_vfork);
    TEST_DONE();
}
