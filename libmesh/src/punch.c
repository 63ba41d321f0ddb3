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

#define A mesh_arena

/* Whether A.fd is still the memfd we created: a program may close every
 * descriptor (closefrom) and reuse the number for a file of its own, and a
 * punch there would destroy its data. */
bool mesh_arena_fd_is_ours_locked(void)
{
    uint64_t dev, ino;
    if (A.fd < 0)
        return false;
    if (mesh_os_fd_identity(A.fd, &dev, &ino) == 0 && dev == A.fd_dev && ino == A.fd_ino)
        return true;
    A.fd = -1;
    return false;
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
    pthread_mutex_lock(&A.lock);
    mesh_arena_punch_locked(page, npages, mesh_arena_fd_is_ours_locked());
    pthread_mutex_unlock(&A.lock);
}

bool mesh_arena_fd_ok(void)
{
    pthread_mutex_lock(&A.lock);
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
    pthread_mutex_lock(&A.lock);
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

/* Where the punch that starts at the due dirty span f ends, or 0 when an
 * earlier punch covers f; the due spans it covers are marked PUNCHED.  A
 * punch runs on through clean free spans (holes already: punching them
 * again frees nothing and zaps no page-table entry) to the next due dirty
 * span, and so on: each call is one TLB shootdown, the cost of a punch,
 * and a heap freed in random order (a program's exit, an eviction sweep)
 * leaves its dirty pages one by one between holes.  Neighbours of one
 * state coalesce, so free spans alternate clean and dirty: two steps find
 * the previous due one. */
static uint32_t take_punch(mesh_miniheap_t *f, uint64_t cutoff)
{
    const mesh_miniheap_t *c = mesh_arena_free_ending_at(f->span_page);
    if (c && c->state == MESH_MH_FREE_CLEAN && due(mesh_arena_free_ending_at(c->span_page), cutoff))
        return 0;
    f->dirty_epoch = PUNCHED;
    uint32_t end = f->span_page + f->npages;
    while ((c = mesh_arena_free_starting_at(end)) && c->state == MESH_MH_FREE_CLEAN) {
        mesh_miniheap_t *d = mesh_arena_free_starting_at(c->span_page + c->npages);
        if (!due(d, cutoff))
            break;
        d->dirty_epoch = PUNCHED;
        end = d->span_page + d->npages;
    }
    return end;
}

typedef struct scavenge {
    uint64_t cutoff;
    uint64_t deadline_ns;        /* 0: punch every due span */
    bool (*yield)(uint64_t now); /* true: stop now (someone waits) */
    bool use_fd, stopped;
    uint64_t pages;
} scavenge_t;

static void punch_from(mesh_miniheap_t *f, void *arg)
{
    scavenge_t *sc = arg;
    uint32_t end = !sc->stopped && due(f, sc->cutoff) ? take_punch(f, sc->cutoff) : 0;
    if (!end)
        return;
    mesh_arena_punch_range_locked(f->span_page, end - f->span_page, sc->use_fd);
    if (sc->deadline_ns) {
        uint64_t now = mesh_os_now_ns();
        sc->stopped = now >= sc->deadline_ns || (sc->yield && sc->yield(now));
    }
}

static void make_clean(mesh_miniheap_t *f, void *arg)
{
    scavenge_t *sc = arg;
    if (f->dirty_epoch != PUNCHED)
        return;
    sc->pages += f->npages;
    mesh_arena_clean_locked(f);
}

/* Punches the dirty free spans that became dirty before period cutoff
 * (UINT64_MAX: all of them), neighbours across holes in one call; then
 * they become clean.  With a deadline, stops at it or when yield says so,
 * after the punch under way: what is left stays dirty, due at the next
 * scavenge.  Returns the bytes given back. */
static uint64_t scavenge_before_locked(uint64_t cutoff, uint64_t deadline_ns, bool (*yield)(uint64_t now))
{
    if (!A.dirty_pages)
        return 0;
    scavenge_t sc = {.cutoff = cutoff, .deadline_ns = deadline_ns, .yield = yield,
                     .use_fd = mesh_arena_fd_is_ours_locked()};
    mesh_arena_each_dirty_locked(punch_from, &sc);
    mesh_arena_each_dirty_locked(make_clean, &sc);
    MESH_STAT_ADD(punched_bytes, sc.pages << MESH_PAGE_SHIFT);
    if (sc.stopped)
        MESH_STAT_ADD(scavenge_stopped, 1);
    return sc.pages << MESH_PAGE_SHIFT;
}

uint64_t mesh_arena_scavenge_locked(void)
{
    uint64_t bytes = scavenge_before_locked(UINT64_MAX, 0, NULL);
    mesh_assert(A.dirty_pages == 0);
    return bytes;
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
