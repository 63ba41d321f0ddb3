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
 * A chain lives until its last object is freed: then every alias gets its
 * identity mapping back and returns to the arena (arena.c).  Every mesh is
 * bounded in mappings (a remapped span costs the kernel up to two;
 * vm.max_map_count is a hard limit): at the budget, meshing stops and
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

unsigned mesh_chain_length(const mesh_miniheap_t *head)
{
    unsigned n = 1;
    for (uint32_t id = head->mesh_next; id; id = mesh_arena.records[id].mesh_next)
        n++;
    return n;
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
    for (uint32_t i = 0; i < M.punch_n;) {
        uint32_t start = M.punch_page[i], end = start + M.punch_page[i + 1];
        for (i += 2; i < M.punch_n && M.punch_page[i] == end; i += 2)
            end += M.punch_page[i + 1];
        mesh_arena_punch_pages(start, end - start);
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

/* The virtual spans of a mesh's src: src and the aliases meshed onto it,
 * as address ranges (what the barrier announces and protects). */
typedef struct src_spans {
    uint32_t n, npages;
    uint32_t id[MESH_MAX_CHAIN];
    uintptr_t range[MESH_MAX_CHAIN][2];
} src_spans_t;

static void src_spans_of(const mesh_miniheap_t *src, src_spans_t *sp)
{
    sp->n = 0;
    sp->npages = mesh_classes[src->cls].npages;
    for (uint32_t id = mesh_mh_id(src); id && sp->n < MESH_MAX_CHAIN; id = mesh_rec(id)->mesh_next) {
        sp->id[sp->n] = id;
        sp->range[sp->n][0] = (uintptr_t)mesh_mh_start(mesh_rec(id));
        sp->range[sp->n][1] = sp->range[sp->n][0] + ((uintptr_t)sp->npages << MESH_PAGE_SHIFT);
        sp->n++;
    }
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

/* Announces the mesh and makes src's spans read-only (arena lock held):
 * PINNED if a system call is writing into one of them (pin.c: the call
 * would fail), FAILED if a protection failed; either way nothing stays
 * protected and the barrier is down. */
static enum mesh_outcome protect_locked(const src_spans_t *sp)
{
    uint32_t k;
    mesh_barrier_begin(sp->range, sp->n);
    for (k = 0; k < sp->n; k++)
        if (mesh_pins_overlap(sp->range[k][0], sp->range[k][1])) {
            mesh_barrier_end();
            MESH_STAT_ADD(mesh_pinned, 1);
            return PINNED;
        }
    for (k = 0; k < sp->n; k++)
        if (mesh_arena_protect(mesh_rec(sp->id[k])->span_page, sp->npages, false) != 0)
            break;
    if (k == sp->n)
        return MESHED;
    while (k-- > 0)
        mesh_arena_protect(mesh_rec(sp->id[k])->span_page, sp->npages, true);
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
        }
    }
}

/* Maps src's spans onto dst's pages, read-write (arena lock held).  On
 * failure puts back what moved (src's pages are intact until punched),
 * unprotects the rest and ends the barrier. */
static bool remap_locked(const src_spans_t *sp, const mesh_miniheap_t *dst, const mesh_miniheap_t *src)
{
    uint32_t k;
    for (k = 0; k < sp->n; k++)
        if (mesh_arena_map_at_locked(mesh_rec(sp->id[k])->span_page, sp->npages, dst->span_page) != 0)
            break;
    if (k == sp->n)
        return true;
    for (uint32_t j = 0; j < k; j++)
        mesh_arena_map_at_locked(mesh_rec(sp->id[j])->span_page, sp->npages, src->span_page);
    for (uint32_t j = k; j < sp->n; j++)
        mesh_arena_protect(mesh_rec(sp->id[j])->span_page, sp->npages, true);
    mesh_barrier_end();
    return false;
}

/* src and its aliases join dst's chain, and src's bits move into dst's.
 * The kind changes before the bits move, so that a free that finds src's
 * bit gone knows to look again. */
static void join_chain(const src_spans_t *sp, mesh_miniheap_t *dst, mesh_miniheap_t *src, uint32_t written)
{
    uint32_t dst_id = mesh_mh_id(dst);
    for (uint32_t k = 1; k < sp->n; k++)
        __atomic_store_n(&mesh_rec(sp->id[k])->head, dst_id, __ATOMIC_RELEASE);
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
}

/* Meshes src onto dst (class lock held; both detached and taken off their
 * lists).  Returns the write-protect pause in *pause_ns and the physical
 * pages the mesh gives back in *released (mesh_gain).  A mesh whose mapping
 * cost would pass the budget is not made (NO_MAPS), nor one that would
 * give back no page (NO_GAIN: it would bring back as many of dst's trimmed
 * pages as it gives back of src's). */
enum mesh_outcome mesh_pair_locked(mesh_class_heap_t *ch, mesh_miniheap_t *dst, mesh_miniheap_t *src,
                                   uint64_t *pause_ns, uint32_t *released)
{
    /* The mappings the kernel will keep more once src's spans map dst's
     * pages; protecting a span splits up to two more for a moment. */
    int cost = mesh_cost(dst, src);
    if (mesh_maps_in_use() + (uint64_t)(cost > 0 ? cost : 0) + 2 > mesh_map_budget())
        return NO_MAPS;
    uint32_t written, gain = mesh_gain(dst, src, &written);
    if (!gain) {
        MESH_STAT_ADD(mesh_no_gain, 1);
        return NO_GAIN;
    }
    src_spans_t sp;
    src_spans_of(src, &sp);

    /* The arena lock is taken before any page is protected and held until
     * the remapping is done: a thread the barrier holds may hold the arena
     * lock itself (a signal handler that writes into the heap, run inside
     * a large allocation), and the mesh must not wait for it. */
    uint64_t t0 = mesh_os_now_ns();
    pthread_mutex_lock(&mesh_arena.lock);
    enum mesh_outcome o = protect_locked(&sp);
    if (o == MESHED) {
        copy_objects(dst, src);
        if (!remap_locked(&sp, dst, src))
            o = FAILED;
    }
    if (o != MESHED) {
        pthread_mutex_unlock(&mesh_arena.lock);
        return o;
    }
    join_chain(&sp, dst, src, written);
    mesh_barrier_end();
    pthread_mutex_unlock(&mesh_arena.lock);
    *pause_ns = mesh_os_now_ns() - t0;

    punch_later(src->span_page, sp.npages);
    mesh_maps_add(cost);
    ch->nspans--;
    ch->meshes++;
    MESH_STAT_ADD(mesh_count, 1);
    *released = gain;
    MESH_STAT_ADD(meshed_pages_total, gain);
    uint64_t meshed = MESH_STAT_ADD(meshed_pages, sp.npages) + sp.npages;
    mesh_stat_max(&mesh_stats.meshed_pages_hwm, meshed);
    mesh_stat_max(&mesh_stats.mesh_pause_max_ns, *pause_ns);
    return MESHED;
}
