/*
 * Multithreaded stress with cross-thread frees: threads allocate objects of
 * a realistic size mix (mostly small, some large), stamp every byte with a
 * pattern derived from the object's identity, and swap them through a
 * shared exchange, so that most objects are freed by a thread that did not
 * allocate them.  Every object is verified byte for byte before it is freed
 * or reallocated.  Deterministic per seed (MESH_STRESS_SEED), apart from
 * thread interleaving.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "mesh.h"
#include "internal.h"
#include "test.h"

#define THREADS 4
#define EXCHANGE 4096
#define LOCAL 512

typedef struct obj {
    uint64_t id;
    size_t size;
} obj_t;

static _Atomic(obj_t *) exchange[EXCHANGE];
static _Atomic long corrupt;
#ifndef STRESS_OPS
#define STRESS_OPS 200000
#endif
static long ops_per_thread = STRESS_OPS;
static uint64_t seed = 42;

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t pick_size(uint64_t *s)
{
    uint64_t r = next(s) % 1000;
    if (r < 700)
        return 16 + next(s) % 240;     /* most objects are small */
    if (r < 950)
        return 256 + next(s) % 3800;
    if (r < 995)
        return 4096 + next(s) % 30000;
    return 32768 + next(s) % 400000;   /* a few large ones */
}

static unsigned char pattern(uint64_t id, size_t i)
{
    return (unsigned char)((id * 0x9e3779b97f4a7c15ULL >> 56) + i * 7);
}

static obj_t *make(uint64_t id, size_t size)
{
    obj_t *o = malloc(size);
    if (!o)
        return NULL;
    o->id = id;
    o->size = size;
    unsigned char *b = (unsigned char *)o;
    for (size_t i = sizeof *o; i < size; i++)
        b[i] = pattern(id, i);
    return o;
}

static void verify(const obj_t *o)
{
    const unsigned char *b = (const unsigned char *)o;
    for (size_t i = sizeof *o; i < o->size; i++)
        if (b[i] != pattern(o->id, i)) {
            atomic_fetch_add(&corrupt, 1);
            return;
        }
}

static void *worker(void *arg)
{
    uintptr_t t = (uintptr_t)arg;
    uint64_t s = seed * 1000003 + t + 1;
    obj_t *local[LOCAL] = {0};
    for (long op = 0; op < ops_per_thread; op++) {
        uint64_t id = (t << 48) | (uint64_t)op;
        uint64_t r = next(&s) % 100;
        if (r < 50) {
            /* swap through the exchange: frees someone else's object */
            obj_t *o = make(id, pick_size(&s));
            obj_t *old = atomic_exchange(&exchange[next(&s) % EXCHANGE], o);
            if (old) {
                verify(old);
                free(old);
            }
        } else if (r < 90) {
            unsigned k = (unsigned)(next(&s) % LOCAL);
            if (local[k]) {
                verify(local[k]);
                free(local[k]);
            }
            local[k] = make(id, pick_size(&s));
        } else {
            /* realloc keeps the prefix and the identity */
            unsigned k = (unsigned)(next(&s) % LOCAL);
            if (!local[k])
                continue;
            verify(local[k]);
            size_t nsize = pick_size(&s);
            obj_t *o = realloc(local[k], nsize);
            if (!o)
                continue;
            unsigned char *b = (unsigned char *)o;
            size_t keep = o->size < nsize ? o->size : nsize;
            for (size_t i = sizeof *o; i < keep; i++)
                if (b[i] != pattern(o->id, i)) {
                    atomic_fetch_add(&corrupt, 1);
                    break;
                }
            for (size_t i = keep; i < nsize; i++)
                b[i] = pattern(o->id, i);
            o->size = nsize;
            local[k] = o;
        }
    }
    for (unsigned k = 0; k < LOCAL; k++)
        if (local[k]) {
            verify(local[k]);
            free(local[k]);
        }
    return NULL;
}

static uint64_t allocated(void)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    mesh_mallctl("stats.allocated", &v, &len, NULL, 0);
    return v;
}

static void test_stress(void)
{
    uint64_t before = allocated();
    for (int round = 0; round < 3; round++) {
        pthread_t th[THREADS];
        for (uintptr_t t = 0; t < THREADS; t++)
            pthread_create(&th[t], NULL, worker, (void *)(t + (uintptr_t)round * THREADS));
        for (int t = 0; t < THREADS; t++)
            pthread_join(th[t], NULL);
        mesh_global_check();
    }
    for (int i = 0; i < EXCHANGE; i++) {
        obj_t *o = atomic_exchange(&exchange[i], NULL);
        if (o) {
            verify(o);
            free(o);
        }
    }
    CHECK_EQ(atomic_load(&corrupt), 0);
    mesh_global_check();
    /* Everything freed: live bytes are back where they started. */
    CHECK(allocated() <= before + 4096);
}

int main(void)
{
    const char *s = getenv("MESH_STRESS_SEED");
    if (s)
        seed = strtoull(s, NULL, 10);
    const char *n = getenv("MESH_STRESS_OPS");
    if (n)
        ops_per_thread = strtol(n, NULL, 10);
    fprintf(stderr, "seed %llu, %ld ops per thread, %d threads\n", (unsigned long long)seed, ops_per_thread,
            THREADS);
    free(malloc(1));
    TEST_RUN(test_stress);
    TEST_DONE();
}
