/*
 * Shared types and tunables of libmesh.  Everything here is hidden from the
 * program (the library is built with -fvisibility=hidden); only the entry
 * points in libmesh.c and mesh.h are exported.
 *
 * Vocabulary: a page is 4 KiB; a span is a run of pages in
 * the arena; a miniheap is the metadata of one span; a thread heap holds one
 * shuffle vector per size class; the global heap keeps per-class lists.
 *
 * Lock order, written once for the whole library:
 *     mesher lock (mesh_mesher.lock: one mesh pass at a time)
 *       -> class lock (mesh_class_heap_t.lock, in class order)
 *         -> arena lock (mesh_arena.lock: page allocator and record pool)
 *           -> heaps lock (thread heap registry)   -> huge lock
 * Fast paths take no lock at all.  A thread the write barrier holds may
 * hold any of these but the mesher's and the meshed class's: a mesh takes
 * every other lock it needs before it protects a page.
 */
#ifndef MESH_INTERNAL_H
#define MESH_INTERNAL_H

#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "types.h"
#include "os.h"




/* ---- size_class.c ------------------------------------------------------- */


extern mesh_size_class_t mesh_classes[MESH_NUM_CLASSES];
extern uint8_t mesh_class_of_small[MESH_MAX_SMALL / 16 + 1]; /* index (size + 15) >> 4 */
void mesh_size_classes_init(void);
int mesh_size_class_aligned(size_t size, size_t align);       /* -1 when no class fits */

/* Costs one table load for sizes up to 16 KiB. */
MESH_INLINE unsigned mesh_size_class(size_t size)
{
    return mesh_class_of_small[(size + 15) >> 4];
}

/* Portable popcount: inline, where the builtin would be a library call on
 * the baseline x86-64 this is built for. */
MESH_INLINE unsigned mesh_popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ULL);
    x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0fULL;
    return (unsigned)((x * 0x0101010101010101ULL) >> 56);
}

/* Exact for every offset inside a span; checked exhaustively by the tests. */
MESH_INLINE uint32_t mesh_slot_of(uint32_t offset, uint32_t recip)
{
    return (uint32_t)(((uint64_t)offset * recip) >> 32);
}

/* ---- miniheap.c: span metadata ------------------------------------------ */


void mesh_mh_init_small(mesh_miniheap_t *mh, unsigned cls);
unsigned mesh_mh_live(const mesh_miniheap_t *mh);
void mesh_mh_valid_mask(unsigned nobjects, uint64_t mask[MESH_BITMAP_WORDS]);
bool mesh_mh_is_full_word(unsigned nobjects, unsigned w, uint64_t word);


extern mesh_arena_t mesh_arena;
void mesh_arena_lock(void);

int mesh_arena_init(void);
/* Allocate npages (aligned to align_pages), returning a new record of the given
 * kind, or NULL (ENOMEM).  *clean tells whether the pages read as zeros. */
mesh_miniheap_t *mesh_arena_alloc_span_locked(uint32_t npages, uint32_t align_pages, uint8_t kind, bool *clean);
void mesh_arena_free_span_locked(mesh_miniheap_t *mh);
/* for arena_maps.c: a free span filed, merged with its neighbours; a
 * stale span taken off its list */
void mesh_arena_insert_free_locked(mesh_miniheap_t *mh, uint32_t page, uint32_t npages, uint8_t state);
void mesh_arena_stale_remove_locked(mesh_miniheap_t *mh);
/* arena_maps.c */
void mesh_arena_release_aliases_locked(mesh_miniheap_t *head);
uint32_t mesh_arena_reclaim_stale_locked(uint32_t max);
void mesh_arena_forget_stale_locked(void);
bool mesh_arena_shrink_span_locked(mesh_miniheap_t *mh, uint32_t npages);
bool mesh_arena_grow_span_locked(mesh_miniheap_t *mh, uint32_t npages);
void mesh_arena_set_pages(mesh_miniheap_t *mh, bool every_page);
mesh_miniheap_t *mesh_arena_free_ending_at(uint32_t page);
mesh_miniheap_t *mesh_arena_free_starting_at(uint32_t page);
void mesh_arena_each_dirty_locked(bool (*fn)(mesh_miniheap_t *f, void *arg), void *arg);
void mesh_arena_clean_locked(mesh_miniheap_t *f);
bool mesh_arena_clean_head_locked(mesh_miniheap_t *f, uint32_t npages);
uint64_t mesh_arena_scavenge_locked(void);
void mesh_arena_scavenge_over_bound_locked(void);
uint64_t mesh_arena_scavenge_aged_locked(uint64_t deadline_ns, bool (*yield)(uint64_t now));
void mesh_arena_zero_span_locked(mesh_miniheap_t *mh);
uint64_t mesh_arena_resident_bytes(void);
int mesh_arena_protect(uint32_t vpage, uint32_t npages, bool writable);
uint32_t mesh_arena_file_page(uint32_t vpage);
int mesh_arena_remap_cost(uint32_t vpage, uint32_t npages, uint32_t old_file, uint32_t new_file);
void mesh_arena_punch_pages(uint32_t page, uint32_t npages);
bool mesh_arena_fd_ok(void);
int mesh_arena_map_at_locked(uint32_t vpage, uint32_t npages, uint32_t file_page, bool populate);
bool mesh_arena_fd_is_ours_locked(void);
void mesh_arena_fd_hold_locked(bool hold);
void mesh_arena_punch_locked(uint32_t page, uint32_t npages, bool use_fd);
void mesh_arena_punch_range_locked(uint32_t page, uint32_t npages, bool use_fd);
void mesh_arena_check_locked(void);
/* reserve.c */
bool mesh_arena_grow_locked(uint32_t end);
bool mesh_arena_records_cover_locked(uint32_t n);
bool mesh_arena_yield(size_t bytes);
bool mesh_reserve_grow(void *base, size_t reserved, size_t *usable, size_t need);
void mesh_reserve_unlock(void *base, size_t reserved, size_t usable);
void mesh_arena_unlock_reserved(void);

/* Whether an arena page is backed by the file, so that it can be meshed:
 * past RLIMIT_FSIZE, or with no memfd at all, the arena goes on with
 * private memory, which cannot be mapped twice.  One load. */
MESH_INLINE bool mesh_arena_page_in_file(uint32_t page)
{
    return page < __atomic_load_n(&mesh_arena.file_pages, __ATOMIC_ACQUIRE);
}

MESH_INLINE bool mesh_arena_span_in_file(const mesh_miniheap_t *mh)
{
    return mesh_arena_page_in_file(mh->span_page + mh->npages - 1);
}

MESH_INLINE uint32_t mesh_mh_id(const mesh_miniheap_t *mh)
{
    return (uint32_t)(mh - mesh_arena.records);
}

MESH_INLINE mesh_miniheap_t *mesh_rec(uint32_t id)
{
    return &mesh_arena.records[id];
}

MESH_INLINE char *mesh_mh_start(const mesh_miniheap_t *mh)
{
    return mesh_arena.base + ((size_t)mh->span_page << MESH_PAGE_SHIFT);
}

/* An alias's head: the SMALL span whose pages it maps. */
MESH_INLINE mesh_miniheap_t *mesh_alias_head(const mesh_miniheap_t *alias)
{
    return &mesh_arena.records[__atomic_load_n(&alias->head, __ATOMIC_ACQUIRE)];
}

/* The record id the page table holds for an arena page (read without the
 * lock: see arena.c on which entries are kept). */
MESH_INLINE uint32_t mesh_arena_table_get(uint32_t page)
{
    return atomic_load_explicit(&mesh_arena.table[page], memory_order_relaxed);
}

/* The lock-free page -> miniheap index: a bounds check and two loads. */
MESH_INLINE mesh_miniheap_t *mesh_arena_lookup(const void *p)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)mesh_arena.base;
    if (unlikely(off >= atomic_load_explicit(&mesh_arena.usable, memory_order_relaxed)))
        return NULL;
    uint32_t id = atomic_load_explicit(&mesh_arena.table[off >> MESH_PAGE_SHIFT], memory_order_acquire);
    return id ? &mesh_arena.records[id] : NULL;
}

/* ---- large.c: objects above MESH_MAX_SMALL, a span each ----------------- */

void *mesh_large_alloc(size_t size, size_t align, bool zero);
void mesh_large_free(mesh_miniheap_t *mh, void *p);
void *mesh_large_realloc(mesh_miniheap_t *mh, void *p, size_t size);

/* ---- huge.c: allocations the arena cannot hold ---------------------------- */

void *mesh_huge_alloc(size_t size, size_t align);
bool mesh_huge_owns(const void *p, size_t *size);
bool mesh_huge_free(void *p);
void *mesh_huge_realloc(void *p, size_t size);
uint64_t mesh_huge_bytes(void);
void mesh_huge_fork_prepare(void);
void mesh_huge_fork_parent(void);
void mesh_huge_fork_child(void);

/* ---- shuffle.c: the per-class vector of free slots ------------------------ */


/*
 * The free key: a freed small object holds mesh_free_key ^ (its address in
 * the head span) in its first 8 bytes until it is handed out again, when
 * the allocator clears them.  So a free that finds its key already there is
 * a double free, whichever thread made the first one: no per-slot state in
 * the vector is needed, and free reads only the object's own first line,
 * which the program has just used.  The key is random per process; a
 * program would have to store that exact value to be taken for a double
 * free.  Nothing in the allocator trusts the key for anything else.
 */
extern uint64_t mesh_free_key;

MESH_INLINE uint64_t mesh_key_of(const void *head_addr)
{
    return mesh_free_key ^ (uint64_t)(uintptr_t)head_addr;
}


/* malloc's fast path: a load and the store that clears the object's free
 * key.  Precondition: top > 0. */
MESH_INLINE void *mesh_sv_pop(mesh_shuffle_vector_t *sv)
{
    char *p = sv->entries[--sv->top];
    *(uint64_t *)p = 0;
    return p;
}

/* Pushes a free slot (its address in the head span), swapped with a
 * random entry when randomizing: the vector stays uniformly shuffled, one
 * step of an inside-out Fisher-Yates.  Precondition: top < MESH_SV_CAP. */
MESH_INLINE void mesh_sv_push_entry(mesh_shuffle_vector_t *sv, char *slot, mesh_rng_t *rng, bool randomize)
{
    uint32_t t = sv->top++;
    sv->entries[t] = slot;
    if (randomize) {
        uint32_t j = mesh_rng_below(rng, t + 1);
        char *x = sv->entries[j];
        sv->entries[j] = sv->entries[t];
        sv->entries[t] = x;
    }
}

/* The slot of p in a span of sv's class that starts at start, when p is
 * the start of one (the range check and the division by multiplication
 * that the free paths and the vector's slow paths share). */
MESH_INLINE bool mesh_sv_slot_in(const mesh_shuffle_vector_t *sv, const char *start, const void *p, uint32_t *slot)
{
    uintptr_t off = (uintptr_t)p - (uintptr_t)start;
    if (off >= sv->span_bytes)
        return false;
    *slot = mesh_slot_of((uint32_t)off, sv->recip);
    return *slot * sv->object_size == off;
}

/* The checks of both free fast paths: p lies in the span of mh that
 * starts at start, at a slot start, with no free key there (else it may be
 * a double free) and its bit set (else it surely is one).  Then sets
 * *slot and *key (p's free key, for the caller to store once it has room)
 * and returns true; else false, for the slow path to sort out. */
MESH_INLINE bool mesh_free_check(const mesh_shuffle_vector_t *sv, const mesh_miniheap_t *mh, const char *start,
                                 const void *p, uint32_t *slot, uint64_t *key)
{
    uint32_t s;
    uint64_t k = mesh_key_of(p);
    if (unlikely(!mesh_sv_slot_in(sv, start, p, &s) || *(const uint64_t *)p == k ||
                 !(atomic_load_explicit(&mh->bits[s >> 6], memory_order_relaxed) & (1ULL << (s & 63)))))
        return false;
    *slot = s;
    *key = k;
    return true;
}

/* free's fast path for a span this thread has attached: a bounds check, a
 * division by multiplication, two double-free checks (no free key in the
 * object, and its bitmap bit, on the record line free has just read, still
 * set), the key, a push and (at MESH_RANDOMIZE=2) one swap.  Returns false,
 * changing nothing, for anything unusual: an address outside the span, not
 * at a slot start, a key already there, a clear bit, or a full vector; the
 * slow path then sorts it out. */
MESH_INLINE bool mesh_sv_push(mesh_shuffle_vector_t *sv, const mesh_miniheap_t *mh, void *p, mesh_rng_t *rng,
                              bool randomize)
{
    uint32_t s;
    uint64_t k;
    if (!mesh_free_check(sv, mh, mesh_mh_start(mh), p, &s, &k) || unlikely(sv->top >= MESH_SV_CAP))
        return false;
    *(uint64_t *)p = k;
    mesh_sv_push_entry(sv, p, rng, randomize);
    return true;
}

/* malloc's first choice: the object this thread last freed into a span it
 * has not attached (see MESH_CACHE_CAP).  Precondition: ncached > 0. */
MESH_INLINE void *mesh_cache_pop(mesh_shuffle_vector_t *sv)
{
    void *p = sv->cached[--sv->ncached];
    *(uint64_t *)p = 0;
    return p;
}

/* free's path into a span this thread has not attached: mh is a SMALL
 * record (not an alias, so p is at the head's address of its slot).  The
 * object stays allocated in its span and goes on the cache, with its free
 * key, so that a second free of it is caught whoever makes it.  The checks
 * are mesh_sv_push's; false, changing nothing, for anything unusual or a
 * full cache. */
MESH_INLINE bool mesh_cache_push(mesh_shuffle_vector_t *sv, const mesh_miniheap_t *mh, void *p)
{
    uint32_t s;
    uint64_t k;
    if (!mesh_free_check(sv, mh, mesh_mh_start(mh), p, &s, &k) || unlikely(sv->ncached >= sv->cache_cap))
        return false;
    *(uint64_t *)p = k;
    sv->cached[sv->ncached++] = p;
    return true;
}

/* Whether the free cache is on: it reuses a thread's freed objects first,
 * which full randomization (MESH_RANDOMIZE=2) rules out; MESH_CACHE_KB=0
 * turns it off. */
MESH_INLINE bool mesh_cache_on(void)
{
    return mesh_opt.randomize < MESH_RANDOMIZE_FREE && mesh_opt.cache_kb;
}

bool mesh_sv_find(const mesh_shuffle_vector_t *sv, const void *slot);
bool mesh_sv_entry_slot(const mesh_shuffle_vector_t *sv, const char *entry, unsigned *attach_idx, unsigned *slot);
bool mesh_cache_find(const mesh_shuffle_vector_t *sv, const void *p);
void mesh_sv_init(mesh_shuffle_vector_t *sv, unsigned cls);
void mesh_sv_add_span(mesh_shuffle_vector_t *sv, mesh_miniheap_t *mh, const uint64_t free_bits[MESH_BITMAP_WORDS]);
void mesh_sv_push_slots(mesh_shuffle_vector_t *sv, unsigned i, const uint64_t bits[MESH_BITMAP_WORDS]);
void mesh_sv_shuffle(mesh_shuffle_vector_t *sv, mesh_rng_t *rng, uint32_t run);
void mesh_sv_check(const mesh_shuffle_vector_t *sv);

/* ---- thread_heap.c -------------------------------------------------------- */


extern __thread mesh_thread_heap_t *mesh_tls_heap __attribute__((tls_model("initial-exec")));

int mesh_thread_heaps_init(void);
mesh_thread_heap_t *mesh_thread_heap_get_slow(void);
void mesh_thread_heap_release(mesh_thread_heap_t *th);
void mesh_thread_heap_flush(mesh_thread_heap_t *th);
void mesh_thread_heap_period(mesh_thread_heap_t *th);
void mesh_thread_heap_tick(mesh_thread_heap_t *th, bool idle);
uint64_t mesh_thread_heaps_reserved_bytes(void);
void mesh_thread_heaps_fork_prepare(void);
void mesh_thread_heaps_fork_parent(void);
void mesh_thread_heaps_fork_child(void);

/* ---- global_heap.c --------------------------------------------------------- */


extern mesh_class_heap_t mesh_class_heaps[MESH_NUM_CLASSES];

/* The longest stalls since the last mesh event: a write held by the
 * barrier, a thread waiting for a class lock (a mesh slice that holds it
 * ends at its next check once a thread waits). */
extern _Atomic uint64_t mesh_stall_barrier_ns, mesh_stall_lock_ns, mesh_stall_scavenge_ns, mesh_stall_arena_ns;
void mesh_stall_note(_Atomic uint64_t *interval_max, _Atomic uint64_t *stat_max, uint64_t ns);
void mesh_class_lock_slow(mesh_class_heap_t *ch);

/* A class lock for the program's threads: uncontended, one trylock; else
 * the wait is timed. */
MESH_INLINE void mesh_class_lock(mesh_class_heap_t *ch)
{
    if (unlikely(pthread_mutex_trylock(&ch->lock) != 0))
        mesh_class_lock_slow(ch);
}

void mesh_global_init(void);
void mesh_global_refill(mesh_thread_heap_t *th, unsigned cls);
void mesh_global_detach_all_locked(mesh_thread_heap_t *th, unsigned cls);
void mesh_global_detach_torn_locked(mesh_thread_heap_t *th, unsigned cls);
void *mesh_global_alloc_one(unsigned cls);
void mesh_global_free_small(mesh_miniheap_t *mh, void *p);
void mesh_cache_flush(mesh_thread_heap_t *th, unsigned cls, unsigned keep);
mesh_miniheap_t *mesh_global_span_of(mesh_miniheap_t *mh, const void *p, uint32_t *slot);
uint64_t mesh_global_allocated_bytes(void);
void mesh_global_release_empty(void);
void mesh_global_fork_prepare(void);
void mesh_global_fork_parent(void);
void mesh_global_fork_child(void);
void mesh_global_check(void);
/* for mesh.c (class lock held) */
void mesh_global_list_remove_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh);
void mesh_global_place_locked(mesh_class_heap_t *ch, mesh_miniheap_t *mh);

/* ---- trim.c: unused pages of partial spans -------------------------------- */

uint64_t mesh_trim(uint64_t deadline_ns);
uint32_t mesh_trim_free_pages(const mesh_miniheap_t *mh);
void mesh_untrim(uint32_t id, uint32_t keep);

/* ---- meshing: mesh.c, mesh_match.c, mesh_pass.c, mesh_events.c (mesher.h) ------ */

/* Lock order: the mesher's lock comes before every class lock. */
void mesh_mesh_init(void);
bool mesh_maybe_mesh(uint64_t idle_ns, mesh_wait_t *wait);
void mesh_maybe_resume(void);
uint64_t mesh_idle_split_ns(uint64_t wait_ns);
void mesh_loop_woke(void);
uint64_t mesh_pass(bool forced, uint64_t budget_ns);
unsigned mesh_chain_length(const mesh_miniheap_t *head);
void mesh_maps_add(int64_t n);
uint64_t mesh_maps_in_use(void);
void mesh_mesh_unlock_reserved(void);
void mesh_mesh_fork_prepare(void);
void mesh_mesh_fork_parent(void);
void mesh_mesh_fork_child(void);

/* ---- barrier.c: the write barrier ------------------------------------------------ */

void mesh_barrier_install(void);
void mesh_barrier_begin(const uintptr_t ranges[][2], unsigned n);
void mesh_barrier_end(void);
void mesh_barrier_fork_begin(void);
void mesh_barrier_fork_end(void);
void mesh_barrier_wait(uint32_t seq);
bool mesh_barrier_blocks(uintptr_t start, uintptr_t end);
bool mesh_barrier_active(void);
uint32_t mesh_barrier_seq(void);
void mesh_barrier_fork_child(void);

/* ---- signals.c: the program's handlers and masks ------------------------------------ */

void mesh_signals_take_faults(void (*handler)(int, siginfo_t *, void *));
void mesh_signals_chain(int sig, siginfo_t *si, void *ctx);
void mesh_signals_strip(sigset_t *set);
const sigset_t *mesh_signals_wait_mask(const sigset_t *mask, sigset_t *copy);
void mesh_signals_fork_child(void);

/* ---- pin.c: buffers a system call is writing into ------------------------------------ */


void mesh_pinset_add_range(mesh_pinset_t *ps, uintptr_t start, size_t len);
/* An address, not an access: the kernel will write there, libmesh does not. */
#define mesh_pinset_add(ps, p, len) mesh_pinset_add_range((ps), (uintptr_t)(p), (len))
bool mesh_pinset_hold(mesh_pinset_t *ps);
void mesh_pinset_release(mesh_pinset_t *ps);
bool mesh_pins_overlap(uintptr_t start, uintptr_t end);
size_t mesh_pins_collect(uintptr_t out[][2], size_t max);
bool mesh_pin_retry_after_efault(uint32_t seq_before, int tries);

/* r = call, with the buffers in ps pinned for it; unpinned, retried
 * after EFAULT, only when the pin table is full. */
#define MESH_PINNED_CALL(ps, call)                                          \
    do {                                                                    \
        if (mesh_pinset_hold(&(ps))) {                                      \
            r = (call);                                                     \
            int errno_ = errno;                                             \
            mesh_pinset_release(&(ps));                                     \
            errno = errno_;                                                 \
            break;                                                          \
        }                                                                   \
        for (int tries_ = 0;; tries_++) {                                   \
            uint32_t seq_ = mesh_barrier_seq();                             \
            r = (call);                                                     \
            if (r >= 0 || !mesh_pin_retry_after_efault(seq_, tries_))       \
                break;                                                      \
        }                                                                   \
    } while (0)

/* The same for a call that writes into one buffer. */
#define MESH_PINNED_CALL_BUF(buf, len, call)                                \
    do {                                                                    \
        mesh_pinset_t ps_ = {0};                                            \
        mesh_pinset_add(&ps_, (buf), (len));                                \
        MESH_PINNED_CALL(ps_, call);                                        \
    } while (0)


/* The next definition of a libc function libmesh interposes. */
#define NEXT_SYMBOL(name)                 \
    static __typeof__(name) *real_##name; \
    if (!real_##name)                     \
    real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

/* ---- fork.c: the child's own heap --------------------------------------------------- */

void mesh_fork_prepare(void);
void mesh_fork_parent(void);
void mesh_fork_child(void);
void mesh_fork_child_heap(void);

/* ---- libmesh.c ---------------------------------------------------------------- */

enum mesh_init { MESH_INIT_NONE, MESH_INIT_RUNNING, MESH_INIT_DONE };
extern _Atomic int mesh_init_state;  /* enum mesh_init */

/* Whether the library has started: one load. */
MESH_INLINE bool mesh_started(void)
{
    return atomic_load_explicit(&mesh_init_state, memory_order_acquire) == MESH_INIT_DONE;
}
void mesh_init_slow(void);
void mesh_report_invalid_free(const void *p) __attribute__((noreturn, cold));
void mesh_report_double_free(const void *p) __attribute__((noreturn, cold));

#endif
