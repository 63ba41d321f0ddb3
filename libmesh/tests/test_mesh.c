/*
 * The mesh primitive and its safety: pairs and chains mesh with their
 * contents intact and both virtual spans on one physical span; the file
 * gives the pages back; the last free of a chain returns every span;
 * writers racing with meshing lose nothing; the write barrier holds off
 * stores; fork after and during meshing; programs' own SIGSEGV handlers.
 * What passes choose to mesh, and when, is in test_mesh_pass.c; the
 * interposed system calls are in test_interpose.c.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

extern char **environ;

/* ---- tests ---- */

static void test_pair(void)
{
    frag_t f = {.size = 896, .groups = 2, .max_spans = 8}; /* 9 slots a span */
    fragment(&f);
    uint64_t meshes0 = ctl("stats.mesh_count"), file0 = file_bytes();
    uint64_t pairs = ctl("mesh.compact");
    uint64_t meshes = ctl("stats.mesh_count") - meshes0;
    CHECK(pairs >= 1 && meshes >= 1);
    CHECK(all_intact(&f));
    /* The file gave back the meshed spans' pages (2 pages each). */
    CHECK(file0 - file_bytes() >= meshes * 2 * MESH_PAGE_SIZE);
    CHECK(ctl("stats.meshed_bytes") >= meshes * 2 * MESH_PAGE_SIZE);
    /* Both virtual spans of a pair show the same physical memory. */
    int aliased = 0;
    for (size_t i = 0; i < f.nkept && !aliased; i++) {
        mesh_miniheap_t *a = mesh_arena_lookup(f.kept[i]);
        if (a->kind != MESH_KIND_ALIAS)
            continue;
        mesh_miniheap_t *h = mesh_alias_head(a);
        size_t off = (size_t)((char *)f.kept[i] - mesh_mh_start(a));
        char *via_head = mesh_mh_start(h) + off;
        CHECK(intact(via_head, f.size, (uint64_t)(uintptr_t)f.kept[i]));
        ((char *)f.kept[i])[5] ^= 0x55; /* write through the alias ... */
        CHECK(via_head[5] == ((char *)f.kept[i])[5]); /* ... read through the head */
        ((char *)f.kept[i])[5] ^= 0x55;
        via_head[7] ^= 0x33;                           /* and the other way round */
        CHECK(((char *)f.kept[i])[7] == via_head[7]);
        via_head[7] ^= 0x33;
        aliased = 1;
    }
    CHECK(aliased);
    CHECK(all_intact(&f));
    /* The last free of each chain leaves its alias stale (test_stale.c);
     * malloc_trim gives every one its own pages back. */
    uint64_t unmesh0 = atomic_load(&mesh_stats.unmesh_count), stale0 = atomic_load(&mesh_stats.stale_pages);
    free_all(&f);
    CHECK_EQ(atomic_load(&mesh_stats.stale_pages) - stale0, meshes * 2);
    malloc_trim(0);
    CHECK_EQ(atomic_load(&mesh_stats.unmesh_count) - unmesh0, meshes);
    CHECK_EQ(atomic_load(&mesh_stats.stale_pages), 0);
    mesh_global_check();
}

static void test_chain_of_three(void)
{
    frag_t f = {.size = 768, .groups = 3, .max_spans = 3}; /* 16 slots: thirds */
    fragment(&f);
    uint64_t meshes0 = ctl("stats.mesh_count");
    ctl("mesh.compact");
    CHECK_EQ(ctl("stats.mesh_count") - meshes0, 2);
    CHECK(all_intact(&f));
    /* All three virtual spans resolve to one head. */
    mesh_miniheap_t *head = NULL;
    int distinct_spans = 0, same_head = 1;
    mesh_miniheap_t *seen[3] = {0};
    for (size_t i = 0; i < f.nkept; i++) {
        mesh_miniheap_t *mh = mesh_arena_lookup(f.kept[i]);
        mesh_miniheap_t *h = mh->kind == MESH_KIND_ALIAS ? mesh_alias_head(mh) : mh;
        if (!head)
            head = h;
        same_head &= h == head;
        int k;
        for (k = 0; k < distinct_spans && seen[k] != mh; k++)
            ;
        if (k == distinct_spans && k < 3)
            seen[distinct_spans++] = mh;
    }
    CHECK(same_head);
    CHECK_EQ(distinct_spans, 3);
    if (!head || distinct_spans != 3)
        return;
    CHECK_EQ(mesh_chain_length(head), 3);
    /* Free the objects of every virtual span, interleaved; the last free
     * returns all three spans, each with its own pages again. */
    char *starts[3];
    for (int k = 0; k < 3; k++)
        starts[k] = mesh_mh_start(seen[k]);
    for (size_t i = 0; i < f.nkept; i += 2)
        free(f.kept[i]);
    for (size_t i = 1; i < f.nkept; i += 2)
        free(f.kept[i]);
    free(f.kept);
    flush_frees();
    /* No alias is left (a freed span may have merged with its neighbours,
     * so its page can map to any record that is not an alias). */
    for (int k = 0; k < 3; k++) {
        mesh_miniheap_t *mh = mesh_arena_lookup(starts[k]);
        CHECK(mh == NULL || mh->kind != MESH_KIND_ALIAS);
    }
    /* Identity restored: objects placed in the three ranges again do not
     * share pages. */
    void *again[48];
    for (int i = 0; i < 48; i++) {
        again[i] = malloc(768);
        fill(again[i], 768, (uint64_t)i);
    }
    int ok = 1;
    for (int i = 0; i < 48; i++)
        ok &= intact(again[i], 768, (uint64_t)i);
    CHECK(ok);
    for (int i = 0; i < 48; i++)
        free(again[i]);
    mesh_global_check();
}

/* ---- writers racing with meshing ---- */

#define WRITERS 2
static _Atomic int stop_writers;
static _Atomic long lost, torn;

static void *writer(void *arg)
{
    uintptr_t me = (uintptr_t)arg;
    static uint64_t expected[WOBJ];
    while (!atomic_load(&stop_writers)) {
        for (size_t i = me; i < WOBJ; i += WRITERS) {
            uint64_t *c = wobj[i];
            if (*c != expected[i])
                atomic_fetch_add(&lost, 1);
            for (size_t k = 8; k < 256; k++)
                if (((unsigned char *)c)[k] != (unsigned char)expected[i]) {
                    atomic_fetch_add(&torn, 1);
                    break;
                }
            uint64_t next = expected[i] + 1;
            memset((char *)c + 8, (unsigned char)next, 248);
            *c = next;
            expected[i] = next;
        }
    }
    return NULL;
}

static void test_writers_during_meshing(void)
{
    pthread_t t, w[WRITERS];
    pthread_create(&t, NULL, alloc_sparse, NULL);
    pthread_join(t, NULL);
    uint64_t meshes0 = ctl("stats.mesh_count"), waits0 = atomic_load(&mesh_stats.barrier_waits);
    for (uintptr_t i = 0; i < WRITERS; i++)
        pthread_create(&w[i], NULL, writer, (void *)i);
    for (int round = 0; round < 20; round++)
        ctl("mesh.compact");
    atomic_store(&stop_writers, 1);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(w[i], NULL);
    fprintf(stderr, "  %llu meshes with writers running, %llu barrier waits\n",
            (unsigned long long)(ctl("stats.mesh_count") - meshes0),
            (unsigned long long)(atomic_load(&mesh_stats.barrier_waits) - waits0));
    CHECK(ctl("stats.mesh_count") - meshes0 > 100);
    CHECK_EQ(atomic_load(&lost), 0);
    CHECK_EQ(atomic_load(&torn), 0);
    for (int i = 0; i < WOBJ; i++)
        free(wobj[i]);
    mesh_global_check();
}

/* ---- the barrier, made to hold ---- */

static _Atomic int writer_done;

static void *late_writer(void *arg)
{
    while (!atomic_load(&go))
        ;
    held_obj[0] = 'W'; /* faults: the span is read-only */
    atomic_store(&writer_done, 1);
    return NULL;
}
static void test_barrier_store_waits(void)
{
    held_obj = malloc(300);
    memset(held_obj, 0, 300);
    uint64_t waits0 = atomic_load(&mesh_stats.barrier_waits);
    hold_span(late_writer, &mesh_stats.barrier_waits);
    CHECK(atomic_load(&writer_done));
    CHECK(held_obj[0] == 'W');
    CHECK(atomic_load(&mesh_stats.barrier_waits) > waits0);
    free(held_obj);
}

/* ---- fork ---- */

static int wait_ok(pid_t pid)
{
    int status;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_fork_after_meshing(void)
{
    frag_t f = {.size = 896, .groups = 2, .max_spans = 8};
    fragment(&f);
    ctl("mesh.compact");
    char *alias_obj = NULL, *head_view = NULL;
    for (size_t i = 0; i < f.nkept && !alias_obj; i++) {
        mesh_miniheap_t *a = mesh_arena_lookup(f.kept[i]);
        if (a->kind == MESH_KIND_ALIAS) {
            alias_obj = f.kept[i];
            head_view = mesh_mh_start(mesh_alias_head(a)) + (alias_obj - mesh_mh_start(a));
        }
    }
    CHECK(alias_obj != NULL);
    if (!alias_obj)
        return;
    int to_child[2], to_parent[2];
    CHECK(pipe(to_child) == 0 && pipe(to_parent) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        alarm(20);
        int ok = all_intact(&f);
        alias_obj[0] = 'c';            /* the alias still aliases in the child */
        ok &= head_view[0] == 'c';
        if (write(to_parent[1], "x", 1) != 1 || read(to_child[0], &c, 1) != 1)
            _exit(3);
        ok &= alias_obj[1] != 'p';     /* the parent's write must not show */
        free_all(&f);                  /* and the chain comes apart in the child */
        for (int i = 0; i < 1000; i++)
            free(malloc(896));
        _exit(ok ? 0 : 1);
    }
    char c;
    CHECK(read(to_parent[0], &c, 1) == 1);
    CHECK(alias_obj[0] != 'c');        /* the child's write must not show here */
    alias_obj[1] = 'p';
    CHECK(head_view[1] == 'p');
    CHECK(write(to_child[1], "x", 1) == 1);
    CHECK(wait_ok(pid));
    alias_obj[1] = (char)(0 * 7 + (uint64_t)(uintptr_t)alias_obj * 131 + 1 * 7);
    /* posix_spawn from a meshed heap */
    char *argv[] = {"/bin/sh", "-c", "exit 0", NULL};
    CHECK(posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) == 0);
    CHECK(wait_ok(pid));
    free_all(&f);
    mesh_global_check();
}

static void test_fork_during_meshing(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_sparse, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < WOBJ; i++)
        fill(wobj[i], 256, (uint64_t)i);
    atomic_store(&stop_meshing, 0);
    pthread_t m;
    pthread_create(&m, NULL, mesher, NULL);
    int ok = 1;
    for (int n = 0; n < 20; n++) {
        pid_t pid = fork();
        if (pid == 0) {
            alarm(20);
            int good = 1;
            for (int i = 0; i < WOBJ; i++)
                good &= intact(wobj[i], 256, (uint64_t)i);
            for (int i = 0; i < WOBJ; i += 3)
                free(wobj[i]);
            ctl("mesh.compact");
            for (int i = 1; i < WOBJ; i += 3)
                good &= intact(wobj[i], 256, (uint64_t)i);
            _exit(good ? 0 : 1);
        }
        ok &= wait_ok(pid);
        usleep(2000);
    }
    atomic_store(&stop_meshing, 1);
    pthread_join(m, NULL);
    CHECK(ok);
    int good = 1;
    for (int i = 0; i < WOBJ; i++)
        good &= intact(wobj[i], 256, (uint64_t)i);
    CHECK(good);
    for (int i = 0; i < WOBJ; i++)
        free(wobj[i]);
    mesh_global_check();
}

/* ---- programs' own SIGSEGV handlers ---- */

static sigjmp_buf jump;
static _Atomic int caught;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    atomic_fetch_add(&caught, 1);
    siglongjmp(jump, 1);
}

/* The fault the program's handler must see; UBSan would stop the test at
 * the null store instead. */
__attribute__((noinline, no_sanitize_undefined)) static void store_to_null(void)
{
    volatile int *volatile null = NULL; /* a load the compiler cannot fold */
    *null = 1;
}

static void test_program_segv_handler(void)
{
    mesh_barrier_install(); /* as after the first mesh */
    struct sigaction sa, old, query;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    CHECK(sigaction(SIGSEGV, &sa, &old) == 0);
    CHECK(sigaction(SIGSEGV, NULL, &query) == 0);
    CHECK(query.sa_sigaction == on_segv); /* the program sees its own handler */
    for (int i = 0; i < 3; i++) {
        if (sigsetjmp(jump, 1) == 0)
            store_to_null();
        ctl("mesh.compact");
    }
    CHECK_EQ(atomic_load(&caught), 3);
    /* Past what the arena has made usable its pages are PROT_NONE: a fault
     * there is the program's too. */
    volatile char *past = mesh_arena.base + mesh_arena.bytes - 4096;
    if (sigsetjmp(jump, 1) == 0)
        *past = 1;
    CHECK_EQ(atomic_load(&caught), 4);
    CHECK(sigaction(SIGSEGV, &old, NULL) == 0);

    /* A stray write with no handler still kills the process with SIGSEGV,
     * outside the arena and inside it (a page the program made read-only,
     * a page past what the arena has made usable). */
    for (int inside = 0; inside < 3; inside++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGSEGV, SIG_DFL);
            if (inside == 2) {
                *past = 1;
            } else if (inside) {
                char *p = malloc(64 << 10);
                mprotect(p, 4096, PROT_READ);
                p[10] = 1;
            } else {
                volatile char *stray = (char *)16;
                *stray = 1;
            }
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
    }
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_pair);
    TEST_RUN(test_chain_of_three);
    TEST_RUN(test_writers_during_meshing);
    TEST_RUN(test_barrier_store_waits);
    TEST_RUN(test_fork_after_meshing);
    TEST_RUN(test_fork_during_meshing);
    TEST_RUN(test_program_segv_handler);
    TEST_DONE();
}
