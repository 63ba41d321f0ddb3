/*
 * The arena's address space and the file behind it: how much is reserved,
 * and the part made usable as the heap grows.
 *
 * Everything is reserved PROT_NONE up front (the range, the page table, the
 * record and trimmed arrays) and mapped read-write ahead of use, in steps:
 * mlockall(MCL_CURRENT) then locks only what is in use, and what the heap
 * grows into is a new mapping, locked only under MCL_FUTURE, as a heap
 * growing under glibc is.  Under RLIMIT_AS the reservation is sized from
 * what the limit leaves.
 *
 * The memfd grows with the usable range, never past RLIMIT_FSIZE (a file
 * grown past it raises SIGXFSZ; a shared page past the file's end SIGBUS).
 * Where the file can grow no more (that limit, a lost descriptor) or there
 * is no memfd at all (a sandbox that forbids memfd_create, too few
 * descriptors), the rest of the range is private anonymous memory: it works
 * as any heap does, but is not meshed (mesh_arena_page_in_file), and its
 * pages go back with MADV_DONTNEED.
 *
 * That leaves the program a margin only: when it runs out of address space
 * (mmap, a thread's stack) the arena gives up the unused end of its
 * reservation (mesh_arena_yield), so that address space goes where it is
 * needed first, as it does under glibc.
 *
 * The _locked functions are called with mesh_arena.lock held;
 * mesh_arena_yield, and the interposed calls through it, take it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/mman.h>

#include "internal.h"

#define A mesh_arena

static bool sized_by_limit;  /* the reservation takes nearly all RLIMIT_AS leaves */

/* Metadata reserved per arena page: its table entry and, since a span
 * takes a page at least, a record, a trimmed word and the mesher's index
 * (mesh.c). */
#define META_PER_PAGE (sizeof(uint32_t) + sizeof(mesh_miniheap_t) + 2 * sizeof(uint32_t))

/* The reservation to ask for.  Under RLIMIT_AS every reserved byte counts
 * against the limit whether it is used or not, so the arena and its
 * metadata take what the process has not mapped yet, less a 32nd (at
 * least 16 MiB) left for the program's own mappings, thread stacks and
 * blocks too large for what remains of the arena. */
static size_t arena_bytes_wanted(void)
{
    size_t bytes = (size_t)mesh_opt.arena_gb << 30;
    uint64_t limit, mapped;
    mesh_os_address_space(&limit, &mapped);
    if (limit == UINT64_MAX)
        return bytes;
    uint64_t avail = limit > mapped ? limit - mapped : 0;
    uint64_t margin = avail / 32 > (16U << 20) ? avail / 32 : 16U << 20;
    uint64_t fit = avail > margin ? (avail - margin) / (MESH_PAGE_SIZE + META_PER_PAGE) * MESH_PAGE_SIZE : 0;
    if (fit < bytes) {
        bytes = (size_t)fit;
        sized_by_limit = true;
    }
    return bytes < MESH_MIN_ARENA_BYTES ? MESH_MIN_ARENA_BYTES : bytes;
}

static void unmap_all(void *base, size_t bytes, void *table, void *records, void *trimmed)
{
    uint64_t npages = bytes >> MESH_PAGE_SHIFT, nrec = npages < MESH_MAX_RECORDS ? npages : MESH_MAX_RECORDS;
    if (base)
        mesh_os_unmap(base, bytes);
    if (table)
        mesh_os_unmap(table, (npages + 1) * sizeof(uint32_t));
    if (records)
        mesh_os_unmap(records, nrec * sizeof(mesh_miniheap_t));
    if (trimmed)
        mesh_os_unmap(trimmed, nrec * sizeof(uint32_t));
}

/* Reserves the range and its metadata, all PROT_NONE.  The table has one
 * entry more than the arena has pages: readers look at the page after a
 * span, which may be the first one not handed out. */
static int reserve(size_t bytes)
{
    uint64_t npages = bytes >> MESH_PAGE_SHIFT;
    uint32_t nrec = npages < MESH_MAX_RECORDS ? (uint32_t)npages : MESH_MAX_RECORDS;
    void *base = NULL, *table = NULL, *records = NULL, *trimmed = NULL;
    int err;
    if ((err = mesh_os_map_none(bytes, &base)) != 0 ||
        (err = mesh_os_map_none((npages + 1) * sizeof(uint32_t), &table)) != 0 ||
        (err = mesh_os_map_none((size_t)nrec * sizeof(mesh_miniheap_t), &records)) != 0 ||
        (err = mesh_os_map_none((size_t)nrec * sizeof(uint32_t), &trimmed)) != 0) {
        unmap_all(base, bytes, table, records, trimmed);
        return err;
    }
    A.base = base;
    A.bytes = bytes;
    A.npages = (uint32_t)npages;
    A.max_records = nrec;
    A.table = table;
    A.records = records;
    A.trimmed = trimmed;
    return 0;
}

/* The memfd, above the descriptors programs use.  Without one (a seccomp
 * filter that denies memfd_create; an RLIMIT_NOFILE so low that no
 * descriptor from 100 up is free, where every descriptor the program may
 * open is one it can count on), the arena is private memory and nothing is
 * meshed: said once on stderr, and in the MALLOCSTATS summary. */
static void open_file(void)
{
    int fd, err;
    if ((err = mesh_os_memfd("mesh-arena", &fd)) != 0) {
        A.no_file = "memfd_create failed";
    } else if ((err = mesh_os_dup_high(fd, &fd)) != 0) {
        mesh_os_close(fd);
        A.no_file = "no file descriptor from 100 up is free";
    } else {
        A.fd = fd;
        mesh_os_fd_identity(fd, &A.fd_dev, &A.fd_ino);
        return;
    }
    A.file_full = true;
    mesh_opt.meshing = 0;
    char buf[256];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, A.no_file);
    mesh_buf_str(&b, " (errno ");
    mesh_buf_u64(&b, (uint64_t)err);
    mesh_buf_str(&b, "): the heap is private memory, meshing is off");
    mesh_warn(buf);
}

int mesh_arena_init(void)
{
    /* Under an address-space limit that the estimate misjudged, take what
     * can be had. */
    size_t bytes = arena_bytes_wanted();
    int err;
    while ((err = reserve(bytes)) != 0) {
        bytes = bytes / 2 & ~(MESH_PAGE_SIZE - 1);
        if (bytes < MESH_MIN_ARENA_BYTES / 2)
            return err;
    }
    open_file();
    A.nrecords = 1; /* id 0 means "no span" */
    if (!mesh_arena_records_cover_locked(1) || !mesh_reserve_grow(A.table, (A.npages + 1) * sizeof(uint32_t), &A.table_usable, 1))
        return ENOMEM;
    return 0;
}

/* Makes [0, need) of a PROT_NONE reservation of `reserved` bytes at base
 * read-write; *usable bytes already are.  Grows by an eighth at least
 * (and 64 KiB), so that a growing heap makes few calls. */
bool mesh_reserve_grow(void *base, size_t reserved, size_t *usable, size_t need)
{
    if (need <= *usable)
        return true;
    if (need > reserved)
        return false;
    size_t want = *usable + *usable / 8;
    want = (want > need ? want : need) + 65535;
    want &= ~(size_t)65535;
    if (want > reserved)
        want = reserved;
    if (mesh_os_map_fixed_anon((char *)base + *usable, want - *usable) != 0)
        return false;
    *usable = want;
    return true;
}

/* mlockall(MCL_CURRENT) marks every mapping locked, reservations too: no
 * memory is locked there (a PROT_NONE page cannot be faulted in), but the
 * kernel counts them in VmLck and against RLIMIT_MEMLOCK.  This takes the
 * unused part of a reservation out again; what is mapped over it later is
 * locked only under MCL_FUTURE, as a heap growing under glibc is. */
void mesh_reserve_unlock(void *base, size_t reserved, size_t usable)
{
    if (base && usable < reserved)
        mesh_os_munlock((char *)base + usable, reserved - usable);
}

void mesh_arena_unlock_reserved(void)
{
    mesh_arena_lock();
    size_t rec_usable = A.records_usable / sizeof(mesh_miniheap_t);
    mesh_reserve_unlock(A.base, A.bytes, (size_t)A.accessible << MESH_PAGE_SHIFT);
    mesh_reserve_unlock(A.table, ((size_t)A.npages + 1) * sizeof(uint32_t), A.table_usable);
    mesh_reserve_unlock(A.records, (size_t)A.max_records * sizeof(mesh_miniheap_t), A.records_usable);
    mesh_reserve_unlock(A.trimmed, (size_t)A.max_records * sizeof(uint32_t), rec_usable * sizeof(uint32_t));
    pthread_mutex_unlock(&A.lock);
}

/* How far the file may grow, in pages, without passing RLIMIT_FSIZE. */
static uint32_t file_room(uint32_t to)
{
    uint64_t limit = mesh_os_file_size_limit() >> MESH_PAGE_SHIFT;
    return limit < to ? (uint32_t)limit : to;
}

/* Makes the arena usable up to page `end` at least (a step ahead, so that
 * a growing heap makes few calls): the table first, then the file, as far
 * as RLIMIT_FSIZE lets it grow (a page past the file's end would raise
 * SIGBUS, a file grown past the limit SIGXFSZ), then private memory for the
 * rest once the file can grow no more.  False when the address space or
 * the mappings run out. */
bool mesh_arena_grow_locked(uint32_t end)
{
    if (end <= A.accessible)
        return true;
    if (end > A.npages)
        return false;
    uint64_t step = A.accessible / 8;
    step = step < MESH_GROW_MIN_PAGES ? MESH_GROW_MIN_PAGES : step > MESH_GROW_MAX_PAGES ? MESH_GROW_MAX_PAGES : step;
    uint64_t to = (uint64_t)A.accessible + step > end ? (uint64_t)A.accessible + step : end;
    to = (to + MESH_GROW_MIN_PAGES - 1) & ~(uint64_t)(MESH_GROW_MIN_PAGES - 1);
    if (to > A.npages)
        to = A.npages;
    if (!mesh_reserve_grow(A.table, (A.npages + 1) * sizeof(uint32_t), &A.table_usable, (to + 1) * sizeof(uint32_t)))
        return false;
    if (!A.file_full) {
        uint32_t fend = file_room((uint32_t)to);
        void *p;
        if (fend > A.file_pages &&
            (!mesh_arena_fd_is_ours_locked() || mesh_os_truncate(A.fd, (uint64_t)fend << MESH_PAGE_SHIFT) != 0 ||
             mesh_os_map_shared(A.base + ((size_t)A.file_pages << MESH_PAGE_SHIFT),
                                (size_t)(fend - A.file_pages) << MESH_PAGE_SHIFT, A.fd,
                                (uint64_t)A.file_pages << MESH_PAGE_SHIFT, true, false, &p) != 0))
            fend = A.file_pages;
        if (fend < to)
            A.file_full = true;
        __atomic_store_n(&A.file_pages, fend, __ATOMIC_RELEASE);
        A.accessible = fend;
    }
    if (A.accessible < to &&
        mesh_os_map_fixed_anon(A.base + ((size_t)A.accessible << MESH_PAGE_SHIFT),
                               (size_t)(to - A.accessible) << MESH_PAGE_SHIFT) != 0) {
        atomic_store_explicit(&A.usable, (size_t)A.accessible << MESH_PAGE_SHIFT, memory_order_release);
        return end <= A.accessible;
    }
    A.accessible = (uint32_t)to;
    atomic_store_explicit(&A.usable, (size_t)to << MESH_PAGE_SHIFT, memory_order_release);
    return true;
}

/* Maps the record and trimmed arrays read-write up to n records, in steps
 * of an eighth (at least 1024 records: 64 KiB), so that reserved metadata
 * costs nothing and is never locked before it is used. */
bool mesh_arena_records_cover_locked(uint32_t n)
{
    size_t have = A.records_usable / sizeof(mesh_miniheap_t);
    if (n <= have)
        return true;
    size_t want = have + have / 8;
    want = (want > n ? want : n) + 1023;
    want &= ~(size_t)1023;
    if (want > A.max_records)
        want = A.max_records;
    if (mesh_os_map_fixed_anon((char *)A.records + have * sizeof(mesh_miniheap_t),
                               (want - have) * sizeof(mesh_miniheap_t)) != 0 ||
        mesh_os_map_fixed_anon(A.trimmed + have, (want - have) * sizeof(uint32_t)) != 0)
        return false;
    A.records_usable = want * sizeof(mesh_miniheap_t);
    return true;
}

/* Gives up at least `bytes` (16 MiB at least) of the reservation's end, as
 * far as the part in use, when the arena was sized from RLIMIT_AS and the
 * program or a block mapped apart found no address space.  The record and
 * trimmed arrays shrink with it.  True if anything was given up. */
bool mesh_arena_yield(size_t bytes)
{
    if (!sized_by_limit)
        return false;
    uint64_t want = ((bytes < (16U << 20) ? 16U << 20 : bytes) >> MESH_PAGE_SHIFT) + MESH_GROW_MIN_PAGES - 1;
    want &= ~(uint64_t)(MESH_GROW_MIN_PAGES - 1);
    mesh_arena_lock();
    bool gave = A.npages > A.accessible;
    if (gave) {
        uint32_t n = A.npages - A.accessible > want ? (uint32_t)(A.npages - want) : A.accessible;
        mesh_os_unmap(A.base + ((size_t)n << MESH_PAGE_SHIFT), (size_t)(A.npages - n) << MESH_PAGE_SHIFT);
        uint32_t nrec = n < MESH_MAX_RECORDS ? n : MESH_MAX_RECORDS;
        size_t rec_usable = A.records_usable / sizeof(mesh_miniheap_t);
        if (nrec < A.max_records && nrec >= rec_usable) {
            size_t r0 = ((size_t)nrec * sizeof(mesh_miniheap_t) + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
            size_t t0 = ((size_t)nrec * sizeof(uint32_t) + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
            size_t r1 = (size_t)A.max_records * sizeof(mesh_miniheap_t), t1 = (size_t)A.max_records * sizeof(uint32_t);
            if (r1 > r0)
                mesh_os_unmap((char *)A.records + r0, r1 - r0);
            if (t1 > t0)
                mesh_os_unmap((char *)A.trimmed + t0, t1 - t0);
            A.max_records = nrec;
        }
        A.npages = n;
        A.bytes = (size_t)n << MESH_PAGE_SHIFT;
    }
    pthread_mutex_unlock(&A.lock);
    return gave;
}

/* The program's mmap: on ENOMEM, the arena gives up address space and the
 * call is tried again. */
MESH_EXPORT void *mmap(void *addr, size_t bytes, int prot, int flags, int fd, off_t off)
{
    for (;;) {
        void *p = mesh_os_mmap(addr, bytes, prot, flags, fd, off);
        if (p != MAP_FAILED || errno != ENOMEM || (flags & MAP_FIXED) || !mesh_arena_yield(bytes))
            return p;
    }
}

extern __typeof__(mmap) mmap64 __attribute__((alias("mmap"), visibility("default")));

/* A thread's stack is mapped inside libc, out of mmap's reach: a thread
 * that could not be made for want of address space is tried again. */
MESH_EXPORT int pthread_create(pthread_t *thread, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
    static __typeof__(pthread_create) *real;
    if (!real)
        real = (__typeof__(pthread_create) *)dlsym(RTLD_NEXT, "pthread_create");
    int rc;
    while ((rc = real(thread, attr, start, arg)) == EAGAIN && mesh_arena_yield(0))
        ;
    return rc;
}
