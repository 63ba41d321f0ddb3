/*
 * Giving the arena's pages back to the OS: a hole punched in the memfd
 * (which frees the pages of every virtual span mapped onto them), the
 * check that the descriptor is still ours before punching through it, and
 * what the file holds.  Which free spans to punch, and when, is arena.c's
 * scavenge; everything here runs under mesh_arena.lock or takes it.
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
