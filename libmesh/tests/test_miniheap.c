/* Miniheap bitmaps: masks, live counts, full words. */
#include "internal.h"
#include "test.h"

static void test_valid_mask(void)
{
    uint64_t m[MESH_BITMAP_WORDS];
    mesh_mh_valid_mask(256, m);
    CHECK(m[0] == ~0ULL && m[3] == ~0ULL);
    mesh_mh_valid_mask(85, m);
    CHECK(m[0] == ~0ULL && m[1] == (1ULL << 21) - 1 && m[2] == 0 && m[3] == 0);
    mesh_mh_valid_mask(8, m);
    CHECK(m[0] == 0xff && m[1] == 0);
    mesh_mh_valid_mask(64, m);
    CHECK(m[0] == ~0ULL && m[1] == 0);
}

static void test_live_and_full(void)
{
    /* a record from the arena's pool: initialising one touches the
     * per-record trimmed array */
    bool clean;
    free(malloc(1));
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_miniheap_t *rec = mesh_arena_alloc_span_locked(1, 1, MESH_KIND_SMALL, &clean);
    pthread_mutex_unlock(&mesh_arena.lock);
    CHECK(rec != NULL);
    if (!rec)
        return;
    mesh_mh_init_small(rec, 2); /* 48-byte class: 85 objects */
    CHECK_EQ(mesh_mh_live(rec), 0);
    atomic_store(&rec->bits[0], ~0ULL);
    atomic_store(&rec->bits[1], (1ULL << 21) - 1);
    CHECK_EQ(mesh_mh_live(rec), 85);
    CHECK(mesh_mh_is_full_word(85, 0, ~0ULL));
    CHECK(mesh_mh_is_full_word(85, 1, (1ULL << 21) - 1));
    CHECK(!mesh_mh_is_full_word(85, 1, (1ULL << 20) - 1));
    CHECK(!mesh_mh_is_full_word(85, 2, 0)); /* a word with no slots is never "full" */
}

int main(void)
{
    mesh_size_classes_init();
    TEST_RUN(test_valid_mask);
    TEST_RUN(test_live_and_full);
    TEST_DONE();
}
