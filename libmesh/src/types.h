/*
 * libmesh's vocabulary: the tunables, the options and statistics tables,
 * and the records the allocator is made of (a span's record, the arena, a
 * class's heap, a thread's shuffle vectors), with the invariants each
 * keeps.  internal.h has the functions that work on them; os.h the
 * operating system.  docs/design.md tells the whole story.
 */
#ifndef MESH_TYPES_H
#define MESH_TYPES_H

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
 * stay on the fast path; every MESH_PERIOD_MS it detaches those of the
 * classes it has not used since the last period, so that they can be
 * shared, freed and meshed (mesh_thread_heap_period). */
#define MESH_SV_CAP 256
#define MESH_SV_MAX_ATTACH 64
#define MESH_SV_TARGET_SLOTS 64
#define MESH_SHUFFLE_RUN_BYTES 512   /* MESH_RANDOMIZE=1 shuffles runs of slots this long */
#define MESH_SV_HARVEST_MIN 16       /* slots freed remotely worth a refill without the lock */
#define MESH_SV_MAX_BYTES (1024 * 1024)
#define MESH_TICK_FREES 4096         /* frees between looks at the clock */

/* The free cache: objects a thread frees into spans it has not attached
 * (another thread's, or detached ones) stay reserved in a small per-class
 * stack, still marked allocated in their span, and its next mallocs of the
 * class take them back first, while their lines are in cache.  Full, it
 * gives its older half back to the spans; each period it gives all back,
 * so that meshing sees those slots free.  Capacity: MESH_CACHE_CAP objects
 * and at most MESH_CACHE_KB (an option, 64 KiB by default) per class. */
#define MESH_CACHE_CAP 256

#define MESH_PARTIAL_BINS 4          /* partial lists by occupancy quarter */
#define MESH_POPULATE_PAGES 32       /* pages faulted in at once past the frontier */
#define MESH_STALE_BATCH 8           /* stale spans restored before the frontier grows */
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

/* ---- options.c ----------------------------------------------------------- */

/* kind, name, environment variable, default, minimum, maximum, what it does.
 * A u64 option is a decimal integer from minimum to maximum; a str option is
 * a string of minimum to maximum bytes, copied at start-up so that a program
 * that changes its environment later does not change it (empty: unset). */
#define MESH_OPT_STR_MAX 4096
#define MESH_OPTIONS(X)                                                                                         \
    X(u64, randomize, "MESH_RANDOMIZE", 1, 0, 2, "slot order: 0 in order, 1 shuffled at refill, 2 also on free") \
    X(u64, meshing, "MESH_MESHING", 1, 0, 1, "mesh spans (0 = the no-meshing control)")                         \
    X(u64, period_ms, "MESH_PERIOD_MS", 100, 0, 3600000, "minimum milliseconds between passes")                 \
    X(u64, max_dirty_mb, "MESH_MAX_DIRTY_MB", 16, 0, 1048576, "freed MiB kept before a freeing thread punches down to half")                 \
    X(u64, cache_kb, "MESH_CACHE_KB", 64, 0, 1024, "free cache per class and thread, KiB (0 = off)")           \
    X(u64, mallocstats, "MALLOCSTATS", 0, 0, 2, "print statistics at exit (1 summary, 2 detail)")               \
    X(u64, arena_gb, "MESH_ARENA_GB", MESH_DEFAULT_ARENA_GB, 1, 8192, "virtual arena reservation")              \
    X(u64, seed, "MESH_SEED", 0, 0, UINT32_MAX, "random seed (0 = from the OS)")                                \
    X(u64, pass_ms, "MESH_PASS_MS", 8, 1, 10000, "time budget of one mesh pass, in milliseconds")               \
    X(u64, idle_pass_ms, "MESH_IDLE_PASS_MS", 24, 1, 10000, "budget of a pass by a thread about to sleep")      \
    X(u64, max_maps, "MESH_MAX_MAPS", 0, 0, UINT32_MAX, "mappings meshing may use (0 = from vm.max_map_count)") \
    X(u64, populate_meshed, "MESH_POPULATE_MESHED", 0, 0, 1, "map a mesh's one-page spans in at once (fewer faults, fewer meshes a pass)") \
    X(str, events, "MESH_EVENTS", "", 0, MESH_OPT_STR_MAX - 1, "file to append one JSON line per mesh pass to")

#define MESH_OPT_FIELD_u64(name) uint64_t name;
#define MESH_OPT_FIELD_str(name) char name[MESH_OPT_STR_MAX];

typedef struct mesh_options {
#define MESH_OPT_FIELD(kind, name, env, def, lo, hi, doc) MESH_OPT_FIELD_##kind(name)
    MESH_OPTIONS(MESH_OPT_FIELD)
#undef MESH_OPT_FIELD
} mesh_options_t;

extern mesh_options_t mesh_opt;

/* MESH_RANDOMIZE's levels.  Refill shuffles the slots it loads into a
 * vector; a free can also swap the slot it pushes with a random one, so
 * that the vector stays uniformly shuffled, or leave it on top, so that the
 * next malloc of the class reuses it while its line is still in cache. */
enum {
    MESH_RANDOMIZE_OFF = 0,    /* slots in address order: the control */
    MESH_RANDOMIZE_REFILL = 1, /* shuffled at refill; a freed slot is reused first */
    MESH_RANDOMIZE_FREE = 2,   /* shuffled at refill and on every free */
};

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
    X(scavenge_stopped, "periodic scavenges cut short")                         \
    X(scavenge_bound_count, "scavenges by threads that freed past MESH_MAX_DIRTY_MB") \
    X(scavenge_max_ns, "longest scavenge, ns (the arena lock is held throughout)") \
    X(fork_copy_bytes, "bytes copied for fork children")                        \
    X(mesh_passes, "mesh passes run")                                           \
    X(mesh_pass_ns, "time spent in mesh passes, ns")                            \
    X(mesh_pass_cpu_ns, "CPU time of the threads running mesh passes, ns")      \
    X(mesh_pass_max_ns, "longest mesh pass, ns")                                \
    X(mesh_pause_max_ns, "longest write-protect pause of one mesh, ns")         \
    X(mesh_pauses, "write-protect pauses: a run of neighbours meshed together is one") \
    X(mesh_unprotected, "pauses without protection: the process had one thread") \
    X(mesh_map_limited, "passes stopped by the mapping budget")                 \
    X(mesh_time_limited, "passes stopped by their time budget")                 \
    X(mesh_no_gain, "meshes not made: they would give back no page")            \
    X(mesh_failed, "meshes abandoned because a system call failed")               \
    X(idle_gave_way, "idle passes cut short: the wait had something to return")             \
    X(idle_splits, "waits split where a mesh period began during them")             \
    X(loop_starved, "periods an event loop's work ran after 10 with no quiet idle point") \
    X(unmesh_count, "meshed spans restored to their own pages")                 \
    X(stale_pages, "pages of dissolved chains waiting to be restored")          \
    X(retired_pages, "virtual pages lost because the arena file was closed")    \
    X(barrier_waits, "writes that waited for a mesh or fork to finish")         \
    X(barrier_wait_max_ns, "longest wait of a write for a mesh, ns")            \
    X(lock_wait_max_ns, "longest wait of a thread for a class lock, ns")        \
    X(arena_wait_max_ns, "longest wait of a thread for the arena lock, ns")     \
    X(pin_waits, "system calls that waited for a mesh or fork before starting") \
    X(mesh_pinned, "meshes not made: a system call was writing into src")       \
    X(efault_retries, "system calls retried after EFAULT during a mesh")        \
    X(defrag_allocs, "objects placed in the fullest spans by mesh_defrag_malloc")

typedef struct mesh_stats {
#define MESH_STAT_FIELD(name, doc) _Atomic uint64_t name;
    MESH_STATS(MESH_STAT_FIELD)
#undef MESH_STAT_FIELD
} mesh_stats_t;

extern mesh_stats_t mesh_stats;
#define MESH_STAT_ADD(name, n) atomic_fetch_add_explicit(&mesh_stats.name, (n), memory_order_relaxed)
void mesh_stat_max(_Atomic uint64_t *hwm, uint64_t value);
void mesh_stats_print(int level);

/* ---- size classes ---- */

typedef struct mesh_size_class {
    uint32_t object_size;
    uint32_t nobjects;   /* objects per span */
    uint32_t npages;     /* pages per span */
    uint32_t recip;      /* ceil(2^32 / object_size): slot = offset * recip >> 32 */
    uint64_t valid[4];   /* bitmap words with one bit per slot of a span */
} mesh_size_class_t;

/* ---- spans ---- */

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
    MESH_MH_FREE_STALE,     /* FREE span that still maps the pages of a dissolved chain */
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
    union {
        _Atomic uint64_t bits[MESH_BITMAP_WORDS]; /* SMALL: 1 = allocated or reserved */
        uint64_t dirty_epoch;    /* FREE_DIRTY: the period its pages became dirty in */
        uint32_t stale_file;     /* FREE_STALE: the file page its first page still maps */
    };
    _Atomic uint32_t owner;      /* thread heap id while attached, else 0 */
    uint32_t span_page;          /* first page, as an index into the arena */
    uint32_t npages;
    uint32_t next;               /* list link: record id, 0 ends the list */
    union {
        uint32_t prev;           /* on a list: the previous record, 0 at the head */
        uint32_t head;           /* ALIAS: the SMALL span whose pages it maps */
    };
    uint32_t mesh_next;          /* next virtual span sharing these pages */
    _Atomic uint32_t gen;        /* bumped each time the record is recycled */
    uint8_t kind, cls, state;
    union {
        uint8_t attach_idx;      /* ATTACHED: index in the owner's shuffle vector */
        uint8_t stamp;           /* detached: the candidate collection that took it last */
    };
} __attribute__((aligned(64))) mesh_miniheap_t;

_Static_assert(sizeof(mesh_miniheap_t) == 64, "a miniheap record is one cache line");

/* ---- the arena ---- */

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
    bool fd_held;                /* found ours in a slice that runs alone: not checked again in it */
    uint32_t npages;             /* arena pages */
    uint32_t max_records;        /* records the reservation holds */
    const char *no_file;         /* why the arena has no file at all, or NULL */
    pthread_mutex_t lock;        /* taken with mesh_arena_lock() */
    _Atomic uint32_t waiters;    /* threads waiting for lock: a scavenge stops for them */
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
    uint32_t stale;              /* list of FREE_STALE spans, newest first (pages: mesh_stats.stale_pages) */
    uint64_t nonempty[2][3];     /* bitmaps of non-empty bins (dirty, clean) */
    int fork_fd;                 /* the child's copy, made in the fork prepare step */
} mesh_arena_t;

/* ---- thread heaps ---- */

typedef struct mesh_shuffle_vector {
    uint16_t top;                /* entries[0, top) are free slots, popped from the end */
    uint8_t nattached;
    uint8_t cls;
    uint32_t object_size;
    uint32_t span_bytes;
    uint32_t recip;
    uint16_t ncached;            /* cached[0, ncached): the free cache, newest last */
    uint16_t cache_cap;          /* its capacity for this class (MESH_CACHE_KB) */
    uint16_t flush_top;          /* top after the last period's detach: unchanged, the class sat idle */
    char *entries[MESH_SV_CAP];               /* free slots, at their head span's address */
    char *base[MESH_SV_MAX_ATTACH];           /* first byte of each attached span */
    uint32_t mh_id[MESH_SV_MAX_ATTACH];
    void *cached[MESH_CACHE_CAP];             /* freed objects of spans not attached here */
} mesh_shuffle_vector_t;

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

typedef struct mesh_thread_heap {
    mesh_shuffle_vector_t sv[MESH_NUM_CLASSES];
    mesh_rng_t rng;
    uint32_t id;                 /* 1-based; miniheap owner fields hold it */
    uint32_t next_free;          /* registry free list */
    uint32_t tick;               /* counts frees down to the next look at the clock */
    uint64_t last_flush_ns;      /* when the heap last detached all its spans */
    bool live;
} mesh_thread_heap_t;

/* ---- the global heap ---- */

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

/* ---- idle waits and pinned buffers ---- */

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

#define MESH_PINSET_MAX 8          /* ranges one call pins; more are merged into them */
typedef struct mesh_pinset {
    uint8_t n, held;
    int slot[MESH_PINSET_MAX];
    uintptr_t range[MESH_PINSET_MAX][2];
} mesh_pinset_t;

#endif
