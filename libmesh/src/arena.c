/*
 * The arena (docs/design.md, The arena): one large range of address space
 * backed by a memfd mapped MAP_SHARED, the page -> miniheap table, the
 * pool of miniheap records, and the page allocator that carves spans out
 * of it.
 *
 * Why a file: meshing (next) re-points a virtual span at another span's file
 * offset with mmap(MAP_FIXED), and physical memory only goes back to the OS
 * when a hole is punched in the file.  madvise(MADV_DONTNEED) on a shared
 * mapping would drop page-table entries and keep the pages.
 *
 * Free pages are kept as FREE spans in bins by length, dirty (still in the
 * file) apart from clean (punched or never touched, so they read as zeros).
 * Neighbours of the same kind coalesce.  Dirty pages are punched once they
 * stay unused for a period, or when more than MESH_MAX_DIRTY_MB pile up
 * (which, when and how: the scavenge in punch.c).  Stale spans, the
 * aliases of a dissolved chain that still map its head's pages, are FREE
 * too but on a list of their own, and not handed out until restored
 * (arena_maps.c).
 *
 * The range, its metadata arrays and the file are reserved and grown with
 * the heap in reserve.c; past the file's end (RLIMIT_FSIZE, no memfd) the
 * range is private memory, which is not meshed and whose pages go back
 * with MADV_DONTNEED.
 *
 * Everything below is protected by mesh_arena.lock except the table, which
 * is read without a lock: an entry is written only when a span is handed
 * out, so a reader holding a live object always finds its span.  Entries are
 * kept for every page of a small span and for the first and last page of
 * every other span (enough to find neighbours when coalescing); entries
 * inside large and free spans may be stale, so whoever follows one checks
 * that the record it reaches still contains the address.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>

#include "internal.h"

#define NBINS 129
#define LAST_BIN 128

mesh_arena_t mesh_arena = {
    .fd = -1,
    .fork_fd = -1,
    .lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP,
};

#define A mesh_arena

static void table_set(uint32_t page, uint32_t id)
{
    atomic_store_explicit(&A.table[page], id, memory_order_release);
}

/* ---- records ---- */

static mesh_miniheap_t *record_alloc(void)
{
    uint32_t id = A.free_record;
    if (id) {
        A.free_record = mesh_rec(id)->next;
    } else {
        if (A.nrecords >= A.max_records || !mesh_arena_records_cover_locked(A.nrecords + 1))
            return NULL;
        id = A.nrecords++;
    }
    mesh_miniheap_t *mh = mesh_rec(id);
    mh->next = mh->prev = 0;
    mh->mesh_next = 0;
    mh->state = MESH_MH_NONE;
    return mh;
}

static void record_free(mesh_miniheap_t *mh)
{
    atomic_fetch_add_explicit(&mh->gen, 1, memory_order_relaxed);
    mh->kind = MESH_KIND_UNUSED;
    mh->state = MESH_MH_NONE;
    mh->npages = 0;
    mh->next = A.free_record;
    A.free_record = mesh_mh_id(mh);
}

/* ---- bins of free spans ---- */

static unsigned bin_of(uint32_t npages)
{
    return npages < LAST_BIN ? npages : LAST_BIN;
}

static uint32_t *bin_head(bool dirty, unsigned b)
{
    return dirty ? &A.bins_dirty[b] : &A.bins_clean[b];
}

/* Stale spans are kept on a list of their own: they are not free pages to
 * hand out until they are restored (mesh_arena_reclaim_stale_locked). */
static void stale_insert(mesh_miniheap_t *mh)
{
    uint32_t id = mesh_mh_id(mh);
    mh->prev = 0;
    mh->next = A.stale;
    if (A.stale)
        mesh_rec(A.stale)->prev = id;
    A.stale = id;
    MESH_STAT_ADD(stale_pages, mh->npages);
}

void mesh_arena_stale_remove_locked(mesh_miniheap_t *mh)
{
    if (mh->prev)
        mesh_rec(mh->prev)->next = mh->next;
    else
        A.stale = mh->next;
    if (mh->next)
        mesh_rec(mh->next)->prev = mh->prev;
    mh->next = mh->prev = 0;
    MESH_STAT_ADD(stale_pages, -(uint64_t)mh->npages);
}

static void bin_insert(mesh_miniheap_t *mh)
{
    if (mh->state == MESH_MH_FREE_STALE) {
        stale_insert(mh);
        return;
    }
    bool dirty = mh->state == MESH_MH_FREE_DIRTY;
    unsigned b = bin_of(mh->npages);
    uint32_t *head = bin_head(dirty, b);
    uint32_t id = mesh_mh_id(mh);
    mh->prev = 0;
    mh->next = *head;
    if (*head)
        mesh_rec(*head)->prev = id;
    *head = id;
    A.nonempty[dirty ? 0 : 1][b >> 6] |= 1ULL << (b & 63);
    if (dirty)
        A.dirty_pages += mh->npages;
}

static void bin_remove(mesh_miniheap_t *mh)
{
    if (mh->state == MESH_MH_FREE_STALE) {
        mesh_arena_stale_remove_locked(mh);
        return;
    }
    bool dirty = mh->state == MESH_MH_FREE_DIRTY;
    unsigned b = bin_of(mh->npages);
    uint32_t *head = bin_head(dirty, b);
    if (mh->prev)
        mesh_rec(mh->prev)->next = mh->next;
    else
        *head = mh->next;
    if (mh->next)
        mesh_rec(mh->next)->prev = mh->prev;
    mh->next = mh->prev = 0;
    if (!*head)
        A.nonempty[dirty ? 0 : 1][b >> 6] &= ~(1ULL << (b & 63));
    if (dirty)
        A.dirty_pages -= mh->npages;
}

/* The first non-empty bin at or after b, or NBINS. */
static unsigned next_bin(bool dirty, unsigned b)
{
    const uint64_t *bits = A.nonempty[dirty ? 0 : 1];
    while (b < NBINS) {
        uint64_t w = bits[b >> 6] >> (b & 63);
        if (w)
            return b + (unsigned)__builtin_ctzll(w);
        b = (b | 63) + 1;
    }
    return NBINS;
}

/* Aligns an arena page so that its address is aligned: the arena's base is
 * only page-aligned, so the alignment is of the absolute page number. */
static uint32_t align_up(uint32_t page, uint32_t align)
{
    uint64_t base = (uintptr_t)A.base >> MESH_PAGE_SHIFT;
    return (uint32_t)(((base + page + align - 1) & ~((uint64_t)align - 1)) - base);
}

static bool fits(const mesh_miniheap_t *f, uint32_t npages, uint32_t align)
{
    uint64_t s = align_up(f->span_page, align);
    return s >= f->span_page && s + npages <= (uint64_t)f->span_page + f->npages;
}

/* First fit by bin (smallest bin that has a fitting span), best fit among
 * the long spans of the last bin. */
static mesh_miniheap_t *find_free(bool dirty, uint32_t npages, uint32_t align)
{
    for (unsigned b = next_bin(dirty, bin_of(npages)); b < NBINS; b = next_bin(dirty, b + 1)) {
        mesh_miniheap_t *best = NULL;
        for (uint32_t id = *bin_head(dirty, b); id; id = mesh_rec(id)->next) {
            mesh_miniheap_t *f = mesh_rec(id);
            if (!fits(f, npages, align))
                continue;
            if (b != LAST_BIN)
                return f;
            if (!best || f->npages < best->npages)
                best = f;
        }
        if (best)
            return best;
    }
    return NULL;
}

static void set_span_ends(mesh_miniheap_t *mh)
{
    uint32_t id = mesh_mh_id(mh);
    table_set(mh->span_page, id);
    table_set(mh->span_page + mh->npages - 1, id);
}

/* Files [page, page + npages) as a FREE span of the given state, merging it
 * with neighbours in the same state.  Takes ownership of mh (or frees it
 * when it is merged away).  A dirty free span records the period in which
 * it became dirty (the latest of what it merged), so that the periodic
 * scavenge gives back only pages that stayed unused a period. */
void mesh_arena_insert_free_locked(mesh_miniheap_t *mh, uint32_t page, uint32_t npages, uint8_t state)
{
    uint64_t epoch = A.epoch;
    bool merge = state != MESH_MH_FREE_STALE; /* each is one alias, restored on its own */
    if (page > 0 && merge) {
        mesh_miniheap_t *p = mesh_rec(mesh_arena_table_get(page - 1));
        if (p != mh && p->kind == MESH_KIND_FREE && p->state == state && p->span_page + p->npages == page) {
            if (p->dirty_epoch > epoch)
                epoch = p->dirty_epoch;
            bin_remove(p);
            page = p->span_page;
            npages += p->npages;
            record_free(p);
        }
    }
    uint32_t end = page + npages;
    if (end < A.frontier && merge) {
        mesh_miniheap_t *n = mesh_rec(mesh_arena_table_get(end));
        if (n != mh && n->kind == MESH_KIND_FREE && n->state == state && n->span_page == end) {
            if (n->dirty_epoch > epoch)
                epoch = n->dirty_epoch;
            bin_remove(n);
            npages += n->npages;
            record_free(n);
        }
    }
    mh->kind = MESH_KIND_FREE;
    mh->state = state;
    mh->owner = 0;
    mh->span_page = page;
    mh->npages = npages;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        atomic_store_explicit(&mh->bits[w], 0, memory_order_relaxed);
    if (state == MESH_MH_FREE_DIRTY)
        mh->dirty_epoch = epoch;
    set_span_ends(mh);
    bin_insert(mh);
}

/* A new FREE span for pages split off another one. */
static bool split_free(uint32_t page, uint32_t npages, uint8_t state)
{
    mesh_miniheap_t *r = record_alloc();
    if (!r)
        return false;
    mesh_arena_insert_free_locked(r, page, npages, state);
    return true;
}

/* ---- spans ---- */

mesh_miniheap_t *mesh_arena_alloc_span_locked(uint32_t npages, uint32_t align_pages, uint8_t kind, bool *clean)
{
    mesh_assert(align_pages && (align_pages & (align_pages - 1)) == 0);
    if (npages == 0 || npages > A.npages)
        return NULL;
    mesh_miniheap_t *mh = NULL;
    uint32_t start;
    bool dirty = true;
    mesh_miniheap_t *f = find_free(true, npages, align_pages);
    if (!f) {
        f = find_free(false, npages, align_pages);
        dirty = false;
    }
    /* Before the heap takes new pages, it grows back into stale ones, a few
     * at a time (a system call each, and a malloc is waiting). */
    if (!f && A.stale && mesh_arena_reclaim_stale_locked(MESH_STALE_BATCH))
        f = find_free(false, npages, align_pages);
    if (f) {
        uint32_t fs = f->span_page, fend = f->span_page + f->npages;
        uint8_t state = f->state;
        start = align_up(fs, align_pages);
        bin_remove(f);
        f->npages = 0;
        if (start > fs && !split_free(fs, start - fs, state))
            goto undo;
        if (start + npages < fend && !split_free(start + npages, fend - start - npages, state)) {
            /* The lead, if any, stays split off: it is a valid free span. */
            fs = start;
            goto undo;
        }
        mh = f;
        goto found;
    undo:
        mesh_arena_insert_free_locked(f, fs, fend - fs, state);
        return NULL;
    }

    /* Nothing free fits: extend into never-used pages. */
    dirty = false;
    start = align_up(A.frontier, align_pages);
    if (start < A.frontier || (uint64_t)start + npages > A.npages || !mesh_arena_grow_locked(start + npages))
        return NULL;
    mh = record_alloc();
    if (!mh)
        return NULL;
    if (start > A.frontier) {
        uint32_t lead = start - A.frontier, old = A.frontier;
        A.frontier = start;
        if (!split_free(old, lead, MESH_MH_FREE_CLEAN)) {
            A.frontier = old;
            record_free(mh);
            return NULL;
        }
    }
    A.frontier = start + npages;
    if (kind == MESH_KIND_SMALL && A.frontier > A.populated) {
        /* A small span is written from its first allocation on: fault it
         * in with the next few, one call instead of a fault a page (in
         * Redis's populate, 10% of its time went to shmem faults). */
        uint32_t from = start > A.populated ? start : A.populated;
        uint32_t to = A.accessible - A.frontier > MESH_POPULATE_PAGES ? A.frontier + MESH_POPULATE_PAGES : A.accessible;
        mesh_os_populate(A.base + ((size_t)from << MESH_PAGE_SHIFT), (size_t)(to - from) << MESH_PAGE_SHIFT);
        A.populated = to;
    }

found:
    atomic_fetch_add_explicit(&mh->gen, 1, memory_order_relaxed);
    mh->kind = kind;
    mh->state = MESH_MH_NONE;
    mh->span_page = start;
    mh->npages = npages;
    mh->owner = 0;
    mh->next = mh->prev = 0;
    mh->mesh_next = 0;
    A.active_pages += npages;
    *clean = !dirty;
    MESH_STAT_ADD(mh_alloc_count, 1);
    uint64_t live = MESH_STAT_ADD(mh_live, 1) + 1;
    mesh_stat_max(&mesh_stats.mh_hwm, live);
    return mh;
}

/* Sets the table for a span just handed out: every page of a small span
 * (frees and the mesh write barrier look up interior pages), the ends of
 * any other. */
void mesh_arena_set_pages(mesh_miniheap_t *mh, bool every_page)
{
    if (!every_page) {
        set_span_ends(mh);
        return;
    }
    uint32_t id = mesh_mh_id(mh);
    for (uint32_t p = 0; p < mh->npages; p++)
        table_set(mh->span_page + p, id);
}

void mesh_arena_free_span_locked(mesh_miniheap_t *mh)
{
    mesh_assert(mh->kind == MESH_KIND_SMALL || mh->kind == MESH_KIND_LARGE);
    if (mh->mesh_next)
        mesh_arena_release_aliases_locked(mh);
    mesh_untrim(mesh_mh_id(mh), 0);
    A.active_pages -= mh->npages;
    MESH_STAT_ADD(mh_free_count, 1);
    atomic_fetch_sub_explicit(&mesh_stats.mh_live, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mh->gen, 1, memory_order_relaxed);
    mesh_arena_insert_free_locked(mh, mh->span_page, mh->npages, MESH_MH_FREE_DIRTY);
    mesh_arena_scavenge_over_bound_locked();
}

/* Returns the tail of a large span beyond npages to the free pages. */
bool mesh_arena_shrink_span_locked(mesh_miniheap_t *mh, uint32_t npages)
{
    mesh_assert(npages > 0 && npages <= mh->npages);
    if (npages == mh->npages)
        return true;
    uint32_t tail = mh->span_page + npages, ntail = mh->npages - npages;
    mesh_miniheap_t *r = record_alloc();
    if (!r)
        return false;
    mh->npages = npages;
    set_span_ends(mh);
    A.active_pages -= ntail;
    mesh_arena_insert_free_locked(r, tail, ntail, MESH_MH_FREE_DIRTY);
    mesh_arena_scavenge_over_bound_locked();
    return true;
}

/* Extends a large span in place into the free pages after it, if there are
 * enough of them. */
bool mesh_arena_grow_span_locked(mesh_miniheap_t *mh, uint32_t npages)
{
    uint32_t end = mh->span_page + mh->npages;
    uint32_t need = npages - mh->npages;
    if (npages <= mh->npages)
        return true;
    if (end == A.frontier) {
        if ((uint64_t)end + need > A.npages || !mesh_arena_grow_locked(end + need))
            return false;
        A.frontier = end + need;
    } else {
        mesh_miniheap_t *n = mesh_rec(mesh_arena_table_get(end));
        if (n->kind != MESH_KIND_FREE || n->state == MESH_MH_FREE_STALE || n->span_page != end || n->npages < need)
            return false;
        uint8_t state = n->state;
        bin_remove(n);
        if (n->npages == need) {
            record_free(n);
        } else {
            uint32_t rest = n->npages - need;
            n->npages = 0;
            mesh_arena_insert_free_locked(n, end + need, rest, state);
        }
    }
    mh->npages = npages;
    set_span_ends(mh);
    A.active_pages += need;
    return true;
}

/* ---- the lock ---- */

/* Takes the arena lock, counting the threads that wait for it (a
 * scavenge, which holds it for up to a pass's budget, stops after the
 * punch under way when one does) and timing their waits. */
void mesh_arena_lock(void)
{
    if (pthread_mutex_trylock(&A.lock) == 0)
        return;
    uint64_t t0 = mesh_os_now_ns();
    atomic_fetch_add_explicit(&A.waiters, 1, memory_order_relaxed);
    pthread_mutex_lock(&A.lock);
    atomic_fetch_sub_explicit(&A.waiters, 1, memory_order_relaxed);
    mesh_stall_note(&mesh_stall_arena_ns, &mesh_stats.arena_wait_max_ns, mesh_os_now_ns() - t0);
}

/* ---- free spans, for the scavenge (punch.c) ---- */

/* The FREE span that ends at page, or that starts there (below the
 * frontier), or NULL. */
mesh_miniheap_t *mesh_arena_free_ending_at(uint32_t page)
{
    if (page == 0)
        return NULL;
    mesh_miniheap_t *f = mesh_rec(mesh_arena_table_get(page - 1));
    return f->kind == MESH_KIND_FREE && f->span_page + f->npages == page ? f : NULL;
}

mesh_miniheap_t *mesh_arena_free_starting_at(uint32_t page)
{
    if (page >= A.frontier)
        return NULL;
    mesh_miniheap_t *f = mesh_rec(mesh_arena_table_get(page));
    return f->kind == MESH_KIND_FREE && f->span_page == page ? f : NULL;
}

/* Calls fn on every dirty free span, by bins, until it returns false; fn
 * may make its span, or the head of it, clean (mesh_arena_clean_locked,
 * _clean_head_locked) and nothing else.  The dirty tail the latter leaves
 * may or may not be visited. */
void mesh_arena_each_dirty_locked(bool (*fn)(mesh_miniheap_t *f, void *arg), void *arg)
{
    for (unsigned b = next_bin(true, 1); b < NBINS; b = next_bin(true, b + 1))
        for (uint32_t id = A.bins_dirty[b], next; id; id = next) {
            next = mesh_rec(id)->next;
            if (!fn(mesh_rec(id), arg))
                return;
        }
}

/* A dirty free span whose pages were punched becomes clean, merging with
 * the clean spans around it. */
void mesh_arena_clean_locked(mesh_miniheap_t *f)
{
    mesh_assert(f->kind == MESH_KIND_FREE && f->state == MESH_MH_FREE_DIRTY);
    bin_remove(f);
    mesh_arena_insert_free_locked(f, f->span_page, f->npages, MESH_MH_FREE_CLEAN);
}

/* The first npages of a dirty free span were punched: they become clean
 * (merging with a clean span before them); the rest stays dirty, as old
 * as it was.  False when no record is left for the rest: then nothing
 * changed. */
bool mesh_arena_clean_head_locked(mesh_miniheap_t *f, uint32_t npages)
{
    mesh_assert(f->kind == MESH_KIND_FREE && f->state == MESH_MH_FREE_DIRTY);
    mesh_assert(npages > 0 && npages < f->npages);
    mesh_miniheap_t *r = record_alloc();
    if (!r)
        return false;
    uint64_t epoch = f->dirty_epoch;
    uint32_t tail = f->span_page + npages, ntail = f->npages - npages;
    bin_remove(f);
    f->npages = npages;
    mesh_arena_insert_free_locked(f, f->span_page, npages, MESH_MH_FREE_CLEAN);
    mesh_arena_insert_free_locked(r, tail, ntail, MESH_MH_FREE_DIRTY); /* its neighbours: f, clean; what followed f, not dirty */
    r->dirty_epoch = epoch;
    return true;
}

/* ---- invariants ---- */

/* Walks every span: they tile [0, frontier); each span's ends map to it;
 * free spans are in the right bin, stale ones on their list; dirty, stale
 * and active page counts add up. */
void mesh_arena_check_locked(void)
{
    uint64_t dirty = 0, active = 0, stale = 0, listed = 0;
    for (uint32_t p = 0; p < A.frontier;) {
        uint32_t id = mesh_arena_table_get(p);
        mesh_miniheap_t *mh = mesh_rec(id);
        if (!(id && mh->span_page == p && mh->npages > 0 && mesh_arena_table_get(p + mh->npages - 1) == id))
            mesh_assert_fail("span tiling", __FILE__, __LINE__);
        if (mh->kind == MESH_KIND_FREE) {
            if (mh->state == MESH_MH_FREE_DIRTY)
                dirty += mh->npages;
            else if (mh->state == MESH_MH_FREE_STALE)
                stale += mh->npages;
            else if (mh->state != MESH_MH_FREE_CLEAN)
                mesh_assert_fail("free span state", __FILE__, __LINE__);
        } else if (mh->kind == MESH_KIND_SMALL || mh->kind == MESH_KIND_LARGE || mh->kind == MESH_KIND_ALIAS ||
                   mh->kind == MESH_KIND_RETIRED) {
            active += mh->kind == MESH_KIND_RETIRED ? 0 : mh->npages;
            if (mh->kind == MESH_KIND_SMALL || mh->kind == MESH_KIND_ALIAS)
                for (uint32_t q = 0; q < mh->npages; q++)
                    if (mesh_arena_table_get(p + q) != id)
                        mesh_assert_fail("small span page table", __FILE__, __LINE__);
        } else {
            mesh_assert_fail("span kind", __FILE__, __LINE__);
        }
        p += mh->npages;
    }
    for (uint32_t id = A.stale; id; id = mesh_rec(id)->next)
        listed += mesh_rec(id)->npages;
    if (dirty != A.dirty_pages || active != A.active_pages || stale != atomic_load(&mesh_stats.stale_pages) || listed != stale)
        mesh_assert_fail("page accounting", __FILE__, __LINE__);
    for (unsigned b = 1; b < NBINS; b++)
        for (int d = 0; d < 2; d++)
            for (uint32_t id = *bin_head(d == 0, b); id; id = mesh_rec(id)->next)
                if (mesh_rec(id)->kind != MESH_KIND_FREE || bin_of(mesh_rec(id)->npages) != b)
                    mesh_assert_fail("free bins", __FILE__, __LINE__);
}
