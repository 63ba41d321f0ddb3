/*
 * fork.  The arena is a file mapped MAP_SHARED, which fork alone would
 * share between parent and child: each would see the other's writes.  So
 * the child gets a heap of its own, a copy of the parent's at the moment of
 * the fork.
 *
 * The copy is made in the parent's prepare step, with every allocator lock
 * held, and it must be the heap as the fork system call sees the rest of
 * memory: the program's other threads go on running until then.  So before
 * copying, the file-backed arena is made read-only, and a thread that
 * writes into the heap waits in the write barrier (barrier.c) until the
 * parent's post-fork step lifts the protection; the copy, and so the child,
 * holds every write that came before the fork and none that came after.
 * Buffers that a system call is writing into at that moment are pinned
 * (pin.c) and stay writable: what the kernel delivers there races with the
 * fork as it would under any allocator.
 *
 * The copy goes into a new memfd, data ranges only (SEEK_DATA), so holes
 * stay holes.  A parent that cannot make one (no descriptor left, or a
 * sandbox that denies memfd_create) copies the ranges into private
 * anonymous memory instead, which the child inherits copy-on-write; the
 * child, which no longer needs the parent's descriptor, closes it and puts
 * its own memfd in its place, or, where it cannot make one either (the
 * sandbox, or RLIMIT_FSIZE), keeps the staged copy as private memory and
 * meshes no more.  The child's arena then maps its file; every meshed alias
 * is mapped again.
 *
 * Only the file-backed part of the arena, [0, file_pages), needs any of
 * this: the private memory past it (RLIMIT_FSIZE, or no memfd at all) is
 * copied on write by the kernel, exactly at the fork.
 *
 * libc resets some of its own state in the child (stdio locks, thread
 * data) before the fork handlers run, and that state may live in the heap:
 * such a write meets the protected arena, and the barrier's handler gives
 * the child its heap right there.  Both ways go through
 * mesh_fork_child_heap, which is idempotent and async-signal-safe.
 *
 * Lock order at fork: the mesh lock, every class lock, the arena lock, the
 * heaps lock, the huge lock (the library's order, taken all at once).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "internal.h"

#define A mesh_arena
#define MAX_PINS 1024

static int fork_errno;                  /* why the copy could not be made */
static char *stage;                     /* the copy in anonymous memory, if no memfd */
static uint64_t stage_bytes;
static uint64_t (*ranges)[2];           /* the data ranges copied: offset, length */
static size_t nranges, ranges_cap;
static uintptr_t pins[MAX_PINS][2];
static bool child_has_heap;
static sigset_t saved_mask;

/* ---- the data ranges of the arena file ---- */

static int add_range(uint64_t off, uint64_t len)
{
    if (nranges == ranges_cap) {
        size_t cap = ranges_cap ? ranges_cap * 2 : 512;
        void *p;
        int err = ranges ? mesh_os_remap(ranges, ranges_cap * sizeof *ranges, cap * sizeof *ranges, true, &p)
                         : mesh_os_map_anon(cap * sizeof *ranges, MESH_PAGE_SIZE, &p);
        if (err)
            return err;
        ranges = p;
        ranges_cap = cap;
    }
    ranges[nranges][0] = off;
    ranges[nranges][1] = len;
    nranges++;
    return 0;
}

/* The ranges of [0, frontier) that hold data: what SEEK_DATA finds in the
 * file, or without the file, every span not free. */
static uint32_t file_end(void)
{
    return A.frontier < A.file_pages ? A.frontier : A.file_pages;
}

static int find_ranges(void)
{
    uint64_t limit = (uint64_t)file_end() << MESH_PAGE_SHIFT, pos = 0;
    int err = 0;
    nranges = 0;
    if (mesh_arena_fd_is_ours_locked()) {
        uint64_t data, hole;
        while (pos < limit && (err = mesh_os_seek_data(A.fd, pos, &data, &hole)) == 0 && data < limit) {
            if (hole > limit)
                hole = limit;
            if ((err = add_range(data, hole - data)) != 0)
                return err;
            pos = hole;
        }
        return err == ENXIO ? 0 : err;
    }
    uint32_t end = file_end();
    for (uint32_t p = 0; p < end;) {
        mesh_miniheap_t *mh = &A.records[atomic_load_explicit(&A.table[p], memory_order_relaxed)];
        uint32_t n = p + mh->npages < end ? mh->npages : end - p;
        if (mh->kind != MESH_KIND_FREE &&
            (err = add_range((uint64_t)p << MESH_PAGE_SHIFT, (uint64_t)n << MESH_PAGE_SHIFT)) != 0)
            return err;
        p += mh->npages;
    }
    return 0;
}

/* ---- protection ---- */

static int by_start(const void *a, const void *b)
{
    uintptr_t x = ((const uintptr_t *)a)[0], y = ((const uintptr_t *)b)[0];
    return x < y ? -1 : x > y;
}

/* Makes the file-backed part in use read-only but for the pinned
 * buffers' pages. */
static void protect(void)
{
    size_t n = mesh_pins_collect(pins, MAX_PINS);
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && by_start(pins[j - 1], pins[j]) > 0; j--) {
            uintptr_t t0 = pins[j][0], t1 = pins[j][1];
            pins[j][0] = pins[j - 1][0];
            pins[j][1] = pins[j - 1][1];
            pins[j - 1][0] = t0;
            pins[j - 1][1] = t1;
        }
    uintptr_t p = (uintptr_t)A.base, end = p + ((uintptr_t)file_end() << MESH_PAGE_SHIFT);
    for (size_t i = 0; i < n && p < end; i++) {
        uintptr_t ps = pins[i][0] & ~(MESH_PAGE_SIZE - 1);
        uintptr_t pe = (pins[i][1] + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
        if (ps > p)
            mesh_os_protect((void *)p, (ps < end ? ps : end) - p, false);
        if (pe > p)
            p = pe;
    }
    if (p < end)
        mesh_os_protect((void *)p, end - p, false);
}

/* ---- the copy ---- */

/* The child's file is as large as the parent's, which RLIMIT_FSIZE
 * allowed: unless the program lowered it since (then no SIGXFSZ: EFBIG). */
static int size_file(int fd)
{
    uint64_t bytes = (uint64_t)A.file_pages << MESH_PAGE_SHIFT;
    return bytes > mesh_os_file_size_limit() ? EFBIG : mesh_os_truncate(fd, bytes);
}

static int copy_to_file(int fd)
{
    int err = size_file(fd);
    for (size_t i = 0; i < nranges && !err; i++)
        err = mesh_os_pwrite_all(fd, A.base + ranges[i][0], ranges[i][1], ranges[i][0]);
    return err;
}

static int copy_to_stage(void)
{
    void *p;
    stage_bytes = (uint64_t)file_end() << MESH_PAGE_SHIFT;
    if (!stage_bytes)
        return 0;
    int err = mesh_os_map_reserve(stage_bytes, &p);
    if (err)
        return err;
    stage = p;
    for (size_t i = 0; i < nranges; i++)
        memcpy(stage + ranges[i][0], A.base + ranges[i][0], ranges[i][1]);
    /* The ranges are the file's; a meshed alias's own file pages are holes,
     * and a child that keeps the stage as its heap needs its bytes at its
     * virtual address: they are its head's, read through the alias. */
    for (uint32_t id = 1; id < A.nrecords; id++) {
        const mesh_miniheap_t *a = &A.records[id];
        if (a->kind == MESH_KIND_ALIAS && a->span_page + a->npages <= file_end()) {
            size_t off = (size_t)a->span_page << MESH_PAGE_SHIFT;
            memcpy(stage + off, A.base + off, (size_t)a->npages << MESH_PAGE_SHIFT);
        }
    }
    return 0;
}

static uint64_t copied_bytes(void)
{
    uint64_t b = 0;
    for (size_t i = 0; i < nranges; i++)
        b += ranges[i][1];
    return b;
}

/* ---- the three steps ---- */

/* The prepare step: every allocator lock is held. */
void mesh_fork_prepare(void)
{
    sigset_t all;
    sigfillset(&all);
    mesh_signals_strip(&all);
    /* No handler of the program may run on this thread while the heap is
     * read-only: it could only wait for this very thread. */
    mesh_os_sigmask(SIG_BLOCK, &all, &saved_mask);
    child_has_heap = false;
    fork_errno = 0;
    stage = NULL;
    A.fork_fd = -1;
    nranges = 0;
    if (A.file_pages == 0)
        return; /* a private arena: the kernel copies it on write */
    mesh_barrier_install();
    mesh_barrier_fork_begin();
    protect();

    int fd, err = find_ranges();
    if (!err && mesh_os_memfd("mesh-arena", &fd) == 0) {
        mesh_os_dup_high(fd, &fd);
        if (copy_to_file(fd) == 0)
            A.fork_fd = fd;
        else
            mesh_os_close(fd);
    }
    if (!err && A.fork_fd < 0)
        err = copy_to_stage();
    fork_errno = err;
    if (!err)
        MESH_STAT_ADD(fork_copy_bytes, copied_bytes());
}

void mesh_fork_parent(void)
{
    if (A.file_pages) {
        mesh_os_protect(A.base, (size_t)file_end() << MESH_PAGE_SHIFT, true);
        mesh_barrier_fork_end();
    }
    if (A.fork_fd >= 0)
        mesh_os_close(A.fork_fd);
    A.fork_fd = -1;
    if (stage)
        mesh_os_unmap(stage, stage_bytes);
    stage = NULL;
    mesh_os_sigmask(SIG_SETMASK, &saved_mask, NULL);
}

/* The child's own file: the one the parent filled, or one made here from
 * the staged copy, in the place of the parent's descriptor. */
static int child_file(int *fd_out)
{
    if (A.fork_fd >= 0) {
        *fd_out = A.fork_fd;
        return 0;
    }
    if (fork_errno)
        return fork_errno;
    if (A.fd >= 0)
        mesh_os_close(A.fd);
    A.fd = -1;
    int fd, err = mesh_os_memfd("mesh-arena", &fd);
    if (err)
        return err;
    mesh_os_dup_high(fd, &fd);
    err = size_file(fd);
    for (size_t i = 0; i < nranges && !err; i++)
        err = mesh_os_pwrite_all(fd, stage + ranges[i][0], ranges[i][1], ranges[i][0]);
    if (err) {
        mesh_os_close(fd);
        return err;
    }
    *fd_out = fd;
    return 0;
}

/* A child that cannot make a memfd of its own keeps the staged copy as
 * its heap: moved over the file-backed part (page tables move, no bytes),
 * the whole arena private, nothing meshed from now on.  The staged copy
 * is the heap as the program saw it, every virtual page with its own
 * bytes: a meshed alias keeps a private copy of its head's pages. */
static void keep_stage_private(int err)
{
    void *p;
    size_t file_bytes = (size_t)A.file_pages << MESH_PAGE_SHIFT;
    if (stage_bytes < file_bytes &&
        mesh_os_map_fixed_anon(A.base + stage_bytes, file_bytes - stage_bytes) != 0)
        mesh_fatal_errno("fork: could not give the child its own copy of the heap", err, "");
    if (stage_bytes && mesh_os_remap_fixed(stage, stage_bytes, A.base, &p) != 0)
        mesh_fatal_errno("fork: could not give the child its own copy of the heap", err, "");
    stage = NULL;
    __atomic_store_n(&A.file_pages, 0, __ATOMIC_RELEASE);
    A.file_full = true;
    A.fd = -1;
    A.fork_fd = -1;
    A.no_file = "the fork child could not make a memfd";
    mesh_opt.meshing = 0;
}

/* Switches the child's arena to a heap of its own before the program
 * writes to it.  Runs once, from the fork handler or from the write
 * barrier's, whichever comes first. */
void mesh_fork_child_heap(void)
{
    if (child_has_heap || A.file_pages == 0)
        return;
    child_has_heap = true;
    int fd, err = child_file(&fd);
    void *p;
    if (err && stage) {
        keep_stage_private(err);
        return;
    }
    if (err || (err = mesh_os_map_shared(A.base, (size_t)A.file_pages << MESH_PAGE_SHIFT, fd, 0, true, false, &p)) != 0)
        mesh_fatal_errno("fork: could not give the child its own copy of the heap", err,
                         "; stopping the child rather than sharing the parent's heap");
    if (A.fd >= 0 && A.fd != fd)
        mesh_os_close(A.fd);
    A.fd = fd;
    A.fork_fd = -1;
    mesh_os_fd_identity(A.fd, &A.fd_dev, &A.fd_ino);
    if (stage)
        mesh_os_unmap(stage, stage_bytes);
    stage = NULL;
    /* The new mapping is all identity: stale spans map their own pages,
     * and every alias must be made an alias again. */
    mesh_arena_forget_stale_locked();
    for (uint32_t id = 1; id < A.nrecords; id++) {
        mesh_miniheap_t *a = &A.records[id];
        if (a->kind == MESH_KIND_ALIAS &&
            (err = mesh_arena_map_at_locked(a->span_page, a->npages, mesh_alias_head(a)->span_page, false)) != 0)
            mesh_fatal_errno("fork: could not map a meshed span in the child", err, "; stopping the child");
    }
}

void mesh_fork_child(void)
{
    mesh_fork_child_heap();
    mesh_os_sigmask(SIG_SETMASK, &saved_mask, NULL);
}
