/*
 * Size classes: jemalloc's spacing up to 1 KiB, then powers of two to 16
 * KiB.  A span holds at least 8 and at most 256 objects.  Where the
 * smallest such span would waste more than 2.5% of itself at the tail (320,
 * 384, 640 and 768 bytes waste 6.2%), it takes a page or two more: every
 * class then wastes at most 2.5%.
 */
#include "internal.h"

static const uint32_t class_sizes[MESH_NUM_CLASSES] = {
    16,  32,  48,  64,  80,  96,  112, 128,  160,  192,  224,  256,
    320, 384, 448, 512, 640, 768, 896, 1024, 2048, 4096, 8192, 16384,
};

mesh_size_class_t mesh_classes[MESH_NUM_CLASSES];
uint8_t mesh_class_of_small[MESH_MAX_SMALL / 16 + 1];

static uint32_t objects_in(uint32_t pages, uint32_t size)
{
    uint32_t n = (uint32_t)(pages * MESH_PAGE_SIZE / size);
    return n > MESH_MAX_OBJECTS ? MESH_MAX_OBJECTS : n;
}

/* Waste in thousandths of the span. */
static uint32_t waste_of(uint32_t pages, uint32_t size)
{
    uint64_t bytes = pages * MESH_PAGE_SIZE;
    return (uint32_t)((bytes - (uint64_t)objects_in(pages, size) * size) * 1000 / bytes);
}

void mesh_size_classes_init(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        uint32_t size = class_sizes[c];
        uint32_t pages = (uint32_t)((MESH_MIN_OBJECTS * size + MESH_PAGE_SIZE - 1) / MESH_PAGE_SIZE);
        /* The fewest pages that waste at most 2.5%: more objects per span
         * would make two spans less likely to mesh. */
        uint32_t best = pages;
        for (uint32_t p = pages; p < pages + 4; p++) {
            if (waste_of(p, size) <= 25) {
                best = p;
                break;
            }
            if (waste_of(p, size) < waste_of(best, size))
                best = p;
        }
        mesh_classes[c].object_size = size;
        mesh_classes[c].npages = best;
        mesh_classes[c].nobjects = objects_in(best, size);
        mesh_classes[c].recip = (uint32_t)((((uint64_t)1 << 32) + size - 1) / size);
        mesh_mh_valid_mask(mesh_classes[c].nobjects, mesh_classes[c].valid);
    }
    unsigned c = 0;
    for (size_t i = 0; i <= MESH_MAX_SMALL / 16; i++) {
        size_t size = i * 16;
        while (class_sizes[c] < size)
            c++;
        mesh_class_of_small[i] = (uint8_t)c;
    }
}

/* The smallest class that holds size bytes with every object aligned to
 * align (a power of two).  Spans start on a page, so any class whose size is
 * a multiple of align works for align up to a page. */
int mesh_size_class_aligned(size_t size, size_t align)
{
    if (size > MESH_MAX_SMALL || align > MESH_PAGE_SIZE)
        return -1;
    for (unsigned c = mesh_size_class(size); c < MESH_NUM_CLASSES; c++)
        if (mesh_classes[c].object_size % align == 0)
            return (int)c;
    return -1;
}
