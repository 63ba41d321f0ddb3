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
    mesh_miniheap_t mh;
    mesh_mh_init_small(&mh, 2); /* 48-byte class: 85 objects */
    CHECK_EQ(mesh_mh_live(&mh), 0);
    atomic_store(&mh.bits[0], ~0ULL);
    atomic_store(&mh.bits[1], (1ULL << 21) - 1);
    CHECK_EQ(mesh_mh_live(&mh), 85);
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
