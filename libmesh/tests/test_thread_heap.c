/* Thread heaps: created on first use, released at exit with their spans
 * detached, their ids reused; allocations made while a thread exits (from
 * later destructors) still work; the period's detach leaves the classes a
 * thread is using attached and detaches the others. */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"
#include "test.h"

static uint32_t seen_id;
static void *leftover[64];

static void *worker(void *arg)
{
    void *p[100];
    for (int i = 0; i < 100; i++)
        p[i] = malloc(16 + (size_t)i * 8);
    for (int i = 0; i < 100; i += 2)
        free(p[i]);
    for (int i = 1, k = 0; i < 100; i += 2, k++)
        if (k < 64)
            leftover[k] = p[i]; /* freed later by the main thread */
        else
            free(p[i]);
    seen_id = mesh_tls_heap ? mesh_tls_heap->id : 0;
    return NULL;
}

static unsigned attached_to(uint32_t id)
{
    unsigned n = 0;
    for (uint32_t r = 1; r < mesh_arena.nrecords; r++) {
        mesh_miniheap_t *mh = &mesh_arena.records[r];
        if (mh->kind == MESH_KIND_SMALL && atomic_load(&mh->owner) == id)
            n++;
    }
    return n;
}

static void test_release_at_exit(void)
{
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    CHECK(seen_id != 0);
    CHECK_EQ(attached_to(seen_id), 0);
    for (int k = 0; k < 64; k++)
        free(leftover[k]);
    mesh_global_check();
}

static void test_id_reuse(void)
{
    uint32_t first = seen_id;
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    CHECK_EQ(seen_id, first);
    for (int k = 0; k < 64; k++)
        free(leftover[k]);
}

static pthread_key_t late_key;
static void *late_ptr;

static void late_destructor(void *arg)
{
    /* Runs after libmesh's own destructor may have released the heap. */
    free(arg);
    late_ptr = malloc(40);
    memset(late_ptr, 9, 40);
}

static void *late_worker(void *arg)
{
    pthread_setspecific(late_key, malloc(24));
    return NULL;
}

static void test_malloc_in_destructor(void)
{
    pthread_key_create(&late_key, late_destructor);
    for (int i = 0; i < 20; i++) {
        pthread_t t;
        pthread_create(&t, NULL, late_worker, NULL);
        pthread_join(t, NULL);
        CHECK(late_ptr != NULL);
        free(late_ptr);
        late_ptr = NULL;
    }
    mesh_global_check();
}

#define MANY 32
static uint32_t many_ids[MANY];

/* Every size from 0 to 999 bytes, each block written over before it is
 * freed; returns how many mallocs of a nonzero size failed. */
static void *many(void *arg)
{
    uintptr_t failed = 0;
    for (int i = 0; i < 1000; i++) {
        size_t size = (size_t)i % 2000;
        void *p = malloc(size);
        if (!p && size)
            failed++;
        else if (p)
            memset(p, 0xa5, size);
        free(p);
    }
    many_ids[(uintptr_t)arg] = mesh_tls_heap ? mesh_tls_heap->id : 0;
    return (void *)failed;
}

/* 320 short-lived threads, 32 at a time: each gets a heap, every one is
 * released when its thread exits, and their ids are reused (ids stay
 * below what 32 live threads and this one need, far below 320). */
static void test_many_threads(void)
{
    uint32_t max_id = 0;
    for (int round = 0; round < 10; round++) {
        pthread_t t[MANY];
        for (uintptr_t i = 0; i < MANY; i++)
            pthread_create(&t[i], NULL, many, (void *)i);
        unsigned long failed = 0;
        unsigned still_attached = 0;
        for (int i = 0; i < MANY; i++) {
            void *r;
            pthread_join(t[i], &r);
            failed += (uintptr_t)r;
        }
        for (int i = 0; i < MANY; i++) {
            CHECK(many_ids[i] != 0);
            still_attached += attached_to(many_ids[i]);
            max_id = many_ids[i] > max_id ? many_ids[i] : max_id;
        }
        CHECK_EQ(failed, 0);
        CHECK_EQ(still_attached, 0);
    }
    CHECK(max_id <= 2 * MANY);
    mesh_global_check();
}

static uint32_t owner_of(void *p)
{
    return atomic_load(&mesh_arena_lookup(p)->owner);
}

/* The period's detach takes the spans of the classes whose vector did not
 * move since the last one, keeps those of the classes in use, and runs
 * once a period however often it is called. */
static void test_period_keeps_used_classes(void)
{
    void *used[8], *idle = malloc(1000);
    used[0] = malloc(48);
    mesh_thread_heap_t *th = mesh_tls_heap;
    CHECK(th != NULL);
    CHECK_EQ(owner_of(used[0]), th->id);
    CHECK_EQ(owner_of(idle), th->id);
    th->last_flush_ns = 0;
    mesh_thread_heap_period(th); /* both vectors moved since the heap began */
    CHECK_EQ(owner_of(used[0]), th->id);
    CHECK_EQ(owner_of(idle), th->id);
    for (int i = 1; i < 8; i++)
        used[i] = malloc(48);
    th->last_flush_ns = 0;
    mesh_thread_heap_period(th);
    CHECK_EQ(owner_of(used[0]), th->id);
    CHECK_EQ(owner_of(idle), 0u);
    /* Called again at once (a pass right after the tick): nothing more. */
    mesh_thread_heap_period(th);
    CHECK_EQ(owner_of(used[0]), th->id);
    th->last_flush_ns = 0;
    mesh_thread_heap_period(th); /* no 48-byte malloc since */
    CHECK_EQ(owner_of(used[0]), 0u);
    for (int i = 0; i < 8; i++)
        free(used[i]);
    free(idle);
    mesh_global_check();
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_period_keeps_used_classes);
    TEST_RUN(test_release_at_exit);
    TEST_RUN(test_id_reuse);
    TEST_RUN(test_malloc_in_destructor);
    TEST_RUN(test_many_threads);
    TEST_DONE();
}
