/* The shuffle vector: order without shuffling, permutation with it (slot
 * by slot, and in runs), the free keys that catch double frees, and the
 * random scatter that meshing relies on. */
#include <string.h>

#include "internal.h"
#include "test.h"

static char *span;
static mesh_miniheap_t *span_mh;

/* A real span of class cls from the arena, with free_bits claimed. */
static void setup(mesh_shuffle_vector_t *sv, unsigned cls, uint64_t free_bits[MESH_BITMAP_WORDS])
{
    bool clean;
    if (span_mh) {
        pthread_mutex_lock(&mesh_arena.lock);
        mesh_arena_free_span_locked(span_mh);
        pthread_mutex_unlock(&mesh_arena.lock);
    }
    pthread_mutex_lock(&mesh_arena.lock);
    span_mh = mesh_arena_alloc_span_locked(mesh_classes[cls].npages, 1, MESH_KIND_SMALL, &clean);
    mesh_mh_init_small(span_mh, cls);
    mesh_arena_set_pages(span_mh, true);
    pthread_mutex_unlock(&mesh_arena.lock);
    span = mesh_mh_start(span_mh);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        atomic_store(&span_mh->bits[w], free_bits[w]);
    memset(sv, 0, sizeof *sv);
    mesh_sv_init(sv, cls);
    mesh_sv_add_span(sv, span_mh, free_bits);
}

static void test_in_order(void)
{
    mesh_shuffle_vector_t sv;
    uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, 0, 0, 0}; /* 64 objects of 64 bytes */
    setup(&sv, 3, all);
    CHECK_EQ(sv.top, 64);
    for (unsigned i = 0; i < 64; i++) {
        char *p = mesh_sv_pop(&sv);
        CHECK(p == span + i * 64);
        CHECK_EQ(*(uint64_t *)p, 0); /* no free key on what is handed out */
    }
    CHECK_EQ(sv.top, 0);
}

static void test_shuffled_permutation(void)
{
    mesh_shuffle_vector_t sv;
    mesh_rng_t rng = {12345};
    uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, ~0ULL, ~0ULL, ~0ULL}; /* 256 x 16 bytes */
    setup(&sv, 0, all);
    mesh_sv_shuffle(&sv, &rng, 1);
    mesh_sv_check(&sv);
    char seen[256] = {0};
    int in_order = 0;
    for (unsigned i = 0; i < 256; i++) {
        char *p = mesh_sv_pop(&sv);
        unsigned slot = (unsigned)(p - span) / 16;
        CHECK(slot < 256 && !seen[slot]);
        seen[slot] = 1;
        in_order += slot == i;
    }
    CHECK(in_order < 16); /* a shuffle, not the identity */
}

/* Shuffled in runs of 32 slots of 16 bytes (MESH_RANDOMIZE=1): each run
 * is handed out whole, in address order from a random slot of it and
 * wrapping round, and the runs come in random order. */
static void test_shuffled_runs(void)
{
    mesh_shuffle_vector_t sv;
    mesh_rng_t rng = {777};
    uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, ~0ULL, ~0ULL, ~0ULL};
    const unsigned run = MESH_SHUFFLE_RUN_BYTES / 16;
    unsigned starts_nonzero = 0, runs_out_of_order = 0;
    for (int trial = 0; trial < 20; trial++) {
        setup(&sv, 0, all);
        mesh_sv_shuffle(&sv, &rng, run);
        mesh_sv_check(&sv);
        char seen[256] = {0};
        for (unsigned r = 0; r < 256 / run; r++) {
            unsigned first = (unsigned)((char *)mesh_sv_pop(&sv) - span) / 16, block = first / run;
            CHECK(!seen[first]);
            seen[first] = 1;
            starts_nonzero += first % run != 0;
            runs_out_of_order += block != r;
            for (unsigned i = 1; i < run; i++) {
                unsigned slot = (unsigned)((char *)mesh_sv_pop(&sv) - span) / 16;
                CHECK_EQ(slot, block * run + (first + i) % run);
                CHECK(!seen[slot]);
                seen[slot] = 1;
            }
        }
        CHECK_EQ(sv.top, 0);
    }
    /* 160 runs: a start of zero and a run in its place are 1 in 32 and 1 in 8 */
    CHECK(starts_nonzero > 120);
    CHECK(runs_out_of_order > 80);
}

static void test_push_checks(void)
{
    mesh_shuffle_vector_t sv;
    mesh_rng_t rng = {1};
    uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, 0, 0, 0};
    setup(&sv, 3, all);
    char *a = mesh_sv_pop(&sv);
    char *b = mesh_sv_pop(&sv);
    CHECK(mesh_sv_push(&sv, span_mh, a, &rng, true));
    CHECK(*(uint64_t *)a == mesh_key_of(a));
    CHECK(!mesh_sv_push(&sv, span_mh, a, &rng, true));       /* double free */
    CHECK(mesh_sv_find(&sv, a));
    CHECK(!mesh_sv_find(&sv, b));
    CHECK(!mesh_sv_push(&sv, span_mh, b + 8, &rng, true));   /* not a slot start */
    CHECK(!mesh_sv_push(&sv, span_mh, span + 4096, &rng, true)); /* outside the span */
    CHECK(!mesh_sv_push(&sv, span_mh, span - 64, &rng, true));
    CHECK(mesh_sv_push(&sv, span_mh, b, &rng, false));
    CHECK_EQ(sv.top, 64);
    mesh_sv_check(&sv);
}

/* An entry is an address; the slow paths that give slots back to their
 * spans find the span and slot by the page table, and turn away what is
 * not a slot start of an attached span (a torn vector in a fork child). */
static void test_entry_slot(void)
{
    mesh_shuffle_vector_t sv;
    uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, 0, 0, 0};
    setup(&sv, 3, all);
    unsigned i = 99, s = 999;
    CHECK(mesh_sv_entry_slot(&sv, span + 5 * 64, &i, &s));
    CHECK_EQ(i, 0);
    CHECK_EQ(s, 5);
    CHECK(!mesh_sv_entry_slot(&sv, span + 5 * 64 + 8, &i, &s)); /* inside a slot */
    CHECK(!mesh_sv_entry_slot(&sv, span + 64 * 64, &i, &s));    /* past the class's slots */
    CHECK(!mesh_sv_entry_slot(&sv, (char *)&sv, &i, &s));       /* not in the arena */
    sv.mh_id[0]++;                                              /* a span attached elsewhere */
    CHECK(!mesh_sv_entry_slot(&sv, span, &i, &s));
    sv.mh_id[0]--;
    sv.nattached = 0;                                           /* no span attached here */
    CHECK(!mesh_sv_entry_slot(&sv, span, &i, &s));
}

/* Randomization is what makes meshing work on regular programs: two spans
 * filled and then thinned in allocation order should rarely share slots
 * when slot order is random, and always when it is not. */
static void test_scatter(uint32_t run)
{
    mesh_rng_t rng = {99};
    int overlaps_random = 0, overlaps_ordered = 0;
    for (int trial = 0; trial < 200; trial++) {
        uint64_t occupancy[2][MESH_BITMAP_WORDS];
        for (int ordered = 0; ordered < 2; ordered++) {
            for (int s = 0; s < 2; s++) {
                mesh_shuffle_vector_t sv;
                uint64_t all[MESH_BITMAP_WORDS] = {~0ULL, 0, 0, 0};
                setup(&sv, 3, all);
                if (!ordered)
                    mesh_sv_shuffle(&sv, &rng, run);
                memset(occupancy[s], 0, sizeof occupancy[s]);
                /* keep the first 4 objects allocated of 64 */
                for (int k = 0; k < 4; k++) {
                    char *p = mesh_sv_pop(&sv);
                    unsigned slot = (unsigned)(p - span) / 64;
                    occupancy[s][0] |= 1ULL << slot;
                }
            }
            if (occupancy[0][0] & occupancy[1][0]) {
                if (ordered)
                    overlaps_ordered++;
                else
                    overlaps_random++;
            }
        }
    }
    CHECK_EQ(overlaps_ordered, 200);
    /* P(overlap): slot by slot 1 - C(60,4)/C(64,4) ~ 0.23; in runs of 8,
     * the same run (1/8) and starts that are not 4 apart (7/8) ~ 0.11 */
    CHECK(overlaps_random < 100);
}

static void test_scatter_slots(void)
{
    test_scatter(1);
}

static void test_scatter_runs(void)
{
    test_scatter(MESH_SHUFFLE_RUN_BYTES / 64);
}

int main(void)
{
    free(malloc(1)); /* start the allocator: spans come from its arena */
    TEST_RUN(test_in_order);
    TEST_RUN(test_shuffled_permutation);
    TEST_RUN(test_shuffled_runs);
    TEST_RUN(test_push_checks);
    TEST_RUN(test_entry_slot);
    TEST_RUN(test_scatter_slots);
    TEST_RUN(test_scatter_runs);
    TEST_DONE();
}
