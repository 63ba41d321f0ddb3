/*
 * Giving the arena's pages back to the OS: which dirty free spans to
 * punch, and when (the scavenge: docs/design.md, Scavenging), a hole
 * punched in the memfd (which frees the pages of every virtual span mapped
 * onto them), the check that the descriptor is still ours before punching
 * through it, and what the file holds.  The free spans themselves are
 * arena.c's; everything here runs under mesh_arena.lock or takes it.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "mesher.h"

#define A mesh_arena

/* Whether A.fd is still the memfd we created: a program may close every
 * descriptor (closefrom) and reuse the number for a file of its own, and a
 * punch there would destroy its data. */
bool mesh_arena_fd_is_ours_locked(void)
{
    uint64_t dev, ino;
    if (A.fd < 0)
        return false;
    if (A.fd_held) {
        mesh_assert(mesh_os_thread_count() == 1); /* held only while no other thread exists */
        return true;
    }
    if (mesh_os_fd_identity(A.fd, &dev, &ino) == 0 && dev == A.fd_dev && ino == A.fd_ino)
        return true;
    A.fd = -1;
    return false;
}

/* While a mesh slice runs as the process's only thread, with the
 * program's signal handlers held off (mesh_slice_alone), none of the
 * program's code runs until it ends: the descriptor cannot change, and one
 * check covers the slice's remaps and punches (two a mesh otherwise, a
 * system call each).  hold false: checked at every use again. */
void mesh_arena_fd_hold_locked(bool hold)
{
    A.fd_held = false;
    A.fd_held = hold && mesh_arena_fd_is_ours_locked();
}

/* Gives pages back: a hole in the file (through the descriptor, or the
 * mapping when the descriptor is lost), MADV_DONTNEED past the file.  One
 * call; punched_bytes is the caller's to count (a range may run over holes
 * punched before). */
void mesh_arena_punch_range_locked(uint32_t page, uint32_t npages, bool use_fd)
{
    uint32_t end = page + npages, fend = end < A.file_pages ? end : A.file_pages;
    if (page < fend) {
        uint64_t off = (uint64_t)page << MESH_PAGE_SHIFT, len = (uint64_t)(fend - page) << MESH_PAGE_SHIFT;
        if (!use_fd || mesh_os_punch(A.fd, off, len) != 0)
            mesh_os_remove(A.base + off, len);
    }
    if (end > fend) {
        uint32_t from = page > fend ? page : fend;
        mesh_os_dontneed(A.base + ((size_t)from << MESH_PAGE_SHIFT), (size_t)(end - from) << MESH_PAGE_SHIFT);
    }
    MESH_STAT_ADD(punch_count, 1);
}

void mesh_arena_punch_locked(uint32_t page, uint32_t npages, bool use_fd)
{
    mesh_arena_punch_range_locked(page, npages, use_fd);
    MESH_STAT_ADD(punched_bytes, (uint64_t)npages << MESH_PAGE_SHIFT);
}

void mesh_arena_punch_pages(uint32_t page, uint32_t npages)
{
    mesh_arena_lock();
    mesh_arena_punch_locked(page, npages, mesh_arena_fd_is_ours_locked());
    pthread_mutex_unlock(&A.lock);
}

bool mesh_arena_fd_ok(void)
{
    mesh_arena_lock();
    bool ok = mesh_arena_fd_is_ours_locked();
    pthread_mutex_unlock(&A.lock);
    return ok;
}

/* Makes a span read as zeros by punching it: for a large calloc that reuses
 * dirty pages this is cheaper than memset, and the pages cost nothing until
 * the program touches them. */
void mesh_arena_zero_span_locked(mesh_miniheap_t *mh)
{
    mesh_arena_punch_locked(mh->span_page, mh->npages, mesh_arena_fd_is_ours_locked());
}

/* Physical bytes in the arena file: what the arena costs in memory. */
uint64_t mesh_arena_resident_bytes(void)
{
    uint64_t bytes = 0;
    mesh_arena_lock();
    if (A.file_pages < A.accessible || !mesh_arena_fd_is_ours_locked() || mesh_os_file_blocks(A.fd, &bytes) != 0)
        bytes = (A.active_pages + A.dirty_pages) << MESH_PAGE_SHIFT;
    pthread_mutex_unlock(&A.lock);
    return bytes;
}

/* ---- the scavenge ---- */

static bool due(const mesh_miniheap_t *f, uint64_t cutoff)
{
    return f && f->state == MESH_MH_FREE_DIRTY && f->dirty_epoch < cutoff;
}

/* The mark of a dirty span this scavenge has punched: make_clean files it
 * clean before the arena lock is released, so no other code sees it (and
 * no cutoff reaches it: it is never due twice). */
#define PUNCHED UINT64_MAX

/* With a deadline, a punch takes in at most a chunk of dirty pages: a
 * punch costs its call (8-50 us here) and then about 1-2 us a page, so a
 * chunk is 0.3-0.6 ms, and the deadline is checked that often.  A longer
 * span is punched a chunk at a time. */
#define PUNCH_CHUNK 256

typedef struct scavenge {
    uint64_t cutoff;
    uint64_t deadline_ns;        /* 0: punch every due span */
    bool (*yield)(uint64_t now); /* true: stop now (someone waits) */
    uint64_t keep_pages;         /* enough once no more than this stays dirty */
    bool use_fd, enough, stopped;
    uint64_t marked;             /* dirty pages marked PUNCHED so far */
    uint32_t nmarked;            /* spans marked (the first MARKED_MAX in marked_ids) */
    uint64_t pages;              /* dirty pages made clean */
} scavenge_t;

/* A punch runs on through clean free spans (holes already: punching them
 * again frees nothing and zaps no page-table entry) to the next due dirty
 * span, and so on: each call is one TLB shootdown, the cost of a punch,
 * and a heap freed in random order (a program's exit, an eviction sweep)
 * leaves its dirty pages one by one between holes.  Such a run of due
 * spans is punched from its first, in one call, or a call a chunk with a
 * deadline.  Neighbours of one state coalesce, so free spans alternate
 * clean and dirty: two steps find the next or previous due one.  A run
 * ends at a stale span: it still maps another span's pages, which a punch
 * through the mapping (the fallback when the file's punch fails) would
 * reach. */
static mesh_miniheap_t *due_before(const mesh_miniheap_t *f, uint64_t cutoff)
{
    const mesh_miniheap_t *c = mesh_arena_free_ending_at(f->span_page);
    mesh_miniheap_t *d = c && c->state == MESH_MH_FREE_CLEAN ? mesh_arena_free_ending_at(c->span_page) : NULL;
    return due(d, cutoff) ? d : NULL;
}

static mesh_miniheap_t *due_after(uint32_t end, uint64_t cutoff)
{
    const mesh_miniheap_t *c = mesh_arena_free_starting_at(end);
    mesh_miniheap_t *d = c && c->state == MESH_MH_FREE_CLEAN ? mesh_arena_free_starting_at(c->span_page + c->npages) : NULL;
    return due(d, cutoff) ? d : NULL;
}

/* The spans a scavenge marks, in order, so that filing them clean takes no
 * second walk of the dirty spans (each a cold record: in redis-like's
 * teardown the walks were 13% of its samples).  Under the arena lock; past
 * MARKED_MAX, the walk it is. */
#define MARKED_MAX 4096
static uint32_t marked_ids[MARKED_MAX];

static void mark(mesh_miniheap_t *f, scavenge_t *sc)
{
    f->dirty_epoch = PUNCHED;
    if (sc->nmarked < MARKED_MAX)
        marked_ids[sc->nmarked] = mesh_mh_id(f);
    sc->nmarked++;
    sc->marked += f->npages;
}

/* After a punch: whether the scavenge has done enough, or must stop (at
 * its deadline, when another thread waits for the arena lock, or when
 * yield says so). */
static void check(scavenge_t *sc, uint64_t dirty_left)
{
    sc->enough = dirty_left <= sc->keep_pages;
    if (sc->deadline_ns && !sc->enough) {
        uint64_t now = mesh_os_now_ns();
        sc->stopped = now >= sc->deadline_ns || atomic_load_explicit(&A.waiters, memory_order_relaxed) ||
                      (sc->yield && sc->yield(now));
    }
}

/* A due span longer than a chunk, with a deadline: punched a chunk at a
 * time.  If the scavenge ends part way, the part punched becomes clean
 * here and the rest stays dirty, as old as it was.  Returns whether all
 * of f was punched (then it is marked). */
static bool punch_in_chunks(mesh_miniheap_t *f, scavenge_t *sc)
{
    uint32_t start = f->span_page, end = start + f->npages, p = start;
    while (p < end && !sc->enough && !sc->stopped) {
        uint32_t n = end - p < PUNCH_CHUNK ? end - p : PUNCH_CHUNK;
        mesh_arena_punch_range_locked(p, n, sc->use_fd);
        p += n;
        check(sc, A.dirty_pages - sc->marked - (p - start));
    }
    if (p < end && mesh_arena_clean_head_locked(f, p - start)) {
        sc->pages += p - start;
        return false;
    }
    if (p < end) /* no record left for the rest: punch it too */
        mesh_arena_punch_range_locked(p, end - p, sc->use_fd);
    mark(f, sc);
    return true;
}

/* Punches the run of due spans f belongs to, from its first, marking
 * what each call covers, until the run ends or the scavenge does. */
static bool punch_from(mesh_miniheap_t *f, void *arg)
{
    scavenge_t *sc = arg;
    if (sc->enough || sc->stopped)
        return false;
    if (!due(f, sc->cutoff))
        return true;
    for (mesh_miniheap_t *d; (d = due_before(f, sc->cutoff));)
        f = d;
    uint64_t limit = sc->deadline_ns ? PUNCH_CHUNK : UINT64_MAX;
    while (f && !sc->enough && !sc->stopped) {
        uint32_t start = f->span_page, end = start + f->npages;
        if (f->npages > limit) {
            f = punch_in_chunks(f, sc) ? due_after(end, sc->cutoff) : NULL;
            continue;
        }
        uint64_t taken = 0;
        do {
            mark(f, sc);
            taken += f->npages;
            end = f->span_page + f->npages;
            f = due_after(end, sc->cutoff);
        } while (f && taken + f->npages <= limit);
        mesh_arena_punch_range_locked(start, end - start, sc->use_fd);
        check(sc, A.dirty_pages - sc->marked);
    }
    return !sc->enough && !sc->stopped;
}

static bool make_clean(mesh_miniheap_t *f, void *arg)
{
    scavenge_t *sc = arg;
    if (f->dirty_epoch == PUNCHED) {
        sc->pages += f->npages;
        mesh_arena_clean_locked(f);
    }
    return true;
}

/* Punches the dirty free spans that became dirty before period
 * sc->cutoff (UINT64_MAX: all of them), runs across holes in one call;
 * then they become clean.  Ends once no more than sc->keep_pages stay
 * dirty, or, with a deadline, at it or when another thread waits or
 * yield says so, after the punch under way: what is left stays dirty,
 * due at the next scavenge.  sc->pages: the pages given back. */
static void scavenge(scavenge_t *sc)
{
    sc->use_fd = mesh_arena_fd_is_ours_locked();
    sc->enough = A.dirty_pages <= sc->keep_pages;
    mesh_arena_each_dirty_locked(punch_from, sc);
    if (sc->nmarked > MARKED_MAX) {
        mesh_arena_each_dirty_locked(make_clean, sc);
    } else {
        /* Filing one clean merges it with clean neighbours only: a span
         * still to come is dirty, so its record is still there. */
        for (uint32_t i = 0; i < sc->nmarked; i++)
            make_clean(mesh_rec(marked_ids[i]), sc);
    }
    MESH_STAT_ADD(punched_bytes, sc->pages << MESH_PAGE_SHIFT);
}

/* The arena lock was held from t0: every thread that needed a span or
 * freed one in the meantime waited this long at most. */
static void note_time(uint64_t t0)
{
    mesh_stall_note(&mesh_stall_scavenge_ns, &mesh_stats.scavenge_max_ns, mesh_os_now_ns() - t0);
}

static uint64_t scavenge_before_locked(uint64_t cutoff, uint64_t deadline_ns, bool (*yield)(uint64_t now))
{
    if (!A.dirty_pages)
        return 0;
    uint64_t t0 = mesh_os_now_ns();
    scavenge_t sc = {.cutoff = cutoff, .deadline_ns = deadline_ns, .yield = yield};
    scavenge(&sc);
    if (sc.stopped)
        MESH_STAT_ADD(scavenge_stopped, 1);
    note_time(t0);
    return sc.pages << MESH_PAGE_SHIFT;
}

uint64_t mesh_arena_scavenge_locked(void)
{
    uint64_t bytes = scavenge_before_locked(UINT64_MAX, 0, NULL);
    mesh_assert(A.dirty_pages == 0);
    return bytes;
}

/* The bound on dirty pages (MESH_MAX_DIRTY_MB), checked where a span is
 * freed: past it, the freeing thread punches down to half the bound, the
 * spans dirty since an earlier period first, and for a busy pass's budget
 * at most.  Punching them all at once, as the bound used to, took up to
 * 4096 one-page punches of 8-50 us each under the arena lock when a
 * program freed pages in random order (an eviction sweep, a teardown).
 * What a scavenge leaves past the bound, the next free of a span takes on;
 * the half keeps the scavenges from following every free of a span. */
void mesh_arena_scavenge_over_bound_locked(void)
{
    uint64_t bound = mesh_opt.max_dirty_mb * (1024 * 1024 / MESH_PAGE_SIZE);
    if (A.dirty_pages <= bound)
        return;
    uint64_t t0 = mesh_os_now_ns();
    MESH_STAT_ADD(scavenge_bound_count, 1);
    scavenge_t older = {.cutoff = A.epoch, .keep_pages = bound / 2,
                        .deadline_ns = t0 + mesh_busy_budget_ns()};
    scavenge(&older);
    if (!older.enough && !older.stopped) {
        scavenge_t rest = {.cutoff = UINT64_MAX, .keep_pages = bound / 2, .deadline_ns = older.deadline_ns};
        scavenge(&rest);
    }
    note_time(t0);
}

/* The periodic scavenge: punches the dirty spans that were already dirty
 * when the last period began, so that a page freed and reused within a
 * period is not given back and faulted in again, and none stays backed
 * unused for more than two periods, unless a scavenge ran out of time
 * (deadline_ns, or yield: the program has work for the calling thread;
 * each punch costs 8-50 us here, and a period can leave hundreds due, all
 * under the arena lock).  Returns the bytes given back. */
uint64_t mesh_arena_scavenge_aged_locked(uint64_t deadline_ns, bool (*yield)(uint64_t now))
{
    return scavenge_before_locked(A.epoch++, deadline_ns, yield);
}
