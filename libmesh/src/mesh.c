/*
 * Meshing (DESIGN §2.5; Mesh, PLDI 2019): two spans of a size class whose
 * live objects sit at different offsets are merged onto one span's physical
 * pages, and both virtual spans keep working.
 *
 * A pass, at most once per MESH_PERIOD_MS (from the free path, refills and
 * idle points) or on demand (mesh.compact), looks at each meshable class:
 * the detached spans below the occupancy cut-off are split at random into
 * two halves, and each span of the left half probes up to MESH_PROBES spans
 * of the right half for one whose bitmap does not overlap its own (the
 * SplitMesher).  Each pair found is meshed at once:
 *
 *   1. every virtual span of src (src itself and what was meshed onto it)
 *      is made read-only: the write barrier holds writers off;
 *   2. src's live objects are copied to the same offsets in dst;
 *   3. every one of those virtual spans is mapped onto dst's file pages,
 *      read-write;
 *   4. src becomes an alias in dst's chain, and its bitmap is merged into
 *      dst's;
 *   5. src's own pages are punched out of the file.
 *
 * A chain lives until its last object is freed: then every alias gets its
 * identity mapping back and returns to the arena (arena.c).
 *
 * Each pass is bounded in time (MESH_PASS_MS) and every mesh in mappings
 * (each remapped span costs the kernel up to two; vm.max_map_count is a hard
 * limit): at the budget, meshing stops and allocation goes on.
 *
 * Lock order: the mesh lock, then class locks (one at a time), then the
 * arena lock.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static pthread_mutex_t mesh_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t last_pass_ns;
static _Atomic int64_t maps_in_use;     /* mappings meshing has added, estimated */
static uint64_t map_budget;              /* mappings meshing may add */
static mesh_rng_t rng;                   /* under the mesh lock */
static uint64_t start_ns;
static unsigned first_class;            /* where the next pass starts */
static int events_fd = -1;
static bool events_opened;

/* Candidate scratch space, under the mesh lock: metadata comes from mmap.
 * Each candidate carries a copy of its bitmap, so that probing scans one
 * dense array instead of chasing records (bits only ever get cleared under
 * the pass's feet, which cannot make two disjoint bitmaps overlap). */
typedef struct cand {
    uint64_t bits[MESH_BITMAP_WORDS];
    uint32_t id;
    uint8_t chain, used;
    uint32_t by_live;            /* exact matching: the candidates, fullest first */
} cand_t;

#define MESH_EXACT_OBJECTS 16
static cand_t *cand;
static size_t cand_cap;
static size_t ncand;            /* candidates of the slice under way */
static uint32_t *cand_of;       /* record id -> index in cand (stale unless it points back) */
static size_t cand_of_usable;   /* bytes of it mapped: enough for every record that exists */

void mesh_mesh_init(void)
{
    start_ns = mesh_os_now_ns();
    rng.s = (mesh_opt.seed ? mesh_opt.seed ^ 0x6a09e667f3bcc909ULL : mesh_os_random64()) | 1;
}

void mesh_maps_add(int64_t n)
{
    atomic_fetch_add_explicit(&maps_in_use, n, memory_order_relaxed);
}

uint64_t mesh_maps_in_use(void)
{
    int64_t v = atomic_load_explicit(&maps_in_use, memory_order_relaxed);
    return v > 0 ? (uint64_t)v : 0;
}

unsigned mesh_chain_length(const mesh_miniheap_t *head)
{
    unsigned n = 1;
    for (uint32_t id = head->mesh_next; id; id = mesh_arena.records[id].mesh_next)
        n++;
    return n;
}

/* Three quarters of the mappings the process has left when meshing
 * starts, unless MESH_MAX_MAPS says otherwise. */
static uint64_t budget(void)
{
    if (!map_budget) {
        if (mesh_opt.max_maps) {
            map_budget = mesh_opt.max_maps;
        } else {
            uint64_t max = mesh_os_max_map_count(), used = mesh_os_count_maps();
            map_budget = max > used ? (max - used) * 3 / 4 : 1;
        }
    }
    return map_budget;
}

static bool reserve_scratch(size_t n)
{
    void *p;
    size_t reserved = (size_t)mesh_arena.max_records * sizeof *cand_of;
    if (!cand_of) {
        if (mesh_os_map_none(reserved, &p) != 0)
            return false;
        cand_of = p;
    }
    /* Every span on this class's lists (whose lock is held) has a record
     * below nrecords. */
    uint32_t nrec = __atomic_load_n(&mesh_arena.nrecords, __ATOMIC_ACQUIRE);
    if (!mesh_reserve_grow(cand_of, reserved, &cand_of_usable, (size_t)nrec * sizeof *cand_of))
        return false;
    if (n <= cand_cap)
        return true;
    size_t cap = cand_cap ? cand_cap : 1024;
    while (cap < n)
        cap *= 2;
    if (mesh_os_map_anon(cap * sizeof *cand, MESH_PAGE_SIZE, &p) != 0)
        return false;
    if (cand)
        mesh_os_unmap(cand, cand_cap * sizeof *cand);
    cand = p;
    cand_cap = cap;
    return true;
}

/* After mlockall: cand_of's unused part is reserved, not locked memory. */
void mesh_mesh_unlock_reserved(void)
{
    pthread_mutex_lock(&mesh_lock);
    mesh_reserve_unlock(cand_of, (size_t)mesh_arena.max_records * sizeof *cand_of, cand_of_usable);
    pthread_mutex_unlock(&mesh_lock);
}

static mesh_miniheap_t *rec(uint32_t id)
{
    return &mesh_arena.records[id];
}

static bool disjoint(const cand_t *a, const cand_t *b)
{
    uint64_t overlap = 0;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        overlap |= a->bits[w] & b->bits[w];
    return overlap == 0;
}

/* Pages of meshed-away spans, punched together once a class is done: one
 * fallocate per run of neighbouring pages instead of one per mesh. */
static uint32_t *punch_page;
static uint32_t punch_n, punch_cap;

static void punch_flush(void)
{
    /* insertion sort: the list is short (a pass meshes a few hundred) */
    for (uint32_t i = 1; i < punch_n; i += 2)
        for (uint32_t j = i; j > 1 && punch_page[j - 3] > punch_page[j - 1]; j -= 2) {
            uint32_t p = punch_page[j - 3], n = punch_page[j - 2];
            punch_page[j - 3] = punch_page[j - 1];
            punch_page[j - 2] = punch_page[j];
            punch_page[j - 1] = p;
            punch_page[j] = n;
        }
    for (uint32_t i = 0; i < punch_n;) {
        uint32_t start = punch_page[i], end = start + punch_page[i + 1];
        for (i += 2; i < punch_n && punch_page[i] == end; i += 2)
            end += punch_page[i + 1];
        mesh_arena_punch_pages(start, end - start);
    }
    punch_n = 0;
}

static void punch_later(uint32_t page, uint32_t npages)
{
    if (punch_n + 2 > punch_cap) {
        uint32_t cap = punch_cap ? punch_cap * 2 : 4096;
        void *p;
        if (mesh_os_map_anon(cap * sizeof *punch_page, MESH_PAGE_SIZE, &p) != 0) {
            mesh_arena_punch_pages(page, npages);
            return;
        }
        if (punch_page) {
            memcpy(p, punch_page, punch_n * sizeof *punch_page);
            mesh_os_unmap(punch_page, punch_cap * sizeof *punch_page);
        }
        punch_page = p;
        punch_cap = cap;
    }
    punch_page[punch_n++] = page;
    punch_page[punch_n++] = npages;
}

/* Whether a slice must stop: its deadline, less the time the punches it
 * has queued will take once it stops (a couple of microseconds each). */
static bool out_of_time(uint64_t deadline_ns)
{
    return mesh_os_now_ns() + (uint64_t)(punch_n / 2) * 2000 > deadline_ns;
}

/* The mappings meshing src onto dst adds (fewer than none: it removes). */
static int mesh_cost(const mesh_miniheap_t *dst, const mesh_miniheap_t *src)
{
    int cost = 0;
    unsigned k = 0;
    for (uint32_t id = mesh_mh_id(src); id && k < MESH_MAX_CHAIN; id = rec(id)->mesh_next, k++)
        cost += mesh_arena_remap_cost(rec(id)->span_page, src->npages, src->span_page, dst->span_page);
    return cost;
}

enum mesh_outcome { MESHED, FAILED, NO_MAPS, NO_GAIN };

/* Meshes src onto dst (class lock held; both detached and taken off their
 * lists).  Returns the write-protect pause in *pause_ns and the physical
 * pages the mesh gives back in *released: src's, less those trim gave back
 * before, less dst's trimmed pages that src's objects now land on. */
static enum mesh_outcome mesh_pair_locked(mesh_class_heap_t *ch, mesh_miniheap_t *dst, mesh_miniheap_t *src,
                                          uint64_t *pause_ns, uint32_t *released)
{
    const mesh_size_class_t *sc = &mesh_classes[dst->cls];
    uint32_t spans[MESH_MAX_CHAIN], n = 0, k;
    for (uint32_t id = mesh_mh_id(src); id && n < MESH_MAX_CHAIN; id = rec(id)->mesh_next)
        spans[n++] = id;
    /* The mappings the kernel will keep more once src's spans map dst's
     * pages; protecting a span splits up to two more for a moment. */
    int cost = mesh_cost(dst, src);
    if (mesh_maps_in_use() + (uint64_t)(cost > 0 ? cost : 0) + 2 > budget())
        return NO_MAPS;
    /* dst's trimmed pages stay given back where src has no object.  A
     * mesh that would bring back as many of dst's trimmed pages as it
     * gives back of src's is not worth its mapping.  (Single-page spans
     * are never trimmed: the common case looks at no bitmap here.) */
    uint32_t src_trimmed = mesh_arena.trimmed[mesh_mh_id(src)];
    uint32_t dst_trimmed = mesh_arena.trimmed[mesh_mh_id(dst)];
    uint32_t written = dst_trimmed ? dst_trimmed & ~mesh_global_free_pages(src) : 0;
    uint32_t gain = sc->npages - (uint32_t)mesh_popcount64(src_trimmed) - (uint32_t)mesh_popcount64(written);
    if (!gain) {
        MESH_STAT_ADD(mesh_no_gain, 1);
        return NO_GAIN;
    }

    uint64_t t0 = mesh_os_now_ns();
    mesh_barrier_begin();
    for (k = 0; k < n; k++)
        if (mesh_arena_protect(rec(spans[k])->span_page, sc->npages, false) != 0)
            break;
    if (k < n) {
        while (k-- > 0)
            mesh_arena_protect(rec(spans[k])->span_page, sc->npages, true);
        mesh_barrier_end();
        return FAILED;
    }

    /* Copy src's objects (a superset of the live ones: frees may race,
     * allocations cannot) to the same offsets in dst's free slots. */
    char *from = mesh_mh_start(src), *to = mesh_mh_start(dst);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t bits = atomic_load(&src->bits[w]);
        while (bits) {
            unsigned b = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            size_t off = (size_t)(w * 64 + b) * sc->object_size;
            memcpy(to + off, from + off, sc->object_size);
        }
    }

    for (k = 0; k < n; k++)
        if (mesh_arena_map_at(rec(spans[k])->span_page, sc->npages, dst->span_page) != 0)
            break;
    if (k < n) {
        /* Put back what moved: src's pages are intact until punched. */
        for (uint32_t j = 0; j < k; j++)
            mesh_arena_map_at(rec(spans[j])->span_page, sc->npages, src->span_page);
        for (uint32_t j = k; j < n; j++)
            mesh_arena_protect(rec(spans[j])->span_page, sc->npages, true);
        mesh_barrier_end();
        return FAILED;
    }

    /* src and its aliases now belong to dst's chain.  The kind changes
     * before the bits move, so that a free that finds src's bit gone knows
     * to look again. */
    uint32_t dst_id = mesh_mh_id(dst);
    for (k = 1; k < n; k++)
        __atomic_store_n(&rec(spans[k])->prev, dst_id, __ATOMIC_RELEASE);
    atomic_fetch_add(&src->gen, 1);
    src->state = MESH_MH_NONE;
    __atomic_store_n(&src->prev, dst_id, __ATOMIC_RELEASE);
    __atomic_store_n(&src->kind, MESH_KIND_ALIAS, __ATOMIC_RELEASE);
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
        uint64_t moved = atomic_exchange(&src->bits[w], 0);
        mesh_assert((moved & atomic_load(&dst->bits[w])) == 0);
        atomic_fetch_or(&dst->bits[w], moved);
    }
    mesh_untrim(mesh_mh_id(src), 0);
    mesh_untrim(dst_id, ~written);
    mesh_miniheap_t *last = dst;
    while (last->mesh_next)
        last = rec(last->mesh_next);
    last->mesh_next = mesh_mh_id(src);
    mesh_barrier_end();
    *pause_ns = mesh_os_now_ns() - t0;

    punch_later(src->span_page, sc->npages);
    mesh_maps_add(cost);
    ch->nspans--;
    ch->meshes++;
    MESH_STAT_ADD(mesh_count, 1);
    *released = gain;
    MESH_STAT_ADD(meshed_pages_total, *released);
    uint64_t meshed = MESH_STAT_ADD(meshed_pages, sc->npages) + sc->npages;
    mesh_stat_max(&mesh_stats.meshed_pages_hwm, meshed);
    mesh_stat_max(&mesh_stats.mesh_pause_max_ns, *pause_ns);
    return MESHED;
}

static bool in_partial_bin(const mesh_miniheap_t *mh, unsigned cls, unsigned bin)
{
    return mh->kind == MESH_KIND_SMALL && mh->cls == cls && mh->state == MESH_MH_PARTIAL + bin;
}

/* Adds mh to the candidates if it is sparse enough (dense: if it has two
 * free slots) and its chain can grow. */
static void consider(mesh_miniheap_t *mh, const mesh_size_class_t *sc, bool dense, uint8_t stamp, size_t *n)
{
    if (mh->attach_idx == stamp)
        return; /* already a candidate in this pass */
    mh->attach_idx = stamp;
    if (!mesh_arena_span_in_file(mh))
        return; /* private memory cannot be mapped twice */
    unsigned live = mesh_mh_live(mh);
    if (dense ? live + 2 > sc->nobjects : live * 100 >= sc->nobjects * MESH_OCCUPANCY_CUTOFF)
        return;
    unsigned chain = mesh_chain_length(mh);
    if (chain >= MESH_MAX_CHAIN)
        return;
    cand_t *c = &cand[(*n)++];
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        c->bits[w] = atomic_load_explicit(&mh->bits[w], memory_order_relaxed);
    c->id = mesh_mh_id(mh);
    c->chain = (uint8_t)chain;
    c->used = 0;
}

/* The detached spans of a class below the occupancy cut-off whose chains
 * can grow (class lock held), at most MESH_MAX_CANDIDATES of them: a pass
 * has time for a few hundred meshes, and walking every span of a large heap
 * would eat that time.  Half come from the heads of the partial lists
 * (emptiest bin first), where the spans meshed or freed into most recently
 * are, so that chains keep growing; half from a cursor that each pass
 * moves on through the lists, so that a set of spans that cannot mesh with
 * each other is not all a pass ever sees.  A detached span's attach_idx is
 * free; it marks the spans already taken in this pass. */
static size_t collect_locked(mesh_class_heap_t *ch, unsigned cls)
{
    static uint8_t stamp;
    const mesh_size_class_t *sc = &mesh_classes[cls];
    size_t n = 0, max = ch->npartial < MESH_MAX_CANDIDATES ? ch->npartial : MESH_MAX_CANDIDATES;
    if (!reserve_scratch(max))
        return 0;
    /* MESH_SV_MAX_ATTACH .. 255: never an attach index a span kept from
     * its last owner. */
    stamp = stamp < MESH_SV_MAX_ATTACH || stamp == 255 ? MESH_SV_MAX_ATTACH : (uint8_t)(stamp + 1);
    for (unsigned b = 0; b < MESH_PARTIAL_BINS && n < max / 2; b++)
        for (uint32_t id = ch->partial[b]; id && n < max / 2; id = rec(id)->next)
            consider(rec(id), sc, ch->dense, stamp, &n);

    unsigned b = ch->cursor_bin % MESH_PARTIAL_BINS;
    uint32_t id = ch->cursor;
    if (!id || !in_partial_bin(rec(id), cls, b)) {
        b = 0;
        id = ch->partial[0];
    }
    uint64_t visited = 0, empty_bins = 0;
    while (n < max && visited < ch->npartial && empty_bins <= MESH_PARTIAL_BINS) {
        if (!id) {
            b = (b + 1) % MESH_PARTIAL_BINS;
            id = ch->partial[b];
            empty_bins += !id;
            continue;
        }
        empty_bins = 0;
        mesh_miniheap_t *mh = rec(id);
        id = mh->next;
        visited++;
        consider(mh, sc, ch->dense, stamp, &n);
    }
    ch->cursor_bin = (uint8_t)b;
    ch->cursor = id;
    ch->sweep_seen += (uint32_t)visited;
    return n;
}

/* Upper bounds, in microseconds, of the pause histogram's buckets; the last
 * bucket takes the rest. */
static const uint32_t pause_bounds_us[] = {10, 20, 50, 100, 200, 500, 1000, 2000, 5000};
#define PAUSE_BUCKETS (sizeof pause_bounds_us / sizeof pause_bounds_us[0] + 1)

typedef struct pass_result {
    uint64_t pairs[MESH_NUM_CLASSES];
    uint64_t npairs;
    uint64_t max_pause_ns;
    uint64_t released_pages;
    uint64_t pauses[PAUSE_BUCKETS];
    bool out_of_time, out_of_maps;
} pass_result_t;

/* The SplitMesher over one class (class lock held). */
/* Whether probing the candidates can be expected to find anything.  Two
 * random spans with k of n slots taken are disjoint with probability about
 * (1 - k/n)^k, and a left span gets MESH_PROBES tries; the estimate takes
 * the emptiest quarter of the candidates, where pairs are likeliest (a
 * class with many full-ish spans can still hold many sparse ones).  Dense
 * classes (hundreds of slots a span, half full) fail it, and the time goes
 * to classes that can mesh. */
static bool worth_probing(size_t n, unsigned nobjects)
{
    uint32_t count[MESH_MAX_OBJECTS + 1] = {0};
    for (size_t i = 0; i < n; i++) {
        unsigned live = 0;
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
            live += mesh_popcount64(cand[i].bits[w]);
        count[live]++;
    }
    size_t quarter = n / 4 ? n / 4 : 1, seen = 0;
    double occupied = 0;
    for (unsigned live = 0; live <= nobjects && seen < quarter; live++) {
        size_t take = count[live] < quarter - seen ? count[live] : quarter - seen;
        occupied += (double)take * live;
        seen += take;
    }
    occupied /= (double)seen;
    double p = occupied / nobjects, pair = 1.0, miss = 1.0;
    for (unsigned i = 0; i < (unsigned)(occupied + 0.5); i++)
        pair *= 1.0 - p;
    for (unsigned k = 0; k < MESH_PROBES; k++)
        miss *= 1.0 - pair;
    return 1.0 - miss >= 0.02;
}

/* What one slice of a pass did in a class. */
enum slice_outcome {
    SLICE_EMPTY,     /* nothing to find: not worth probing, or no pair */
    SLICE_DONE,      /* it probed every candidate it collected */
    SLICE_TIME,      /* its time ran out */
    SLICE_MAPS,      /* the mapping budget ran out */
};

static cand_t *cand_lookup(uint32_t id)
{
    uint32_t i = cand_of[id];
    return i < ncand && cand[i].id == id ? &cand[i] : NULL;
}

/* Meshes src onto dst, detached partial spans of the class (class lock
 * held), and marks them used where they are candidates. */
static enum mesh_outcome mesh_two_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *dst,
                                         mesh_miniheap_t *src, pass_result_t *res)
{
    cand_t *cd = cand_lookup(mesh_mh_id(dst)), *cs = cand_lookup(mesh_mh_id(src));
    mesh_global_list_remove_locked(ch, dst);
    mesh_global_list_remove_locked(ch, src);
    uint64_t pause = 0;
    uint32_t released = 0;
    enum mesh_outcome o = mesh_pair_locked(ch, dst, src, &pause, &released);
    if (o == MESHED) {
        res->pairs[cls]++;
        res->npairs++;
        res->released_pages += released;
        if (pause > res->max_pause_ns)
            res->max_pause_ns = pause;
        unsigned bucket = 0;
        while (bucket < PAUSE_BUCKETS - 1 && pause >= pause_bounds_us[bucket] * 1000ULL)
            bucket++;
        res->pauses[bucket]++;
    } else {
        mesh_global_place_locked(ch, src);
        if (o == FAILED)
            MESH_STAT_ADD(mesh_failed, 1);
    }
    mesh_global_place_locked(ch, dst);
    if (cd)
        cd->used = 1;
    if (cs)
        cs->used = 1;
    if (o == NO_MAPS)
        res->out_of_maps = true;
    return o;
}

/*
 * Runs.  Each meshed span is a mapping of its own unless its virtual
 * neighbours map the file pages next to its new ones: then the kernel merges
 * them into one.  Left to chance, nearly every mesh costs the kernel two
 * mappings (about 200 bytes each, charged to the program's memory: in Redis
 * 35k of them, 6.6 MiB, a twentieth of what it uses).  So a span whose
 * neighbour was meshed onto span D is meshed, when it can be, onto D's
 * neighbour on the same side, which makes the two one mapping; after each
 * mesh the run is grown both ways for as long as the next two spans fit.
 */

/* The detached partial span of cls that starts at page, or NULL. */
static mesh_miniheap_t *span_at(uint32_t page, unsigned cls)
{
    if (!mesh_arena_page_in_file(page))
        return NULL;
    mesh_miniheap_t *mh = rec(atomic_load_explicit(&mesh_arena.table[page], memory_order_acquire));
    if (mh->kind != MESH_KIND_SMALL || mh->cls != cls || mh->span_page != page || !mesh_arena_span_in_file(mh) ||
        mh->state < MESH_MH_PARTIAL || mh->state >= MESH_MH_PARTIAL + MESH_PARTIAL_BINS)
        return NULL;
    return mh;
}

/* Whether a and b (from span_at) can be meshed now. */
static bool can_mesh(const mesh_miniheap_t *a, const mesh_miniheap_t *b)
{
    const cand_t *ca = cand_lookup(mesh_mh_id(a)), *cb = cand_lookup(mesh_mh_id(b));
    if (a == b || (ca && ca->used) || (cb && cb->used))
        return false;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        if (atomic_load_explicit(&a->bits[w], memory_order_relaxed) &
            atomic_load_explicit(&b->bits[w], memory_order_relaxed))
            return false;
    return mesh_chain_length(a) + mesh_chain_length(b) <= MESH_MAX_CHAIN;
}

/* A partner for mh that continues a run: (dst, src) with mh one of them and
 * the mesh adding no mapping.  mh as src: the span after the one its left
 * neighbour maps, or before the one its right neighbour maps.  mh as dst:
 * the spans next to the virtual spans that map the file pages on either
 * side of mh's. */
static bool run_partner(mesh_miniheap_t *mh, mesh_miniheap_t **dst, mesh_miniheap_t **src)
{
    const uint32_t v = mh->span_page, np = mh->npages;
    mesh_miniheap_t *opt[2 + 2 * MESH_MAX_CHAIN][2];
    unsigned nopt = 0;
    if (v > 0) {
        uint32_t f = mesh_arena_file_page(v - 1);
        if (f != v - 1 && (opt[nopt][0] = span_at(f + 1, mh->cls)))
            opt[nopt++][1] = mh;
    }
    if (v + np < mesh_arena.npages) {
        uint32_t f = mesh_arena_file_page(v + np);
        if (f != v + np && (opt[nopt][0] = span_at(f - np, mh->cls)))
            opt[nopt++][1] = mh;
    }
    for (int side = -1; side <= 1; side += 2) {
        /* the span whose pages are next to mh's, and its aliases */
        uint32_t page = side < 0 ? v - 1 : v + np;
        if (page >= mesh_arena.npages)
            continue;
        mesh_miniheap_t *h = rec(atomic_load_explicit(&mesh_arena.table[page], memory_order_acquire));
        if (h->kind != MESH_KIND_SMALL || (side < 0 ? h->span_page + h->npages != v : h->span_page != page))
            continue;
        unsigned k = 0;
        for (uint32_t id = h->mesh_next; id && k < MESH_MAX_CHAIN; id = rec(id)->mesh_next, k++) {
            const mesh_miniheap_t *a = rec(id);
            if ((opt[nopt][1] = span_at(side < 0 ? a->span_page + a->npages : a->span_page - np, mh->cls)))
                opt[nopt++][0] = mh;
        }
    }
    int best = 1;
    for (unsigned i = 0; i < nopt; i++) {
        if (!can_mesh(opt[i][0], opt[i][1]))
            continue;
        int cost = mesh_cost(opt[i][0], opt[i][1]);
        if (cost < best) {
            best = cost;
            *dst = opt[i][0];
            *src = opt[i][1];
        }
    }
    return best <= 0;
}

/* Meshes src onto dst, then grows the run both ways: the spans next to
 * src's virtual span onto the spans next to dst's, for as long as they fit
 * and add no mapping. */
static enum mesh_outcome mesh_run_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *dst,
                                         mesh_miniheap_t *src, pass_result_t *res, uint64_t deadline_ns)
{
    enum mesh_outcome o = mesh_two_locked(ch, cls, dst, src, res);
    if (o != MESHED)
        return o;
    const uint32_t np = src->npages;
    for (int side = -1; side <= 1; side += 2) {
        uint32_t v = src->span_page, f = dst->span_page;
        for (;;) {
            v += side * (int32_t)np;
            f += side * (int32_t)np;
            mesh_miniheap_t *s = span_at(v, cls), *d = span_at(f, cls);
            if (!s || !d || !can_mesh(d, s) || mesh_cost(d, s) > 0)
                break;
            if (out_of_time(deadline_ns))
                return MESHED;
            o = mesh_two_locked(ch, cls, d, s, res);
            if (o == NO_MAPS)
                return NO_MAPS;
            if (o != MESHED)
                break;
        }
    }
    return MESHED;
}

/* Meshes the candidates l and r (class lock held) and marks both used:
 * the way round that adds fewer mappings, else the longer chain stays where
 * it is (fewer spans to remap), else the fuller span. */
static enum mesh_outcome mesh_cands_locked(mesh_class_heap_t *ch, unsigned cls, cand_t *l, cand_t *r,
                                           pass_result_t *res, uint64_t deadline_ns)
{
    mesh_miniheap_t *dst = rec(l->id), *src = rec(r->id);
    int keep_l = mesh_cost(dst, src), keep_r = mesh_cost(src, dst);
    if (keep_r < keep_l || (keep_r == keep_l && (r->chain > l->chain ||
                                                 (r->chain == l->chain && mesh_mh_live(src) > mesh_mh_live(dst))))) {
        dst = rec(r->id);
        src = rec(l->id);
    }
    return mesh_run_locked(ch, cls, dst, src, res, deadline_ns);
}

/* Meshes cand l with a partner continuing a run, if it has one. */
static bool mesh_run_partner_locked(mesh_class_heap_t *ch, unsigned cls, cand_t *l, pass_result_t *res,
                                    uint64_t deadline_ns, enum mesh_outcome *o)
{
    mesh_miniheap_t *dst, *src;
    if (!run_partner(rec(l->id), &dst, &src))
        return false;
    *o = mesh_run_locked(ch, cls, dst, src, res, deadline_ns);
    return true;
}

/*
 * Classes with at most MESH_EXACT_OBJECTS objects a span (256 bytes and up)
 * have bitmaps that fit in 16 bits, so their candidates are first matched
 * exactly, best fit: each span, fullest first, takes the fullest candidate
 * that fits its free slots, found by one scan through the candidates'
 * bitmaps sorted fullest first, from the first that has few enough objects
 * (a dense span's scan is short: few candidates are sparse enough).  Dense
 * spans thus take the sparse spans that fit them, where random pairing
 * would mesh sparse spans with each other into half-full ones that nothing
 * fits any more; what is left unmatched then goes to the SplitMesher.
 * Measured in Redis (256-byte spans after eviction, 43% full): spans end
 * 87% full; the earlier search through a span's complement, subset by
 * subset in numeric order and at most 256 of them, got 85%.
 */
static uint16_t *sorted;        /* the candidates' bitmaps, fullest first; all ones once used */

/* The first j in [from, n) whose bitmap has no slot of mine, or n: eight
 * bitmaps at a time (SSE2, the x86-64 baseline, or its like elsewhere). */
static size_t next_disjoint(const uint16_t *bitmaps, size_t from, size_t n, uint16_t mine)
{
    typedef uint16_t v8u16 __attribute__((vector_size(16)));
    typedef uint64_t v2u64 __attribute__((vector_size(16)));
    size_t j = from;
    for (; j < n && (j & 7); j++)
        if (!(bitmaps[j] & mine))
            return j;
    const v8u16 m = (v8u16){0} + mine;
    for (; j + 8 <= n; j += 8) {
        v8u16 x;
        memcpy(&x, bitmaps + j, sizeof x);
        v2u64 hit = (v2u64)((x & m) == (v8u16){0});
        if (hit[0] | hit[1])
            break;
    }
    for (; j < n; j++)
        if (!(bitmaps[j] & mine))
            return j;
    return n;
}

static enum slice_outcome mesh_exact_locked(mesh_class_heap_t *ch, unsigned cls, size_t n, uint64_t deadline_ns,
                                            pass_result_t *res)
{
    const unsigned nobjects = mesh_classes[cls].nobjects;
    if (!sorted && mesh_os_map_anon(MESH_MAX_CANDIDATES * sizeof *sorted, MESH_PAGE_SIZE, (void **)&sorted) != 0)
        return SLICE_DONE;
    /* first[k]: where the candidates with at most k objects begin */
    uint32_t first[MESH_EXACT_OBJECTS + 2] = {0};
    for (size_t i = 0; i < n; i++)
        first[MESH_EXACT_OBJECTS - mesh_popcount64(cand[i].bits[0]) + 1]++;
    for (unsigned k = 1; k <= MESH_EXACT_OBJECTS + 1; k++)
        first[k] += first[k - 1];
    for (size_t i = 0; i < n; i++) {
        uint32_t at = first[MESH_EXACT_OBJECTS - mesh_popcount64(cand[i].bits[0])]++;
        cand[at].by_live = (uint32_t)i;
        sorted[at] = cand[i].used ? 0xffff : (uint16_t)cand[i].bits[0];
    }
    /* now first[MESH_EXACT_OBJECTS - k] is where the candidates with
     * fewer than k objects begin */
    enum slice_outcome out = SLICE_DONE;
    unsigned misses = 0;
    for (size_t idx = 0; idx < n; idx++) {
        cand_t *l = &cand[cand[idx].by_live];
        if (l->used)
            continue;
        enum mesh_outcome o;
        if (mesh_run_partner_locked(ch, cls, l, res, deadline_ns, &o)) {
            if (o == NO_MAPS) {
                out = SLICE_MAPS;
                break;
            }
            if (out_of_time(deadline_ns)) {
                out = SLICE_TIME;
                break;
            }
            continue;
        }
        /* Fuller spans than l had no partner that fits them, so none fits
         * l: the scan starts after l and at the spans with at most as many
         * objects as l has free slots. */
        const uint16_t mine = (uint16_t)l->bits[0];
        unsigned nfree = nobjects - mesh_popcount64(mine);
        size_t j = nfree < MESH_EXACT_OBJECTS ? first[MESH_EXACT_OBJECTS - nfree - 1] : 0;
        cand_t *match = NULL;
        for (j = j > idx + 1 ? j : idx + 1; !match && (j = next_disjoint(sorted, j, n, mine)) < n; j++) {
            cand_t *r = &cand[cand[j].by_live];
            if (r->used)
                sorted[j] = 0xffff;
            else if (l->chain + r->chain <= MESH_MAX_CHAIN)
                match = r;
        }
        if (!match) {
            if (++misses % 64 == 0 && out_of_time(deadline_ns)) {
                out = SLICE_TIME;
                break;
            }
            continue;
        }
        o = mesh_cands_locked(ch, cls, l, match, res, deadline_ns);
        if (o == NO_MAPS) {
            out = SLICE_MAPS;
            break;
        }
        if (out_of_time(deadline_ns)) {
            out = SLICE_TIME;
            break;
        }
    }
    return out;
}

static enum slice_outcome mesh_class_locked(unsigned cls, uint64_t deadline_ns, pass_result_t *res)
{
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    uint64_t before = res->npairs;
    size_t n = collect_locked(ch, cls);
    bool exact = mesh_classes[cls].nobjects <= MESH_EXACT_OBJECTS;
    if (n < 2)
        return SLICE_EMPTY;
    if (!exact && !worth_probing(n, mesh_classes[cls].nobjects))
        return SLICE_EMPTY;
    for (size_t i = n; i > 1; i--) {
        size_t j = mesh_rng_below(&rng, (uint32_t)i);
        cand_t t = cand[i - 1];
        cand[i - 1] = cand[j];
        cand[j] = t;
    }
    ncand = n;
    for (size_t i = 0; i < n; i++)
        cand_of[cand[i].id] = (uint32_t)i;
    enum slice_outcome o = SLICE_DONE;
    if (exact)
        o = mesh_exact_locked(ch, cls, n, deadline_ns, res);
    size_t half = n / 2, nright = n - half;
    for (size_t i = 0; i < half && o == SLICE_DONE; i++) {
        cand_t *l = &cand[i];
        if (l->used)
            continue;
        enum mesh_outcome mo;
        if (mesh_run_partner_locked(ch, cls, l, res, deadline_ns, &mo)) {
            if (mo == NO_MAPS)
                o = SLICE_MAPS;
            else if (out_of_time(deadline_ns))
                o = SLICE_TIME;
            continue;
        }
        size_t probes = nright < MESH_PROBES ? nright : MESH_PROBES;
        for (size_t k = 0; k < probes; k++) {
            cand_t *r = &cand[half + (i + k) % nright];
            if (r->used || l->chain + r->chain > MESH_MAX_CHAIN || !disjoint(l, r))
                continue;
            if (mesh_cands_locked(ch, cls, l, r, res, deadline_ns) == NO_MAPS)
                o = SLICE_MAPS;
            else if (out_of_time(deadline_ns))
                o = SLICE_TIME;
            break;
        }
    }
    ch->sweep_pairs += (uint32_t)(res->npairs - before);
    if (o != SLICE_DONE)
        return o;
    /* A class is fruitless when a whole sweep of the cursor through its
     * partial spans found nothing: one window may hold no pair where the
     * next holds many. */
    if (ch->sweep_seen < ch->npartial)
        return SLICE_DONE;
    bool fruitless = ch->sweep_pairs == 0;
    /* Exactly matched classes alternate between sweeps over the spans
     * below the cut-off and sweeps that take the denser spans too, once a
     * sweep finds less than a pair in 64 spans: a dense span's few free
     * slots are filled by a sparse span when one fits them (searching its
     * complement costs little).  Left for last, because it is the sparse
     * spans that mesh with each other first.  Measured in Redis: the
     * 256-byte spans end 96% full instead of 92%. */
    if (exact && (ch->dense ? ch->sweep_pairs * 64 < ch->sweep_seen : fruitless)) {
        ch->dense = !ch->dense;
        fruitless &= !ch->dense;
    }
    ch->sweep_seen = ch->sweep_pairs = 0;
    return fruitless ? SLICE_EMPTY : SLICE_DONE;
}

static void log_event(uint64_t t0, uint64_t t1, const pass_result_t *res, uint64_t released, bool forced)
{
    if (!events_opened) {
        const char *path = getenv("MESH_EVENTS");
        events_opened = true;
        if (path && *path && mesh_os_open_append(path, &events_fd) == 0)
            mesh_os_dup_high(events_fd, &events_fd);
    }
    if (events_fd < 0)
        return;
    char buf[2048];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "{\"t\": ");
    uint64_t us = (t0 - start_ns) / 1000;
    mesh_buf_u64(&b, us / 1000000);
    mesh_buf_str(&b, ".");
    char frac[7];
    for (int i = 5; i >= 0; i--, us /= 10)
        frac[i] = (char)('0' + us % 10);
    frac[6] = 0;
    mesh_buf_str(&b, frac);
    mesh_buf_str(&b, ", \"duration_us\": ");
    mesh_buf_u64(&b, (t1 - t0) / 1000);
    mesh_buf_str(&b, ", \"pairs\": {");
    bool first = true;
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        if (!res->pairs[c])
            continue;
        mesh_buf_str(&b, first ? "\"" : ", \"");
        mesh_buf_u64(&b, mesh_classes[c].object_size);
        mesh_buf_str(&b, "\": ");
        mesh_buf_u64(&b, res->pairs[c]);
        first = false;
    }
    mesh_buf_str(&b, "}, \"meshes\": ");
    mesh_buf_u64(&b, res->npairs);
    mesh_buf_str(&b, ", \"bytes_released\": ");
    mesh_buf_u64(&b, released);
    mesh_buf_str(&b, ", \"max_pause_us\": ");
    mesh_buf_u64(&b, res->max_pause_ns / 1000);
    mesh_buf_str(&b, ", \"pause_us_hist\": {");
    for (unsigned k = 0; k < PAUSE_BUCKETS; k++) {
        mesh_buf_str(&b, k ? ", \"" : "\"");
        if (k < PAUSE_BUCKETS - 1) {
            mesh_buf_str(&b, "<");
            mesh_buf_u64(&b, pause_bounds_us[k]);
        } else {
            mesh_buf_str(&b, ">=");
            mesh_buf_u64(&b, pause_bounds_us[k - 1]);
        }
        mesh_buf_str(&b, "\": ");
        mesh_buf_u64(&b, res->pauses[k]);
    }
    mesh_buf_str(&b, "}, \"mappings\": ");
    mesh_buf_u64(&b, mesh_maps_in_use());
    mesh_buf_str(&b, ", \"mapping_budget\": ");
    mesh_buf_u64(&b, budget());
    mesh_buf_str(&b, ", \"meshed_bytes\": ");
    mesh_buf_u64(&b, atomic_load(&mesh_stats.meshed_pages) << MESH_PAGE_SHIFT);
    mesh_buf_str(&b, ", \"stopped\": ");
    mesh_buf_str(&b, res->out_of_maps ? "\"mappings\"" : res->out_of_time ? "\"time\"" : "null");
    mesh_buf_str(&b, ", \"forced\": ");
    mesh_buf_str(&b, forced ? "true" : "false");
    mesh_buf_str(&b, "}\n");
    mesh_os_write_all(events_fd, buf, b.len);
}

/* One pass over every meshable class; returns the pairs meshed.  A forced
 * pass waits for a running one instead of skipping, and looks at every
 * class, even those whose last sweep found nothing. */
uint64_t mesh_pass(bool forced, uint64_t budget_ns)
{
    if (!mesh_opt.meshing)
        return 0;
    if (forced)
        pthread_mutex_lock(&mesh_lock);
    else if (pthread_mutex_trylock(&mesh_lock) != 0)
        return 0;
    if (!mesh_arena_fd_ok()) {
        /* Without the arena file there is nothing to map pages onto. */
        pthread_mutex_unlock(&mesh_lock);
        return 0;
    }
    mesh_barrier_install();
    /* This thread's own spans can be meshed once detached. */
    if (mesh_tls_heap)
        mesh_thread_heap_flush(mesh_tls_heap);

    uint64_t t0 = mesh_os_now_ns(), deadline = t0 + (budget_ns ? budget_ns : mesh_opt.pass_ms * 1000000ULL);
    /* The time is shared out: each class with spans to mesh gets a slice
     * of what is left (none longer than MESH_PASS_MS, so that no class lock
     * is held for longer), and a class whose slice ran out gets another in
     * the next round if time is left, until the time is up.  One busy class
     * cannot starve the others, and the time a class does not need goes to
     * those that do.  A class whose last sweep through its partial spans
     * found nothing sits out the next 1, 2, 4, then 8 passes (64 while
     * fewer than a sixteenth of its partial spans, plus 64, objects are
     * freed into its detached spans: an idle program's heap stays as
     * unmeshable as it was), unless it gains an eighth more partial spans:
     * collecting candidates walks lists of cold records, which costs as
     * much as a few meshes.  Each pass starts one class further on, so
     * ties do not always go the same way. */
    unsigned nmeshable = 0, order[MESH_NUM_CLASSES], nactive = 0;
    while (nmeshable < MESH_NUM_CLASSES && mesh_classes[nmeshable].object_size <= MESH_MAX_MESHABLE)
        nmeshable++;
    first_class = (first_class + 1) % nmeshable;
    for (unsigned k = 0; k < nmeshable; k++) {
        unsigned c = (first_class + k) % nmeshable;
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        uint32_t np = __atomic_load_n(&ch->npartial, __ATOMIC_RELAXED);
        if (np < 2)
            continue;
        uint32_t freed = atomic_load_explicit(&ch->detached_frees, memory_order_relaxed) - ch->fruitless_frees;
        uint32_t sit_out = freed < ch->fruitless_partial / 16 + 64 ? 64 : 1u << (ch->fruitless_runs - 1);
        if (!forced && ch->fruitless_runs && np <= ch->fruitless_partial + ch->fruitless_partial / 8 &&
            ch->skipped < sit_out) {
            ch->skipped++;
            continue;
        }
        order[nactive++] = c;
    }
    if (!nactive) {
        pthread_mutex_unlock(&mesh_lock);
        return 0;
    }
    pass_result_t res;
    memset(&res, 0, sizeof res);
    const uint64_t slice_max = mesh_opt.pass_ms * 1000000ULL;
    while (nactive && !res.out_of_maps) {
        unsigned still = 0;
        for (unsigned i = 0; i < nactive && !res.out_of_maps; i++) {
            uint64_t now = mesh_os_now_ns();
            if (now >= deadline) {
                res.out_of_time = true;
                break;
            }
            uint64_t slice = (deadline - now) / (nactive - i);
            uint64_t end = now + (slice < slice_max ? slice : slice_max);
            unsigned c = order[i];
            mesh_class_heap_t *ch = &mesh_class_heaps[c];
            /* No handler of the program may run here while spans are
             * read-only (it could write to one); faults stay deliverable. */
            sigset_t all, old;
            sigfillset(&all);
            sigdelset(&all, SIGSEGV);
            sigdelset(&all, SIGBUS);
            pthread_sigmask(SIG_BLOCK, &all, &old);
            pthread_mutex_lock(&ch->lock);
            /* Window after window of candidates while the slice lasts, to
             * the end of the cursor's sweep at most: a window that held
             * nothing says little about the next.  A class sits out passes
             * after a sweep that found nothing, and only a pass that meshes
             * in it ends that. */
            enum slice_outcome o;
            uint64_t pairs_before = res.npairs;
            uint32_t windows = ch->npartial / (MESH_MAX_CANDIDATES / 2) + 1;
            do
                o = mesh_class_locked(c, end, &res);
            while (o == SLICE_DONE && ch->sweep_seen && --windows && !out_of_time(end));
            if (o == SLICE_EMPTY) {
                ch->fruitless_partial = ch->npartial;
                ch->fruitless_frees = atomic_load_explicit(&ch->detached_frees, memory_order_relaxed);
                ch->fruitless_runs = ch->fruitless_runs < 4 ? ch->fruitless_runs + 1 : 4;
            } else if (res.npairs > pairs_before) {
                ch->fruitless_runs = 0;
            }
            ch->skipped = 0;
            /* The punches go before the lock: once it is released, the
             * last free of a chain can give a meshed-away span its own
             * pages back, as clean pages that a new span may be writing to
             * by the time a late punch would zero them. */
            punch_flush();
            pthread_mutex_unlock(&ch->lock);
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            if (o == SLICE_TIME)
                order[still++] = c;
        }
        if (res.out_of_time)
            break;
        nactive = still;
    }
    uint64_t t1 = mesh_os_now_ns();
    uint64_t released = res.released_pages << MESH_PAGE_SHIFT;
    MESH_STAT_ADD(mesh_passes, 1);
    MESH_STAT_ADD(mesh_pass_ns, t1 - t0);
    mesh_stat_max(&mesh_stats.mesh_pass_max_ns, t1 - t0);
    if (res.out_of_time)
        MESH_STAT_ADD(mesh_time_limited, 1);
    if (res.out_of_maps)
        MESH_STAT_ADD(mesh_map_limited, 1);
    log_event(t0, t1, &res, released, forced);
    if (!forced)
        atomic_store(&last_pass_ns, t1);
    pthread_mutex_unlock(&mesh_lock);
    return res.npairs;
}

/* A pass run by a thread about to sleep for idle_ns may take longer than
 * MESH_PASS_MS, a quarter of the sleep, up to MESH_IDLE_PASS_MS: it delays
 * nobody but the sleeper (and, class by class, allocations that need a
 * class lock it holds). */
static uint64_t idle_budget(uint64_t idle_ns)
{
    uint64_t base = mesh_opt.pass_ms * 1000000ULL, cap = mesh_opt.idle_pass_ms * 1000000ULL;
    uint64_t b = idle_ns / 4;
    if (b < base)
        b = base;
    return b < cap ? b : cap > base ? cap : base;
}

/* Once a period: give back the pages that stayed freed and unused for a
 * period (a crude decay: a free span stays backed for at most two), then,
 * with meshing on, run a pass (which may skip itself if the heap looks as it
 * did when the last pass found nothing).  idle_ns: how long the calling
 * thread is about to sleep (0 when it is not).  Returns whether a period
 * had gone by.  Cheap when none has: one clock read.  The scavenging happens with MESH_MESHING=0 too, so that the
 * no-meshing control differs from libmesh by meshing alone. */
bool mesh_maybe_mesh(uint64_t idle_ns)
{
    uint64_t now = mesh_os_now_ns(), last = atomic_load_explicit(&last_pass_ns, memory_order_relaxed);
    if (now - last < mesh_opt.period_ms * 1000000ULL)
        return false;
    if (!atomic_compare_exchange_strong(&last_pass_ns, &last, now))
        return false;
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_arena_scavenge_aged_locked();
    pthread_mutex_unlock(&mesh_arena.lock);
    if (mesh_opt.meshing)
        mesh_pass(false, idle_budget(idle_ns));
    mesh_global_trim(mesh_os_now_ns() + mesh_opt.pass_ms * 1000000ULL);
    return true;
}

/* For a thread about to wait up to wait_ns (UINT64_MAX: no limit): how
 * long until the next period begins, if it begins during the wait with
 * time left for a pass after it; 0 if the wait needs no split (a period is
 * already due, or the wait ends first). */
uint64_t mesh_idle_split_ns(uint64_t wait_ns)
{
    uint64_t now = mesh_os_now_ns(), last = atomic_load_explicit(&last_pass_ns, memory_order_relaxed);
    uint64_t period = mesh_opt.period_ms * 1000000ULL, since = now - last;
    if (since >= period)
        return 0;
    uint64_t until = period - since;
    if (wait_ns != UINT64_MAX && wait_ns < until + 4 * mesh_opt.pass_ms * 1000000ULL)
        return 0;
    return until;
}

void mesh_mesh_fork_prepare(void)
{
    pthread_mutex_lock(&mesh_lock);
}

void mesh_mesh_fork_parent(void)
{
    pthread_mutex_unlock(&mesh_lock);
}

void mesh_mesh_fork_child(void)
{
    pthread_mutex_init(&mesh_lock, NULL);
}
