/* Live bytes: the ground truth a workload reports beside the allocator's
 * physical memory. Live bytes = sum of the sizes passed to malloc, calloc
 * and realloc and not yet freed, counted by the workload itself.
 *
 * Each thread owns one slot and is its only writer, so counting costs a
 * plain load and store to a line no other thread writes: no atomic
 * read-modify-write, no shared cache line on the allocation fast path that
 * the throughput workloads measure. A slot may go negative when its thread
 * frees objects another thread allocated; only the sum means anything.
 *
 * Invariant: sum over slots == live bytes of the process (exact whenever no
 * thread is between its malloc and its count update).
 *
 * Threads that free what others allocated must own a lower slot index than
 * the allocating threads: the sampler reads slots in ascending order with
 * acquire loads, so if it sees a free it also sees the matching allocation
 * and the sum it reports never dips below the truth. */
#ifndef WL_LIVE_H
#define WL_LIVE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#define WL_LIVE_SLOTS 64

typedef struct {
    _Alignas(64) _Atomic int64_t bytes;
    int64_t peak; /* the slot's own maximum; read only after its thread ends */
} wl_live_slot_t;

extern wl_live_slot_t wl_live_slots[WL_LIVE_SLOTS];
extern _Thread_local unsigned wl_live_self;

/* Binds the calling thread to a slot; the main thread starts on slot 0.
 * Two running threads must never share a slot. */
void wl_live_bind(unsigned slot);
int64_t wl_live_sum(void);
/* The exact peak of live bytes if only the main thread's slot was ever
 * used (then every change passed through one counter), else -1. */
int64_t wl_live_exact_peak(void);
_Noreturn void wl_oom(size_t n);

static inline void wl_live_add(int64_t delta)
{
    wl_live_slot_t *s = &wl_live_slots[wl_live_self];
    int64_t v = atomic_load_explicit(&s->bytes, memory_order_relaxed) + delta;
    atomic_store_explicit(&s->bytes, v, memory_order_release);
    if (v > s->peak)
        s->peak = v;
}

static inline void *wl_malloc(size_t n)
{
    void *p = malloc(n);
    if (!p)
        wl_oom(n);
    wl_live_add((int64_t)n);
    return p;
}

static inline void *wl_calloc(size_t count, size_t size)
{
    void *p = calloc(count, size);
    if (!p)
        wl_oom(count * size);
    wl_live_add((int64_t)(count * size));
    return p;
}

/* The caller states the old size: the allocator's usable size differs
 * between allocators and must not leak into the figures. */
static inline void *wl_realloc(void *p, size_t old_size, size_t new_size)
{
    void *q = realloc(p, new_size);
    if (!q)
        wl_oom(new_size);
    wl_live_add((int64_t)new_size - (int64_t)old_size);
    return q;
}

static inline void wl_free(void *p, size_t n)
{
    free(p);
    wl_live_add(-(int64_t)n);
}

#endif
