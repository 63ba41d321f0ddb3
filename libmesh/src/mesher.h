/*
 * The mesher's shared vocabulary and state, for the five files that make
 * it up:
 *
 *   mesh.c         the mesh primitive: one pair or a run of them (protect,
 *                  copy, remap, merge the bitmaps, punch), its cost in
 *                  mappings, and the punches a slice queues;
 *   mesh_match.c   which pairs: candidates collected from a class's partial
 *                  lists, the exact matcher, the SplitMesher;
 *   mesh_run.c     runs of neighbours: a partner continuing a run, runs
 *                  grown both ways and meshed in one go;
 *   mesh_pass.c    when: once a period or on demand, a pass over the
 *                  classes in time slices, classes that found nothing
 *                  sitting out, idle passes that give way to their wait;
 *   mesh_events.c  the MESH_EVENTS log, a JSON line per pass.
 *
 * Lock order: the mesher's lock (one pass at a time), then one class lock
 * at a time, then the arena lock.  Everything in mesh_mesher is under the
 * mesher's lock but last_pass_ns and maps_in_use, which are atomic.
 */
#ifndef MESH_MESHER_H
#define MESH_MESHER_H

#include "internal.h"

/* Classes with at most this many objects a span are matched exactly. */
#define MESH_EXACT_OBJECTS 16

/* Pairs of neighbours meshed together in one write-protect pause, at most:
 * a run's pause is its copies, a microsecond or two a span. */
#define MESH_MAX_RUN 16

/* A candidate carries a copy of its bitmap, so that probing scans one
 * dense array instead of chasing records (bits only ever get cleared under
 * the pass's feet, which cannot make two disjoint bitmaps overlap). */
typedef struct cand {
    uint64_t bits[MESH_BITMAP_WORDS];
    uint32_t id;
    uint32_t gen;                /* the record's generation when collected */
    uint8_t chain, used;
    uint8_t tried;               /* looked for a partner among the others already */
    uint32_t by_live;            /* exact matching: the candidates, fullest first */
} cand_t;

/* A class's candidates.  Collecting them reads a cold record a span, in
 * list order (each read waits for the last): in Redis a quarter of the
 * search's time, and most slices ran out of time before using what they
 * had collected.  So a slice that runs out of time keeps its set, and the
 * class's next slice goes on with it, for up to MESH_CANDS_KEEP_PERIODS
 * periods, instead of collecting again.  The class lock was let go in
 * between: a kept set is brought up to date first (mesh_match.c,
 * refresh_set). */
typedef struct cand_set {
    cand_t *cand;                /* from mmap, cap entries; NULL until needed */
    uint32_t n, cap;             /* n: candidates kept for the next slice, 0: none */
    bool indexed;                /* shuffled and in cand_of: the collection ran to its end */
    uint32_t npartial;           /* the class's partial spans when it was collected */
    uint64_t collected_ns;
} cand_set_t;

#define MESH_CANDS_KEEP_PERIODS 2

/* A pass started by a busy thread (from the allocation path, not before
 * a wait) gets 1/MESH_BUSY_SLICES of MESH_PASS_MS; if it ran out of time,
 * another may start 1/MESH_BUSY_SLICES of a period later, up to
 * MESH_BUSY_SLICES in a period.  A period's meshing budget is the same,
 * but a request that meets a pass waits for a quarter of it: 2 ms by
 * default.  Fifths (1.6 ms) cost fragmenter 3% of its footprint
 * (docs/results.md). */
#define MESH_BUSY_SLICES 4

/* That budget; a busy thread's scavenge has the same (punch.c). */
static inline uint64_t mesh_busy_budget_ns(void)
{
    return mesh_ms_to_ns(mesh_opt.pass_ms) / MESH_BUSY_SLICES;
}

typedef struct mesh_mesher {
    pthread_mutex_t lock;            /* one pass at a time; before every class lock */
    _Atomic uint64_t last_pass_ns;   /* when the last period's work began */
    _Atomic uint64_t resume_ns;      /* when a busy thread may run the period's next short pass (0: none) */
    unsigned busy_slices;            /* short passes run in this period */
    uint64_t start_ns;               /* start-up: event times count from it */
    unsigned first_class;            /* where the next pass starts */
    mesh_rng_t rng;                  /* the SplitMesher's random halves */
    mesh_class_heap_t *slice_class;  /* the class whose lock the slice under way holds */

    _Atomic int64_t maps_in_use;     /* mappings meshing has added, estimated */
    uint64_t map_budget;             /* mappings meshing may add; 0 until first needed */

    bool alone, alone_known;         /* one thread in the process when the slice's first mesh began */

    uint8_t *chain_len;              /* head record id -> virtual spans in its chain (mesh.c) */
    size_t chain_len_usable;         /* bytes of it mapped: past every head's id */

    uint32_t *punch_page;            /* (page, npages) pairs of meshed-away spans, */
    uint32_t punch_n, punch_cap;     /* punched when the slice ends */
    uint64_t punch_ns;               /* what one of those punches costs, on average */

    cand_set_t sets[MESH_NUM_CLASSES]; /* each class's candidates, kept between slices */
    cand_t *spare;                   /* a set's array not in use, for the next collection */
    uint32_t spare_cap;
    cand_t *cand;                    /* the candidates of the slice under way (a set's), */
    size_t ncand;                    /* how many */
    uint32_t *cand_of;               /* record id -> index in cand (stale unless it points back) */
    size_t cand_of_usable;           /* bytes of it mapped: enough for every record that exists */
    uint16_t *sorted;                /* exact matching: bitmaps fullest first, all ones once used */
    uint8_t stamp;                   /* marks the spans a collection took (in attach_idx) */

    int events_fd;                   /* MESH_EVENTS, or -1 */
    bool events_opened;
} mesh_mesher_t;

extern mesh_mesher_t mesh_mesher;

enum mesh_outcome { MESHED, FAILED, NO_MAPS, NO_GAIN, PINNED };

enum pass_kind {
    PASS_FORCED,  /* mesh.compact: waits for the lock, every class */
    PASS_IDLE,    /* a thread about to wait, or the first of a period's passes with its full budget */
    PASS_BUSY,    /* the first of a period, from a busy thread: a short budget */
    PASS_RESUMED, /* a busy thread's next short pass of the same period */
};

enum slice_outcome {
    SLICE_EMPTY,     /* nothing to find: not worth probing, or no pair */
    SLICE_DONE,      /* it probed every candidate it collected */
    SLICE_TIME,      /* its time ran out */
    SLICE_MAPS,      /* the mapping budget ran out */
};

/* Pauses by length: upper bounds in microseconds of all buckets but the
 * last, which takes the rest. */
#define MESH_PAUSE_BUCKETS 10
extern const uint32_t mesh_pause_bounds_us[MESH_PAUSE_BUCKETS - 1];

typedef struct pass_result {
    uint64_t pairs[MESH_NUM_CLASSES];
    uint64_t npairs;
    uint64_t max_pause_ns;
    uint64_t released_pages;
    uint64_t pauses[MESH_PAUSE_BUCKETS];
    bool out_of_time, out_of_maps;
    bool gave_way; /* an idle pass stopped because its wait would return at once */
} pass_result_t;

/* mesh.c */
uint64_t mesh_map_budget(void);
int mesh_cost(const mesh_miniheap_t *dst, const mesh_miniheap_t *src);
enum mesh_outcome mesh_pairs_locked(mesh_class_heap_t *ch, mesh_miniheap_t *const *dst, mesh_miniheap_t *const *src,
                                    uint32_t k, uint64_t *pause_ns, uint32_t *released);
void mesh_punch_flush(void);
void mesh_chain_len_unlock_reserved(void);

/* mesh_run.c */
bool mesh_run_partner(mesh_miniheap_t *mh, mesh_miniheap_t **dst, mesh_miniheap_t **src);
enum mesh_outcome mesh_run_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *dst, mesh_miniheap_t *src,
                                  pass_result_t *res, uint64_t deadline_ns);

/* mesh_match.c */
enum slice_outcome mesh_class_locked(unsigned cls, uint64_t deadline_ns, pass_result_t *res);
void mesh_cands_drop_stale(uint64_t now);

/* mesh_pass.c */
bool mesh_slice_over(uint64_t deadline_ns);
bool mesh_slice_alone(void);

/* mesh_events.c */
void mesh_log_event(uint64_t t0, uint64_t t1, const pass_result_t *res, uint64_t released, enum pass_kind kind);

#endif
