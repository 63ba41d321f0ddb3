/*
 * Trimming gives back the pages of partial spans that no live object touches: in a
 * sparse span of a class whose span has several pages (a 4 KiB object has
 * a page to itself; two 2 KiB objects share one), freed objects can leave
 * whole pages unused, which meshing would only recover by merging the span
 * with another.  A detached span's pages are punched at most once between
 * attachments (mesh_arena.trimmed); attaching or meshing into a span
 * forgets that, since its free slots are about to be written.  A page
 * punched in the head of a chain is gone from every virtual span of it,
 * which is right: the merged bitmap says no object of any of them is there.
 * It is not meshing: the no-meshing control does it too.
 */
#define _GNU_SOURCE
#include "internal.h"

/* Bit p set: no live object of mh touches its page p (detached span, class
 * lock held).  Pages past the last slot hold only the span's tail. */
uint32_t mesh_trim_free_pages(const mesh_miniheap_t *mh)
{
    const mesh_size_class_t *sc = &mesh_classes[mh->cls];
    uint64_t bits[MESH_BITMAP_WORDS];
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        bits[w] = atomic_load_explicit(&mh->bits[w], memory_order_relaxed);
    uint32_t pages = 0;
    for (unsigned p = 0; p < sc->npages; p++) {
        uint32_t first = (uint32_t)(p * MESH_PAGE_SIZE / sc->object_size);
        uint32_t last = (uint32_t)(((p + 1) * MESH_PAGE_SIZE - 1) / sc->object_size);
        if (last >= sc->nobjects)
            last = sc->nobjects - 1;
        bool used = false;
        for (uint32_t s = first; s <= last && !used; s++)
            used = (bits[s >> 6] >> (s & 63)) & 1;
        if (!used)
            pages |= 1U << p;
    }
    return pages;
}

/* Forgets that span id's trimmed pages are given back, except those in
 * keep: they are about to be written (or the span is going away). */
void mesh_untrim(uint32_t id, uint32_t keep)
{
    uint32_t t = mesh_arena.trimmed[id];
    if (t & ~keep) {
        mesh_arena.trimmed[id] = t & keep;
        atomic_fetch_sub_explicit(&mesh_stats.trimmed_now, mesh_popcount64(t & ~keep),
                                  memory_order_relaxed);
    }
}

/* One sweep over the partial spans of multi-page classes; returns the
 * pages given back; stops at deadline_ns (0: none). */
uint64_t mesh_trim(uint64_t deadline_ns)
{
    uint64_t pages = 0, seen = 0;
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        const mesh_size_class_t *sc = &mesh_classes[c];
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        if (sc->npages < 2 || sc->npages > 32 || !__atomic_load_n(&ch->npartial, __ATOMIC_RELAXED))
            continue;
        pthread_mutex_lock(&ch->lock);
        for (unsigned b = 0; b < MESH_PARTIAL_BINS; b++) {
            for (uint32_t id = ch->partial[b]; id; id = mesh_rec(id)->next) {
                mesh_miniheap_t *mh = mesh_rec(id);
                uint32_t due = mesh_trim_free_pages(mh) & ~mesh_arena.trimmed[id];
                while (due) {
                    unsigned p = (unsigned)__builtin_ctz(due), n = 0;
                    while (p + n < 32 && (due >> (p + n)) & 1)
                        n++;
                    mesh_arena_punch_pages(mh->span_page + p, n);
                    mesh_arena.trimmed[id] |= ((n == 32 ? 0 : 1U << n) - 1) << p;
                    MESH_STAT_ADD(trimmed_now, n);
                    due &= ~mesh_arena.trimmed[id];
                    pages += n;
                }
                if (deadline_ns && (++seen & 63) == 0 && mesh_os_now_ns() > deadline_ns) {
                    pthread_mutex_unlock(&ch->lock);
                    goto out;
                }
            }
        }
        pthread_mutex_unlock(&ch->lock);
    }
out:
    MESH_STAT_ADD(trimmed_pages, pages);
    return pages;
}
