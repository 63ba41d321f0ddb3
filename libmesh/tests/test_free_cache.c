/* The free cache: objects a thread frees into spans it has not attached
 * are its next allocations of the class, newest first; the cache is
 * bounded, counts as free in the statistics, gives everything back when
 * the heap is flushed, and is off under full randomization. */
#define _GNU_SOURCE
#include <pthread.h>
#include <string.h>

#include "internal.h"
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
    make_theirs();
    mesh_thread_heap_flush(mesh_tls_heap);
    for (int i = 0; i < N; i++)
        free(theirs[i]);
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
    make_theirs();
    mesh_thread_heap_flush(mesh_tls_heap);
    for (int i = 0; i < N; i++)
        free(theirs[i]);
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
    CHECK(my_vector()->cache_cap * SIZE <= MESH_CACHE_BYTES);
    /* Past the cap the older half went back to the spans. */
    CHECK(!bit_set(many[0]));
    CHECK(bit_set(many[MANY / N * N - 1]));
    mesh_thread_heap_flush(mesh_tls_heap);
    mesh_global_check();
}

static void test_off_when_fully_random(void)
{
    uint64_t level = mesh_opt.randomize;
    mesh_opt.randomize = MESH_RANDOMIZE_FREE;
    make_theirs();
    mesh_thread_heap_flush(mesh_tls_heap);
    for (int i = 0; i < N; i++)
        free(theirs[i]);
    CHECK_EQ(my_vector()->ncached, 0);
    for (int i = 0; i < N; i++)
        CHECK(!bit_set(theirs[i]));
    mesh_opt.randomize = level;
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
    TEST_DONE();
}
