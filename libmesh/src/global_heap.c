/*
 * The global heap: for each size class, a lock and the lists of detached
 * spans (partial by occupancy, full, empty), the refill of thread heaps,
 * remote frees, and large objects (a span each, straight from the arena).
 *
 * A span is either attached to one thread (state ATTACHED, owner set, on no
 * list) or detached and on exactly one list of its class.  Detached spans
 * are the ones meshing may take.  Lists, states and owners change only under
 * the class lock; bitmaps change under it too, except that remote frees
 * clear bits with an atomic AND and take the lock only when that may change
 * the span's list (a full word lost a bit, or the span may now be empty).
 *
 * The remote free and detach race is settled with sequentially consistent
 * operations: detach stores owner = 0 then reads the bitmap; a remote free
 * clears its bit then reads owner.  At least one of them sees the other,
 * so a span never stays on the wrong list.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "internal.h"

mesh_class_heap_t mesh_class_heaps[MESH_NUM_CLASSES];

static mesh_miniheap_t *rec(uint32_t id)
{
    return &mesh_arena.records[id];
}

/* Class locks are held for short stretches (a refill, a list move): an
 * adaptive mutex spins a little before it sleeps, which under contention
 * saves the futex round trips. */
void mesh_global_init(void)
{
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        pthread_mutex_init(&mesh_class_heaps[c].lock, &attr);
    pthread_mutexattr_destroy(&attr);
}

/* ---- lists (class lock held) ---- */

static bool is_partial(uint8_t state)
{
    return state >= MESH_MH_PARTIAL && state < MESH_MH_PARTIAL + MESH_PARTIAL_BINS;
}

static uint32_t *list_of(mesh_class_heap_t *ch, uint8_t state)
{
    if (is_partial(state))
        return &ch->partial[state - MESH_MH_PARTIAL];
    if (state == MESH_MH_FULL)
        return &ch->full;
    mesh_assert(state == MESH_MH_EMPTY);
    return &ch->empty;
}

static void list_push(mesh_class_heap_t *ch, mesh_miniheap_t *mh, uint8_t state)
{
    uint32_t *head = list_of(ch, state), id = mesh_mh_id(mh);
    mh->state = state;
    mh->prev = 0;
    mh->next = *head;
    if (*head)
        rec(*head)->prev = id;
    *head = id;
    if (state == MESH_MH_EMPTY)
        ch->nempty++;
    else if (is_partial(state))
        ch->npartial++;
}

static void list_remove(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    uint32_t *head = list_of(ch, mh->state);
    if (mh->prev)
        rec(mh->prev)->next = mh->next;
    else
        *head = mh->next;
    if (mh->next)
        rec(mh->next)->prev = mh->prev;
    if (mh->state == MESH_MH_EMPTY)
        ch->nempty--;
    else if (is_partial(mh->state))
        ch->npartial--;
    mh->next = mh->prev = 0;
    mh->state = MESH_MH_NONE;
}

static mesh_miniheap_t *list_pop(mesh_class_heap_t *ch, uint8_t state)
{
    uint32_t id = *list_of(ch, state);
    if (!id)
        return NULL;
    list_remove(ch, rec(id));
    return rec(id);
}

/* Gives an empty span back to the arena, keeping a couple per class so that
 * a class that empties and refills at a boundary does not churn spans.  A
 * span carrying meshed aliases always goes back: that restores them. */
static void release_empty_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    if (ch->nempty < MESH_EMPTY_KEEP && !mh->mesh_next) {
        list_push(ch, mh, MESH_MH_EMPTY);
        return;
    }
    ch->nspans--;
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_arena_free_span_locked(mh);
    pthread_mutex_unlock(&mesh_arena.lock);
}

/* Files a detached span (owner 0, on no list) by what its bitmap says. */
static void place_detached_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    unsigned live = mesh_mh_live(mh), n = mesh_classes[mh->cls].nobjects;
    if (live == 0)
        release_empty_locked(ch, mh);
    else if (live == n)
        list_push(ch, mh, MESH_MH_FULL);
    else
        list_push(ch, mh, (uint8_t)(MESH_MH_PARTIAL + live * MESH_PARTIAL_BINS / n));
}

void mesh_global_list_remove_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    list_remove(ch, mh);
}

void mesh_global_place_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    place_detached_locked(ch, mh);
}

bool mesh_global_is_partial(uint8_t state)
{
    return is_partial(state);
}

/* Fullest partial span first: allocation fills holes in busy spans and lets
 * the emptiest ones drain, to be freed or meshed. */
static mesh_miniheap_t *take_span_locked(mesh_class_heap_t *ch, unsigned cls)
{
    for (int b = MESH_PARTIAL_BINS - 1; b >= 0; b--) {
        mesh_miniheap_t *mh = list_pop(ch, (uint8_t)(MESH_MH_PARTIAL + b));
        if (mh) {
            mesh_untrim(mesh_mh_id(mh), 0); /* its free slots will be written */
            return mh;
        }
    }
    mesh_miniheap_t *mh = list_pop(ch, MESH_MH_EMPTY);
    if (mh) {
        mesh_untrim(mesh_mh_id(mh), 0);
        return mh;
    }
    bool clean;
    pthread_mutex_lock(&mesh_arena.lock);
    mh = mesh_arena_alloc_span_locked(mesh_classes[cls].npages, 1, MESH_KIND_SMALL, &clean);
    if (mh) {
        mesh_mh_init_small(mh, cls);
        mesh_arena_set_pages(mh, true);
    }
    pthread_mutex_unlock(&mesh_arena.lock);
    if (mh)
        ch->nspans++;
    return mh;
}

/* ---- thread heaps ---- */

/* Detaches every span attached to th's vector for cls: slots still in the
 * vector are given back to the bitmaps, and each span goes onto the list
 * its occupancy calls for. */
void mesh_global_detach_all_locked(mesh_thread_heap_t *th, unsigned cls)
{
    mesh_shuffle_vector_t *sv = &th->sv[cls];
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    uint64_t held[MESH_SV_MAX_ATTACH][MESH_BITMAP_WORDS];
    if (MESH_DEBUG_ON)
        mesh_sv_check(sv);
    memset(held, 0, sizeof(held[0]) * sv->nattached);
    for (unsigned k = 0; k < sv->top; k++) {
        unsigned i = sv->entries[k] >> 8, s = sv->entries[k] & 255;
        held[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < sv->nattached; i++) {
        mesh_miniheap_t *mh = rec(sv->mh_id[i]);
        mesh_assert(mh->state == MESH_MH_ATTACHED && atomic_load(&mh->owner) == th->id);
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
            if (held[i][w])
                atomic_fetch_and(&mh->bits[w], ~held[i][w]);
        atomic_store(&mh->owner, 0);
        mh->state = MESH_MH_NONE;
        place_detached_locked(ch, mh);
    }
    sv->nattached = 0;
    sv->top = 0;
}

/* Detaches the spans of a vector that may be torn (a thread that does not
 * exist in a fork child): a slot goes back to the bitmap only if its entry
 * is well formed and the object holds its free key. */
void mesh_global_detach_torn_locked(mesh_thread_heap_t *th, unsigned cls)
{
    mesh_shuffle_vector_t *sv = &th->sv[cls];
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    const mesh_size_class_t *sc = &mesh_classes[cls];
    unsigned n = sv->nattached < MESH_SV_MAX_ATTACH ? sv->nattached : MESH_SV_MAX_ATTACH;
    unsigned top = sv->top < MESH_SV_CAP ? sv->top : MESH_SV_CAP;
    uint64_t held[MESH_SV_MAX_ATTACH][MESH_BITMAP_WORDS];
    memset(held, 0, sizeof(held[0]) * n);
    for (unsigned k = 0; k < top; k++) {
        unsigned i = sv->entries[k] >> 8, s = sv->entries[k] & 255;
        if (i >= n || s >= sc->nobjects)
            continue;
        char *obj = mesh_mh_start(rec(sv->mh_id[i])) + (size_t)s * sc->object_size;
        if (*(uint64_t *)obj == mesh_key_of(obj))
            held[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < n; i++) {
        mesh_miniheap_t *mh = rec(sv->mh_id[i]);
        if (mh->kind != MESH_KIND_SMALL || mh->state != MESH_MH_ATTACHED || atomic_load(&mh->owner) != th->id)
            continue;
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
            if (held[i][w])
                atomic_fetch_and(&mh->bits[w], ~held[i][w]);
        atomic_store(&mh->owner, 0);
        mh->state = MESH_MH_NONE;
        place_detached_locked(ch, mh);
    }
    sv->nattached = 0;
    sv->top = 0;
}

/* Claims up to room clear slots of mh for its owner, returning them in
 * free_bits: other threads only ever clear bits, so the OR cannot take a
 * slot someone else holds. */
static unsigned claim_free_slots(mesh_miniheap_t *mh, unsigned room, uint64_t free_bits[MESH_BITMAP_WORDS])
{
    const uint64_t *valid = mesh_classes[mh->cls].valid;
    unsigned n = 0;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t f = ~atomic_load_explicit(&mh->bits[w], memory_order_relaxed) & valid[w];
        unsigned c = mesh_popcount64(f);
        while (c > room - n) { /* keep the lowest slots that fit */
            f &= ~(1ULL << (63 - __builtin_clzll(f)));
            c--;
        }
        free_bits[w] = f;
        n += c;
        if (f) {
            uint64_t old = atomic_fetch_or(&mh->bits[w], f);
            (void)old;
            mesh_assert((old & f) == 0);
        }
    }
    /* Each slot now in a vector carries its free key, so that a second free
     * of it, by any thread, is caught. */
    const mesh_size_class_t *sc = &mesh_classes[mh->cls];
    char *start = mesh_mh_start(mh);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        for (uint64_t b = free_bits[w]; b; b &= b - 1) {
            uint64_t *key = (uint64_t *)(start + (size_t)(w * 64 + (unsigned)__builtin_ctzll(b)) * sc->object_size);
            *key = mesh_key_of(key);
        }
    return n;
}

/* Takes back, without the lock, the slots freed into attached spans by
 * other threads (or by this one while its vector was full). */
static void harvest(mesh_shuffle_vector_t *sv)
{
    for (unsigned i = 0; i < sv->nattached && sv->top < MESH_SV_CAP; i++) {
        uint64_t free_bits[MESH_BITMAP_WORDS];
        claim_free_slots(rec(sv->mh_id[i]), MESH_SV_CAP - sv->top, free_bits);
        mesh_sv_push_slots(sv, i, free_bits);
    }
}

/* Detaches the attached spans that have no free slot in the vector (full
 * ones serve no allocation; frees into them are cheap on a detached span
 * too) and renumbers the rest.  Only when the vector is out of room for
 * more spans: otherwise this thread's frees into them stay fast. */
static void detach_full_locked(mesh_thread_heap_t *th, unsigned cls)
{
    mesh_shuffle_vector_t *sv = &th->sv[cls];
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    unsigned char renum[MESH_SV_MAX_ATTACH];
    bool used[MESH_SV_MAX_ATTACH] = {false};
    for (unsigned k = 0; k < sv->top; k++)
        used[sv->entries[k] >> 8] = true;
    unsigned keep = 0;
    for (unsigned i = 0; i < sv->nattached; i++) {
        mesh_miniheap_t *mh = rec(sv->mh_id[i]);
        if (!used[i]) {
            atomic_store(&mh->owner, 0);
            mh->state = MESH_MH_NONE;
            place_detached_locked(ch, mh);
            continue;
        }
        sv->base[keep] = sv->base[i];
        sv->mh_id[keep] = sv->mh_id[i];
        mh->attach_idx = (uint8_t)keep;
        renum[i] = (unsigned char)keep++;
    }
    for (unsigned k = 0; k < sv->top; k++)
        sv->entries[k] = (uint16_t)(renum[sv->entries[k] >> 8] << 8 | (sv->entries[k] & 255));
    sv->nattached = (uint8_t)keep;
}

/* The vector for cls is empty.  First take back what was freed into its
 * spans by other threads; if that is little, attach spans with free slots
 * from the global heap (detaching full ones if the vector has no room for
 * more), enough to fill the vector for a while (MESH_SV_TARGET_SLOTS)
 * without hoarding memory (MESH_SV_MAX_BYTES). */
_Atomic uint64_t mesh_stall_barrier_ns, mesh_stall_lock_ns;

void mesh_stall_note(_Atomic uint64_t *interval_max, _Atomic uint64_t *stat_max, uint64_t ns)
{
    mesh_stat_max(interval_max, ns);
    mesh_stat_max(stat_max, ns);
}

void mesh_class_lock_slow(mesh_class_heap_t *ch)
{
    uint64_t t0 = mesh_os_now_ns();
    atomic_fetch_add_explicit(&ch->waiters, 1, memory_order_relaxed);
    pthread_mutex_lock(&ch->lock);
    atomic_fetch_sub_explicit(&ch->waiters, 1, memory_order_relaxed);
    mesh_stall_note(&mesh_stall_lock_ns, &mesh_stats.lock_wait_max_ns, mesh_os_now_ns() - t0);
}

void mesh_global_refill(mesh_thread_heap_t *th, unsigned cls)
{
    mesh_shuffle_vector_t *sv = &th->sv[cls];
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    const mesh_size_class_t *sc = &mesh_classes[cls];
    const size_t span_bytes = sc->npages * MESH_PAGE_SIZE;

    mesh_assert(sv->top == 0);
    harvest(sv);
    if (sv->top < MESH_SV_HARVEST_MIN) {
        mesh_class_lock(ch);
        if (sv->nattached == MESH_SV_MAX_ATTACH || (sv->nattached + 1) * span_bytes > MESH_SV_MAX_BYTES)
            detach_full_locked(th, cls);
        while (sv->top < MESH_SV_TARGET_SLOTS && sv->nattached < MESH_SV_MAX_ATTACH &&
               (sv->nattached == 0 || (sv->nattached + 1) * span_bytes <= MESH_SV_MAX_BYTES)) {
            mesh_miniheap_t *mh = take_span_locked(ch, cls);
            if (!mh)
                break;
            uint64_t free_bits[MESH_BITMAP_WORDS];
            atomic_store(&mh->owner, th->id);
            mh->state = MESH_MH_ATTACHED;
            claim_free_slots(mh, MESH_SV_CAP - sv->top, free_bits);
            mesh_sv_add_span(sv, mh, free_bits);
        }
        pthread_mutex_unlock(&ch->lock);
        MESH_STAT_ADD(refill_count, 1);
    }
    if (mesh_opt.randomize)
        mesh_sv_shuffle(sv, &th->rng);
    if (MESH_DEBUG_ON)
        mesh_sv_check(sv);
}

/* One object for a thread without a heap (it is exiting, or no heap could
 * be made): taken straight from a detached span under the class lock. */
void *mesh_global_alloc_one(unsigned cls)
{
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    const mesh_size_class_t *sc = &mesh_classes[cls];
    void *p = NULL;
    mesh_class_lock(ch);
    mesh_miniheap_t *mh = take_span_locked(ch, cls);
    if (mh) {
        for (unsigned w = 0; w < MESH_BITMAP_WORDS && !p; w++) {
            uint64_t avail = ~atomic_load(&mh->bits[w]) & sc->valid[w];
            if (!avail)
                continue;
            unsigned b = (unsigned)__builtin_ctzll(avail);
            atomic_fetch_or(&mh->bits[w], 1ULL << b);
            p = mesh_mh_start(mh) + (size_t)(w * 64 + b) * sc->object_size;
            *(uint64_t *)p = 0; /* no free key on a live object */
        }
        mesh_assert(p);
        place_detached_locked(ch, mh);
    }
    pthread_mutex_unlock(&ch->lock);
    return p;
}

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

/* Every free of a small object that the fast path did not take: into a span
 * this thread has attached but through an alias or with a full vector, or
 * into a span this thread does not own (a remote free). */
void mesh_global_free_small(mesh_miniheap_t *mh, void *p)
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
        const mesh_size_class_t *sc = &mesh_classes[cls];
        unsigned w = slot >> 6;
        uint64_t mask = 1ULL << (slot & 63);
        mesh_thread_heap_t *th = mesh_tls_heap;
        uint32_t owner = atomic_load(&head->owner);

        /* Keys are kept at the head's address of the slot, whichever
         * virtual span the free came through.  Invariant: a slot holds its
         * key while it sits free in a vector (pushed there by a free or
         * claimed by a refill), and not once it is handed out. */
        uint64_t *key = (uint64_t *)(mesh_mh_start(head) + (size_t)slot * sc->object_size);

        if (th && owner == th->id) {
            /* Attached here (so not being meshed): back to the vector, or
             * to the bitmap when the vector is full. */
            mesh_shuffle_vector_t *sv = &th->sv[cls];
            if ((*key == mesh_key_of(key) && mesh_sv_find(sv, head->attach_idx, slot)) ||
                !(atomic_load(&head->bits[w]) & mask))
                mesh_report_double_free(p);
            if (sv->top < MESH_SV_CAP) {
                *key = mesh_key_of(key);
                uint32_t t = sv->top++;
                sv->entries[t] = (uint16_t)(head->attach_idx << 8 | slot);
                if (mesh_opt.randomize) {
                    uint32_t j = mesh_rng_below(&th->rng, t + 1);
                    uint16_t x = sv->entries[j];
                    sv->entries[j] = sv->entries[t];
                    sv->entries[t] = x;
                }
            } else if (!(atomic_fetch_and(&head->bits[w], ~mask) & mask)) {
                mesh_report_double_free(p);
            }
            return;
        }

        uint32_t gen = atomic_load_explicit(&head->gen, memory_order_acquire);
        /* Attached to another thread: a key means the slot is already free
         * in that thread's vector, where clearing the bit would hand it out
         * twice.  A detached span's bitmap alone tells: no need to touch
         * the object, which is often cold in a remote free. */
        if (owner && *key == mesh_key_of(key))
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
        if (atomic_load(&head->owner))
            return; /* the owner harvests the slot at its next refill */
        /* Tells meshing the class has changed: a plain load and store, as
         * a lost count does no harm and a locked add would cost every
         * thread that frees here. */
        _Atomic uint32_t *nfree = &mesh_class_heaps[cls].detached_frees;
        atomic_store_explicit(nfree, atomic_load_explicit(nfree, memory_order_relaxed) + 1, memory_order_relaxed);

        bool was_full = old == sc->valid[w];
        bool now_empty = (old & ~mask) == 0;
        for (unsigned v = 0; v < MESH_BITMAP_WORDS && now_empty; v++)
            if (v != w && atomic_load(&head->bits[v]))
                now_empty = false;
        if (!was_full && !now_empty)
            return;

        mesh_class_heap_t *ch = &mesh_class_heaps[cls];
        mesh_class_lock(ch);
        /* Recheck: the span may have been attached, refiled, meshed or freed. */
        if (atomic_load(&head->gen) == gen && head->kind == MESH_KIND_SMALL && atomic_load(&head->owner) == 0 &&
            (head->state == MESH_MH_FULL || is_partial(head->state))) {
            unsigned live = mesh_mh_live(head);
            if (live == 0) {
                list_remove(ch, head);
                release_empty_locked(ch, head);
            } else if (head->state == MESH_MH_FULL && live < sc->nobjects) {
                list_remove(ch, head);
                place_detached_locked(ch, head);
            }
        }
        pthread_mutex_unlock(&ch->lock);
        return;
    }
}

/* ---- large objects ---- */

void *mesh_global_alloc_large(size_t size, size_t align, bool zero)
{
    size_t npages = (size + MESH_PAGE_SIZE - 1) >> MESH_PAGE_SHIFT;
    size_t align_pages = align > MESH_PAGE_SIZE ? align >> MESH_PAGE_SHIFT : 1;
    mesh_miniheap_t *mh = NULL;
    bool clean = true;
    if (npages <= mesh_arena.npages && align_pages <= mesh_arena.npages) {
        pthread_mutex_lock(&mesh_arena.lock);
        mh = mesh_arena_alloc_span_locked((uint32_t)npages, (uint32_t)align_pages, MESH_KIND_LARGE, &clean);
        if (mh) {
            mesh_arena_set_pages(mh, false);
            if (zero && !clean && size >= 256 * 1024) {
                mesh_arena_zero_span_locked(mh);
                clean = true;
            }
        }
        pthread_mutex_unlock(&mesh_arena.lock);
    }
    if (!mh)
        return mesh_huge_alloc(size, align); /* fresh anonymous memory is zero */
    MESH_STAT_ADD(large_alloc_count, 1);
    void *p = mesh_mh_start(mh);
    if (zero && !clean)
        memset(p, 0, size);
    return p;
}

void mesh_global_free_large(mesh_miniheap_t *mh, void *p)
{
    pthread_mutex_lock(&mesh_arena.lock);
    if (mh->kind != MESH_KIND_LARGE || mesh_mh_start(mh) != p) {
        bool freed = mh->kind == MESH_KIND_FREE && mesh_mh_start(mh) == p;
        pthread_mutex_unlock(&mesh_arena.lock);
        if (freed)
            mesh_report_double_free(p);
        mesh_report_invalid_free(p);
    }
    mesh_arena_free_span_locked(mh);
    pthread_mutex_unlock(&mesh_arena.lock);
}

/* Resizes a large object in place when it can: shrinking gives the tail
 * back, growing takes the free pages after it.  Otherwise NULL, and the
 * caller moves it. */
void *mesh_global_realloc_large(mesh_miniheap_t *mh, void *p, size_t size)
{
    size_t npages = (size + MESH_PAGE_SIZE - 1) >> MESH_PAGE_SHIFT;
    bool ok = false;
    if (npages > mesh_arena.npages)
        return NULL;
    pthread_mutex_lock(&mesh_arena.lock);
    if (mh->kind == MESH_KIND_LARGE && mesh_mh_start(mh) == p) {
        if (npages <= mh->npages) {
            /* If no record is left for the tail, the object keeps it. */
            mesh_arena_shrink_span_locked(mh, (uint32_t)npages);
            ok = true;
        } else
            ok = mesh_arena_grow_span_locked(mh, (uint32_t)npages);
    }
    pthread_mutex_unlock(&mesh_arena.lock);
    return ok ? p : NULL;
}

/* ---- introspection ---- */

/* Bytes in live objects: set bits of every small span, less the free slots
 * reserved in thread vectors, plus large and huge objects. */
uint64_t mesh_global_allocated_bytes(void)
{
    uint64_t bytes = 0;
    pthread_mutex_lock(&mesh_arena.lock);
    uint32_t n = mesh_arena.nrecords;
    pthread_mutex_unlock(&mesh_arena.lock);
    for (uint32_t id = 1; id < n; id++) {
        mesh_miniheap_t *mh = rec(id);
        uint8_t kind = __atomic_load_n(&mh->kind, __ATOMIC_RELAXED);
        if (kind == MESH_KIND_SMALL)
            bytes += (uint64_t)mesh_mh_live(mh) * mesh_classes[mh->cls].object_size;
        else if (kind == MESH_KIND_LARGE)
            bytes += (uint64_t)mh->npages << MESH_PAGE_SHIFT;
    }
    uint64_t reserved = mesh_thread_heaps_reserved_bytes();
    bytes = bytes > reserved ? bytes - reserved : 0;
    return bytes + mesh_huge_bytes();
}

/* ---- trimming ---- */

/* Bit p set: no live object of mh touches its page p (detached span, class
 * lock held).  Pages past the last slot hold only the span's tail. */
uint32_t mesh_global_free_pages(const mesh_miniheap_t *mh)
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

/*
 * Gives back the pages of partial spans that no live object touches: in a
 * sparse span of a class whose span has several pages (a 4 KiB object has
 * a page to itself; two 2 KiB objects share one), freed objects can leave
 * whole pages unused, which meshing would only recover by merging the span
 * with another.  A detached span's pages are punched at most once between
 * attachments (mesh_arena.trimmed); attaching or meshing into a span
 * forgets that, since its free slots are about to be written.  A page
 * punched in the head of a chain is gone from every virtual span of it,
 * which is right: the merged bitmap says no object of any of them is there.
 * It is not meshing: the no-meshing control does it too.  Returns the
 * pages given back; stops at deadline_ns (0: none).
 */
uint64_t mesh_global_trim(uint64_t deadline_ns)
{
    uint64_t pages = 0, seen = 0;
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        const mesh_size_class_t *sc = &mesh_classes[c];
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        if (sc->npages < 2 || sc->npages > 32 || !__atomic_load_n(&ch->npartial, __ATOMIC_RELAXED))
            continue;
        pthread_mutex_lock(&ch->lock);
        for (unsigned b = 0; b < MESH_PARTIAL_BINS; b++) {
            for (uint32_t id = ch->partial[b]; id; id = rec(id)->next) {
                mesh_miniheap_t *mh = rec(id);
                uint32_t due = mesh_global_free_pages(mh) & ~mesh_arena.trimmed[id];
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

/* Returns every class's kept empty spans to the arena. */
void mesh_global_release_empty(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        pthread_mutex_lock(&ch->lock);
        mesh_miniheap_t *mh;
        while ((mh = list_pop(ch, MESH_MH_EMPTY)) != NULL) {
            ch->nspans--;
            pthread_mutex_lock(&mesh_arena.lock);
            mesh_arena_free_span_locked(mh);
            pthread_mutex_unlock(&mesh_arena.lock);
        }
        pthread_mutex_unlock(&ch->lock);
    }
}

static void put_col(mesh_buf_t *b, uint64_t v, unsigned width)
{
    char tmp[24];
    mesh_buf_t t = {tmp, 0, sizeof tmp};
    mesh_buf_u64(&t, v);
    for (size_t i = t.len; i < width; i++)
        mesh_buf_str(b, " ");
    mesh_buf_str(b, tmp);
}

/* MALLOCSTATS=2: one line per size class in use. */
void mesh_global_print_classes(mesh_buf_t *b, void (*flush)(mesh_buf_t *))
{
    uint64_t spans[MESH_NUM_CLASSES] = {0}, live[MESH_NUM_CLASSES] = {0};
    uint64_t attached[MESH_NUM_CLASSES] = {0}, full[MESH_NUM_CLASSES] = {0};
    uint64_t partial[MESH_NUM_CLASSES] = {0}, empty[MESH_NUM_CLASSES] = {0};
    uint64_t aliases[MESH_NUM_CLASSES] = {0};
    uint64_t large = 0, large_pages = 0;
    pthread_mutex_lock(&mesh_arena.lock);
    uint32_t n = mesh_arena.nrecords;
    pthread_mutex_unlock(&mesh_arena.lock);
    for (uint32_t id = 1; id < n; id++) {
        mesh_miniheap_t *mh = rec(id);
        if (mh->kind == MESH_KIND_LARGE) {
            large++;
            large_pages += mh->npages;
        }
        if (mh->kind == MESH_KIND_ALIAS)
            aliases[mh->cls]++;
        if (mh->kind != MESH_KIND_SMALL)
            continue;
        unsigned c = mh->cls;
        spans[c]++;
        live[c] += mesh_mh_live(mh);
        attached[c] += mh->state == MESH_MH_ATTACHED;
        full[c] += mh->state == MESH_MH_FULL;
        partial[c] += is_partial(mh->state);
        empty[c] += mh->state == MESH_MH_EMPTY;
    }
    mesh_buf_str(b, "-- size classes --\n"
                    " class  pages objs   spans  live objs occupancy%  attached    full partial   empty  "
                    "meshed  meshes\n");
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        if (!spans[c] && !aliases[c])
            continue;
        const mesh_size_class_t *sc = &mesh_classes[c];
        put_col(b, sc->object_size, 6);
        put_col(b, sc->npages, 7);
        put_col(b, sc->nobjects, 5);
        put_col(b, spans[c], 8);
        put_col(b, live[c], 11);
        put_col(b, spans[c] ? live[c] * 100 / (spans[c] * sc->nobjects) : 0, 11);
        put_col(b, attached[c], 10);
        put_col(b, full[c], 8);
        put_col(b, partial[c], 8);
        put_col(b, empty[c], 8);
        put_col(b, aliases[c], 8);
        put_col(b, mesh_class_heaps[c].meshes, 8);
        mesh_buf_str(b, "\n");
        flush(b);
    }
    mesh_buf_str(b, "large objects: ");
    mesh_buf_u64(b, large);
    mesh_buf_str(b, " in ");
    mesh_buf_fixed1(b, large_pages * MESH_PAGE_SIZE, 1024 * 1024);
    mesh_buf_str(b, " MB; arena resident: ");
    mesh_buf_fixed1(b, mesh_arena_resident_bytes(), 1024 * 1024);
    mesh_buf_str(b, " MB\n");
}

/* ---- fork ---- */

void mesh_global_fork_prepare(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        pthread_mutex_lock(&mesh_class_heaps[c].lock);
}

void mesh_global_fork_parent(void)
{
    for (unsigned c = MESH_NUM_CLASSES; c-- > 0;)
        pthread_mutex_unlock(&mesh_class_heaps[c].lock);
}

void mesh_global_fork_child(void)
{
    mesh_global_init();
}

/* ---- invariants ---- */

/* Every list holds spans of its class in the state the list stands for,
 * detached; counts add up; no bit is set beyond a span's objects. */
void mesh_global_check(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        uint64_t valid[MESH_BITMAP_WORDS];
        mesh_mh_valid_mask(mesh_classes[c].nobjects, valid);
        pthread_mutex_lock(&ch->lock);
        uint8_t states[] = {MESH_MH_FULL, MESH_MH_EMPTY, MESH_MH_PARTIAL, MESH_MH_PARTIAL + 1,
                            MESH_MH_PARTIAL + 2, MESH_MH_PARTIAL + 3};
        uint32_t nempty = 0;
        for (unsigned s = 0; s < sizeof states; s++) {
            for (uint32_t id = *list_of(ch, states[s]); id; id = rec(id)->next) {
                mesh_miniheap_t *mh = rec(id);
                if (mh->kind != MESH_KIND_SMALL || mh->cls != c || mh->state != states[s] ||
                    atomic_load(&mh->owner) != 0)
                    mesh_assert_fail("class list membership", __FILE__, __LINE__);
                for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
                    if (atomic_load(&mh->bits[w]) & ~valid[w])
                        mesh_assert_fail("bits beyond the span's objects", __FILE__, __LINE__);
                nempty += states[s] == MESH_MH_EMPTY;
            }
        }
        if (nempty != ch->nempty)
            mesh_assert_fail("empty list count", __FILE__, __LINE__);
        pthread_mutex_unlock(&ch->lock);
    }
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_arena_check_locked();
    pthread_mutex_unlock(&mesh_arena.lock);
}
