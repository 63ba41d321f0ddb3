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

#define MESH_EXPORT __attribute__((visibility("default")))
#define MESH_NOINLINE __attribute__((noinline))
#define MESH_INLINE static inline __attribute__((always_inline))
#define MESH_COLD __attribute__((cold, noinline))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* ---- tunables ---------------------------------------------------------- */

#define MESH_PAGE_SHIFT 12
#define MESH_PAGE_SIZE (1UL << MESH_PAGE_SHIFT)
#define MESH_MIN_ALIGN 16
#define MESH_NUM_CLASSES 24          /* 16 .. 1024 (jemalloc spacing), 2 .. 16 KiB */
#define MESH_MAX_SMALL 16384         /* larger requests get a span of their own */
#define MESH_MAX_MESHABLE 4095       /* classes below a page can be meshed */
#define MESH_MIN_OBJECTS 8           /* objects per span, at least ... */
#define MESH_MAX_OBJECTS 256         /* ... and at most: one 256-bit bitmap */
#define MESH_BITMAP_WORDS (MESH_MAX_OBJECTS / 64)

/* Shuffle vector: capacity in slots, spans attached at once, and how much a
 * refill gathers (enough slots to amortise the class lock, but not so many
 * bytes that a thread hoards memory other threads could use).  A thread
 * keeps its spans attached between refills, so that its own frees into them
 * stay on the fast path; every MESH_PERIOD_MS it detaches them all, so that
 * they can be shared, freed and meshed. */
#define MESH_SV_CAP 256
#define MESH_SV_MAX_ATTACH 64
#define MESH_SV_TARGET_SLOTS 64
#define MESH_SV_HARVEST_MIN 16       /* slots freed remotely worth a refill without the lock */
#define MESH_SV_MAX_BYTES (1024 * 1024)
#define MESH_TICK_FREES 4096         /* frees between looks at the clock */

#define MESH_PARTIAL_BINS 4          /* partial lists by occupancy quarter */
#define MESH_POPULATE_PAGES 32       /* pages faulted in at once past the frontier */
#define MESH_MAX_CHAIN 8             /* virtual spans sharing one span's pages, at most */
#define MESH_PROBES 64               /* SplitMesher: right-half spans tried per left span */
#define MESH_OCCUPANCY_CUTOFF 80     /* percent: fuller spans are not meshed */
#define MESH_MAX_CANDIDATES 4096     /* spans of a class one pass considers */
#define MESH_EMPTY_KEEP 2            /* empty spans a class keeps before returning them */

#define MESH_DEFAULT_ARENA_GB 1024   /* virtual reservation; nothing is committed */
#define MESH_MIN_ARENA_BYTES (8UL << 20)
#define MESH_GROW_MIN_PAGES 512      /* the arena is made usable 2 MiB at a time at least ... */
#define MESH_GROW_MAX_PAGES 262144   /* ... an eighth of what it has, at most 1 GiB */
#define MESH_MAX_RECORDS (1U << 26)  /* miniheap records: 4 GiB of reserved metadata */
#define MESH_MAX_THREAD_HEAPS (1U << 16)

/* ---- debug checks ------------------------------------------------------ */

void mesh_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn, cold));
#ifdef MESH_DEBUG
#define mesh_assert(c) (likely(c) ? (void)0 : mesh_assert_fail(#c, __FILE__, __LINE__))
#define MESH_DEBUG_ON 1
#else
#define mesh_assert(c) ((void)0)
#define MESH_DEBUG_ON 0
#endif

/* ---- os.c: every system call lives there -------------------------------- */

int mesh_os_memfd(const char *name, int *fd_out);
int mesh_os_truncate(int fd, uint64_t bytes);
int mesh_os_map_reserve(size_t bytes, void **out);            /* private, NORESERVE */
void *mesh_os_mmap(void *addr, size_t bytes, int prot, int flags, int fd, off_t off);
int mesh_os_map_none(size_t bytes, void **out);                /* PROT_NONE reservation */
int mesh_os_map_fixed_anon(void *addr, size_t bytes);          /* private, read-write, MAP_FIXED */
int mesh_os_map_shared(void *addr, size_t bytes, int fd, uint64_t off, bool fixed, void **out);
int mesh_os_map_anon(size_t bytes, size_t align, void **out);  /* private, read-write */
int mesh_os_unmap(void *addr, size_t bytes);
int mesh_os_remap(void *old, size_t old_bytes, size_t new_bytes, bool may_move, void **out);
int mesh_os_remap_fixed(void *old, size_t bytes, void *new_addr, void **out);
int mesh_os_punch(int fd, uint64_t off, uint64_t bytes);
int mesh_os_remove(void *addr, size_t bytes);                  /* MADV_REMOVE */
int mesh_os_dontneed(void *addr, size_t bytes);
int mesh_os_protect(void *addr, size_t bytes, bool writable);
void mesh_os_populate(void *addr, size_t bytes);
int mesh_os_sigmask(int how, const sigset_t *set, sigset_t *old);  /* the kernel's, unfiltered */
uint32_t mesh_os_getpid(void);
int mesh_os_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);
void mesh_os_futex_wake_all(_Atomic uint32_t *word);
int mesh_os_open_append(const char *path, int *fd_out);
int mesh_os_write_all(int fd, const void *buf, size_t len);
uint64_t mesh_os_max_map_count(void);
uint64_t mesh_os_count_maps(void);
int mesh_os_fd_identity(int fd, uint64_t *dev, uint64_t *ino);
int mesh_os_file_blocks(int fd, uint64_t *bytes);
int mesh_os_seek_data(int fd, uint64_t from, uint64_t *data, uint64_t *hole);
int mesh_os_pwrite_all(int fd, const void *buf, size_t bytes, uint64_t off);
int mesh_os_dup_high(int fd, int *out);
uint64_t mesh_os_file_size_limit(void);
void mesh_os_address_space(uint64_t *limit, uint64_t *mapped);
int mesh_os_mlockall(int flags);
void mesh_os_munlock(void *addr, size_t bytes);
void mesh_os_close(int fd);
uint64_t mesh_os_random64(void);
uint64_t mesh_os_now_ns(void);
uint64_t mesh_os_physical_bytes(void);
int mesh_os_overcommit_mode(void);
void mesh_os_write_stderr(const char *buf, size_t len);
void mesh_os_abort(void) __attribute__((noreturn));

/* Formatting without malloc: appends to a caller's fixed buffer. */
typedef struct mesh_buf {
    char *p;
    size_t len, cap;
} mesh_buf_t;
void mesh_buf_str(mesh_buf_t *b, const char *s);
void mesh_buf_u64(mesh_buf_t *b, uint64_t v);
void mesh_buf_hex(mesh_buf_t *b, uint64_t v);
void mesh_buf_fixed1(mesh_buf_t *b, uint64_t num, uint64_t den);  /* num/den, one decimal */
void mesh_warn(const char *msg);                     /* "mesh: msg\n" on stderr */
void mesh_fatal_ptr(const char *what, const void *p) __attribute__((noreturn, cold));
void mesh_fatal_errno(const char *what, int err, const char *then) __attribute__((noreturn, cold));

/* ---- options.c ----------------------------------------------------------- */

/* name, environment variable, default, minimum, maximum, what it does */
#define MESH_OPTIONS(X)                                                                      \
    X(randomize, "MESH_RANDOMIZE", 1, 0, 1, "randomize slot order in spans (0 = in order)")   \
    X(meshing, "MESH_MESHING", 1, 0, 1, "mesh spans (0 = the no-meshing control)")            \
    X(period_ms, "MESH_PERIOD_MS", 100, 0, 3600000, "minimum milliseconds between passes")    \
    X(max_dirty_mb, "MESH_MAX_DIRTY_MB", 16, 0, 1048576, "freed MiB kept before punching")    \
    X(mallocstats, "MALLOCSTATS", 0, 0, 2, "print statistics at exit (1 summary, 2 detail)")  \
    X(arena_gb, "MESH_ARENA_GB", MESH_DEFAULT_ARENA_GB, 1, 8192, "virtual arena reservation") \
    X(seed, "MESH_SEED", 0, 0, UINT32_MAX, "random seed (0 = from the OS)")                      \
    X(pass_ms, "MESH_PASS_MS", 8, 1, 10000, "time budget of one mesh pass, in milliseconds")      \
    X(idle_pass_ms, "MESH_IDLE_PASS_MS", 24, 1, 10000, "budget of a pass by a thread about to sleep")   \
    X(max_maps, "MESH_MAX_MAPS", 0, 0, UINT32_MAX, "mappings meshing may use (0 = from vm.max_map_count)")

typedef struct mesh_options {
#define MESH_OPT_FIELD(name, env, def, lo, hi, doc) uint64_t name;
    MESH_OPTIONS(MESH_OPT_FIELD)
#undef MESH_OPT_FIELD
} mesh_options_t;

extern mesh_options_t mesh_opt;

/* Options in milliseconds, as the clock counts: nanoseconds. */
MESH_INLINE uint64_t mesh_ms_to_ns(uint64_t ms)
{
    return ms * 1000000ULL;
}
void mesh_options_init(void);

/* ---- stats.c --------------------------------------------------------------- */

/* Counters, declared once.  All are updated on slow paths only. */
#define MESH_STATS(X)                                                          \
    X(mesh_count, "meshes performed")                                           \
    X(meshed_pages_total, "pages released by meshing, cumulative")              \
    X(meshed_pages, "pages currently meshed away")                              \
    X(meshed_pages_hwm, "high-water mark of meshed_pages")                      \
    X(mh_alloc_count, "miniheaps created")                                      \
    X(mh_free_count, "miniheaps freed")                                         \
    X(mh_live, "miniheaps alive")                                               \
    X(mh_hwm, "high-water mark of mh_live")                                     \
    X(large_alloc_count, "large objects allocated")                             \
    X(huge_alloc_count, "objects mapped outside the arena")                     \
    X(refill_count, "shuffle vector refills")                                   \
    X(punch_count, "punch-hole calls")                                          \
    X(punched_bytes, "bytes punched out of the arena file")                     \
    X(trimmed_pages, "free pages of partial spans given back")                  \
    X(trimmed_now, "pages of live spans given back and not written since")      \
    X(fork_copy_bytes, "bytes copied for fork children")                        \
    X(mesh_passes, "mesh passes run")                                           \
    X(mesh_pass_ns, "time spent in mesh passes, ns")                            \
    X(mesh_pass_max_ns, "longest mesh pass, ns")                                \
    X(mesh_pause_max_ns, "longest write-protect pause of one mesh, ns")         \
    X(mesh_map_limited, "passes stopped by the mapping budget")                 \
    X(mesh_time_limited, "passes stopped by their time budget")                 \
    X(mesh_no_gain, "meshes not made: they would give back no page")            \
    X(mesh_failed, "meshes abandoned because a system call failed")               \
    X(idle_gave_way, "idle passes cut short: the wait had something to return")             \
    X(idle_splits, "waits split where a mesh period began during them")       \
    X(unmesh_count, "meshed spans restored to their own pages")                 \
    X(retired_pages, "virtual pages lost because the arena file was closed")    \
    X(barrier_waits, "writes that waited for a mesh or fork to finish")         \
    X(barrier_wait_max_ns, "longest wait of a write for a mesh, ns")            \
    X(lock_wait_max_ns, "longest wait of a thread for a class lock, ns")        \
    X(pin_waits, "system calls that waited for a mesh or fork before starting") \
    X(mesh_pinned, "meshes not made: a system call was writing into src")       \
    X(efault_retries, "system calls retried after EFAULT during a mesh")

typedef struct mesh_stats {
#define MESH_STAT_FIELD(name, doc) _Atomic uint64_t name;
    MESH_STATS(MESH_STAT_FIELD)
#undef MESH_STAT_FIELD
} mesh_stats_t;

extern mesh_stats_t mesh_stats;
#define MESH_STAT_ADD(name, n) atomic_fetch_add_explicit(&mesh_stats.name, (n), memory_order_relaxed)
void mesh_stat_max(_Atomic uint64_t *hwm, uint64_t value);
void mesh_stats_print(int level);

/* ---- size_class.c ------------------------------------------------------- */

typedef struct mesh_size_class {
    uint32_t object_size;
    uint32_t nobjects;   /* objects per span */
    uint32_t npages;     /* pages per span */
    uint32_t recip;      /* ceil(2^32 / object_size): slot = offset * recip >> 32 */
    uint64_t valid[4];   /* bitmap words with one bit per slot of a span */
} mesh_size_class_t;

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

enum mesh_span_kind {
    MESH_KIND_UNUSED = 0,   /* record on the pool's free list */
    MESH_KIND_SMALL,        /* span of small objects, bitmap in use */
    MESH_KIND_LARGE,        /* one large object */
    MESH_KIND_FREE,         /* free pages in the page allocator */
    MESH_KIND_ALIAS,        /* a virtual span meshed onto a SMALL span (its head) */
    MESH_KIND_RETIRED,      /* an alias whose identity mapping could not be restored */
};

enum mesh_mh_state {
    MESH_MH_NONE = 0,
    MESH_MH_ATTACHED,       /* owned by a thread heap; not on any list */
    MESH_MH_FULL,           /* on the class's full list */
    MESH_MH_EMPTY,          /* on the class's empty list */
    MESH_MH_FREE_CLEAN,     /* FREE span known to read as zeros */
    MESH_MH_FREE_DIRTY,     /* FREE span whose pages are still in the file */
    MESH_MH_PARTIAL,        /* on partial[state - MESH_MH_PARTIAL] */
};

/* Whether a span in this state is on one of its class's partial lists. */
MESH_INLINE bool mesh_state_is_partial(uint8_t state)
{
    return state >= MESH_MH_PARTIAL && state < MESH_MH_PARTIAL + MESH_PARTIAL_BINS;
}

/*
 * One record per span, 64 bytes, outside the span it describes.
 *
 * Invariants (checked in debug builds):
 *   small span, detached:  popcount(bits) == live objects
 *   small span, attached:  popcount(bits) == live objects + slots in the
 *                          owner's shuffle vector; reserved bits ⊆ bits
 *   bits beyond nobjects are always 0
 *   arena table[span_page] == table[span_page + npages - 1] == this id, and
 *   for small spans every page of the span maps to this id
 */
typedef struct mesh_miniheap {
    _Atomic uint64_t bits[MESH_BITMAP_WORDS]; /* 1 = allocated or reserved */
    _Atomic uint32_t owner;      /* thread heap id while attached, else 0 */
    uint32_t span_page;          /* first page, as an index into the arena */
    uint32_t npages;
    uint32_t next, prev;         /* list links: record ids, 0 ends the list */
    uint32_t mesh_next;          /* next virtual span sharing these pages */
    _Atomic uint32_t gen;        /* bumped each time the record is recycled */
    uint8_t kind, cls, state;
    uint8_t attach_idx;          /* index in the owner's shuffle vector */
} __attribute__((aligned(64))) mesh_miniheap_t;

_Static_assert(sizeof(mesh_miniheap_t) == 64, "a miniheap record is one cache line");

void mesh_mh_init_small(mesh_miniheap_t *mh, unsigned cls);
unsigned mesh_mh_live(const mesh_miniheap_t *mh);
void mesh_mh_valid_mask(unsigned nobjects, uint64_t mask[MESH_BITMAP_WORDS]);
bool mesh_mh_is_full_word(unsigned nobjects, unsigned w, uint64_t word);

/* ---- arena.c: the reserved range, its file, the page table, the pages ----
 * (reserve.c: reserving the range and growing its usable part and file) */

typedef struct mesh_arena {
    char *base;                  /* start of the reserved range */
    size_t bytes;                /* its length */
    _Atomic size_t usable;       /* bytes [0, usable) are mapped read-write: what
                                    lock-free readers may look up */
    _Atomic uint32_t *table;     /* page -> miniheap id, read without locks */
    mesh_miniheap_t *records;    /* record id -> record; id 0 is never used */
    uint32_t *trimmed;           /* record id -> pages of a detached small span
                                    punched since it was detached (bit per page) */
    int fd;                      /* the memfd behind the arena, or -1 if lost */
    uint64_t fd_dev, fd_ino;     /* identity of our memfd, to survive closefrom() */
    uint32_t npages;             /* arena pages */
    uint32_t max_records;        /* records the reservation holds */
    const char *no_file;         /* why the arena has no file at all, or NULL */
    pthread_mutex_t lock;
    /* below: protected by lock (file_pages is read without it too: it only grows) */
    uint32_t frontier;           /* pages [0, frontier) have been handed out */
    uint32_t populated;          /* pages [frontier, populated) are faulted in already */
    uint32_t accessible;         /* pages [0, accessible) are mapped read-write,
                                    the rest PROT_NONE; frontier <= accessible */
    uint32_t file_pages;         /* pages [0, file_pages) map the memfd (its size);
                                    [file_pages, accessible) are private memory */
    bool file_full;              /* the file grows no more (RLIMIT_FSIZE, no fd) */
    size_t table_usable, records_usable;  /* bytes of each array mapped read-write */
    uint32_t nrecords;           /* records [1, nrecords) exist */
    uint32_t free_record;        /* free list of records, through next */
    uint64_t dirty_pages;        /* pages in FREE_DIRTY spans */
    uint64_t epoch;              /* periods gone by, for the aged scavenge */
    uint64_t active_pages;       /* pages in SMALL and LARGE spans */
    uint32_t bins_dirty[129];    /* free spans by page count; the last bin holds >= 128 */
    uint32_t bins_clean[129];
    uint64_t nonempty[2][3];     /* bitmaps of non-empty bins (dirty, clean) */
    int fork_fd;                 /* the child's copy, made in the fork prepare step */
} mesh_arena_t;

extern mesh_arena_t mesh_arena;

int mesh_arena_init(void);
/* Allocate npages (aligned to align_pages), returning a new record of the given
 * kind, or NULL (ENOMEM).  *clean tells whether the pages read as zeros. */
mesh_miniheap_t *mesh_arena_alloc_span_locked(uint32_t npages, uint32_t align_pages, uint8_t kind, bool *clean);
void mesh_arena_free_span_locked(mesh_miniheap_t *mh);
bool mesh_arena_shrink_span_locked(mesh_miniheap_t *mh, uint32_t npages);
bool mesh_arena_grow_span_locked(mesh_miniheap_t *mh, uint32_t npages);
void mesh_arena_set_pages(mesh_miniheap_t *mh, bool every_page);
uint64_t mesh_arena_scavenge_locked(void);
uint64_t mesh_arena_scavenge_aged_locked(void);
void mesh_arena_zero_span_locked(mesh_miniheap_t *mh);
uint64_t mesh_arena_resident_bytes(void);
int mesh_arena_protect(uint32_t vpage, uint32_t npages, bool writable);
uint32_t mesh_arena_file_page(uint32_t vpage);
int mesh_arena_remap_cost(uint32_t vpage, uint32_t npages, uint32_t old_file, uint32_t new_file);
void mesh_arena_punch_pages(uint32_t page, uint32_t npages);
bool mesh_arena_fd_ok(void);
int mesh_arena_map_at_locked(uint32_t vpage, uint32_t npages, uint32_t file_page);
bool mesh_arena_fd_is_ours_locked(void);
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
    return &mesh_arena.records[__atomic_load_n(&alias->prev, __ATOMIC_ACQUIRE)];
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

typedef struct mesh_shuffle_vector {
    uint16_t top;                /* entries[0, top) are free slots, popped from the end */
    uint8_t nattached;
    uint8_t cls;
    uint32_t object_size;
    uint32_t span_bytes;
    uint32_t recip;
    uint16_t entries[MESH_SV_CAP];            /* attach index << 8 | slot */
    char *base[MESH_SV_MAX_ATTACH];           /* first byte of each attached span */
    uint32_t mh_id[MESH_SV_MAX_ATTACH];
} mesh_shuffle_vector_t;

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

typedef struct mesh_rng {
    uint64_t s;
} mesh_rng_t;

/* xorshift64 (Marsaglia's 13, 7, 17): three shifts and three xors on the
 * free path, good enough to scatter slots.  The state must not be 0. */
MESH_INLINE uint64_t mesh_rng_next(mesh_rng_t *r)
{
    uint64_t x = r->s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return r->s = x;
}

/* A uniform value in [0, n) without a division. */
MESH_INLINE uint32_t mesh_rng_below(mesh_rng_t *r, uint32_t n)
{
    return (uint32_t)(((mesh_rng_next(r) >> 32) * (uint64_t)n) >> 32);
}

/* malloc's fast path: two loads, a multiply, and the store that clears the
 * object's free key.  Precondition: top > 0. */
MESH_INLINE void *mesh_sv_pop(mesh_shuffle_vector_t *sv)
{
    uint16_t e = sv->entries[--sv->top];
    char *p = sv->base[e >> 8] + (size_t)(e & 255) * sv->object_size;
    *(uint64_t *)p = 0;
    return p;
}

/* Pushes a free slot's entry (attach index << 8 | slot), swapped with a
 * random entry when randomizing: the vector stays uniformly shuffled, one
 * step of an inside-out Fisher-Yates.  Precondition: top < MESH_SV_CAP. */
MESH_INLINE void mesh_sv_push_entry(mesh_shuffle_vector_t *sv, uint16_t entry, mesh_rng_t *rng, bool randomize)
{
    uint32_t t = sv->top++;
    sv->entries[t] = entry;
    if (randomize) {
        uint32_t j = mesh_rng_below(rng, t + 1);
        uint16_t x = sv->entries[j];
        sv->entries[j] = sv->entries[t];
        sv->entries[t] = x;
    }
}

/* free's fast path for a span this thread has attached: a bounds check, a
 * division by multiplication, two double-free checks (no free key in the
 * object, and its bitmap bit, on the record line free has just read, still
 * set), the key, a push and (with randomization) one swap.  Returns false,
 * changing nothing, for anything unusual: an address outside the span, not
 * at a slot start, a key already there, a clear bit, or a full vector; the
 * slow path then sorts it out. */
MESH_INLINE bool mesh_sv_push(mesh_shuffle_vector_t *sv, const mesh_miniheap_t *mh, void *p, mesh_rng_t *rng,
                              bool randomize)
{
    unsigned i = mh->attach_idx;
    uintptr_t off = (uintptr_t)p - (uintptr_t)sv->base[i];
    if (unlikely(off >= sv->span_bytes))
        return false;
    uint32_t s = mesh_slot_of((uint32_t)off, sv->recip);
    uint64_t *key = p, k = mesh_key_of(p);
    if (unlikely(s * sv->object_size != off || *key == k ||
                 !(atomic_load_explicit(&mh->bits[s >> 6], memory_order_relaxed) & (1ULL << (s & 63))) ||
                 sv->top >= MESH_SV_CAP))
        return false;
    *key = k;
    mesh_sv_push_entry(sv, (uint16_t)(i << 8 | s), rng, randomize);
    return true;
}

bool mesh_sv_find(const mesh_shuffle_vector_t *sv, unsigned attach_idx, unsigned slot);
void mesh_sv_init(mesh_shuffle_vector_t *sv, unsigned cls);
void mesh_sv_add_span(mesh_shuffle_vector_t *sv, mesh_miniheap_t *mh, const uint64_t free_bits[MESH_BITMAP_WORDS]);
void mesh_sv_push_slots(mesh_shuffle_vector_t *sv, unsigned i, const uint64_t bits[MESH_BITMAP_WORDS]);
void mesh_sv_shuffle(mesh_shuffle_vector_t *sv, mesh_rng_t *rng);
void mesh_sv_check(const mesh_shuffle_vector_t *sv);

/* ---- thread_heap.c -------------------------------------------------------- */

typedef struct mesh_thread_heap {
    mesh_shuffle_vector_t sv[MESH_NUM_CLASSES];
    mesh_rng_t rng;
    uint32_t id;                 /* 1-based; miniheap owner fields hold it */
    uint32_t next_free;          /* registry free list */
    uint32_t tick;               /* counts frees down to the next look at the clock */
    uint64_t last_flush_ns;      /* when the heap last detached all its spans */
    bool live;
} mesh_thread_heap_t;

extern __thread mesh_thread_heap_t *mesh_tls_heap __attribute__((tls_model("initial-exec")));

int mesh_thread_heaps_init(void);
mesh_thread_heap_t *mesh_thread_heap_get_slow(void);
void mesh_thread_heap_release(mesh_thread_heap_t *th);
void mesh_thread_heap_flush(mesh_thread_heap_t *th);
void mesh_thread_heap_tick(mesh_thread_heap_t *th);
uint64_t mesh_thread_heaps_reserved_bytes(void);
void mesh_thread_heaps_fork_prepare(void);
void mesh_thread_heaps_fork_parent(void);
void mesh_thread_heaps_fork_child(void);

/* ---- global_heap.c --------------------------------------------------------- */

typedef struct mesh_class_heap {
    pthread_mutex_t lock;
    uint32_t partial[MESH_PARTIAL_BINS]; /* bin b holds spans about b/4 .. (b+1)/4 full */
    uint32_t full;
    uint32_t empty;
    uint32_t nempty;
    uint32_t npartial;                   /* spans on the partial lists */
    uint32_t cursor;                     /* where the next mesh pass's walk resumes */
    uint8_t cursor_bin;

    uint64_t nspans;                     /* spans of this class, in any state */
    uint64_t meshes;                     /* pairs meshed in this class */
    uint64_t slices;                     /* slices of passes run in this class (candidates searched) */
    /* under the mesh lock: passes this class sits out after finding nothing */
    uint32_t fruitless_partial;          /* its partial spans then */
    uint32_t fruitless_frees;            /* detached_frees then */
    uint8_t fruitless_runs, skipped;
    _Atomic uint32_t detached_frees;     /* frees into detached spans (a count that may lose some) */
    _Atomic uint32_t waiters;            /* program threads blocked on the lock: meshing yields it */
    uint32_t sweep_seen, sweep_pairs;    /* spans the cursor passed, pairs found, this sweep */
    bool dense;                          /* candidates include spans above the cut-off */
} __attribute__((aligned(64))) mesh_class_heap_t;

extern mesh_class_heap_t mesh_class_heaps[MESH_NUM_CLASSES];

/* The longest stalls since the last mesh event: a write held by the
 * barrier, a thread waiting for a class lock (a mesh slice that holds it
 * ends at its next check once a thread waits). */
extern _Atomic uint64_t mesh_stall_barrier_ns, mesh_stall_lock_ns;
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
/* The wait an idle pass precedes, so that the pass can give way as soon as
 * the wait would return at once (idle.c fills it in). */
typedef struct mesh_wait {
    bool (*ready)(const struct mesh_wait *w);
    const void *what;            /* pollfd array or fd sets, as ready reads them */
    size_t n;                    /* descriptors */
    int fd;                      /* an epoll descriptor */
    bool has_mask;               /* else mask is the thread's, read when a pass begins */
    sigset_t mask;               /* signals the wait leaves blocked */
} mesh_wait_t;
bool mesh_maybe_mesh(uint64_t idle_ns, mesh_wait_t *wait);
uint64_t mesh_idle_split_ns(uint64_t wait_ns);
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

#define MESH_PINSET_MAX 8          /* ranges one call pins; more are merged into them */
typedef struct mesh_pinset {
    uint8_t n, held;
    int slot[MESH_PINSET_MAX];
    uintptr_t range[MESH_PINSET_MAX][2];
} mesh_pinset_t;

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
