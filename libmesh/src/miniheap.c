/*
 * Miniheaps: the metadata of one span.  The record itself is declared in
 * internal.h with its invariants; this file holds the bitmap arithmetic.
 * The bitmap is the truth about which slots are taken: remote frees clear
 * bits atomically, the owner claims clear bits with an atomic OR, and a
 * detached span's popcount is exactly its live objects.
 */
#include "internal.h"

void mesh_mh_valid_mask(unsigned nobjects, uint64_t mask[MESH_BITMAP_WORDS])
{
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        unsigned lo = w * 64;
        if (nobjects >= lo + 64)
            mask[w] = ~0ULL;
        else if (nobjects > lo)
            mask[w] = (1ULL << (nobjects - lo)) - 1;
        else
            mask[w] = 0;
    }
}

/* Whether word w of a bitmap has all of its valid slots taken. */
bool mesh_mh_is_full_word(unsigned nobjects, unsigned w, uint64_t word)
{
    uint64_t mask[MESH_BITMAP_WORDS];
    mesh_mh_valid_mask(nobjects, mask);
    return mask[w] && word == mask[w];
}

void mesh_mh_init_small(mesh_miniheap_t *mh, unsigned cls)
{
    mh->cls = (uint8_t)cls;
    mh->state = MESH_MH_NONE;
    mh->attach_idx = 0;
    mesh_untrim(mesh_mh_id(mh), 0);
    atomic_store_explicit(&mh->owner, 0, memory_order_relaxed);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        atomic_store_explicit(&mh->bits[w], 0, memory_order_relaxed);
}

unsigned mesh_mh_live(const mesh_miniheap_t *mh)
{
    unsigned n = 0;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        n += mesh_popcount64(atomic_load_explicit(&mh->bits[w], memory_order_acquire));
    return n;
}
