/* The free cache: objects a thread frees into spans it has not attached
 * are its next allocations of the class, newest first; the cache is
 * bounded, counts as free in the statistics, gives everything back when
 * the heap is flushed (in runs, a locked AND for the objects of a span's
 * bitmap word), is off under full randomization, and a cached object
 * keeps a valid free key when its span is meshed. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

enum { N = 40, SIZE = 48 };
static void *theirs[N];

/* Allocates N objects in a thread that then exits: their spans are
 * detached, so every free of them by another thread is a remote free. */
static void *alloc_theirs(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i++)
        theirs[i] = malloc(SIZE);
    return NULL;
}

static void make_theirs(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_theirs, NULL);
    pthread_join(t, NULL);
}

/* Another thread's objects, freed here into spans this thread has not
 * attached (its own heap flushed first): they go to its free cache. */
static void free_theirs_here(void)
{
    make_theirs();
    mesh_thread_heap_flush(mesh_tls_heap);
    for (int i = 0; i < N; i++)
        free(theirs[i]);
}

static mesh_shuffle_vector_t *my_vector(void)
{
    return &mesh_tls_heap->sv[mesh_size_class(SIZE)];
}

static bool bit_set(const void *p)
{
    uint32_t slot;
    mesh_miniheap_t *head = mesh_global_span_of(mesh_arena_lookup(p), p, &slot);
    return head && (atomic_load(&head->bits[slot >> 6]) >> (slot & 63) & 1);
}

static void test_reused_newest_first(void)
{
    free_theirs_here();
    CHECK_EQ(my_vector()->ncached, N);
    for (int i = N - 1; i >= 0; i--) {
        void *q = malloc(SIZE);
        CHECK(q == theirs[i]);
        CHECK_EQ(*(uint64_t *)q, 0); /* no free key on a live object */
    }
    for (int i = 0; i < N; i++)
        free(theirs[i]);
    mesh_thread_heap_flush(mesh_tls_heap);
    mesh_global_check();
}

static void test_counts_as_free(void)
{
    mesh_thread_heap_flush(mesh_tls_heap);
    uint64_t before = mesh_global_allocated_bytes();
    make_theirs();
    CHECK_EQ(mesh_global_allocated_bytes() - before, N * SIZE);
    for (int i = 0; i < N; i++)
        free(theirs[i]);
    CHECK(my_vector()->ncached > 0);
    CHECK_EQ(mesh_global_allocated_bytes(), before);
    mesh_thread_heap_flush(mesh_tls_heap);
    CHECK_EQ(mesh_global_allocated_bytes(), before);
}

static void test_flush_gives_back(void)
{
    free_theirs_here();
    for (int i = 0; i < N; i++)
        CHECK(bit_set(theirs[i])); /* reserved while cached */
    mesh_thread_heap_flush(mesh_tls_heap);
    CHECK_EQ(my_vector()->ncached, 0);
    for (int i = 0; i < N; i++)
        CHECK(!bit_set(theirs[i]));
    mesh_global_check();
}

static void test_bounded(void)
{
    enum { MANY = 4 * MESH_CACHE_CAP };
    static void *many[MANY];
    mesh_thread_heap_flush(mesh_tls_heap);
    for (int round = 0; round < MANY / N; round++) {
        make_theirs();
        memcpy(many + round * N, theirs, sizeof theirs);
    }
    mesh_thread_heap_flush(mesh_tls_heap);
    unsigned most = 0;
    for (int i = 0; i < MANY / N * N; i++) {
        free(many[i]);
        if (my_vector()->ncached > most)
            most = my_vector()->ncached;
    }
    CHECK_EQ(most, my_vector()->cache_cap);
    CHECK(my_vector()->cache_cap * SIZE <= mesh_opt.cache_kb * 1024);
    /* Past the cap the older half went back to the spans. */
    CHECK(!bit_set(many[0]));
    CHECK(bit_set(many[MANY / N * N - 1]));
    mesh_thread_heap_flush(mesh_tls_heap);
    mesh_global_check();
}

/* With the cache off, frees of another thread's objects go straight back
 * to their spans. */
static void check_nothing_cached(void)
{
    free_theirs_here();
    CHECK_EQ(my_vector()->ncached, 0);
    for (int i = 0; i < N; i++)
        CHECK(!bit_set(theirs[i]));
}

static void test_off_when_fully_random(void)
{
    uint64_t level = mesh_opt.randomize;
    mesh_opt.randomize = MESH_RANDOMIZE_FREE;
    check_nothing_cached();
    mesh_opt.randomize = level;
    mesh_global_check();
}

/* The cache's bound per class is MESH_CACHE_KB, read when a thread's heap
 * is made; 0 turns the cache off. */
static mesh_shuffle_vector_t *their_vector;
static void *note_vector(void *arg)
{
    (void)arg;
    free(malloc(SIZE));
    their_vector = &mesh_tls_heap->sv[mesh_size_class(SIZE)];
    return NULL;
}

static unsigned cap_of_new_thread(void)
{
    pthread_t t;
    pthread_create(&t, NULL, note_vector, NULL);
    pthread_join(t, NULL);
    return their_vector->cache_cap;
}

static void test_bound_is_an_option(void)
{
    uint64_t kb = mesh_opt.cache_kb;
    mesh_opt.cache_kb = 1;
    CHECK_EQ(cap_of_new_thread(), 1024 / SIZE);
    mesh_opt.cache_kb = 1024;
    CHECK_EQ(cap_of_new_thread(), MESH_CACHE_CAP);
    mesh_opt.cache_kb = 0;
    CHECK_EQ(cap_of_new_thread(), 0);
    check_nothing_cached();
    mesh_opt.cache_kb = kb;
    mesh_global_check();
}

/* Two complementary spans, one object of each cached by a thread that
 * stays alive (a pass flushes only its own thread's heap), then meshed:
 * the key of the one whose span became an alias follows it to its new
 * head, where a second free looks for it. */
static void *to_cache[2];
static _Atomic int cache_step;

static void *cache_and_wait(void *arg)
{
    (void)arg;
    free(malloc(1)); /* the thread's heap: frees without one go straight to the spans */
    free(to_cache[0]);
    free(to_cache[1]);
    atomic_store(&cache_step, 1);
    while (atomic_load(&cache_step) != 2) /* no syscall: a wait is an idle point */
        ;
    return NULL; /* exit flushes the cache */
}

static void test_key_follows_mesh(void)
{
    frag_t f = {.size = 256, .groups = 2, .max_spans = 2};
    fragment(&f);
    size_t pick[2] = {0, 0};
    for (size_t i = 1; i < f.nkept; i++)
        if (mesh_arena_lookup(f.kept[i]) != mesh_arena_lookup(f.kept[0]))
            pick[1] = i;
    CHECK(pick[1] != 0);
    for (int k = 0; k < 2; k++) {
        to_cache[k] = f.kept[pick[k]];
        f.kept[pick[k]] = NULL; /* freed by the thread, not by free_all */
    }
    pthread_t t;
    pthread_create(&t, NULL, cache_and_wait, NULL);
    while (atomic_load(&cache_step) != 1)
        ;
    uint64_t meshes = ctl("stats.mesh_count");
    mesh_pass(true, 1000000000ULL);
    CHECK(ctl("stats.mesh_count") > meshes);
    int aliased = 0;
    for (int k = 0; k < 2; k++) {
        uint32_t slot;
        mesh_miniheap_t *mh = mesh_arena_lookup(to_cache[k]);
        mesh_miniheap_t *head = mesh_global_span_of(mh, to_cache[k], &slot);
        CHECK(head != NULL);
        if (!head)
            continue;
        aliased += mh->kind == MESH_KIND_ALIAS;
        CHECK(atomic_load(&head->bits[slot >> 6]) >> (slot & 63) & 1); /* still cached */
        uint64_t *key = (uint64_t *)(mesh_mh_start(head) + (size_t)slot * 256);
        CHECK_EQ(*key, mesh_key_of(key));
    }
    CHECK_EQ(aliased, 1);
    atomic_store(&cache_step, 2);
    pthread_join(t, NULL);
    free_all(&f);
    mesh_global_check();
}

/* Whole spans of another thread's objects, freed here through the free
 * cache and flushed, end empty and off the full and partial lists (a
 * second free of a flushed object: bad_input's double-free-after-flush). */
enum { WHOLE = 3 };
static void *whole[WHOLE * 256];
static unsigned nwhole;

static void *alloc_whole(void *arg)
{
    (void)arg;
    const mesh_size_class_t *sc = &mesh_classes[mesh_size_class(SIZE)];
    nwhole = WHOLE * sc->nobjects;
    for (unsigned i = 0; i < nwhole; i++)
        whole[i] = malloc(SIZE);
    return NULL;
}

static void test_flush_by_span(void)
{
    pthread_t t;
    mesh_thread_heap_flush(mesh_tls_heap);
    pthread_create(&t, NULL, alloc_whole, NULL);
    pthread_join(t, NULL);
    for (unsigned i = 0; i < nwhole; i++)
        free(whole[i]);
    mesh_thread_heap_flush(mesh_tls_heap);
    unsigned live = 0, full_spans = 0;
    for (unsigned i = 0; i < nwhole; i++) {
        mesh_miniheap_t *mh = mesh_arena_lookup(whole[i]);
        if (mh && mh->kind == MESH_KIND_SMALL) {
            live += mesh_mh_live(mh);
            full_spans += mh->state == MESH_MH_FULL || mesh_state_is_partial(mh->state);
        }
    }
    CHECK_EQ(live, 0);
    CHECK_EQ(full_spans, 0);
    mesh_global_check();
}

/* Objects freed one after another from one span go back in runs, one
 * locked AND for each bitmap word: every bit is cleared and meshing's hint
 * counts every object.  A bit found clear already (a mesh moved it, or a
 * double free) sends its object alone the slow way, which here (no mesh)
 * reports it and aborts: checked in a child. */
static void test_flush_runs(void)
{
    free_theirs_here();
    CHECK_EQ(my_vector()->ncached, N);
    _Atomic uint32_t *hint = &mesh_class_heaps[mesh_size_class(SIZE)].detached_frees;
    uint32_t before = atomic_load(hint);
    mesh_cache_flush(mesh_tls_heap, mesh_size_class(SIZE), 0);
    CHECK_EQ(atomic_load(hint) - before, N);
    for (int i = 0; i < N; i++)
        CHECK(!bit_set(theirs[i]));
    mesh_global_check();

    free_theirs_here();
    int err[2];
    CHECK(pipe(err) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(err[1], 2);
        signal(SIGABRT, SIG_DFL);
        uint32_t slot;
        mesh_miniheap_t *head = mesh_global_span_of(mesh_arena_lookup(theirs[5]), theirs[5], &slot);
        atomic_fetch_and(&head->bits[slot >> 6], ~(1ULL << (slot & 63)));
        mesh_cache_flush(mesh_tls_heap, mesh_size_class(SIZE), 0);
        _exit(0);
    }
    close(err[1]);
    char buf[512] = {0}, want[64];
    ssize_t n = 0, k;
    while (n < (ssize_t)sizeof buf - 1 && (k = read(err[0], buf + n, sizeof buf - 1 - (size_t)n)) > 0)
        n += k;
    close(err[0]);
    int status;
    waitpid(pid, &status, 0);
    snprintf(want, sizeof want, "mesh: double free of %p\n", theirs[5]);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    CHECK(strstr(buf, want) != NULL);
    mesh_thread_heap_flush(mesh_tls_heap);
    mesh_global_check();
}

int main(void)
{
    free(malloc(1));
    mesh_opt.randomize = MESH_RANDOMIZE_REFILL;
    TEST_RUN(test_reused_newest_first);
    TEST_RUN(test_counts_as_free);
    TEST_RUN(test_flush_gives_back);
    TEST_RUN(test_bounded);
    TEST_RUN(test_off_when_fully_random);
    TEST_RUN(test_bound_is_an_option);
    TEST_RUN(test_key_follows_mesh);
    TEST_RUN(test_flush_by_span);
    TEST_RUN(test_flush_runs);
    TEST_DONE();
}
