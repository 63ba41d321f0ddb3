/*
 * The global heap: for each size class, a lock and the lists of detached
 * spans (partial by occupancy, full, empty) and the refill of thread
 * heaps.  Small frees off the fast path, remote frees among them, are in
 * small_free.c; large objects in large.c, trimming in trim.c.
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

/* ---- the class lock, as program threads take it ---- */

_Atomic uint64_t mesh_stall_barrier_ns, mesh_stall_lock_ns, mesh_stall_scavenge_ns, mesh_stall_arena_ns;

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

/* ---- lists (class lock held) ---- */

static uint32_t *list_of(mesh_class_heap_t *ch, uint8_t state)
{
    if (mesh_state_is_partial(state))
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
        mesh_rec(*head)->prev = id;
    *head = id;
    if (state == MESH_MH_EMPTY)
        ch->nempty++;
    else if (mesh_state_is_partial(state))
        ch->npartial++;
}

static void list_remove(mesh_class_heap_t *ch, mesh_miniheap_t *mh)
{
    uint32_t *head = list_of(ch, mh->state);
    if (mh->prev)
        mesh_rec(mh->prev)->next = mh->next;
    else
        *head = mh->next;
    if (mh->next)
        mesh_rec(mh->next)->prev = mh->prev;
    if (mh->state == MESH_MH_EMPTY)
        ch->nempty--;
    else if (mesh_state_is_partial(mh->state))
        ch->npartial--;
    mh->next = mh->prev = 0;
    mh->state = MESH_MH_NONE;
}

static mesh_miniheap_t *list_pop(mesh_class_heap_t *ch, uint8_t state)
{
    uint32_t id = *list_of(ch, state);
    if (!id)
        return NULL;
    list_remove(ch, mesh_rec(id));
    return mesh_rec(id);
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
    mesh_arena_lock();
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
    mesh_arena_lock();
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

/* Detaches an attached span: the slots in held (still in its owner's
 * vector) go back to the bitmap, and the span onto the list its occupancy
 * calls for. */
static void detach_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh, const uint64_t held[MESH_BITMAP_WORDS])
{
    for (unsigned w = 0; held && w < MESH_BITMAP_WORDS; w++)
        if (held[w])
            atomic_fetch_and(&mh->bits[w], ~held[w]);
    atomic_store(&mh->owner, 0);
    mh->state = MESH_MH_NONE;
    place_detached_locked(ch, mh);
}

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
        unsigned i, s;
        bool ok = mesh_sv_entry_slot(sv, sv->entries[k], &i, &s);
        mesh_assert(ok);
        if (ok)
            held[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < sv->nattached; i++) {
        mesh_miniheap_t *mh = mesh_rec(sv->mh_id[i]);
        mesh_assert(mh->state == MESH_MH_ATTACHED && atomic_load(&mh->owner) == th->id);
        detach_locked(ch, mh, held[i]);
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
    unsigned n = sv->nattached < MESH_SV_MAX_ATTACH ? sv->nattached : MESH_SV_MAX_ATTACH;
    unsigned top = sv->top < MESH_SV_CAP ? sv->top : MESH_SV_CAP;
    uint64_t held[MESH_SV_MAX_ATTACH][MESH_BITMAP_WORDS];
    memset(held, 0, sizeof(held[0]) * n);
    sv->nattached = (uint8_t)n;
    for (unsigned k = 0; k < top; k++) {
        unsigned i, s;
        char *obj = sv->entries[k];
        if (mesh_sv_entry_slot(sv, obj, &i, &s) && *(uint64_t *)obj == mesh_key_of(obj))
            held[i][s >> 6] |= 1ULL << (s & 63);
    }
    for (unsigned i = 0; i < n; i++) {
        mesh_miniheap_t *mh = mesh_rec(sv->mh_id[i]);
        if (mh->kind != MESH_KIND_SMALL || mh->state != MESH_MH_ATTACHED || atomic_load(&mh->owner) != th->id)
            continue;
        detach_locked(ch, mh, held[i]);
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
 * other threads (or by this one while its vector was full).  The records
 * are asked for first, as in a cache flush: each claim is a locked OR. */
static void harvest(mesh_shuffle_vector_t *sv)
{
    for (unsigned i = 0; i < sv->nattached; i++)
        __builtin_prefetch(mesh_rec(sv->mh_id[i]), 1);
    for (unsigned i = 0; i < sv->nattached && sv->top < MESH_SV_CAP; i++) {
        uint64_t free_bits[MESH_BITMAP_WORDS];
        claim_free_slots(mesh_rec(sv->mh_id[i]), MESH_SV_CAP - sv->top, free_bits);
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
    bool used[MESH_SV_MAX_ATTACH] = {false};
    for (unsigned k = 0; k < sv->top; k++) {
        unsigned i, s;
        bool ok = mesh_sv_entry_slot(sv, sv->entries[k], &i, &s);
        mesh_assert(ok);
        if (ok)
            used[i] = true;
    }
    unsigned keep = 0;
    for (unsigned i = 0; i < sv->nattached; i++) {
        mesh_miniheap_t *mh = mesh_rec(sv->mh_id[i]);
        if (!used[i]) {
            detach_locked(ch, mh, NULL);
            continue;
        }
        sv->base[keep] = sv->base[i];
        sv->mh_id[keep] = sv->mh_id[i];
        mh->attach_idx = (uint8_t)keep++;
    }
    sv->nattached = (uint8_t)keep;
}

/* The vector for cls is empty.  First take back what was freed into its
 * spans by other threads; if that is little, attach spans with free slots
 * from the global heap (detaching full ones if the vector has no room for
 * more), enough to fill the vector for a while (MESH_SV_TARGET_SLOTS)
 * without hoarding memory (MESH_SV_MAX_BYTES). */
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
    if (mesh_opt.randomize) {
        uint32_t run = mesh_opt.randomize >= MESH_RANDOMIZE_FREE ? 1 : MESH_SHUFFLE_RUN_BYTES / sc->object_size;
        mesh_sv_shuffle(sv, &th->rng, run);
    }
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

/* ---- introspection ---- */

/* Bytes in live objects: set bits of every small span, less the free slots
 * reserved in thread vectors, plus large and huge objects. */
uint64_t mesh_global_allocated_bytes(void)
{
    uint64_t bytes = 0;
    mesh_arena_lock();
    uint32_t n = mesh_arena.nrecords;
    pthread_mutex_unlock(&mesh_arena.lock);
    for (uint32_t id = 1; id < n; id++) {
        mesh_miniheap_t *mh = mesh_rec(id);
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

/* Returns every class's kept empty spans to the arena. */
void mesh_global_release_empty(void)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        pthread_mutex_lock(&ch->lock);
        mesh_miniheap_t *mh;
        while ((mh = list_pop(ch, MESH_MH_EMPTY)) != NULL) {
            ch->nspans--;
            mesh_arena_lock();
            mesh_arena_free_span_locked(mh);
            pthread_mutex_unlock(&mesh_arena.lock);
        }
        pthread_mutex_unlock(&ch->lock);
    }
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
            for (uint32_t id = *list_of(ch, states[s]); id; id = mesh_rec(id)->next) {
                mesh_miniheap_t *mh = mesh_rec(id);
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
    mesh_arena_lock();
    mesh_arena_check_locked();
    pthread_mutex_unlock(&mesh_arena.lock);
}
