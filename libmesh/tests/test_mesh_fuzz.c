/*
 * Content-integrity fuzzer: random malloc, calloc, free, realloc and
 * memalign sequences, with compaction forced every few thousand operations
 * and every live byte checked against a shadow model after each.  Sizes
 * lean on the meshable classes and the live set is thinned now and then,
 * so that there is something to mesh.  MESH_FUZZ_SEED and MESH_FUZZ_OPS
 * pick the run.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>

#include "mesh.h"
#include "internal.h"
#include "test.h"

#define SLOTS 20000

typedef struct shadow {
    unsigned char *p;
    size_t size;
    uint64_t seed;
} shadow_t;

static shadow_t live[SLOTS];
static uint64_t state;

static uint64_t rnd(void)
{
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static unsigned char byte_at(uint64_t seed, size_t i)
{
    return (unsigned char)((seed >> (i % 7)) + i * 31);
}

static void stamp(shadow_t *s)
{
    for (size_t i = 0; i < s->size; i++)
        s->p[i] = byte_at(s->seed, i);
}

static long bad_bytes;

static void verify(const shadow_t *s)
{
    for (size_t i = 0; i < s->size; i++)
        if (s->p[i] != byte_at(s->seed, i)) {
            bad_bytes++;
            return;
        }
}

static size_t pick_size(void)
{
    uint64_t r = rnd() % 100;
    if (r < 85)
        return 1 + rnd() % 1024;   /* meshable classes */
    if (r < 97)
        return 1025 + rnd() % 15000;
    return 16385 + rnd() % 100000;
}

static void drop(shadow_t *s)
{
    if (!s->p)
        return;
    verify(s);
    free(s->p);
    s->p = NULL;
}

static void test_fuzz(void)
{
    const char *e = getenv("MESH_FUZZ_SEED");
    state = e ? strtoull(e, NULL, 10) : 20261126;
    if (!state)
        state = 1;
    e = getenv("MESH_FUZZ_OPS");
    long ops = e ? strtol(e, NULL, 10) : MESH_DEBUG_ON ? 150000 : 400000;
    uint64_t meshes0 = 0;
    size_t len = sizeof meshes0;
    mesh_mallctl("stats.mesh_count", &meshes0, &len, NULL, 0);
    long zero_errors = 0, align_errors = 0, checks = 0;

    for (long op = 0; op < ops; op++) {
        shadow_t *s = &live[rnd() % SLOTS];
        uint64_t kind = rnd() % 100;
        if (kind < 40) {
            drop(s);
            s->size = pick_size();
            s->p = malloc(s->size);
        } else if (kind < 50) {
            drop(s);
            s->size = pick_size();
            s->p = calloc(1, s->size);
            for (size_t i = 0; i < s->size; i++)
                if (s->p[i]) {
                    zero_errors++;
                    break;
                }
        } else if (kind < 60) {
            drop(s);
            size_t align = (size_t)16 << (rnd() % 9); /* 16 .. 4096 */
            s->size = pick_size();
            s->p = memalign(align, s->size);
            if ((uintptr_t)s->p % align)
                align_errors++;
        } else if (kind < 75 && s->p) {
            verify(s);
            size_t nsize = pick_size();
            unsigned char *q = realloc(s->p, nsize);
            if (!q)
                continue;
            s->p = q;
            size_t keep = s->size < nsize ? s->size : nsize;
            for (size_t i = 0; i < keep; i++)
                if (q[i] != byte_at(s->seed, i)) {
                    bad_bytes++;
                    break;
                }
            s->size = nsize;
        } else {
            drop(s);
            continue;
        }
        if (!s->p)
            continue;
        s->seed = rnd();
        stamp(s);

        /* Thin the live set now and then: fragmentation to mesh. */
        if (op % 50000 == 25000)
            for (int i = 0; i < SLOTS; i++)
                if (rnd() % 4 != 0)
                    drop(&live[i]);
        if (op % 3000 == 2999) {
            uint64_t pairs;
            len = sizeof pairs;
            mesh_mallctl("mesh.compact", &pairs, &len, NULL, 0);
            for (int i = 0; i < SLOTS; i++)
                if (live[i].p)
                    verify(&live[i]);
            checks++;
        }
    }
    for (int i = 0; i < SLOTS; i++)
        drop(&live[i]);
    uint64_t meshes = 0;
    len = sizeof meshes;
    mesh_mallctl("stats.mesh_count", &meshes, &len, NULL, 0);
    fprintf(stderr, "  %ld ops, %ld full checks, %llu meshes\n", ops, checks,
            (unsigned long long)(meshes - meshes0));
    CHECK_EQ(bad_bytes, 0);
    CHECK_EQ(zero_errors, 0);
    CHECK_EQ(align_errors, 0);
    CHECK(meshes > meshes0);
    mesh_global_check();
}

int main(void)
{
    TEST_RUN(test_fuzz);
    TEST_DONE();
}
