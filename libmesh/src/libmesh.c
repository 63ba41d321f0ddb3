/*
 * The exported entry points: the malloc family with POSIX and glibc
 * semantics, the glibc extras programs call, and mesh_mallctl.  The fast
 * paths of malloc and free are here, inline; everything else is one call
 * away in a noinline slow path.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../include/mesh.h"
#include "internal.h"

_Atomic int mesh_init_state;
uint64_t mesh_free_key;
static size_t alloc_limit = PTRDIFF_MAX;    /* larger single requests fail with ENOMEM */
static __thread bool tls_initializing __attribute__((tls_model("initial-exec")));

/* ---- start-up, exit, fork ---- */

static void fork_prepare(void)
{
    mesh_mesh_fork_prepare();
    mesh_global_fork_prepare();
    mesh_arena_lock();
    mesh_thread_heaps_fork_prepare();
    mesh_huge_fork_prepare();
    mesh_fork_prepare();
}

static void fork_parent(void)
{
    mesh_fork_parent();
    mesh_huge_fork_parent();
    mesh_thread_heaps_fork_parent();
    pthread_mutex_unlock(&mesh_arena.lock);
    mesh_global_fork_parent();
    mesh_mesh_fork_parent();
}

static void fork_child(void)
{
    mesh_fork_child();
    mesh_barrier_fork_child();
    mesh_signals_fork_child();
    mesh_mesh_fork_child();
    mesh_global_fork_child();
    mesh_arena.lock = (pthread_mutex_t)PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
    mesh_huge_fork_child();
    mesh_thread_heaps_fork_child();
}

void mesh_init_slow(void)
{
    int expected = MESH_INIT_NONE;
    if (!atomic_compare_exchange_strong(&mesh_init_state, &expected, MESH_INIT_RUNNING)) {
        if (tls_initializing)
            mesh_assert_fail("malloc called while libmesh starts up", __FILE__, __LINE__);
        while (!mesh_started())
            ;
        return;
    }
    tls_initializing = true;
    mesh_options_init();
    mesh_free_key = mesh_os_random64() | 1;
    mesh_size_classes_init();
    mesh_global_init();
    mesh_mesh_init();
    int err = mesh_arena_init();
    if (!err)
        err = mesh_thread_heaps_init();
    if (err)
        mesh_fatal_errno("cannot set up the heap", err, "");
    /* Behave like glibc under the kernel's heuristic overcommit: a single
     * request larger than RAM plus swap fails. */
    uint64_t phys = mesh_os_physical_bytes();
    if (mesh_os_overcommit_mode() != 1 && phys && phys < PTRDIFF_MAX)
        alloc_limit = (size_t)phys;
    tls_initializing = false;
    atomic_store(&mesh_init_state, MESH_INIT_DONE);
    /* After the state is set: pthread_atfork may itself call malloc. */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

__attribute__((constructor)) static void mesh_start(void)
{
    if (!mesh_started())
        mesh_init_slow();
}

__attribute__((destructor)) static void mesh_exit(void)
{
    if (mesh_opt.mallocstats && mesh_started())
        mesh_stats_print((int)mesh_opt.mallocstats);
}

/* ---- reports ---- */

void mesh_report_invalid_free(const void *p)
{
    mesh_fatal_ptr("free of invalid pointer", p);
}

void mesh_report_double_free(const void *p)
{
    mesh_fatal_ptr("double free of", p);
}

/* ---- allocation ---- */

static void *alloc_large(size_t size, size_t align, bool zero)
{
    if (size > alloc_limit || align > alloc_limit) {
        errno = ENOMEM;
        return NULL;
    }
    void *p = mesh_large_alloc(size, align, zero);
    if (!p)
        errno = ENOMEM;
    return p;
}

static MESH_NOINLINE void *alloc_slow(size_t size, bool zero)
{
    if (!mesh_started())
        mesh_init_slow();
    if (size > MESH_MAX_SMALL)
        return alloc_large(size, MESH_PAGE_SIZE, zero);
    unsigned cls = mesh_size_class(size);
    mesh_thread_heap_t *th = mesh_thread_heap_get_slow();
    void *p;
    if (!th) {
        p = mesh_global_alloc_one(cls);
    } else {
        mesh_shuffle_vector_t *sv = &th->sv[cls];
        if (sv->ncached) {
            p = mesh_cache_pop(sv);
        } else {
            if (!sv->top) {
                mesh_thread_heap_tick(th, false);
                mesh_global_refill(th, cls);
            }
            p = sv->top ? mesh_sv_pop(sv) : NULL;
        }
    }
    if (MESH_DEBUG_ON) {
        static _Atomic unsigned calls;
        if ((atomic_fetch_add(&calls, 1) & 1023) == 0)
            mesh_global_check();
    }
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    if (zero)
        memset(p, 0, size);
    return p;
}

MESH_EXPORT void *malloc(size_t size)
{
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (likely(th != NULL && size <= MESH_MAX_SMALL)) {
        mesh_shuffle_vector_t *sv = &th->sv[mesh_size_class(size)];
        if (sv->ncached)
            return mesh_cache_pop(sv);
        if (likely(sv->top))
            return mesh_sv_pop(sv);
    }
    return alloc_slow(size, false);
}

MESH_EXPORT void *calloc(size_t n, size_t size)
{
    size_t total;
    if (unlikely(__builtin_mul_overflow(n, size, &total))) {
        errno = ENOMEM;
        return NULL;
    }
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (likely(th != NULL && total <= MESH_MAX_SMALL)) {
        mesh_shuffle_vector_t *sv = &th->sv[mesh_size_class(total)];
        if (sv->ncached)
            return memset(mesh_cache_pop(sv), 0, total);
        if (likely(sv->top))
            return memset(mesh_sv_pop(sv), 0, total);
    }
    return alloc_slow(total, true);
}

/* Alignment: small classes whose size is a multiple of the alignment hold
 * aligned objects (spans start on a page); anything else gets its own
 * aligned span. */
static void *alloc_aligned(size_t align, size_t size)
{
    if (align <= MESH_MIN_ALIGN)
        return malloc(size);
    if (!mesh_started())
        mesh_init_slow();
    int cls = mesh_size_class_aligned(size, align);
    if (cls >= 0)
        return malloc(mesh_classes[cls].object_size);
    return alloc_large(size < MESH_PAGE_SIZE ? MESH_PAGE_SIZE : size, align, false);
}

static bool is_pow2(size_t x)
{
    return x && (x & (x - 1)) == 0;
}

MESH_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    if (!is_pow2(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = alloc_aligned(align, size);
    errno = saved;
    if (!p)
        return ENOMEM;
    *out = p;
    return 0;
}

MESH_EXPORT void *aligned_alloc(size_t align, size_t size)
{
    if (!is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return alloc_aligned(align, size);
}

/* glibc's memalign rounds an alignment that is not a power of two up. */
MESH_EXPORT void *memalign(size_t align, size_t size)
{
    if (align > (SIZE_MAX >> 1) + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!is_pow2(align))
        align = align <= 1 ? 1 : (size_t)1 << (64 - __builtin_clzl(align - 1));
    return alloc_aligned(align, size);
}

MESH_EXPORT void *valloc(size_t size)
{
    return alloc_aligned(MESH_PAGE_SIZE, size);
}

MESH_EXPORT void *pvalloc(size_t size)
{
    size_t rounded = (size + MESH_PAGE_SIZE - 1) & ~(MESH_PAGE_SIZE - 1);
    if (rounded < size) {
        errno = ENOMEM;
        return NULL;
    }
    return alloc_aligned(MESH_PAGE_SIZE, rounded ? rounded : MESH_PAGE_SIZE);
}

/* ---- free ---- */

static MESH_NOINLINE void free_slow(void *p, mesh_miniheap_t *mh)
{
    if (!p)
        return;
    if (!mh) {
        if (mesh_started() && mesh_huge_free(p))
            return;
        mesh_report_invalid_free(p);
    }
    switch (mh->kind) {
    case MESH_KIND_SMALL:
    case MESH_KIND_ALIAS:
        mesh_global_free_small(mh, p);
        return;
    case MESH_KIND_LARGE:
        mesh_large_free(mh, p);
        return;
    case MESH_KIND_FREE:
        /* An address in pages nobody holds: freed already, most likely. */
        mesh_report_double_free(p);
    default:
        mesh_report_invalid_free(p);
    }
}

MESH_EXPORT void free(void *p)
{
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (likely(mh && th)) {
        bool done;
        if (atomic_load_explicit(&mh->owner, memory_order_relaxed) == th->id)
            done = mesh_sv_push(&th->sv[mh->cls], mh, p, &th->rng, mesh_opt.randomize >= MESH_RANDOMIZE_FREE);
        else
            done = mh->kind == MESH_KIND_SMALL && mesh_cache_on() && mesh_cache_push(&th->sv[mh->cls], mh, p);
        if (likely(done)) {
            if (unlikely(--th->tick == 0))
                mesh_thread_heap_tick(th, false);
            return;
        }
    }
    free_slow(p, mh);
}

/* ---- sizes and realloc ---- */

/* The usable size of a live block, or 0 when p is not one of ours. */
static size_t usable_size(const void *p, mesh_miniheap_t *mh)
{
    if (!mh) {
        size_t size;
        return mesh_started() && mesh_huge_owns(p, &size) ? size : 0;
    }
    if (mh->kind == MESH_KIND_SMALL || mh->kind == MESH_KIND_ALIAS) {
        uint32_t slot;
        return mesh_global_span_of(mh, p, &slot) ? mesh_classes[mh->cls].object_size : 0;
    }
    if (mh->kind == MESH_KIND_LARGE && mesh_mh_start(mh) == p)
        return (size_t)mh->npages << MESH_PAGE_SHIFT;
    return 0;
}

/* Hot in programs that count their own memory (Redis asks after every
 * allocation and before every free): no check that p starts a slot, which
 * glibc does not make either; realloc and free do check. */
MESH_EXPORT size_t malloc_usable_size(void *p)
{
    if (!p)
        return 0;
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    if (likely(mh != NULL)) {
        uint8_t kind = __atomic_load_n(&mh->kind, __ATOMIC_RELAXED);
        if (likely(kind == MESH_KIND_SMALL || kind == MESH_KIND_ALIAS))
            return mesh_classes[mh->cls].object_size;
    }
    return usable_size(p, mh);
}

MESH_EXPORT void *realloc(void *p, size_t size)
{
    if (!p)
        return malloc(size);
    if (size == 0) {
        free(p);
        return NULL;
    }
    mesh_miniheap_t *mh = mesh_arena_lookup(p);
    size_t old = usable_size(p, mh);
    if (!old) {
        if (mh && mh->kind == MESH_KIND_FREE)
            mesh_report_double_free(p);
        mesh_report_invalid_free(p);
    }
    if (mh && (mh->kind == MESH_KIND_SMALL || mh->kind == MESH_KIND_ALIAS)) {
        /* Same class: nothing to do. */
        if (size <= old && mesh_size_class(size) == mh->cls)
            return p;
    } else if (size > MESH_MAX_SMALL) {
        void *q = mh ? mesh_large_realloc(mh, p, size)
                     : (size <= alloc_limit ? mesh_huge_realloc(p, size) : NULL);
        if (q)
            return q;
    }
    void *q = malloc(size);
    if (!q)
        return NULL;
    memcpy(q, p, old < size ? old : size);
    free(p);
    return q;
}

MESH_EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return realloc(p, total);
}

/* ---- glibc extras ---- */

/* Gives every freed page back to the OS now.  Returns 1 if memory was
 * released, as glibc does. */
/* What malloc_trim and mesh.scavenge do: the empty spans classes keep,
 * the unused pages of partial spans and every dirty free page go back to
 * the system, and stale spans get their own mappings back (the kernel's
 * mappings of them are memory too).  Returns the bytes given back. */
static uint64_t give_back(void)
{
    mesh_global_release_empty();
    uint64_t bytes = mesh_trim(0) << MESH_PAGE_SHIFT;
    mesh_arena_lock();
    mesh_arena_reclaim_stale_locked(UINT32_MAX);
    bytes += mesh_arena_scavenge_locked();
    pthread_mutex_unlock(&mesh_arena.lock);
    return bytes;
}

MESH_EXPORT int malloc_trim(size_t pad)
{
    (void)pad;
    if (!mesh_started())
        return 0;
    return give_back() > 0;
}

/* Only M_TRIM_THRESHOLD has a meaning here (how many freed bytes may wait
 * before they are punched); every other parameter is refused with 0. */
MESH_EXPORT int mallopt(int param, int value)
{
    if (param == M_TRIM_THRESHOLD && value >= 0) {
        mesh_opt.max_dirty_mb = (uint64_t)value >> 20;
        return 1;
    }
    return 0;
}

MESH_EXPORT struct mallinfo2 mallinfo2(void)
{
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof mi);
    if (!mesh_started())
        return mi;
    uint64_t allocated = mesh_global_allocated_bytes();
    mesh_arena_lock();
    uint64_t mapped = (uint64_t)mesh_arena.frontier << MESH_PAGE_SHIFT;
    uint64_t dirty = mesh_arena.dirty_pages << MESH_PAGE_SHIFT;
    pthread_mutex_unlock(&mesh_arena.lock);
    uint64_t huge = mesh_huge_bytes();
    mi.arena = mapped;                 /* address space handed out in the arena */
    mi.hblkhd = huge;                  /* objects mapped outside it */
    mi.hblks = atomic_load(&mesh_stats.huge_alloc_count);
    mi.uordblks = allocated;           /* bytes in live objects */
    mi.fordblks = mapped + huge > allocated ? mapped + huge - allocated : 0;
    mi.keepcost = dirty;               /* freed bytes not yet given back */
    return mi;
}

MESH_EXPORT struct mallinfo mallinfo(void)
{
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi;
    memset(&mi, 0, sizeof mi);
#define CLAMP(v) ((v) > INT32_MAX ? INT32_MAX : (int)(v))
    mi.arena = CLAMP(m2.arena);
    mi.hblks = CLAMP(m2.hblks);
    mi.hblkhd = CLAMP(m2.hblkhd);
    mi.uordblks = CLAMP(m2.uordblks);
    mi.fordblks = CLAMP(m2.fordblks);
    mi.keepcost = CLAMP(m2.keepcost);
#undef CLAMP
    return mi;
}

/* The arena and its metadata are reserved up front, PROT_NONE past what is
 * in use: mlockall(MCL_CURRENT) faults none of that in, but marks it
 * locked, so VmLck (and RLIMIT_MEMLOCK's count) would show the whole
 * reservation; it is taken out again here. */
MESH_EXPORT int mlockall(int flags)
{
    int err = mesh_os_mlockall(flags);
    if (err) {
        errno = err;
        return -1;
    }
    if ((flags & MCL_CURRENT) && atomic_load(&mesh_init_state) == 2) {
        mesh_arena_unlock_reserved();
        mesh_mesh_unlock_reserved();
    }
    return 0;
}

MESH_EXPORT void malloc_stats(void)
{
    if (mesh_started())
        mesh_stats_print(2);
}

/* ---- mesh_mallctl ---- */

static int read_u64(void *oldp, size_t *oldlenp, void *newp, uint64_t value)
{
    if (newp)
        return EPERM;
    if (oldp && oldlenp) {
        if (*oldlenp != sizeof(uint64_t))
            return EINVAL;
        memcpy(oldp, &value, sizeof value);
    }
    return 0;
}

MESH_EXPORT int mesh_mallctl(const char *name, void *oldp, size_t *oldlenp, void *newp, size_t newlen)
{
    (void)newlen;
    if (!name)
        return EINVAL;
    if (!mesh_started())
        mesh_init_slow();
    if (strcmp(name, "stats.allocated") == 0)
        return read_u64(oldp, oldlenp, newp, mesh_global_allocated_bytes());
    if (strcmp(name, "stats.active") == 0) {
        /* Physical pages of spans in use: meshed-away virtual spans cost
         * none, nor do pages trim gave back. */
        mesh_arena_lock();
        uint64_t pages = mesh_arena.active_pages;
        pthread_mutex_unlock(&mesh_arena.lock);
        uint64_t gone = atomic_load(&mesh_stats.meshed_pages) + atomic_load(&mesh_stats.trimmed_now);
        pages = pages > gone ? pages - gone : 0;
        return read_u64(oldp, oldlenp, newp, (pages << MESH_PAGE_SHIFT) + mesh_huge_bytes());
    }
    if (strcmp(name, "stats.resident") == 0)
        return read_u64(oldp, oldlenp, newp, mesh_arena_resident_bytes() + mesh_huge_bytes());
    if (strcmp(name, "stats.mapped") == 0) {
        mesh_arena_lock();
        uint64_t v = (uint64_t)mesh_arena.frontier << MESH_PAGE_SHIFT;
        pthread_mutex_unlock(&mesh_arena.lock);
        return read_u64(oldp, oldlenp, newp, v + mesh_huge_bytes());
    }
    if (strcmp(name, "stats.meshed_bytes") == 0)
        return read_u64(oldp, oldlenp, newp, atomic_load(&mesh_stats.meshed_pages) << MESH_PAGE_SHIFT);
    if (strcmp(name, "stats.mesh_count") == 0)
        return read_u64(oldp, oldlenp, newp, atomic_load(&mesh_stats.mesh_count));
    if (strcmp(name, "mesh.compact") == 0) {
        /* Passes, each bounded, until they have walked every class's
         * partial spans (a pass looks at MESH_MAX_CANDIDATES of a class,
         * from where the last one stopped) without finding anything. */
        uint64_t pairs = 0, n, windows = 1;
        for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
            uint64_t w = mesh_class_heaps[c].npartial / MESH_MAX_CANDIDATES + 1;
            windows = w > windows ? w : windows;
        }
        for (uint64_t dry = 0, passes = 0; dry <= windows && passes < 4096; passes++) {
            n = mesh_pass(true, 0);
            pairs += n;
            dry = n ? 0 : dry + 1;
        }
        mesh_trim(0);
        return read_u64(oldp, oldlenp, NULL, pairs);
    }
    if (strcmp(name, "mesh.check_period") == 0)
        return read_u64(oldp, oldlenp, NULL, mesh_maybe_mesh(0, NULL));
    if (strcmp(name, "mesh.scavenge") == 0) {
        return read_u64(oldp, oldlenp, NULL, give_back());
    }
    return ENOENT;
}
