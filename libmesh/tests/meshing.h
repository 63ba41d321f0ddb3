/*
 * Helpers of the meshing tests (test_mesh.c, test_mesh_pass.c,
 * test_interpose.c, test_pin.c, test_idle_wait.c, test_fd_lost.c): reading
 * mesh_mallctl numbers, running this program again in a mode, spans
 * fragmented to order, sparse 256-byte objects, a thread that meshes until
 * told to stop, and a span held under the write barrier as a mesh would
 * hold it.
 */
#ifndef MESH_TEST_MESHING_H
#define MESH_TEST_MESHING_H

#include <stdbool.h>
#include <pthread.h>
#include <spawn.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mesh.h"
#include "internal.h"

static inline uint64_t ctl(const char *name)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    if (mesh_mallctl(name, &v, &len, NULL, 0) != 0)
        return (uint64_t)-1;
    return v;
}

static inline uint64_t file_bytes(void)
{
    uint64_t b = 0;
    mesh_os_file_blocks(mesh_arena.fd, &b);
    return b;
}

static inline uint32_t slot_of(const void *p)
{
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    const mesh_size_class_t *sc = &mesh_classes[mh->cls];
    return (uint32_t)(((const char *)p - mesh_mh_start(mh)) / sc->object_size);
}

static inline void fill(void *p, size_t size, uint64_t seed)
{
    unsigned char *b = p;
    for (size_t i = 0; i < size; i++)
        b[i] = (unsigned char)(seed * 131 + i * 7);
}

static inline int intact(const void *p, size_t size, uint64_t seed)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < size; i++)
        if (b[i] != (unsigned char)(seed * 131 + i * 7))
            return 0;
    return 1;
}

/* Runs this test program again as `self mode`, with env1 its only
 * environment variable (or none): for a test that changes the process
 * for good.  Returns its exit status (128 + the signal if killed). */
static inline int run_self(const char *mode, char *env1)
{
    char self[4096];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    char *argv[] = {self, (char *)mode, NULL};
    char *envp[] = {env1, NULL};
    pid_t pid;
    if (posix_spawn(&pid, self, NULL, NULL, argv, envp) != 0)
        return -1;
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- making fragmented spans ---- */

typedef struct frag {
    size_t size;
    unsigned groups;          /* spans are numbered; span k keeps slots s with s % groups == k % groups */
    unsigned max_spans;
    bool (*keep)(unsigned rank, unsigned slot); /* instead of groups, if set */
    void **kept;
    size_t nkept;
} frag_t;

/* In a thread of its own, so that its spans are detached when it exits:
 * allocates until max_spans spans are wholly ours, keeps in span k the
 * slots s with s % groups == k % groups, and frees everything else. */
static inline void *fragment_thread(void *arg)
{
    frag_t *f = arg;
    unsigned nobj = mesh_classes[mesh_size_class(f->size)].nobjects;
    size_t max = (size_t)f->max_spans * nobj * 4 + 64;
    void **objs = malloc(max * sizeof *objs);
    mesh_miniheap_t **spans = malloc(max * sizeof *spans);
    unsigned *count = calloc(max, sizeof *count);
    size_t nspans = 0, n = 0, full = 0;
    while (n < max && full < f->max_spans) {
        void *p = malloc(f->size);
        objs[n++] = p;
        mesh_miniheap_t *mh = mesh_arena_lookup(p);
        size_t k;
        for (k = 0; k < nspans && spans[k] != mh; k++)
            ;
        if (k == nspans)
            spans[nspans++] = mh;
        if (++count[k] == nobj)
            full++;
    }
    f->kept = malloc(n * sizeof *f->kept);
    f->nkept = 0;
    for (size_t i = 0; i < n; i++) {
        mesh_miniheap_t *mh = mesh_arena_lookup(objs[i]);
        size_t k, rank = 0;
        for (k = 0; spans[k] != mh; k++)
            rank += count[k] == nobj;
        unsigned slot = slot_of(objs[i]);
        bool keep = f->keep ? f->keep((unsigned)rank, slot) : slot % f->groups == rank % f->groups;
        if (count[k] == nobj && rank < f->max_spans && keep) {
            fill(objs[i], f->size, (uint64_t)(uintptr_t)objs[i]);
            f->kept[f->nkept++] = objs[i];
        } else {
            free(objs[i]);
        }
    }
    free(objs);
    free(spans);
    free(count);
    return NULL;
}

static inline void fragment(frag_t *f)
{
    pthread_t t;
    pthread_create(&t, NULL, fragment_thread, f);
    pthread_join(t, NULL);
}

static inline int all_intact(const frag_t *f)
{
    for (size_t i = 0; i < f->nkept; i++)
        if (!intact(f->kept[i], f->size, (uint64_t)(uintptr_t)f->kept[i]))
            return 0;
    return 1;
}

/* Frees into spans this thread has not attached wait in its free cache
 * (their slots still taken) until the heap is flushed, as it is every
 * period: flushing now makes the frees take effect before the checks. */
static inline void flush_frees(void)
{
    if (mesh_tls_heap)
        mesh_thread_heap_flush(mesh_tls_heap);
}

static inline void free_all(frag_t *f)
{
    for (size_t i = 0; i < f->nkept; i++)
        free(f->kept[i]);
    free(f->kept);
    f->kept = NULL;
    f->nkept = 0;
    flush_frees();
}

/* ---- sparse objects ---- */

#define WOBJ 4000
static void *wobj[WOBJ];

static inline void *alloc_sparse(void *arg)
{
    /* 256-byte objects, three in four freed at random: 25% occupancy */
    enum { N = WOBJ * 4 };
    static void *all[N];
    for (int i = 0; i < N; i++)
        all[i] = malloc(256);
    unsigned x = 12345;
    int kept = 0;
    for (int i = 0; i < N; i++) {
        x = x * 1103515245 + 12345;
        if (kept < WOBJ && ((x >> 16) % 4 == 0 || N - i <= WOBJ - kept)) {
            memset(all[i], 0, 256);
            wobj[kept++] = all[i];
        } else {
            free(all[i]);
        }
    }
    return NULL;
}

/* ---- a thread meshing all the time ---- */

static _Atomic int stop_meshing;

static inline void *mesher(void *arg)
{
    while (!atomic_load(&stop_meshing))
        ctl("mesh.compact");
    return NULL;
}

/* ---- the barrier, made to hold ---- */

static char *held_obj;
static _Atomic int go;

/* Protects held_obj's span as a mesh would, lets fn run in a thread, and
 * lifts the protection once the thread has met it (*waits grew) or after
 * 5 s.  The thread is started first: while the span is protected this
 * thread must not write to it (creating a thread does, for glibc's thread
 * bookkeeping lives in the heap). */
static inline void hold_span(void *(*fn)(void *), _Atomic uint64_t *waits)
{
    mesh_miniheap_t *mh = mesh_arena_lookup(held_obj);
    pthread_t t;
    uint64_t waits0 = atomic_load(waits);
    atomic_store(&go, 0);
    pthread_create(&t, NULL, fn, NULL);
    mesh_barrier_install();
    uintptr_t range[1][2] = {{(uintptr_t)mesh_mh_start(mh), (uintptr_t)mesh_mh_start(mh) + mh->npages * MESH_PAGE_SIZE}};
    mesh_barrier_begin(range, 1);
    mesh_arena_protect(mh->span_page, mh->npages, false);
    atomic_store(&go, 1);
    /* The raw system call: usleep is an idle point, where a mesh pass of
     * the allocator's own could begin and end the barrier this holds. */
    struct timespec ts = {0, 1000000L};
    for (int ms = 0; ms < 5000 && atomic_load(waits) == waits0; ms++)
        syscall(SYS_nanosleep, &ts, NULL);
    syscall(SYS_nanosleep, &ts, NULL);
    mesh_arena_protect(mh->span_page, mh->npages, true);
    mesh_barrier_end();
    pthread_join(t, NULL);
}

#endif
