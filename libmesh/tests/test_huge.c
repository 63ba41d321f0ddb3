/*
 * Blocks mapped outside the arena (huge.c): many of them, freed through
 * free() in random order while others are made and resized, each one found
 * until it is freed and never after.  mesh_huge_alloc is called directly, as
 * malloc does once the arena is full.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <string.h>

#include "internal.h"
#include "test.h"

#define N 30000

static char *blk[N];
static size_t len[N];

static bool all_found(size_t *found)
{
    bool ok = true;
    *found = 0;
    for (size_t i = 0; i < N; i++) {
        size_t size = 0;
        bool owned = blk[i] && mesh_huge_owns(blk[i], &size);
        if (blk[i]) {
            ok &= owned && size == len[i] && malloc_usable_size(blk[i]) == len[i] &&
                  *(uint32_t *)blk[i] == (uint32_t)i;
            *found += owned;
        }
    }
    return ok;
}

static void make(size_t i, mesh_rng_t *rng)
{
    len[i] = (size_t)(1 + mesh_rng_below(rng, 3)) * MESH_PAGE_SIZE;
    blk[i] = mesh_huge_alloc(len[i], MESH_PAGE_SIZE);
    if (blk[i])
        *(uint32_t *)blk[i] = (uint32_t)i;
}

static void test_many_random_order(void)
{
    mesh_rng_t rng = {0x1234567}; /* a fixed seed: the same order each run */
    uint64_t bytes0 = mesh_huge_bytes();
    for (size_t i = 0; i < N; i++)
        make(i, &rng);
    size_t found;
    CHECK(all_found(&found));
    CHECK_EQ(found, N);
    /* A random order of every index: each is freed once, and a third of
     * the time a freed one is made again or a live one resized. */
    static uint32_t order[N];
    for (size_t i = 0; i < N; i++)
        order[i] = (uint32_t)i;
    for (size_t i = N; i > 1; i--) {
        size_t j = mesh_rng_below(&rng, (uint32_t)i);
        uint32_t t = order[i - 1];
        order[i - 1] = order[j];
        order[j] = t;
    }
    size_t live = N;
    for (size_t k = 0; k < N; k++) {
        size_t i = order[k];
        char *p = blk[i];
        free(p);
        blk[i] = NULL;
        live--;
        CHECK(!mesh_huge_owns(p, NULL));
        size_t r = order[mesh_rng_below(&rng, (uint32_t)N)];
        switch (mesh_rng_below(&rng, 6)) {
        case 0:
            if (!blk[r]) {
                make(r, &rng);
                live += blk[r] != NULL;
            }
            break;
        case 1:
            if (blk[r]) {
                size_t n = len[r] + MESH_PAGE_SIZE * (1 + mesh_rng_below(&rng, 4));
                char *q = mesh_huge_realloc(blk[r], n);
                CHECK(q && *(uint32_t *)q == (uint32_t)r);
                if (q) {
                    blk[r] = q;
                    len[r] = n;
                }
            }
            break;
        }
        if (k % 5000 == 0) {
            CHECK(all_found(&found));
            CHECK_EQ(found, live);
        }
    }
    CHECK(all_found(&found));
    CHECK_EQ(found, live);
    for (size_t i = 0; i < N; i++) {
        free(blk[i]);
        blk[i] = NULL;
    }
    CHECK_EQ(mesh_huge_bytes(), bytes0);
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_many_random_order);
    TEST_DONE();
}
