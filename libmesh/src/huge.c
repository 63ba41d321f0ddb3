/*
 * Allocations the arena cannot hold.  The arena is a large reservation, not
 * a ceiling (the original Mesh aborts past its 64 GiB): when it has no room
 * for a large object, the object gets a private mapping of its own, recorded
 * here so that free, realloc and malloc_usable_size recognise it.  Such
 * objects are never meshed; they are rare, so a locked array is enough.
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"

typedef struct huge_entry {
    char *addr;
    size_t size;   /* bytes mapped */
} huge_entry_t;

static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
static huge_entry_t *entries;
static size_t nentries, capacity;
static uint64_t huge_bytes;

static bool reserve_slot_locked(void)
{
    if (nentries < capacity)
        return true;
    size_t ncap = capacity ? capacity * 2 : 256;
    void *p;
    if (entries) {
        if (mesh_os_remap(entries, capacity * sizeof *entries, ncap * sizeof *entries, true, &p) != 0)
            return false;
    } else if (mesh_os_map_anon(ncap * sizeof *entries, MESH_PAGE_SIZE, &p) != 0) {
        return false;
    }
    entries = p;
    capacity = ncap;
    return true;
}

static huge_entry_t *find_locked(const void *p)
{
    for (size_t i = 0; i < nentries; i++)
        if (entries[i].addr == p)
            return &entries[i];
    return NULL;
}

void *mesh_huge_alloc(size_t size, size_t align)
{
    size_t bytes = (size + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
    void *p;
    if (bytes < size || mesh_os_map_anon(bytes, align, &p) != 0)
        return NULL;
    pthread_mutex_lock(&huge_lock);
    if (!reserve_slot_locked()) {
        pthread_mutex_unlock(&huge_lock);
        mesh_os_unmap(p, bytes);
        return NULL;
    }
    entries[nentries++] = (huge_entry_t){p, bytes};
    huge_bytes += bytes;
    pthread_mutex_unlock(&huge_lock);
    MESH_STAT_ADD(huge_alloc_count, 1);
    return p;
}

bool mesh_huge_owns(const void *p, size_t *size)
{
    pthread_mutex_lock(&huge_lock);
    huge_entry_t *e = find_locked(p);
    if (e && size)
        *size = e->size;
    pthread_mutex_unlock(&huge_lock);
    return e != NULL;
}

bool mesh_huge_free(void *p)
{
    pthread_mutex_lock(&huge_lock);
    huge_entry_t *e = find_locked(p);
    if (!e) {
        pthread_mutex_unlock(&huge_lock);
        return false;
    }
    size_t size = e->size;
    *e = entries[--nentries];
    huge_bytes -= size;
    pthread_mutex_unlock(&huge_lock);
    mesh_os_unmap(p, size);
    return true;
}

/* Resizes with mremap, which moves page-table entries instead of bytes. */
void *mesh_huge_realloc(void *p, size_t size)
{
    size_t bytes = (size + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
    if (bytes < size)
        return NULL;
    pthread_mutex_lock(&huge_lock);
    huge_entry_t *e = find_locked(p);
    void *q = NULL;
    if (e && mesh_os_remap(p, e->size, bytes, true, &q) == 0) {
        huge_bytes = huge_bytes - e->size + bytes;
        e->addr = q;
        e->size = bytes;
    }
    pthread_mutex_unlock(&huge_lock);
    return q;
}

uint64_t mesh_huge_bytes(void)
{
    pthread_mutex_lock(&huge_lock);
    uint64_t b = huge_bytes;
    pthread_mutex_unlock(&huge_lock);
    return b;
}

void mesh_huge_fork_prepare(void)
{
    pthread_mutex_lock(&huge_lock);
}

void mesh_huge_fork_parent(void)
{
    pthread_mutex_unlock(&huge_lock);
}

void mesh_huge_fork_child(void)
{
    pthread_mutex_init(&huge_lock, NULL);
}
