/*
 * The meshing benchmark: 100 MB of 256-byte objects, a random
 * 75% freed, the survivors still written by a thread, while the main
 * thread idles in epoll_wait as a server would (the allocator's idle
 * point).  Run under the harness's `trace` to read the memory cgroup:
 *   /usr/bin/python3 -m harness trace -- env LD_PRELOAD=libmesh/libmesh.so \
 *       libmesh/bench/bin/mesh_bench
 * Prints the live bytes and a checksum of the survivors, verified at the end.
 * Arguments: MB allocated (100), seconds idle (8), "compact" to call
 * mesh.compact first, "alone" to start the writer only after it.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dlfcn.h>
#include <sys/epoll.h>
#include <time.h>

#define SIZE 256

static unsigned char **keep;
static size_t nkeep;
static _Atomic int stop;
static _Atomic long rounds;

static void write_round(void)
{
    for (size_t i = 0; i < nkeep; i++) {
        uint64_t *c = (uint64_t *)keep[i];
        (*c)++;
        keep[i][8 + *c % (SIZE - 8)] = (unsigned char)*c;
    }
    atomic_fetch_add(&rounds, 1);
}

static void *writer(void *unused)
{
    (void)unused;
    while (!atomic_load(&stop))
        write_round();
    return NULL;
}

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double now(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

int main(int argc, char **argv)
{
    size_t total = argc > 1 ? strtoull(argv[1], NULL, 10) << 20 : 100u << 20;
    double idle = argc > 2 ? atof(argv[2]) : 8.0;
    size_t n = total / SIZE;
    unsigned char **all = malloc(n * sizeof *all);
    keep = malloc(n * sizeof *keep);
    uint64_t x = 42;
    for (size_t i = 0; i < n; i++) {
        all[i] = malloc(SIZE);
        memset(all[i], 0, SIZE);
    }
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (x % 4 == 0)
            keep[nkeep++] = all[i];
        else
            free(all[i]);
    }
    free(all);
    keep = realloc(keep, nkeep * sizeof *keep);
    printf("live %zu bytes: %zu objects of %d bytes and their index\n", nkeep * (SIZE + sizeof *keep), nkeep, SIZE);
    fflush(stdout);
    /* "alone" as fourth argument: the writer starts after mesh.compact,
     * which then meshes in a single-threaded process (one round written
     * first, so that the survivors hold something to check). */
    bool alone = argc > 4 && strcmp(argv[4], "alone") == 0;
    pthread_t t;
    if (alone)
        write_round();
    else
        pthread_create(&t, NULL, writer, NULL);
    /* Under libmesh, with "compact" as third argument: ask for compaction
     * now instead of waiting for the periodic passes. */
    typedef int (*mallctl_fn)(const char *, void *, size_t *, void *, size_t);
    mallctl_fn mallctl = (mallctl_fn)dlsym(RTLD_DEFAULT, "mesh_mallctl");
    if (mallctl && argc > 3 && strcmp(argv[3], "compact") == 0) {
        /* The thread's CPU time is the cost of meshing; the wall time
         * also counts the time other processes had the CPU. */
        double c0 = now(), cpu0 = clock_s(CLOCK_THREAD_CPUTIME_ID);
        uint64_t pairs = 0;
        size_t len = sizeof pairs;
        mallctl("mesh.compact", &pairs, &len, NULL, 0);
        double wall = now() - c0, cpu = clock_s(CLOCK_THREAD_CPUTIME_ID) - cpu0;
        printf("mesh.compact: %llu spans meshed in %.3f s (CPU %.3f s, %.1f us a mesh)\n", (unsigned long long)pairs,
               wall, cpu, pairs ? cpu * 1e6 / (double)pairs : 0.0);
        fflush(stdout);
    }
    if (alone)
        pthread_create(&t, NULL, writer, NULL);
    int ep = epoll_create1(0);
    struct epoll_event ev;
    double t0 = now();
    while (now() - t0 < idle)
        epoll_wait(ep, &ev, 1, 100);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    /* Every object still holds what the writer last wrote. */
    long bad = 0;
    uint64_t sum = 0;
    for (size_t i = 0; i < nkeep; i++) {
        uint64_t c = *(uint64_t *)keep[i];
        if (c != (uint64_t)atomic_load(&rounds) || keep[i][8 + c % (SIZE - 8)] != (unsigned char)c)
            bad++;
        sum += c;
    }
    printf("writer rounds %ld, checksum %llu, bad objects %ld\n", atomic_load(&rounds), (unsigned long long)sum, bad);
    return bad != 0;
}
