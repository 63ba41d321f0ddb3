/*
 * The shuffle vector (DESIGN §2.1): the free slots of the spans a thread has
 * attached for one size class, in random order.  Popping the next slot costs
 * what a bump pointer costs; the randomness is paid for once per refill (a
 * Fisher-Yates pass) and once per local free (one swap), and it is what
 * makes two spans' live objects unlikely to collide, so that they mesh.
 */
#include "internal.h"

void mesh_sv_init(mesh_shuffle_vector_t *sv, unsigned cls)
{
    sv->top = 0;
    sv->nattached = 0;
    sv->cls = (uint8_t)cls;
    sv->object_size = mesh_classes[cls].object_size;
    sv->span_bytes = mesh_classes[cls].npages * (uint32_t)MESH_PAGE_SIZE;
    sv->recip = mesh_classes[cls].recip;
}

/* Attaches mh at the next index and pushes the slots in free_bits, which the
 * caller has already claimed in mh's bitmap.  Slots are pushed from the
 * highest down, so that without shuffling they pop in address order. */
void mesh_sv_add_span(mesh_shuffle_vector_t *sv, mesh_miniheap_t *mh, const uint64_t free_bits[MESH_BITMAP_WORDS])
{
    unsigned i = sv->nattached++;
    mesh_assert(i < MESH_SV_MAX_ATTACH);
    sv->span[i].base = mesh_mh_start(mh);
    sv->span[i].mh_id = mesh_mh_id(mh);
    mh->attach_idx = (uint8_t)i;
    for (int w = MESH_BITMAP_WORDS - 1; w >= 0; w--) {
        uint64_t bits = free_bits[w];
        sv->span[i].reserved[w] = bits;
        while (bits) {
            unsigned b = 63 - (unsigned)__builtin_clzll(bits);
            bits &= ~(1ULL << b);
            mesh_assert(sv->top < MESH_SV_CAP);
            sv->entries[sv->top++] = (uint16_t)(i << 8 | ((unsigned)w * 64 + b));
        }
    }
}

/* Whether the vector holds (as a free slot) slot `slot` of span mh_id,
 * attached at attach_idx.  Called by other threads while the owner runs:
 * every read is racy, so the answer counts only if the attach generation did
 * not move meanwhile.  Used to catch a free of an object that is already
 * free in its owner's vector. */
bool mesh_sv_holds(const mesh_shuffle_vector_t *sv, uint32_t mh_id, unsigned attach_idx, unsigned slot)
{
    uint32_t g1 = __atomic_load_n(&sv->attach_gen, __ATOMIC_ACQUIRE);
    if ((g1 & 1) || attach_idx >= MESH_SV_MAX_ATTACH)
        return false;
    bool held = __atomic_load_n(&sv->span[attach_idx].mh_id, __ATOMIC_RELAXED) == mh_id &&
                (__atomic_load_n(&sv->span[attach_idx].reserved[slot >> 6], __ATOMIC_RELAXED) >> (slot & 63) & 1);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return held && __atomic_load_n(&sv->attach_gen, __ATOMIC_RELAXED) == g1;
}

void mesh_sv_shuffle(mesh_shuffle_vector_t *sv, mesh_rng_t *rng)
{
    for (uint32_t n = sv->top; n > 1; n--) {
        uint32_t j = mesh_rng_below(rng, n);
        uint16_t t = sv->entries[n - 1];
        sv->entries[n - 1] = sv->entries[j];
        sv->entries[j] = t;
    }
}

/* Debug check: entries and reserved bits describe the same slots, and each
 * reserved slot is set in its span's bitmap. */
void mesh_sv_check(const mesh_shuffle_vector_t *sv)
{
    uint64_t seen[MESH_SV_MAX_ATTACH][MESH_BITMAP_WORDS] = {{0}};
    for (unsigned k = 0; k < sv->top; k++) {
        unsigned i = sv->entries[k] >> 8, s = sv->entries[k] & 255;
        if (i >= sv->nattached || (seen[i][s >> 6] >> (s & 63)) & 1)
            mesh_assert_fail("shuffle vector entry", __FILE__, __LINE__);
        seen[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < sv->nattached; i++) {
        const mesh_miniheap_t *mh = &mesh_arena.records[sv->span[i].mh_id];
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
            uint64_t bits = atomic_load_explicit(&mh->bits[w], memory_order_relaxed);
            if (seen[i][w] != sv->span[i].reserved[w] || (sv->span[i].reserved[w] & ~bits))
                mesh_assert_fail("shuffle vector reserved bits", __FILE__, __LINE__);
        }
    }
}
