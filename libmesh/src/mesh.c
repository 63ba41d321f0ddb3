/*
 * The mesh primitive (Mesh, PLDI 2019): two spans of a size class whose
 * live objects sit at different offsets are merged onto one span's physical
 * pages, and both virtual spans keep working.  Meshing src onto dst:
 *
 *   1. every virtual span of src (src itself and what was meshed onto it)
 *      is made read-only: the write barrier holds writers off, and a span
 *      with a buffer a system call is writing into is left alone (pin.c);
 *   2. src's live objects are copied to the same offsets in dst;
 *   3. every one of those virtual spans is mapped onto dst's file pages,
 *      read-write;
 *   4. src becomes an alias in dst's chain, and its bitmap is merged into
 *      dst's;
 *   5. src's own pages are punched out of the file, with the other punches
 *      of the slice, before the class lock is released.
 *
 * A run of pairs, neighbouring srcs onto neighbouring dsts (mesh_run.c), is
 * meshed in one go: one range protected with one mprotect and mapped with
 * one mmap, one TLB shootdown each, whatever its length.  In a process whose
 * only thread is the meshing one, nobody can write into src: step 1 leaves
 * the protection out.
 *
 * A chain lives until its last object is freed: then every alias returns
 * to the arena as a stale span, mapped as it was until its pages are
 * wanted (arena_maps.c).  Every mesh is bounded in mappings (a remapped
 * span costs the kernel up to two; vm.max_map_count is a hard limit): at
 * the budget, meshing restores a few stale spans, then stops, and
 * allocation goes on.  Which pairs are meshed is mesh_match.c's choice,
 * when, mesh_pass.c's (mesher.h has the overview).
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"
#include "mesher.h"

#define M mesh_mesher

void mesh_maps_add(int64_t n)
{
    atomic_fetch_add_explicit(&M.maps_in_use, n, memory_order_relaxed);
}

uint64_t mesh_maps_in_use(void)
{
    int64_t v = atomic_load_explicit(&M.maps_in_use, memory_order_relaxed);
    return v > 0 ? (uint64_t)v : 0;
}

/* Chain lengths, by head: counting a chain's records took a cold miss an
 * alias, and a collection asks for the length of every candidate (in
 * Redis, 15% of a pass).  M.chain_len[id] is kept by join_chain and means
 * something only while record id's mesh_next is set: a chain that
 * dissolves (arena.c) leaves it stale, and unread. */
static bool chain_len_cover(uint32_t id)
{
    size_t reserved = mesh_arena.max_records;
    if (!M.chain_len) {
        void *p;
        if (mesh_os_map_none(reserved, &p) != 0)
            return false;
        M.chain_len = p;
    }
    return mesh_reserve_grow(M.chain_len, reserved, &M.chain_len_usable, (size_t)id + 1);
}

#ifdef MESH_DEBUG
static unsigned chain_walk(const mesh_miniheap_t *head)
{
    unsigned n = 1;
    for (uint32_t id = head->mesh_next; id; id = mesh_arena.records[id].mesh_next)
        n++;
    return n;
}
#endif

unsigned mesh_chain_length(const mesh_miniheap_t *head)
{
    if (!head->mesh_next)
        return 1;
    unsigned n = M.chain_len[mesh_mh_id(head)];
    mesh_assert(n == chain_walk(head));
    return n;
}

/* After mlockall: the index's unused part is reserved, not locked memory. */
void mesh_chain_len_unlock_reserved(void)
{
    mesh_reserve_unlock(M.chain_len, mesh_arena.max_records, M.chain_len_usable);
}

/* Three quarters of the mappings the process has left when meshing
 * starts, unless MESH_MAX_MAPS says otherwise. */
uint64_t mesh_map_budget(void)
{
    if (!M.map_budget) {
        if (mesh_opt.max_maps) {
            M.map_budget = mesh_opt.max_maps;
        } else {
            uint64_t max = mesh_os_max_map_count(), used = mesh_os_count_maps();
            M.map_budget = max > used ? (max - used) * 3 / 4 : 1;
        }
    }
    return M.map_budget;
}

/* Pages of meshed-away spans are punched together once a class is done:
 * one fallocate per run of neighbouring pages instead of one per mesh. */
void mesh_punch_flush(void)
{
    /* insertion sort: the list is short (a pass meshes a few hundred) */
    for (uint32_t i = 1; i < M.punch_n; i += 2)
        for (uint32_t j = i; j > 1 && M.punch_page[j - 3] > M.punch_page[j - 1]; j -= 2) {
            uint32_t p = M.punch_page[j - 3], n = M.punch_page[j - 2];
            M.punch_page[j - 3] = M.punch_page[j - 1];
            M.punch_page[j - 2] = M.punch_page[j];
            M.punch_page[j - 1] = p;
            M.punch_page[j] = n;
        }
    uint64_t t0 = mesh_os_now_ns();
    for (uint32_t i = 0; i < M.punch_n;) {
        uint32_t start = M.punch_page[i], end = start + M.punch_page[i + 1];
        for (i += 2; i < M.punch_n && M.punch_page[i] == end; i += 2)
            end += M.punch_page[i + 1];
        mesh_arena_punch_pages(start, end - start);
    }
    /* what a queued punch costs, for slices to stop in time to make them
     * (mesh_slice_over): an average that follows the last few flushes */
    if (M.punch_n >= 8) {
        uint64_t each = (mesh_os_now_ns() - t0) / (M.punch_n / 2);
        if (each > 50000) /* preempted, most likely */
            each = 50000;
        M.punch_ns = (M.punch_ns * 3 + each) / 4;
    }
    M.punch_n = 0;
}

static void punch_later(uint32_t page, uint32_t npages)
{
    if (M.punch_n + 2 > M.punch_cap) {
        uint32_t cap = M.punch_cap ? M.punch_cap * 2 : 4096;
        void *p;
        if (mesh_os_map_anon(cap * sizeof *M.punch_page, MESH_PAGE_SIZE, &p) != 0) {
            mesh_arena_punch_pages(page, npages);
            return;
        }
        if (M.punch_page) {
            memcpy(p, M.punch_page, M.punch_n * sizeof *M.punch_page);
            mesh_os_unmap(M.punch_page, M.punch_cap * sizeof *M.punch_page);
        }
        M.punch_page = p;
        M.punch_cap = cap;
    }
    M.punch_page[M.punch_n++] = page;
    M.punch_page[M.punch_n++] = npages;
}

/* The mappings meshing src onto dst adds (fewer than none: it removes). */
int mesh_cost(const mesh_miniheap_t *dst, const mesh_miniheap_t *src)
{
    int cost = 0;
    unsigned k = 0;
    for (uint32_t id = mesh_mh_id(src); id && k < MESH_MAX_CHAIN; id = mesh_rec(id)->mesh_next, k++)
        cost += mesh_arena_remap_cost(mesh_rec(id)->span_page, src->npages, src->span_page, dst->span_page);
    return cost;
}

/* What a mesh remaps: virtual ranges, each to be mapped onto the file
 * pages at `to` instead of those at `from`.  One pair: src and each alias
 * meshed onto it, onto dst.  A run of pairs whose srcs have no aliases:
 * one range, the srcs' neighbouring spans onto the dsts' (protected and
 * mapped in one call each: one TLB shootdown each, whatever its length). */
typedef struct mesh_moves {
    uint32_t n;
    bool protect;                       /* false: no other thread exists to write there */
    bool populate;                      /* MESH_POPULATE_MESHED and one-page spans: map the pages in at once */
    uint32_t vpage[MESH_MAX_CHAIN], npages[MESH_MAX_CHAIN], from[MESH_MAX_CHAIN], to[MESH_MAX_CHAIN];
    uintptr_t range[MESH_MAX_CHAIN][2]; /* the same as addresses: what the barrier announces */
} mesh_moves_t;

static void moves_add(mesh_moves_t *mv, uint32_t vpage, uint32_t npages, uint32_t from, uint32_t to)
{
    uint32_t k = mv->n++;
    mv->vpage[k] = vpage;
    mv->npages[k] = npages;
    mv->from[k] = from;
    mv->to[k] = to;
    mv->range[k][0] = (uintptr_t)mesh_arena.base + ((uintptr_t)vpage << MESH_PAGE_SHIFT);
    mv->range[k][1] = mv->range[k][0] + ((uintptr_t)npages << MESH_PAGE_SHIFT);
}

/* The moves of meshing k pairs: src[0] and its aliases onto dst[0] when k
 * is 1, else the srcs onto the dsts as one range. */
static void moves_of(mesh_miniheap_t *const *dst, mesh_miniheap_t *const *src, uint32_t k, mesh_moves_t *mv)
{
    const uint32_t np = mesh_classes[src[0]->cls].npages;
    mv->n = 0;
    mv->protect = true;
    /* A one-page span is never trimmed, so dst's page is in the file, and
     * the objects just copied there are touched again soon: the program's
     * fault on each costs more than filling the entry in with the remap.
     * But the remap costs the pass more, and a pass with a time budget
     * makes fewer meshes (docs/results.md): an option.  Longer spans may
     * have trimmed pages, which a populating read would allocate again. */
    mv->populate = np == 1 && mesh_opt.populate_meshed;
    if (k > 1) {
        moves_add(mv, src[0]->span_page, k * np, src[0]->span_page, dst[0]->span_page);
        return;
    }
    for (uint32_t id = mesh_mh_id(src[0]); id && mv->n < MESH_MAX_CHAIN; id = mesh_rec(id)->mesh_next)
        moves_add(mv, mesh_rec(id)->span_page, np, src[0]->span_page, dst[0]->span_page);
}

/* The pages the mesh would give back: src's, less those trim gave back
 * before, less dst's trimmed pages that src's objects would land on (in
 * *written).  Single-page spans are never trimmed: the common case looks
 * at no bitmap here. */
static uint32_t mesh_gain(const mesh_miniheap_t *dst, const mesh_miniheap_t *src, uint32_t *written)
{
    uint32_t src_trimmed = mesh_arena.trimmed[mesh_mh_id(src)];
    uint32_t dst_trimmed = mesh_arena.trimmed[mesh_mh_id(dst)];
    *written = dst_trimmed ? dst_trimmed & ~mesh_trim_free_pages(src) : 0;
    return mesh_classes[src->cls].npages - (uint32_t)mesh_popcount64(src_trimmed) -
           (uint32_t)mesh_popcount64(*written);
}

/* Announces the mesh and makes the ranges it moves read-only (arena lock
 * held): PINNED if a system call is writing into one of them (pin.c: the
 * call would fail), FAILED if a protection failed; either way nothing
 * stays protected and the barrier is down.  In a process whose only thread
 * is this one (mesh_slice_alone) nobody can write there: the protection,
 * a TLB shootdown, is left out. */
static enum mesh_outcome protect_locked(mesh_moves_t *mv)
{
    uint32_t k;
    mesh_barrier_begin(mv->range, mv->n);
    for (k = 0; k < mv->n; k++)
        if (mesh_pins_overlap(mv->range[k][0], mv->range[k][1])) {
            mesh_barrier_end();
            MESH_STAT_ADD(mesh_pinned, 1);
            return PINNED;
        }
    mv->protect = !mesh_slice_alone();
    if (!mv->protect)
        MESH_STAT_ADD(mesh_unprotected, 1);
    for (k = 0; k < mv->n && mv->protect; k++)
        if (mesh_arena_protect(mv->vpage[k], mv->npages[k], false) != 0)
            break;
    if (k == mv->n || !mv->protect)
        return MESHED;
    while (k-- > 0)
        mesh_arena_protect(mv->vpage[k], mv->npages[k], true);
    mesh_barrier_end();
    return FAILED;
}

/* Copies src's objects (a superset of the live ones: frees may race,
 * allocations cannot) to the same offsets in dst's free slots. */
static void copy_objects(const mesh_miniheap_t *dst, mesh_miniheap_t *src)
{
    const uint32_t size = mesh_classes[src->cls].object_size;
    char *from = mesh_mh_start(src), *to = mesh_mh_start(dst);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t bits = atomic_load(&src->bits[w]);
        while (bits) {
            unsigned b = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            size_t off = (size_t)(w * 64 + b) * size;
            memcpy(to + off, from + off, size);
            /* An object waiting in a free cache carries the key of its
             * head's address, and dst is its head now. */
            if (*(uint64_t *)(to + off) == mesh_key_of(from + off))
                *(uint64_t *)(to + off) = mesh_key_of(to + off);
        }
    }
}

/* Maps the moved ranges onto their new file pages, read-write (arena lock
 * held).  On failure puts back what moved (the old pages are intact until
 * punched), unprotects the rest and ends the barrier. */
static bool remap_locked(const mesh_moves_t *mv)
{
    uint32_t k;
    for (k = 0; k < mv->n; k++)
        if (mesh_arena_map_at_locked(mv->vpage[k], mv->npages[k], mv->to[k], mv->populate) != 0)
            break;
    if (k == mv->n)
        return true;
    for (uint32_t j = 0; j < k; j++)
        mesh_arena_map_at_locked(mv->vpage[j], mv->npages[j], mv->from[j], false);
    for (uint32_t j = k; j < mv->n && mv->protect; j++)
        mesh_arena_protect(mv->vpage[j], mv->npages[j], true);
    mesh_barrier_end();
    return false;
}

/* src and its aliases join dst's chain, and src's bits move into dst's.
 * The kind changes before the bits move, so that a free that finds src's
 * bit gone knows to look again. */
static void join_chain(mesh_miniheap_t *dst, mesh_miniheap_t *src, uint32_t written)
{
    uint32_t dst_id = mesh_mh_id(dst);
    unsigned len = mesh_chain_length(dst) + mesh_chain_length(src);
    for (uint32_t id = src->mesh_next; id; id = mesh_rec(id)->mesh_next)
        __atomic_store_n(&mesh_rec(id)->head, dst_id, __ATOMIC_RELEASE);
    atomic_fetch_add(&src->gen, 1);
    src->state = MESH_MH_NONE;
    __atomic_store_n(&src->head, dst_id, __ATOMIC_RELEASE);
    __atomic_store_n(&src->kind, MESH_KIND_ALIAS, __ATOMIC_RELEASE);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t moved = atomic_exchange(&src->bits[w], 0);
        mesh_assert((moved & atomic_load(&dst->bits[w])) == 0);
        atomic_fetch_or(&dst->bits[w], moved);
    }
    mesh_untrim(mesh_mh_id(src), 0);
    mesh_untrim(dst_id, ~written);
    mesh_miniheap_t *last = dst;
    while (last->mesh_next)
        last = mesh_rec(last->mesh_next);
    last->mesh_next = mesh_mh_id(src);
    M.chain_len[dst_id] = (uint8_t)len;
}

/* The counters of k pairs meshed, of np pages a span, giving back gain
 * pages: the srcs' pages queued to be punched, their mappings counted, the
 * class and the statistics. */
static void account(mesh_class_heap_t *ch, mesh_miniheap_t *const *src, uint32_t k, int cost, uint64_t gain)
{
    const uint32_t np = mesh_classes[src[0]->cls].npages;
    for (uint32_t i = 0; i < k; i++)
        punch_later(src[i]->span_page, np);
    mesh_maps_add(cost);
    MESH_STAT_ADD(mesh_pauses, 1);
    ch->nspans -= k;
    ch->meshes += k;
    MESH_STAT_ADD(mesh_count, k);
    MESH_STAT_ADD(meshed_pages_total, gain);
    uint64_t meshed = MESH_STAT_ADD(meshed_pages, k * np) + k * np;
    mesh_stat_max(&mesh_stats.meshed_pages_hwm, meshed);
}

/* Stale spans (arena_maps.c) keep the mappings their chains had: at the
 * budget, meshing gives some of them their own mappings back (which the
 * kernel merges with their neighbours') before it stops. */
static bool reclaim_stale_for_maps(void)
{
    mesh_arena_lock();
    uint32_t n = mesh_arena_reclaim_stale_locked(MESH_STALE_BATCH);
    pthread_mutex_unlock(&mesh_arena.lock);
    return n > 0;
}

/* Whether the k pairs fit the mapping budget (*cost: the mappings the
 * kernel keeps more once the srcs map the dsts' pages; protecting a range
 * splits up to two more for a moment) and each gives back a page
 * (released[i], mesh_gain; written[i]: dst's trimmed pages src's objects
 * land on).  A pair that gives back nothing would bring back as many of
 * dst's trimmed pages as it gives back of src's. */
static enum mesh_outcome admit(mesh_miniheap_t *const *dst, mesh_miniheap_t *const *src, uint32_t k,
                               const mesh_moves_t *mv, int *cost, uint32_t *released, uint32_t *written)
{
    *cost = k == 1 ? mesh_cost(dst[0], src[0]) : mesh_arena_remap_cost(mv->vpage[0], mv->npages[0], mv->from[0], mv->to[0]);
    uint64_t need = (uint64_t)(*cost > 0 ? *cost : 0) + 2;
    if (mesh_maps_in_use() + need > mesh_map_budget() &&
        (!reclaim_stale_for_maps() || mesh_maps_in_use() + need > mesh_map_budget()))
        return NO_MAPS;
    for (uint32_t i = 0; i < k; i++) {
        if (!chain_len_cover(mesh_mh_id(dst[i])))
            return FAILED;
        mesh_assert(k == 1 || (!src[i]->mesh_next && src[i]->span_page == mv->vpage[0] + i * src[i]->npages &&
                               dst[i]->span_page == mv->to[0] + i * dst[i]->npages));
        released[i] = mesh_gain(dst[i], src[i], &written[i]);
        if (!released[i]) {
            MESH_STAT_ADD(mesh_no_gain, 1);
            return NO_GAIN;
        }
    }
    return MESHED;
}

/* Meshes src[i] onto dst[i] for the k pairs (class lock held; every span
 * detached and taken off its lists): one pair, or a run (k > 1, at most
 * MESH_MAX_RUN) whose srcs have no aliases and follow each other in
 * address order, as their dsts do.  A run is one write-protect pause, one
 * mprotect and one mmap, whatever its length.  Returns the pause in
 * *pause_ns and each pair's pages given back in released[].  Meshes that
 * would pass the mapping budget are not made (NO_MAPS), nor a run with a
 * pair that gives back no page (NO_GAIN). */
enum mesh_outcome mesh_pairs_locked(mesh_class_heap_t *ch, mesh_miniheap_t *const *dst, mesh_miniheap_t *const *src,
                                    uint32_t k, uint64_t *pause_ns, uint32_t *released)
{
    mesh_moves_t mv;
    moves_of(dst, src, k, &mv);
    int cost;
    uint32_t written[MESH_MAX_RUN];
    enum mesh_outcome o = admit(dst, src, k, &mv, &cost, released, written);
    if (o != MESHED)
        return o;

    /* The arena lock is taken before any page is protected and held until
     * the remapping is done: a thread the barrier holds may hold the arena
     * lock itself (a signal handler that writes into the heap, run inside
     * a large allocation), and the mesh must not wait for it. */
    uint64_t t0 = mesh_os_now_ns();
    mesh_arena_lock();
    o = protect_locked(&mv);
    if (o == MESHED) {
        for (uint32_t i = 0; i < k; i++)
            copy_objects(dst[i], src[i]);
        if (!remap_locked(&mv))
            o = FAILED;
    }
    if (o != MESHED) {
        pthread_mutex_unlock(&mesh_arena.lock);
        return o;
    }
    uint64_t gain = 0;
    for (uint32_t i = 0; i < k; i++) {
        join_chain(dst[i], src[i], written[i]);
        gain += released[i];
    }
    mesh_barrier_end();
    pthread_mutex_unlock(&mesh_arena.lock);
    *pause_ns = mesh_os_now_ns() - t0;

    account(ch, src, k, cost, gain);
    mesh_stat_max(&mesh_stats.mesh_pause_max_ns, *pause_ns);
    return MESHED;
}
