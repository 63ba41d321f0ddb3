/*
 * What each page of the arena maps (docs/design.md, Meshing): the remap
 * of a virtual range onto file pages (identity, or a head's pages for an
 * alias), the file page a virtual page shows, what a remap costs in the
 * kernel's mappings, and the end of a chain: its aliases become stale
 * spans, mapped as they were, until their pages are wanted.  The arena
 * lock is held throughout (mesh_arena_file_page reads without it).
 */
#define _GNU_SOURCE
#include <errno.h>

#include "internal.h"

#define A mesh_arena

/* Maps npages of the arena at vpage onto the file's pages at file_page:
 * identity when they are equal, an alias when they are not.  populate:
 * the file pages are all present, and their page-table entries are filled
 * in now rather than by a fault on each first touch. */
int mesh_arena_map_at_locked(uint32_t vpage, uint32_t npages, uint32_t file_page, bool populate)
{
    void *p;
    /* Private memory (a fork child that kept its copy so): a virtual span
     * has pages of its own already; going back to them means zeros. */
    if (vpage == file_page && vpage >= A.file_pages)
        return mesh_os_dontneed(A.base + ((size_t)vpage << MESH_PAGE_SHIFT), (size_t)npages << MESH_PAGE_SHIFT);
    if (!mesh_arena_fd_is_ours_locked())
        return EBADF;
    return mesh_os_map_shared(A.base + ((size_t)vpage << MESH_PAGE_SHIFT), (size_t)npages << MESH_PAGE_SHIFT, A.fd,
                              (uint64_t)file_page << MESH_PAGE_SHIFT, true, populate, &p);
}

/* The file page mapped at virtual page vpage: an alias's pages map its
 * head's, every other page its own.  Read without locks (only an estimate
 * may rest on it: an alias can go back to its own pages meanwhile). */
uint32_t mesh_arena_file_page(uint32_t vpage)
{
    mesh_miniheap_t *r = mesh_rec(mesh_arena_table_get(vpage));
    if (vpage - r->span_page >= r->npages)
        return vpage;
    if (r->kind == MESH_KIND_ALIAS)
        return mesh_alias_head(r)->span_page + (vpage - r->span_page);
    if (r->kind == MESH_KIND_FREE && r->state == MESH_MH_FREE_STALE)
        return r->stale_file + (vpage - r->span_page);
    return vpage;
}

/* How many mappings the kernel keeps more (or fewer) once the npages at
 * vpage map the file from new_file instead of old_file.  A mapping ends
 * where neighbouring virtual pages stop mapping neighbouring file pages;
 * the kernel merges the rest.  Meshing spans whose neighbours were meshed
 * onto the neighbours of their partner adds none. */
int mesh_arena_remap_cost(uint32_t vpage, uint32_t npages, uint32_t old_file, uint32_t new_file)
{
    int cost = 0;
    if (vpage > 0) {
        uint32_t left = mesh_arena_file_page(vpage - 1) + 1;
        cost += (left != new_file) - (left != old_file);
    }
    if (vpage + npages < A.npages) {
        uint32_t right = mesh_arena_file_page(vpage + npages) - npages;
        cost += (right != new_file) - (right != old_file);
    }
    return cost;
}

/* A chain's last object is gone.  Each alias still maps the head's pages;
 * giving it its own back (an identity mapping of its own file range,
 * punched when it was meshed) costs a system call an alias, which a heap
 * torn down at exit pays for nothing: in redis-like's teardown, 18 k of
 * them took 0.2-0.5 s.  So the aliases become stale free spans, mapped as
 * they were, and are restored only when their pages are wanted
 * (mesh_arena_reclaim_stale_locked).  Until then nothing is handed out of
 * them, and the head's pages, reused or punched as any free page, are
 * what they show. */
void mesh_arena_release_aliases_locked(mesh_miniheap_t *head)
{
    uint32_t id = head->mesh_next;
    head->mesh_next = 0;
    while (id) {
        mesh_miniheap_t *a = mesh_rec(id);
        id = a->mesh_next;
        a->mesh_next = 0;
        A.active_pages -= a->npages;
        atomic_fetch_sub_explicit(&mesh_stats.meshed_pages, a->npages, memory_order_relaxed);
        atomic_fetch_add_explicit(&a->gen, 1, memory_order_relaxed);
        mesh_arena_insert_free_locked(a, a->span_page, a->npages, MESH_MH_FREE_STALE);
        a->stale_file = head->span_page;
    }
}

/* Restores up to max stale spans, newest first: each gets its identity
 * mapping back and becomes clean free pages.  Returns how many were
 * restored; a span the arena file can no longer map is retired instead
 * (its range is given up, as an alias's is when the file is lost). */
uint32_t mesh_arena_reclaim_stale_locked(uint32_t max)
{
    uint32_t n = 0;
    while (A.stale && n < max) {
        mesh_miniheap_t *a = mesh_rec(A.stale);
        uint32_t page = a->span_page, npages = a->npages;
        int cost = mesh_arena_remap_cost(page, npages, a->stale_file, page);
        mesh_arena_stale_remove_locked(a);
        n++;
        if (mesh_arena_map_at_locked(page, npages, page, false) != 0) {
            a->kind = MESH_KIND_RETIRED;
            a->state = MESH_MH_NONE;
            MESH_STAT_ADD(retired_pages, npages);
            continue;
        }
        mesh_maps_add(cost);
        MESH_STAT_ADD(unmesh_count, 1);
        mesh_arena_insert_free_locked(a, page, npages, MESH_MH_FREE_CLEAN);
    }
    return n;
}

/* In a fork child, whose new mapping is all identity: the stale spans map
 * their own (empty) pages already. */
void mesh_arena_forget_stale_locked(void)
{
    while (A.stale) {
        mesh_miniheap_t *a = mesh_rec(A.stale);
        mesh_arena_stale_remove_locked(a);
        mesh_arena_insert_free_locked(a, a->span_page, a->npages, MESH_MH_FREE_CLEAN);
    }
}

int mesh_arena_protect(uint32_t vpage, uint32_t npages, bool writable)
{
    return mesh_os_protect(A.base + ((size_t)vpage << MESH_PAGE_SHIFT), (size_t)npages << MESH_PAGE_SHIFT, writable);
}
