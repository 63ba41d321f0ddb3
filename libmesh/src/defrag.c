/*
 * Defragmentation by moving: the half of compaction meshing cannot do.
 * Meshing merges two spans whose objects sit at different offsets, which
 * works when spans hold few objects; a span of 128 or 256 small objects
 * (keys, headers, list nodes) left half full almost never finds a partner.
 * A program that can move its own objects (update every pointer to them)
 * asks, object by object, whether moving it would help (mesh_defrag_hint),
 * and if so allocates the copy with mesh_defrag_malloc, which fills the
 * fullest partial span of the class, copies and frees the old object: the
 * sparse spans drain, are given back, and the dense ones fill up.
 *
 * Which spans to drain: a class's live objects fit in K = ceil(live /
 * objects per span) spans; the K fullest spans are kept and filled, the
 * others drained.  So the hint compares a span's live objects with a
 * threshold per class, the live count of its K-th fullest span.  Unlike a
 * mean over partial spans, the threshold holds still while objects move
 * (kept spans only gain, drained ones only lose), so one scan of the
 * program's objects drains a span completely instead of leaving the
 * objects it saw before the span fell below a moving mean.  Thresholds are
 * recomputed from the span records (read without locks: a hint needs no
 * exact figure) at most once per MESH_DEFRAG_REFRESH_NS, since a walk of
 * every record costs up to a millisecond; the clock is read once every
 * MESH_DEFRAG_CLOCK_CALLS hints, so a hint costs a lookup, a popcount of
 * four words and a compare.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "../include/mesh.h"
#include "internal.h"

#define MESH_DEFRAG_REFRESH_NS (100 * 1000000ULL)
#define MESH_DEFRAG_CLOCK_CALLS 1024
#define MESH_DEFRAG_PICK 64          /* spans of a bin looked at for a fill target */

/* Per class: spans with fewer live objects than this are drained (0: the
 * class is packed as tightly as it can be, nothing to move). */
static _Atomic uint32_t drain_below[MESH_NUM_CLASSES];
static uint32_t histogram[MESH_NUM_CLASSES][MESH_MAX_OBJECTS + 1]; /* under refresh_lock */
static _Atomic uint64_t refreshed_ns;
static _Atomic uint32_t calls;
static pthread_mutex_t refresh_lock = PTHREAD_MUTEX_INITIALIZER;

static mesh_miniheap_t *rec(uint32_t id)
{
    return &mesh_arena.records[id];
}

/* One walk over every span record: how many spans of each class hold how
 * many live objects; then each class's threshold.  Records are never
 * unmapped, so the racy reads are safe; a span changing meanwhile only
 * blurs the counts a little. */
static void refresh_thresholds(void)
{
    uint64_t live[MESH_NUM_CLASSES] = {0}, spans[MESH_NUM_CLASSES] = {0};
    memset(histogram, 0, sizeof histogram);
    mesh_arena_lock();
    uint32_t n = mesh_arena.nrecords;
    pthread_mutex_unlock(&mesh_arena.lock);
    for (uint32_t id = 1; id < n; id++) {
        mesh_miniheap_t *mh = rec(id);
        unsigned c = mh->cls;
        if (__atomic_load_n(&mh->kind, __ATOMIC_RELAXED) != MESH_KIND_SMALL || c >= MESH_NUM_CLASSES)
            continue;
        unsigned l = mesh_mh_live(mh);
        histogram[c][l > MESH_MAX_OBJECTS ? MESH_MAX_OBJECTS : l]++;
        live[c] += l;
        spans[c]++;
    }
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        uint32_t per_span = mesh_classes[c].nobjects, t = 0;
        uint64_t keep = (live[c] + per_span - 1) / per_span, seen = 0;
        if (spans[c] > keep + 1) { /* more than one span's worth to gain */
            for (t = per_span; t > 0 && seen + histogram[c][t] < keep; t--)
                seen += histogram[c][t];
        }
        atomic_store_explicit(&drain_below[c], t, memory_order_relaxed);
    }
}

static void maybe_refresh(void)
{
    uint32_t k = atomic_load_explicit(&calls, memory_order_relaxed) + 1;
    atomic_store_explicit(&calls, k, memory_order_relaxed); /* a lost count is harmless */
    uint64_t last = atomic_load_explicit(&refreshed_ns, memory_order_relaxed);
    if (last && k % MESH_DEFRAG_CLOCK_CALLS != 0)
        return;
    uint64_t now = mesh_os_now_ns();
    if (last && now - last < MESH_DEFRAG_REFRESH_NS)
        return;
    if (pthread_mutex_trylock(&refresh_lock) != 0)
        return; /* another thread is at it; its means will do */
    refresh_thresholds();
    atomic_store_explicit(&refreshed_ns, mesh_os_now_ns(), memory_order_relaxed);
    pthread_mutex_unlock(&refresh_lock);
}

MESH_EXPORT int mesh_defrag_hint(const void *p)
{
    if (atomic_load_explicit(&mesh_init_state, memory_order_acquire) != 2)
        return 0;
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    if (!mh)
        return 0;
    uint32_t slot;
    mesh_miniheap_t *head = mesh_global_span_of(mh, p, &slot);
    if (!head || atomic_load_explicit(&head->owner, memory_order_relaxed) != 0 ||
        !mesh_state_is_partial(__atomic_load_n(&head->state, __ATOMIC_RELAXED)))
        return 0;
    if (!(atomic_load_explicit(&head->bits[slot >> 6], memory_order_relaxed) >> (slot & 63) & 1))
        return 0; /* not a live object */
    maybe_refresh();
    return mesh_mh_live(head) < atomic_load_explicit(&drain_below[head->cls], memory_order_relaxed);
}

/* Where a moved object goes: the head of the fullest non-empty partial bin
 * if it is kept (at or above the class's threshold): that is the span the
 * last move filled, refiled at its bin's head, so moves fill one span after
 * another at the cost of one popcount; else the fullest kept span among the
 * first of the bin, or the fullest span seen if none is kept (class lock
 * held; NULL when the class has no partial span).  Filling a span that is being drained would raise
 * the threshold and strand the objects of spans a scan has already passed.
 * Bins are by occupancy when a span was last filed (remote frees do not
 * refile), so a drained span can sit in a high bin: it is skipped. */
static mesh_miniheap_t *fill_target_locked(mesh_class_heap_t *ch, unsigned cls)
{
    uint32_t keep_from = atomic_load_explicit(&drain_below[cls], memory_order_relaxed);
    mesh_miniheap_t *any = NULL;
    unsigned any_live = 0;
    for (int b = MESH_PARTIAL_BINS - 1; b >= 0; b--) {
        mesh_miniheap_t *best = NULL;
        unsigned best_live = 0, k = 0;
        for (uint32_t id = ch->partial[b]; id && k < MESH_DEFRAG_PICK; id = rec(id)->next, k++) {
            unsigned live = mesh_mh_live(rec(id));
            if (k == 0 && live >= keep_from)
                return rec(id);
            if (!any || live > any_live) {
                any = rec(id);
                any_live = live;
            }
            if (live >= keep_from && (!best || live > best_live)) {
                best = rec(id);
                best_live = live;
            }
        }
        if (best)
            return best;
    }
    return any;
}

/* Takes the lowest free slot of a detached partial span and refiles it. */
static void *take_slot_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    const mesh_size_class_t *sc = &mesh_classes[mh->cls];
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t avail = ~atomic_load(&mh->bits[w]) & sc->valid[w];
        if (!avail)
            continue;
        unsigned s = w * 64 + (unsigned)__builtin_ctzll(avail);
        atomic_fetch_or(&mh->bits[w], 1ULL << (s & 63));
        size_t off = (size_t)s * sc->object_size;
        /* The pages the object lies on will be written: trim must count
         * them as backed again. */
        uint32_t first = (uint32_t)(off >> MESH_PAGE_SHIFT);
        uint32_t last = (uint32_t)((off + sc->object_size - 1) >> MESH_PAGE_SHIFT);
        uint32_t pages = (uint32_t)((last - first == 31 ? ~0U : (2U << (last - first)) - 1) << first);
        mesh_untrim(mesh_mh_id(mh), ~pages);
        char *p = mesh_mh_start(mh) + off;
        *(uint64_t *)p = 0; /* no free key on a live object */
        mesh_global_list_remove_locked(ch, mh);
        mesh_global_place_locked(ch, mh);
        return p;
    }
    return NULL;
}

MESH_EXPORT void *mesh_defrag_malloc(size_t size)
{
    if (atomic_load_explicit(&mesh_init_state, memory_order_acquire) != 2 || size > MESH_MAX_SMALL)
        return malloc(size);
    unsigned cls = mesh_size_class(size);
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    pthread_mutex_lock(&ch->lock);
    mesh_miniheap_t *mh = fill_target_locked(ch, cls);
    void *p = mh ? take_slot_locked(ch, mh) : NULL;
    pthread_mutex_unlock(&ch->lock);
    if (!p)
        return malloc(size); /* nothing to fill: an ordinary allocation */
    MESH_STAT_ADD(defrag_allocs, 1);
    return p;
}
