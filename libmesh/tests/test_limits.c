/*
 * Limits and options: the arena is a reservation, not a ceiling (a 3 GiB
 * block; 100 live 1 GiB blocks; with a deliberately small arena, large
 * blocks move to mappings of their own); options are read from the
 * environment at start-up (MESH_EVENTS too), and bad values are warned
 * about and ignored.  Option cases run in a child started with the
 * environment they need.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "mesh.h"
#include "test.h"

extern char **environ;

static long rss_mb(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &size, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * 4096 / (1 << 20);
}

static void test_3gib_block(void)
{
    size_t n = (size_t)3 << 30;
    char *p = malloc(n);
    CHECK(p != NULL);
    if (!p)
        return;
    p[0] = 1;
    p[n / 2] = 2;
    p[n - 1] = 3;
    CHECK(p[0] == 1 && p[n / 2] == 2 && p[n - 1] == 3);
    CHECK(malloc_usable_size(p) >= n);
    free(p);
}

static void test_100_reserved_gib(void)
{
    static char *blocks[100];
    long before = rss_mb();
    int ok = 1;
    for (int i = 0; i < 100; i++) {
        blocks[i] = malloc((size_t)1 << 30);
        ok &= blocks[i] != NULL;
    }
    CHECK(ok);
    CHECK(rss_mb() - before < 64); /* reserved, not touched */
    for (int i = 0; i < 100; i++)
        if (blocks[i])
            blocks[i][i * 4096] = (char)i;
    for (int i = 0; i < 100; i++)
        free(blocks[i]);
    mesh_global_check();
}

/* Runs this program again as "child MODE" with extra environment. */
static int run_child(const char *mode, const char *env1, char *err_out, size_t err_len)
{
    char *argv[] = {"/proc/self/exe", "child", (char *)mode, NULL};
    char *envp[] = {(char *)env1, NULL};
    int err[2];
    if (pipe(err) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, err[1], 2);
    pid_t pid;
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    argv[0] = self;
    int rc = posix_spawn(&pid, self, &fa, NULL, argv, env1 ? envp : environ);
    close(err[1]);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    size_t n = 0;
    ssize_t k;
    while (n + 1 < err_len && (k = read(err[0], err_out + n, err_len - 1 - n)) > 0)
        n += (size_t)k;
    err_out[n] = 0;
    close(err[0]);
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int child_small_arena(void)
{
    /* 1 GiB of arena: the third block does not fit and is mapped apart. */
    size_t n = (size_t)700 << 20;
    char *a = malloc(n), *b = malloc(n), *c = malloc(n);
    if (!a || !b || !c)
        return 1;
    c[0] = 1;
    c[n - 1] = 2;
    if (malloc_usable_size(c) < n || mesh_arena.bytes > ((size_t)1 << 30))
        return 2;
    char *d = realloc(c, 2 * n);
    if (!d || d[0] != 1 || d[n - 1] != 2)
        return 3;
    d[2 * n - 1] = 3;
    char *e = malloc((size_t)5 << 30);
    if (!e)
        return 4;
    e[0] = 1;
    free(a);
    free(b);
    free(d);
    free(e);
    return atomic_load(&mesh_stats.huge_alloc_count) >= 2 ? 0 : 5;
}

static int child_sequential(int want_sequential)
{
    /* Fresh spans, so allocation order within each is visible: of the
     * consecutive allocations that fall in one span, sequential placement
     * puts every one right after the last; shuffled placement does that
     * for about one in eight (a 1 KiB span has 8 slots). The thread's
     * vector may mix several spans, so many pairs are looked at. */
    enum { N = 1024 };
    static char *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(1000);
    unsigned same = 0, next = 0;
    for (int i = 1; i < N; i++) {
        if (mesh_arena_lookup(p[i]) != mesh_arena_lookup(p[i - 1]))
            continue;
        same++;
        next += p[i] == p[i - 1] + 1024;
    }
    if (same < 32)
        return 2;
    bool sequential = next == same, shuffled = next < same / 2;
    return (want_sequential ? sequential : shuffled) ? 0 : 1;
}

/* 256-byte objects, three in four freed, in a thread of its own so that
 * its spans are detached (and so meshable) when it exits. */
static void *sparse_spans(void *arg)
{
    enum { N = 4096 };
    static void *objs[N];
    (void)arg;
    for (int i = 0; i < N; i++)
        objs[i] = malloc(256);
    for (int i = 0; i < N; i++)
        if (i % 4)
            free(objs[i]);
    return NULL;
}

static int child_events(void)
{
    /* MESH_EVENTS is read at start-up with the other options: dropping it
     * from the environment before the first pass leaves the log on. */
    if (unsetenv("MESH_EVENTS") != 0)
        return 2;
    pthread_t t;
    pthread_create(&t, NULL, sparse_spans, NULL);
    pthread_join(t, NULL);
    uint64_t pairs = 0;
    size_t len = sizeof pairs;
    return mesh_mallctl("mesh.compact", &pairs, &len, NULL, 0) == 0 ? 0 : 3;
}

static void test_small_arena(void)
{
    char err[4096];
    int rc = run_child("small-arena", "MESH_ARENA_GB=1", err, sizeof err);
    CHECK_EQ(rc, 0);
}

static void test_randomize_option(void)
{
    char err[4096];
    CHECK_EQ(run_child("sequential", "MESH_RANDOMIZE=0", err, sizeof err), 0);
    CHECK_EQ(run_child("shuffled", NULL, err, sizeof err), 0);
}

static void test_bad_option_warns(void)
{
    char err[4096];
    CHECK_EQ(run_child("shuffled", "MESH_RANDOMIZE=7", err, sizeof err), 0);
    CHECK(strstr(err, "mesh: ignoring MESH_RANDOMIZE=7") != NULL);
    CHECK_EQ(run_child("shuffled", "MESH_MAX_DIRTY_MB=lots", err, sizeof err), 0);
    CHECK(strstr(err, "mesh: ignoring MESH_MAX_DIRTY_MB=lots") != NULL);
}

static void test_events_option(void)
{
    char path[64], env[80], err[4096], log[4096];
    snprintf(path, sizeof path, "/tmp/mesh-test-events-%d", (int)getpid());
    snprintf(env, sizeof env, "MESH_EVENTS=%s", path);
    unlink(path);
    CHECK_EQ(run_child("events", env, err, sizeof err), 0);
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, log, sizeof log - 1) : -1;
    log[n > 0 ? n : 0] = 0;
    if (fd >= 0)
        close(fd);
    unlink(path);
    CHECK(strncmp(log, "{\"t\": ", 6) == 0);
    CHECK(strstr(log, "\"pairs\": {") != NULL);
    CHECK(strstr(log, "\"kind\": \"forced\", \"gave_way\": false}") != NULL); /* mesh.compact's pass */

    /* A path longer than the option holds is refused, not cut. */
    size_t long_len = MESH_OPT_STR_MAX + 16;
    char *too_long = malloc(long_len + sizeof "MESH_EVENTS=");
    strcpy(too_long, "MESH_EVENTS=");
    memset(too_long + strlen(too_long), 'x', long_len);
    too_long[sizeof "MESH_EVENTS=" - 1 + long_len] = 0;
    CHECK_EQ(run_child("shuffled", too_long, err, sizeof err), 0);
    CHECK(strstr(err, "mesh: ignoring MESH_EVENTS=xxxx") != NULL);
    CHECK(strstr(err, "... (expected a length from 0 to 4095)") != NULL);
    free(too_long);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "child") == 0) {
        if (strcmp(argv[2], "small-arena") == 0)
            return child_small_arena();
        if (strcmp(argv[2], "sequential") == 0)
            return child_sequential(1);
        if (strcmp(argv[2], "shuffled") == 0)
            return child_sequential(0);
        if (strcmp(argv[2], "events") == 0)
            return child_events();
        return 99;
    }
    free(malloc(1));
    TEST_RUN(test_3gib_block);
    TEST_RUN(test_100_reserved_gib);
    TEST_RUN(test_small_arena);
    TEST_RUN(test_randomize_option);
    TEST_RUN(test_bad_option_warns);
    TEST_RUN(test_events_option);
    TEST_DONE();
}
