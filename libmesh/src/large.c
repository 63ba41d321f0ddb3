/*
 * Large objects, above MESH_MAX_SMALL: a span each, straight from the
 * arena's page allocator, page-aligned (or more, for aligned requests), and
 * never meshed.  Freeing one gives its pages back to the arena's free
 * spans; a realloc grows or shrinks it in place when the neighbouring pages
 * allow.  What the arena cannot hold gets a mapping of its own (huge.c).
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"

void *mesh_large_alloc(size_t size, size_t align, bool zero)
{
    size_t npages = (size + MESH_PAGE_SIZE - 1) >> MESH_PAGE_SHIFT;
    size_t align_pages = align > MESH_PAGE_SIZE ? align >> MESH_PAGE_SHIFT : 1;
    mesh_miniheap_t *mh = NULL;
    bool clean = true;
    if (npages <= mesh_arena.npages && align_pages <= mesh_arena.npages) {
        mesh_arena_lock();
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

void mesh_large_free(mesh_miniheap_t *mh, void *p)
{
    mesh_arena_lock();
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
void *mesh_large_realloc(mesh_miniheap_t *mh, void *p, size_t size)
{
    size_t npages = (size + MESH_PAGE_SIZE - 1) >> MESH_PAGE_SHIFT;
    bool ok = false;
    if (npages > mesh_arena.npages)
        return NULL;
    mesh_arena_lock();
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
