/*
 * Frees of small objects that the thread heap's fast path did not take:
 * into a span this thread has attached (through an alias, or with its
 * vector full), and remote frees into spans of other threads or detached
 * spans.  A remote free clears its bit with an atomic AND and takes the
 * class lock only when the span may have to change lists (see the race
 * with detach in global_heap.c); a free that meets a mesh in progress
 * follows the span to its new head.
 */
#define _GNU_SOURCE
#include "internal.h"

/* The span (a SMALL record, the head of its chain) that holds p, whose
 * lookup found mh (SMALL, or ALIAS for a virtual span meshed onto another),
 * and p's slot in it; NULL when p is not the start of a slot. */
mesh_miniheap_t *mesh_global_span_of(mesh_miniheap_t *mh, const void *p, uint32_t *slot)
{
    uint8_t kind = __atomic_load_n(&mh->kind, __ATOMIC_ACQUIRE);
    if (kind != MESH_KIND_SMALL && kind != MESH_KIND_ALIAS)
        return NULL;
    const mesh_size_class_t *sc = &mesh_classes[mh->cls];
    uintptr_t off = (uintptr_t)p - (uintptr_t)mesh_mh_start(mh);
    if (off >= (uintptr_t)sc->npages * MESH_PAGE_SIZE)
        return NULL;
    uint32_t s = mesh_slot_of((uint32_t)off, sc->recip);
    if (s * sc->object_size != off || s >= sc->nobjects)
        return NULL;
    *slot = s;
    /* Every virtual span of a chain has the same layout: the slot is the
     * same in the head.  A head meshed meanwhile is an alias in turn. */
    for (int hops = 0; kind == MESH_KIND_ALIAS && hops < MESH_MAX_CHAIN; hops++) {
        mh = mesh_alias_head(mh);
        kind = __atomic_load_n(&mh->kind, __ATOMIC_ACQUIRE);
    }
    return kind == MESH_KIND_SMALL ? mh : NULL;
}

/* A free into a span attached to this thread (so not being meshed): back
 * to the vector, or to the bitmap when the vector is full.  cached: p comes
 * from this thread's free cache, free already, its bit still set. */
static void free_attached_here(mesh_thread_heap_t *th, mesh_miniheap_t *head, uint32_t slot, uint64_t *key,
                               const void *p, bool cached)
{
    mesh_shuffle_vector_t *sv = &th->sv[head->cls];
    unsigned w = slot >> 6;
    uint64_t mask = 1ULL << (slot & 63);
    if (!cached && ((*key == mesh_key_of(key) && (mesh_sv_find(sv, key) || mesh_cache_find(sv, p))) ||
                    !(atomic_load(&head->bits[w]) & mask)))
        mesh_report_double_free(p);
    mesh_assert(atomic_load(&head->bits[w]) & mask);
    if (sv->top < MESH_SV_CAP) {
        *key = mesh_key_of(key);
        mesh_sv_push_entry(sv, (char *)key, &th->rng, mesh_opt.randomize >= MESH_RANDOMIZE_FREE);
    } else if (!(atomic_fetch_and(&head->bits[w], ~mask) & mask)) {
        mesh_report_double_free(p);
    }
}

/* After a remote free cleared the bits in mask of word w (old: the word
 * before) of a detached span: tells meshing the class has changed, and
 * moves the span to the list it now belongs on if it was full or is now
 * empty.  gen: the span's generation before the free, to recheck under the
 * lock (it may have been attached, refiled, meshed or freed since). */
static void after_detached_free(mesh_miniheap_t *head, uint32_t gen, unsigned w, uint64_t old, uint64_t mask)
{
    unsigned cls = head->cls;
    const mesh_size_class_t *sc = &mesh_classes[cls];
    /* A plain load and store: a lost count does no harm, and a locked add
     * would cost every thread that frees here. */
    _Atomic uint32_t *nfree = &mesh_class_heaps[cls].detached_frees;
    atomic_store_explicit(nfree, atomic_load_explicit(nfree, memory_order_relaxed) + mesh_popcount64(mask),
                          memory_order_relaxed);

    bool was_full = old == sc->valid[w];
    bool now_empty = (old & ~mask) == 0;
    for (unsigned v = 0; v < MESH_BITMAP_WORDS && now_empty; v++)
        if (v != w && atomic_load(&head->bits[v]))
            now_empty = false;
    if (!was_full && !now_empty)
        return;

    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    mesh_class_lock(ch);
    if (atomic_load(&head->gen) == gen && head->kind == MESH_KIND_SMALL && atomic_load(&head->owner) == 0 &&
        (head->state == MESH_MH_FULL || mesh_state_is_partial(head->state))) {
        unsigned live = mesh_mh_live(head);
        if (live == 0 || (head->state == MESH_MH_FULL && live < sc->nobjects)) {
            mesh_global_list_remove_locked(ch, head);
            mesh_global_place_locked(ch, head); /* releases it when empty */
        }
    }
    pthread_mutex_unlock(&ch->lock);
}

/* Frees p, whose lookup found mh: into the vector or the bitmap of a span
 * this thread has attached, else a remote free.  cached: p comes from this
 * thread's free cache (its key is there and its bit set by design). */
static void free_small(mesh_miniheap_t *mh, void *p, bool cached)
{
    bool waited = false;
    for (int tries = 0;; tries++) {
        uint32_t slot;
        mesh_miniheap_t *head = mesh_global_span_of(mh, p, &slot);
        if (!head) {
            if (mh->kind == MESH_KIND_FREE)
                mesh_report_double_free(p);
            mesh_report_invalid_free(p);
        }
        unsigned cls = head->cls;
        unsigned w = slot >> 6;
        uint64_t mask = 1ULL << (slot & 63);
        mesh_thread_heap_t *th = mesh_tls_heap;
        uint32_t owner = atomic_load(&head->owner);

        /* Keys are kept at the head's address of the slot, whichever
         * virtual span the free came through.  Invariant: a slot holds its
         * key while it sits free in a vector (pushed there by a free or
         * claimed by a refill), and not once it is handed out. */
        uint64_t *key = (uint64_t *)(mesh_mh_start(head) + (size_t)slot * mesh_classes[cls].object_size);
        if (th && owner == th->id) {
            free_attached_here(th, head, slot, key, p, cached);
            return;
        }

        uint32_t gen = atomic_load_explicit(&head->gen, memory_order_acquire);
        /* A key with the bit set means the slot is free already, in a
         * vector or a free cache, where clearing the bit would hand it out
         * twice.  Only those of attached spans hold keys unless free caches
         * are on; without them a detached span's bitmap alone tells, and
         * the object, often cold in a remote free, is not touched. */
        if (!cached && (owner || mesh_cache_on()) && *key == mesh_key_of(key))
            mesh_report_double_free(p);
        uint64_t old = atomic_fetch_and(&head->bits[w], ~mask);
        if (!(old & mask)) {
            /* Meshed into another span meanwhile: its bits moved there. */
            if (__atomic_load_n(&head->kind, __ATOMIC_ACQUIRE) == MESH_KIND_ALIAS && tries < 2 * MESH_MAX_CHAIN) {
                mh = mesh_arena_lookup(p);
                continue;
            }
            /* A mesh marks src an alias, then moves the bits word by word
             * under the class lock, clearing src's before setting dst's: a
             * free that followed src to dst in between (here, or already
             * in the lookup of the head) finds the bit in neither.  Once
             * the lock is free, the mesh is done: one more look. */
            if ((tries > 0 || __atomic_load_n(&mh->kind, __ATOMIC_ACQUIRE) == MESH_KIND_ALIAS) && !waited) {
                mesh_class_lock(&mesh_class_heaps[cls]);
                pthread_mutex_unlock(&mesh_class_heaps[cls].lock);
                waited = true;
                mh = mesh_arena_lookup(p);
                continue;
            }
            mesh_report_double_free(p);
        }
        if (!atomic_load(&head->owner)) /* else the owner harvests the slot at its next refill */
            after_detached_free(head, gen, w, old, mask);
        return;
    }
}

/* Every free of a small object that the fast path did not take: into a span
 * this thread has attached but through an alias or with a full vector, into
 * a span this thread does not own while its free cache is full (the older
 * half goes back first), or anything the fast path's checks turned away. */
void mesh_global_free_small(mesh_miniheap_t *mh, void *p)
{
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (th && mesh_cache_on() && __atomic_load_n(&mh->kind, __ATOMIC_ACQUIRE) == MESH_KIND_SMALL &&
        atomic_load_explicit(&mh->owner, memory_order_relaxed) != th->id) {
        mesh_shuffle_vector_t *sv = &th->sv[mh->cls];
        if (sv->ncached >= sv->cache_cap) {
            mesh_cache_flush(th, mh->cls, sv->cache_cap / 2);
            if (mesh_cache_push(sv, mh, p))
                return;
        }
    }
    free_small(mh, p, false);
}

/* How many of the n cached objects from cached[0] lie in word w of the
 * SMALL span mh, one after another, and their bits (*mask): a flush gives
 * such a run back with one locked AND.  0 when cached[0] is not in mh.
 * Every page of a small span maps to its record, so an object inside mh's
 * range is one of mh's. */
static unsigned cached_run(const mesh_shuffle_vector_t *sv, void *const *cached, unsigned n,
                           const mesh_miniheap_t *mh, unsigned *w, uint64_t *mask)
{
    const char *start = mesh_mh_start(mh);
    uint32_t s;
    if (!mesh_sv_slot_in(sv, start, cached[0], &s))
        return 0;
    *w = s >> 6;
    *mask = 1ULL << (s & 63);
    unsigned k = 1;
    for (; k < n; k++) {
        if (!mesh_sv_slot_in(sv, start, cached[k], &s) || s >> 6 != *w || (*mask & (1ULL << (s & 63))))
            break;
        *mask |= 1ULL << (s & 63);
    }
    return k;
}

/* Gives a run of cached objects back to word w of the span head, which
 * this thread does not own: one locked AND for all of them.  Returns the
 * bits that were clear already (a mesh has moved them, or a double free),
 * whose objects the caller frees one at a time, as free_small sorts out. */
static uint64_t flush_run(mesh_miniheap_t *head, unsigned w, uint64_t mask)
{
    uint32_t gen = atomic_load_explicit(&head->gen, memory_order_acquire);
    uint64_t old = atomic_fetch_and(&head->bits[w], ~mask);
    if ((old & mask) && !atomic_load(&head->owner))
        after_detached_free(head, gen, w, old, old & mask);
    return mask & ~old;
}

/* Gives the free cache of cls back to the spans but for its newest keep
 * objects.  Objects freed one after another often share a span and a
 * bitmap word; each such run goes back with one locked AND (alloc_bench
 * xthread: docs/results.md, seventh session). */
void mesh_cache_flush(mesh_thread_heap_t *th, unsigned cls, unsigned keep)
{
    mesh_shuffle_vector_t *sv = &th->sv[cls];
    unsigned n = sv->ncached;
    if (keep >= n)
        return;
    unsigned give = n - keep;
    /* Each object goes back with a locked AND on its span's record line,
     * and no later load starts before a locked operation is done: misses
     * on those lines would be taken one after another.  Asked for first,
     * they overlap (replace-small-xt and alloc_bench xthread: 4-5%). */
    for (unsigned k = 0; k < give; k++) {
        mesh_miniheap_t *mh = mesh_arena_lookup(sv->cached[k]);
        if (mh)
            __builtin_prefetch(mh, 1);
    }
    for (unsigned k = 0; k < give;) {
        void *p = sv->cached[k];
        mesh_miniheap_t *mh = mesh_arena_lookup(p);
        unsigned w, run = 0;
        uint64_t mask;
        if (mh && __atomic_load_n(&mh->kind, __ATOMIC_ACQUIRE) == MESH_KIND_SMALL &&
            atomic_load_explicit(&mh->owner, memory_order_relaxed) != th->id)
            run = cached_run(sv, &sv->cached[k], give - k, mh, &w, &mask);
        if (run < 2) {
            free_small(mh, p, true);
            k++;
            continue;
        }
        /* The start before the AND: a span it empties may be released. */
        const char *start = mesh_mh_start(mh);
        uint64_t missed = flush_run(mh, w, mask);
        for (unsigned j = k; missed && j < k + run; j++) {
            uint32_t s;
            if (mesh_sv_slot_in(sv, start, sv->cached[j], &s) && (missed & (1ULL << (s & 63))))
                free_small(mesh_arena_lookup(sv->cached[j]), sv->cached[j], true);
        }
        k += run;
    }
    for (unsigned k = 0; k < keep; k++)
        sv->cached[k] = sv->cached[give + k];
    sv->ncached = (uint16_t)keep;
}
