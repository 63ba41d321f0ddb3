/* The global heap: spans move between lists as remote frees empty them,
 * empty spans go back to the arena, large objects resize in place, and the
 * allocated-bytes statistic is exact when the program is quiet. */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>

#include "mesh.h"
#include "internal.h"
#include "test.h"

#define N 160 /* ten spans of 256-byte objects (16 per span) */
static void *objs[N];

static void *alloc_thread(void *arg)
{
    for (int i = 0; i < N; i++) {
        objs[i] = malloc(256);
        memset(objs[i], i, 256);
    }
    return NULL; /* thread exit detaches its spans */
}

static uint64_t allocated(void)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    mesh_mallctl("stats.allocated", &v, &len, NULL, 0);
    return v;
}

static void test_remote_free_transitions(void)
{
    /* Each free here is a remote free straight into the span: no free
     * cache to hold them (test_free_cache covers the cache). */
    uint64_t level = mesh_opt.randomize;
    mesh_opt.randomize = MESH_RANDOMIZE_FREE;
    pthread_t t;
    pthread_create(&t, NULL, alloc_thread, NULL);
    pthread_join(t, NULL);
    mesh_miniheap_t *mh = mesh_arena_lookup(objs[0]);
    CHECK(mh && mh->kind == MESH_KIND_SMALL);
    CHECK_EQ(atomic_load(&mh->owner), 0);
    CHECK(mh->state == MESH_MH_FULL || mh->state >= MESH_MH_PARTIAL);
    /* Find every object of that span and free them from this thread. */
    int in_span[N], n = 0;
    for (int i = 0; i < N; i++)
        if (mesh_arena_lookup(objs[i]) == mh)
            in_span[n++] = i;
    CHECK(n >= 1 && n <= 16);
    uint32_t gen = atomic_load(&mh->gen);
    for (int k = 0; k < n; k++) {
        CHECK(((unsigned char *)objs[in_span[k]])[255] == (unsigned char)in_span[k]);
        free(objs[in_span[k]]);
        objs[in_span[k]] = NULL;
        if (k == 0 && n > 1)
            CHECK(mh->state >= MESH_MH_PARTIAL); /* full -> partial on the first free */
    }
    /* Empty: kept on the class's empty list, or returned to the arena. */
    CHECK(mh->state == MESH_MH_EMPTY || atomic_load(&mh->gen) != gen);
    for (int i = 0; i < N; i++)
        free(objs[i]);
    mesh_global_check();
    mesh_opt.randomize = level;
}

static void test_alloc_one(void)
{
    void *p = mesh_global_alloc_one(5); /* 96-byte class */
    CHECK(p != NULL);
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    CHECK(mh && mh->cls == 5 && atomic_load(&mh->owner) == 0);
    memset(p, 1, 96);
    free(p);
    mesh_global_check();
}

static void test_allocated_exact(void)
{
    static void *keep[1000];
    uint64_t before = allocated();
    for (int i = 0; i < 1000; i++)
        keep[i] = malloc(100); /* 112-byte class */
    uint64_t mid = allocated();
    for (int i = 0; i < 1000; i++)
        free(keep[i]);
    uint64_t after = allocated();
    CHECK_EQ(mid - before, 1000 * 112);
    CHECK_EQ(after, before);
}

static void test_large_in_place(void)
{
    char *p = malloc(1 << 20);
    memset(p, 5, 1 << 20);
    char *q = realloc(p, 512 << 10);
    CHECK(q == p);
    CHECK_EQ(malloc_usable_size(q), 512 << 10);
    /* Grow back into the pages just given up. */
    char *r = realloc(q, 1 << 20);
    CHECK(r == p);
    CHECK(r[0] == 5 && r[(512 << 10) - 1] == 5);
    free(r);
    mesh_global_check();
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_remote_free_transitions);
    TEST_RUN(test_alloc_one);
    TEST_RUN(test_allocated_exact);
    TEST_RUN(test_large_in_place);
    TEST_DONE();
}
