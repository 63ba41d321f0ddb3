/*
 * The shuffle vector: the free slots of the spans a thread has
 * attached for one size class, in random order.  Popping the next slot costs
 * what a bump pointer costs; the randomness is paid for once per refill (a
 * shuffle of runs of slots, or of every slot at MESH_RANDOMIZE=2) and, at
 * MESH_RANDOMIZE=2, once per local free (one swap), and it is what makes
 * two spans' live objects unlikely to collide, so that they mesh.
 */
#include <string.h>
#include "internal.h"

void mesh_sv_init(mesh_shuffle_vector_t *sv, unsigned cls)
{
    sv->top = 0;
    sv->nattached = 0;
    sv->cls = (uint8_t)cls;
    sv->object_size = mesh_classes[cls].object_size;
    sv->span_bytes = mesh_classes[cls].npages * (uint32_t)MESH_PAGE_SIZE;
    sv->recip = mesh_classes[cls].recip;
    sv->ncached = 0;
    uint32_t cap = (uint32_t)(mesh_opt.cache_kb * 1024 / sv->object_size);
    if (!cap && mesh_opt.cache_kb)
        cap = 1; /* a class larger than the bound still caches one object */
    sv->cache_cap = (uint16_t)(cap > MESH_CACHE_CAP ? MESH_CACHE_CAP : cap);
}

/* Attaches mh at the next index and pushes the slots in free_bits, which the
 * caller has already claimed in mh's bitmap.  Slots are pushed from the
 * highest down, so that without shuffling they pop in address order. */
void mesh_sv_add_span(mesh_shuffle_vector_t *sv, mesh_miniheap_t *mh, const uint64_t free_bits[MESH_BITMAP_WORDS])
{
    unsigned i = sv->nattached++;
    mesh_assert(i < MESH_SV_MAX_ATTACH);
    sv->base[i] = mesh_mh_start(mh);
    sv->mh_id[i] = mesh_mh_id(mh);
    mh->attach_idx = (uint8_t)i;
    mesh_sv_push_slots(sv, i, free_bits);
}

/* Pushes the slots set in bits for attached span i. */
void mesh_sv_push_slots(mesh_shuffle_vector_t *sv, unsigned i, const uint64_t bits[MESH_BITMAP_WORDS])
{
    for (int w = MESH_BITMAP_WORDS - 1; w >= 0; w--) {
        uint64_t b = bits[w];
        while (b) {
            unsigned k = 63 - (unsigned)__builtin_clzll(b);
            b &= ~(1ULL << k);
            mesh_assert(sv->top < MESH_SV_CAP);
            sv->entries[sv->top++] = sv->base[i] + (size_t)(w * 64 + k) * sv->object_size;
        }
    }
}

/* Whether slot (a head span's address) is in the vector: a scan, for the
 * slow path that confirms what a free key suggests. */
bool mesh_sv_find(const mesh_shuffle_vector_t *sv, const void *slot)
{
    for (unsigned k = 0; k < sv->top; k++)
        if (sv->entries[k] == slot)
            return true;
    return false;
}

/* Which attached span and slot an entry is, by the page table; false when
 * it is not the start of a slot of a span attached to this vector (only a
 * torn vector in a fork child has such entries). */
bool mesh_sv_entry_slot(const mesh_shuffle_vector_t *sv, const char *entry, unsigned *attach_idx, unsigned *slot)
{
    const mesh_miniheap_t *mh = mesh_arena_lookup(entry);
    if (!mh)
        return false;
    unsigned i = mh->attach_idx;
    if (i >= sv->nattached || i >= MESH_SV_MAX_ATTACH || sv->mh_id[i] != mesh_mh_id(mh))
        return false;
    uint32_t s;
    if (!mesh_sv_slot_in(sv, mesh_mh_start(mh), entry, &s) || s >= mesh_classes[sv->cls].nobjects)
        return false;
    *attach_idx = i;
    *slot = s;
    return true;
}

/* Whether p is in the free cache: a scan, for the slow path. */
bool mesh_cache_find(const mesh_shuffle_vector_t *sv, const void *p)
{
    for (unsigned k = 0; k < sv->ncached; k++)
        if (sv->cached[k] == p)
            return true;
    return false;
}

static void shuffle_indices(uint16_t *e, uint32_t n, mesh_rng_t *rng)
{
    for (; n > 1; n--) {
        uint32_t j = mesh_rng_below(rng, n);
        uint16_t t = e[n - 1];
        e[n - 1] = e[j];
        e[j] = t;
    }
}

/* Shuffles the vector in runs of `run` consecutive entries (a span's free
 * slots are pushed in address order): the runs in random order, each
 * handed out in address order from a random slot of it, wrapping round.
 * With run 1, every slot on its own (a plain Fisher-Yates pass).
 *
 * Runs keep what sequential placement is good for: objects allocated one
 * after another share lines and neighbouring lines, which a walk over them
 * in allocation order then finds prefetched (browser-like's DOM walks ran
 * 1.7-2.0x jemalloc's time with every slot shuffled, 1.4-1.5x with runs of
 * 512 bytes, 1.25-1.55x unshuffled).  Meshing needs each span's live
 * objects to sit at offsets that differ from span to span: a random run
 * order and a random start within each run give that for the regular
 * patterns that defeat address order (every k-th object kept), and the
 * footprints of the workload matrix stay where full shuffling had them
 * (docs/results.md).  Longer runs cost memory (2 KiB runs: fragmenter and
 * regular 6% more). */
void mesh_sv_shuffle(mesh_shuffle_vector_t *sv, mesh_rng_t *rng, uint32_t run)
{
    uint32_t n = sv->top;
    if (run < 1)
        run = 1;
    uint32_t nruns = (n + run - 1) / run, k = 0;
    uint16_t order[MESH_SV_CAP];
    char *out[MESH_SV_CAP];
    for (uint32_t r = 0; r < nruns; r++)
        order[r] = (uint16_t)r;
    shuffle_indices(order, nruns, rng);
    for (uint32_t r = 0; r < nruns; r++) {
        uint32_t lo = order[r] * run, len = n - lo < run ? n - lo : run;
        uint32_t start = len > 1 ? mesh_rng_below(rng, len) : 0;
        for (uint32_t i = start; i < len; i++)
            out[k++] = sv->entries[lo + i];
        for (uint32_t i = 0; i < start; i++)
            out[k++] = sv->entries[lo + i];
    }
    memcpy(sv->entries, out, n * sizeof out[0]);
}

/* Debug check: no slot twice in the vector, every slot of an attached span,
 * and set in that span's bitmap. */
void mesh_sv_check(const mesh_shuffle_vector_t *sv)
{
    uint64_t seen[MESH_SV_MAX_ATTACH][MESH_BITMAP_WORDS] = {{0}};
    for (unsigned k = 0; k < sv->top; k++) {
        unsigned i, s;
        if (!mesh_sv_entry_slot(sv, sv->entries[k], &i, &s) || (seen[i][s >> 6] >> (s & 63)) & 1)
            mesh_assert_fail("shuffle vector entry", __FILE__, __LINE__);
        seen[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < sv->nattached; i++) {
        const mesh_miniheap_t *mh = &mesh_arena.records[sv->mh_id[i]];
        if (mh->attach_idx != i || sv->base[i] != mesh_mh_start(mh))
            mesh_assert_fail("shuffle vector span", __FILE__, __LINE__);
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
            if (seen[i][w] & ~atomic_load_explicit(&mh->bits[w], memory_order_relaxed))
                mesh_assert_fail("shuffle vector slot not set in the bitmap", __FILE__, __LINE__);
    }
}
