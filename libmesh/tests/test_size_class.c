/* Size classes: the table's shape, the size -> class map, and the
 * division-free slot computation, exhaustively. */
#include "internal.h"
#include "test.h"

static void test_table(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        const mesh_size_class_t *sc = &mesh_classes[c];
        CHECK(sc->object_size % 16 == 0);
        if (c)
            CHECK(sc->object_size > mesh_classes[c - 1].object_size);
        CHECK(sc->nobjects >= MESH_MIN_OBJECTS && sc->nobjects <= MESH_MAX_OBJECTS);
        CHECK(sc->nobjects * sc->object_size <= sc->npages * MESH_PAGE_SIZE);
        /* at most 2.5% of a span wasted at its tail */
        CHECK((sc->npages * MESH_PAGE_SIZE - sc->nobjects * sc->object_size) * 1000 <=
              25 * sc->npages * MESH_PAGE_SIZE);
        /* the vector can hold every slot of at least one span */
        CHECK(sc->nobjects <= MESH_SV_CAP);
    }
    CHECK_EQ(mesh_classes[0].object_size, 16);
    CHECK_EQ(mesh_classes[MESH_NUM_CLASSES - 1].object_size, MESH_MAX_SMALL);
    CHECK_EQ(mesh_classes[16].object_size, 640);
    CHECK_EQ(mesh_classes[16].npages, 3); /* 19 objects, 1% waste instead of 6.2% */
}

static void test_class_of(void)
{
    for (size_t size = 0; size <= MESH_MAX_SMALL; size++) {
        unsigned c = mesh_size_class(size);
        CHECK(c < MESH_NUM_CLASSES);
        CHECK(mesh_classes[c].object_size >= size);
        if (c)
            CHECK(mesh_classes[c - 1].object_size < size);
        if (test_failures > 10)
            return;
    }
}

static void test_slot_of_exact(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        const mesh_size_class_t *sc = &mesh_classes[c];
        uint32_t span = sc->npages * (uint32_t)MESH_PAGE_SIZE;
        int bad = 0;
        for (uint32_t off = 0; off < span; off++)
            if (mesh_slot_of(off, sc->recip) != off / sc->object_size)
                bad++;
        CHECK_EQ(bad, 0);
    }
}

static void test_aligned(void)
{
    CHECK_EQ(mesh_classes[mesh_size_class_aligned(40, 32)].object_size, 64);
    CHECK_EQ(mesh_classes[mesh_size_class_aligned(100, 256)].object_size, 256);
    CHECK_EQ(mesh_classes[mesh_size_class_aligned(1, 4096)].object_size, 4096);
    CHECK_EQ(mesh_classes[mesh_size_class_aligned(5000, 4096)].object_size, 8192);
    CHECK_EQ(mesh_size_class_aligned(100, 8192), -1);
    CHECK_EQ(mesh_size_class_aligned(MESH_MAX_SMALL + 1, 16), -1);
}

int main(void)
{
    mesh_size_classes_init();
    TEST_RUN(test_table);
    TEST_RUN(test_class_of);
    TEST_RUN(test_slot_of_exact);
    TEST_RUN(test_aligned);
    TEST_DONE();
}
