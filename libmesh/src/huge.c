/*
 * Allocations the arena cannot hold.  The arena is a large reservation, not
 * a ceiling (the original Mesh aborts past its 64 GiB): when it has no room
 * for a large object, the object gets a private mapping of its own, recorded
 * here so that free, realloc and malloc_usable_size recognise it.  Such
 * objects are never meshed.  Under an address-space limit the arena is
 * small and they can be most of the heap (a million of them), so they are
 * kept in an open-addressing hash table keyed by address: linear probing,
 * at most half full, grown by doubling into a new mapping; deletion shifts
 * the entries after a freed slot back, so no tombstones pile up.
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"

typedef struct huge_entry {
    char *addr;    /* NULL: an empty slot */
    size_t size;   /* bytes mapped */
} huge_entry_t;

#define MIN_SLOTS 256

static pthread_mutex_t huge_lock = PTHREAD_MUTEX_INITIALIZER;
static huge_entry_t *slots;
static size_t nslots, nentries;  /* nslots: 0 or a power of two; nentries <= nslots / 2 */
static uint64_t huge_bytes;

/* Mappings are page-aligned: the page number, scattered by a multiply. */
static size_t home_of(const void *p)
{
    return (size_t)(((uint64_t)(uintptr_t)p >> MESH_PAGE_SHIFT) * 0x9e3779b97f4a7c15ULL >> 32) & (nslots - 1);
}

static void put_locked(huge_entry_t e)
{
    size_t i = home_of(e.addr);
    while (slots[i].addr)
        i = (i + 1) & (nslots - 1);
    slots[i] = e;
    nentries++;
}

/* Room for one more entry, keeping the table at most half full. */
static bool reserve_slot_locked(void)
{
    if (2 * (nentries + 1) <= nslots)
        return true;
    size_t n = nslots ? nslots * 2 : MIN_SLOTS, old_n = nslots;
    huge_entry_t *old = slots;
    void *p;
    if (mesh_os_map_anon(n * sizeof *slots, MESH_PAGE_SIZE, &p) != 0)
        return false;
    slots = p;
    nslots = n;
    nentries = 0;
    for (size_t i = 0; i < old_n; i++)
        if (old[i].addr)
            put_locked(old[i]);
    if (old)
        mesh_os_unmap(old, old_n * sizeof *old);
    return true;
}

static huge_entry_t *find_locked(const void *p)
{
    if (!nslots || !p)
        return NULL;
    for (size_t i = home_of(p); slots[i].addr; i = (i + 1) & (nslots - 1))
        if (slots[i].addr == p)
            return &slots[i];
    return NULL;
}

/* Empties e's slot and moves back every entry after it that its probe
 * sequence would no longer reach. */
static void remove_locked(huge_entry_t *e)
{
    size_t hole = (size_t)(e - slots), mask = nslots - 1;
    for (size_t j = (hole + 1) & mask; slots[j].addr; j = (j + 1) & mask) {
        size_t home = home_of(slots[j].addr);
        /* j's entry may fill the hole unless its home lies in (hole, j] */
        if (((j - home) & mask) >= ((j - hole) & mask)) {
            slots[hole] = slots[j];
            hole = j;
        }
    }
    slots[hole].addr = NULL;
    slots[hole].size = 0;
    nentries--;
}

void *mesh_huge_alloc(size_t size, size_t align)
{
    size_t bytes = (size + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
    void *p;
    if (bytes < size)
        return NULL;
    while (mesh_os_map_anon(bytes, align, &p) != 0)
        if (!mesh_arena_yield(bytes + align))
            return NULL; /* no address space, even from the arena's reservation */
    pthread_mutex_lock(&huge_lock);
    if (!reserve_slot_locked()) {
        pthread_mutex_unlock(&huge_lock);
        mesh_os_unmap(p, bytes);
        return NULL;
    }
    put_locked((huge_entry_t){p, bytes});
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
    remove_locked(e);
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
        /* the address, and so the slot, may change */
        huge_bytes = huge_bytes - e->size + bytes;
        remove_locked(e);
        put_locked((huge_entry_t){q, bytes});
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
