/*
 * Which spans to mesh (class lock held): the candidates of a slice are
 * the detached partial spans of a class below the occupancy cut-off,
 * collected from the heads of its partial lists and from a cursor that
 * moves on through them pass after pass.  Classes of at most
 * MESH_EXACT_OBJECTS objects a span are matched exactly first, best fit;
 * what is left goes to the SplitMesher: the candidates split at random into
 * two halves, each span of the left half probing up to MESH_PROBES spans of
 * the right half for one whose bitmap does not overlap its own.  A pair
 * found is meshed at once and grown into a run of neighbours, so that the
 * kernel can merge their mappings.
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"
#include "mesher.h"

#define M mesh_mesher

/* cand_of, mapped for every record that exists (every span on a class's
 * lists, whose lock is held, has a record below nrecords). */
static bool reserve_cand_of(void)
{
    void *p;
    size_t reserved = (size_t)mesh_arena.max_records * sizeof *M.cand_of;
    if (!M.cand_of) {
        if (mesh_os_map_none(reserved, &p) != 0)
            return false;
        M.cand_of = p;
    }
    uint32_t nrec = __atomic_load_n(&mesh_arena.nrecords, __ATOMIC_ACQUIRE);
    return mesh_reserve_grow(M.cand_of, reserved, &M.cand_of_usable, (size_t)nrec * sizeof *M.cand_of);
}

/* Lets go of a set's candidates; its array becomes the spare (the larger
 * of the two is kept), so that only the sets kept for a next slice hold
 * memory of their own. */
static void set_drop(cand_set_t *set)
{
    set->n = 0;
    set->indexed = false;
    if (!set->cand)
        return;
    if (set->cap > M.spare_cap) {
        cand_t *t = M.spare;
        uint32_t tcap = M.spare_cap;
        M.spare = set->cand;
        M.spare_cap = set->cap;
        set->cand = t;
        set->cap = tcap;
    }
    if (set->cand)
        mesh_os_unmap(set->cand, set->cap * sizeof *set->cand);
    set->cand = NULL;
    set->cap = 0;
}

/* Whether a kept set is recent enough to go on with. */
static bool set_recent(const cand_set_t *set, uint64_t now)
{
    return now >= set->collected_ns && now - set->collected_ns < MESH_CANDS_KEEP_PERIODS * mesh_ms_to_ns(mesh_opt.period_ms);
}

/* Whether a kept set of ch's is recent and still stands for the class: not
 * once the class has an eighth more partial spans (plus 64) than when it
 * was collected, which a collection would see and the set does not (a
 * program that has just freed most of its objects). */
static bool set_fresh(const cand_set_t *set, const mesh_class_heap_t *ch, uint64_t now)
{
    return set_recent(set, now) && ch->npartial <= set->npartial + set->npartial / 8 + 64;
}

/* Lets go of the sets kept too long (all of them when now is UINT64_MAX),
 * with their memory: a class whose slice ran out of time may not be
 * visited again for a while. */
void mesh_cands_drop_stale(uint64_t now)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        if (M.sets[c].cand && !set_recent(&M.sets[c], now))
            set_drop(&M.sets[c]);
}

/* Room in set for n candidates (set empty), and cand_of for every record. */
static bool reserve_scratch(cand_set_t *set, size_t n)
{
    if (!reserve_cand_of())
        return false;
    if (n <= set->cap)
        return true;
    set_drop(set);
    if (n <= M.spare_cap) {
        set->cand = M.spare;
        set->cap = M.spare_cap;
        M.spare = NULL;
        M.spare_cap = 0;
        return true;
    }
    uint32_t cap = 1024;
    while (cap < n)
        cap *= 2;
    void *p;
    if (mesh_os_map_anon(cap * sizeof *set->cand, MESH_PAGE_SIZE, &p) != 0)
        return false;
    set->cand = p;
    set->cap = cap;
    return true;
}

/* After mlockall: cand_of's unused part is reserved, not locked memory. */
void mesh_mesh_unlock_reserved(void)
{
    pthread_mutex_lock(&M.lock);
    mesh_reserve_unlock(M.cand_of, (size_t)mesh_arena.max_records * sizeof *M.cand_of, M.cand_of_usable);
    mesh_chain_len_unlock_reserved();
    pthread_mutex_unlock(&M.lock);
}

static bool disjoint(const cand_t *a, const cand_t *b)
{
    uint64_t overlap = 0;
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        overlap |= a->bits[w] & b->bits[w];
    return overlap == 0;
}

static bool in_partial_bin(const mesh_miniheap_t *mh, unsigned cls, unsigned bin)
{
    return mh->kind == MESH_KIND_SMALL && mh->cls == cls && mh->state == MESH_MH_PARTIAL + bin;
}

/* Adds mh to the candidates if it is sparse enough (dense: if it has two
 * free slots) and its chain can grow. */
static void consider(mesh_miniheap_t *mh, const mesh_size_class_t *sc, bool dense, size_t *n)
{
    if (mh->stamp == M.stamp)
        return; /* already a candidate in this pass */
    mh->stamp = M.stamp;
    if (!mesh_arena_span_in_file(mh))
        return; /* private memory cannot be mapped twice */
    unsigned live = mesh_mh_live(mh);
    if (dense ? live + 2 > sc->nobjects : live * 100 >= sc->nobjects * MESH_OCCUPANCY_CUTOFF)
        return;
    unsigned chain = mesh_chain_length(mh);
    if (chain >= MESH_MAX_CHAIN)
        return;
    cand_t *c = &M.cand[(*n)++];
    for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++)
        c->bits[w] = atomic_load_explicit(&mh->bits[w], memory_order_relaxed);
    c->id = mesh_mh_id(mh);
    c->gen = atomic_load_explicit(&mh->gen, memory_order_relaxed);
    c->chain = (uint8_t)chain;
    c->used = 0;
    c->tried = 0;
}

/* Brings a kept set up to date (the class lock was let go since it was
 * collected: a thread may have attached a span, allocated from it and let
 * it go again, or frees may have emptied it): each candidate still a
 * detached partial span of cls, the same span it was, gets its bitmap and
 * chain length again; the others are marked used.  The records are read in
 * the set's order, ahead of their use, so that the reads overlap: the list
 * walk of a collection waits for each record before it can read the next. */
static void refresh_set(unsigned cls, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (i + 8 < n)
            __builtin_prefetch(mesh_rec(M.cand[i + 8].id));
        cand_t *c = &M.cand[i];
        const mesh_miniheap_t *mh = mesh_rec(c->id);
        if (c->used)
            continue;
        if (mh->kind != MESH_KIND_SMALL || mh->cls != cls || !mesh_state_is_partial(mh->state) ||
            atomic_load_explicit(&mh->gen, memory_order_relaxed) != c->gen) {
            c->used = 1;
            continue;
        }
        for (unsigned w = 0; w < MESH_BITMAP_WORDS; w++) {
            uint64_t now = atomic_load_explicit(&mh->bits[w], memory_order_relaxed);
            if (now != c->bits[w])
                c->tried = 0; /* it may fit a partner it did not fit */
            c->bits[w] = now;
        }
        c->chain = (uint8_t)mesh_chain_length(mh);
    }
}

/* The detached spans of a class below the occupancy cut-off whose chains
 * can grow (class lock held), at most MESH_MAX_CANDIDATES of them: a pass
 * has time for a few hundred meshes, and walking every span of a large heap
 * would eat that time.  Half come from the heads of the partial lists
 * (emptiest bin first), where the spans meshed or freed into most recently
 * are, so that chains keep growing; half from a cursor that each pass
 * moves on through the lists, so that a set of spans that cannot mesh with
 * each other is not all a pass ever sees.  A detached span's stamp marks the
 * spans already taken in this pass. */
static size_t collect_locked(mesh_class_heap_t *ch, unsigned cls, uint64_t deadline_ns)
{
    const mesh_size_class_t *sc = &mesh_classes[cls];
    size_t n = 0, max = ch->npartial < MESH_MAX_CANDIDATES ? ch->npartial : MESH_MAX_CANDIDATES;
    cand_set_t *set = &M.sets[cls];
    if (!reserve_scratch(set, max))
        return 0;
    M.cand = set->cand;
    /* MESH_SV_MAX_ATTACH .. 255: never an attach index a span kept from
     * its last owner. */
    M.stamp = M.stamp < MESH_SV_MAX_ATTACH || M.stamp == 255 ? MESH_SV_MAX_ATTACH : (uint8_t)(M.stamp + 1);
    bool covered = true;
    uint64_t read = 0;
    for (unsigned b = 0; b < MESH_PARTIAL_BINS && covered; b++)
        for (uint32_t id = ch->partial[b]; id && covered; id = mesh_rec(id)->next) {
            covered = n < max / 2;
            if (covered)
                consider(mesh_rec(id), sc, ch->dense, &n);
            /* cold records: a slice's deadline can pass while reading them */
            if (++read % 64 == 0 && mesh_slice_over(deadline_ns))
                return n;
        }

    unsigned b = ch->cursor_bin % MESH_PARTIAL_BINS;
    uint32_t id = ch->cursor;
    if (!id || !in_partial_bin(mesh_rec(id), cls, b)) {
        b = 0;
        id = ch->partial[0];
    }
    if (covered) {
        /* The heads took in every partial span: the cursor's walk would
         * find each taken already and come round to where it began, after
         * reading every record again (cold: the cost of a collection). */
        ch->cursor_bin = (uint8_t)b;
        ch->cursor = id;
        ch->sweep_seen += ch->npartial;
        return n;
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
        mesh_miniheap_t *mh = mesh_rec(id);
        id = mh->next;
        visited++;
        consider(mh, sc, ch->dense, &n);
        if (visited % 64 == 0 && mesh_slice_over(deadline_ns))
            break;
    }
    ch->cursor_bin = (uint8_t)b;
    ch->cursor = id;
    ch->sweep_seen += (uint32_t)visited;
    return n;
}

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
            live += mesh_popcount64(M.cand[i].bits[w]);
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


/* Meshes the candidates l and r (class lock held) and marks both used:
 * the way round that adds fewer mappings, else the longer chain stays where
 * it is (fewer spans to remap), else the fuller span. */
static enum mesh_outcome mesh_cands_locked(mesh_class_heap_t *ch, unsigned cls, cand_t *l, cand_t *r,
                                           pass_result_t *res, uint64_t deadline_ns)
{
    mesh_miniheap_t *dst = mesh_rec(l->id), *src = mesh_rec(r->id);
    int keep_l = mesh_cost(dst, src), keep_r = mesh_cost(src, dst);
    if (keep_r < keep_l || (keep_r == keep_l && (r->chain > l->chain ||
                                                 (r->chain == l->chain && mesh_mh_live(src) > mesh_mh_live(dst))))) {
        dst = mesh_rec(r->id);
        src = mesh_rec(l->id);
    }
    return mesh_run_locked(ch, cls, dst, src, res, deadline_ns);
}

/* Meshes cand l with a partner continuing a run, if it has one. */
static bool mesh_run_partner_locked(mesh_class_heap_t *ch, unsigned cls, cand_t *l, pass_result_t *res,
                                    uint64_t deadline_ns, enum mesh_outcome *o)
{
    mesh_miniheap_t *dst, *src;
    if (!mesh_run_partner(mesh_rec(l->id), &dst, &src))
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
 * fits any more; what is left unmatched then goes to the SplitMesher (in
 * Redis, 256-byte spans 43% full after eviction end 87% full).
 */

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
    if (!M.sorted && mesh_os_map_anon(MESH_MAX_CANDIDATES * sizeof *M.sorted, MESH_PAGE_SIZE, (void **)&M.sorted) != 0)
        return SLICE_DONE;
    /* first[k]: where the candidates with at most k objects begin */
    uint32_t first[MESH_EXACT_OBJECTS + 2] = {0};
    for (size_t i = 0; i < n; i++)
        first[MESH_EXACT_OBJECTS - mesh_popcount64(M.cand[i].bits[0]) + 1]++;
    for (unsigned k = 1; k <= MESH_EXACT_OBJECTS + 1; k++)
        first[k] += first[k - 1];
    for (size_t i = 0; i < n; i++) {
        uint32_t at = first[MESH_EXACT_OBJECTS - mesh_popcount64(M.cand[i].bits[0])]++;
        M.cand[at].by_live = (uint32_t)i;
        M.sorted[at] = M.cand[i].used ? 0xffff : (uint16_t)M.cand[i].bits[0];
    }
    /* now first[MESH_EXACT_OBJECTS - k] is where the candidates with
     * fewer than k objects begin */
    enum slice_outcome out = SLICE_DONE;
    unsigned misses = 0;
    for (size_t idx = 0; idx < n; idx++) {
        cand_t *l = &M.cand[M.cand[idx].by_live];
        if (l->used || l->tried)
            continue;
        l->tried = 1;
        enum mesh_outcome o;
        if (mesh_run_partner_locked(ch, cls, l, res, deadline_ns, &o)) {
            if (o == NO_MAPS) {
                out = SLICE_MAPS;
                break;
            }
            if (mesh_slice_over(deadline_ns)) {
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
        for (j = j > idx + 1 ? j : idx + 1; !match && (j = next_disjoint(M.sorted, j, n, mine)) < n; j++) {
            cand_t *r = &M.cand[M.cand[j].by_live];
            if (r->used)
                M.sorted[j] = 0xffff;
            else if (l->chain + r->chain <= MESH_MAX_CHAIN)
                match = r;
        }
        if (!match) {
            if (++misses % 16 == 0 && mesh_slice_over(deadline_ns)) {
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
        if (mesh_slice_over(deadline_ns)) {
            out = SLICE_TIME;
            break;
        }
    }
    return out;
}

/* The candidates of cls for this slice in M.cand, shuffled and indexed in
 * cand_of: the set a slice that ran out of time kept, if it is recent,
 * else a new collection.  Returns how many, or 0 with *out set when the
 * slice ends here. */
static size_t slice_cands(mesh_class_heap_t *ch, unsigned cls, uint64_t deadline_ns, enum slice_outcome *out)
{
    cand_set_t *set = &M.sets[cls];
    const bool exact = mesh_classes[cls].nobjects <= MESH_EXACT_OBJECTS;
    uint64_t now = mesh_os_now_ns();
    size_t n = set->n;
    if (n >= 2 && set_fresh(set, ch, now) && reserve_cand_of()) {
        M.cand = set->cand;
        refresh_set(cls, n);
    } else {
        set_drop(set);
        n = collect_locked(ch, cls, deadline_ns);
        *out = SLICE_EMPTY;
        if (n < 2 || (!exact && !worth_probing(n, mesh_classes[cls].nobjects)))
            return 0;
        set->n = (uint32_t)n;
        set->npartial = ch->npartial;
        set->collected_ns = now;
    }
    if (!set->indexed) {
        /* Shuffling and indexing thousands of candidates takes a while:
         * not for a slice already over (the next one goes on from here). */
        *out = SLICE_TIME;
        if (mesh_slice_over(deadline_ns))
            return 0;
        for (size_t i = n; i > 1; i--) {
            size_t j = mesh_rng_below(&M.rng, (uint32_t)i);
            cand_t t = M.cand[i - 1];
            M.cand[i - 1] = M.cand[j];
            M.cand[j] = t;
        }
        set->indexed = true;
    }
    M.ncand = n;
    for (size_t i = 0; i < n; i++)
        M.cand_of[M.cand[i].id] = (uint32_t)i;
    return n;
}

enum slice_outcome mesh_class_locked(unsigned cls, uint64_t deadline_ns, pass_result_t *res)
{
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    uint64_t before = res->npairs;
    bool exact = mesh_classes[cls].nobjects <= MESH_EXACT_OBJECTS;
    enum slice_outcome o;
    size_t n = slice_cands(ch, cls, deadline_ns, &o);
    if (!n) {
        if (o != SLICE_TIME)
            set_drop(&M.sets[cls]);
        return o;
    }
    o = SLICE_DONE;
    if (exact)
        o = mesh_exact_locked(ch, cls, n, deadline_ns, res);
    size_t half = n / 2, nright = n - half;
    for (size_t i = 0; i < half && o == SLICE_DONE; i++) {
        cand_t *l = &M.cand[i];
        /* probing thousands of spans that find nothing takes a while too */
        if (i % 16 == 15 && mesh_slice_over(deadline_ns)) {
            o = SLICE_TIME;
            break;
        }
        if (l->used || l->tried)
            continue;
        l->tried = 1;
        enum mesh_outcome mo;
        if (mesh_run_partner_locked(ch, cls, l, res, deadline_ns, &mo)) {
            if (mo == NO_MAPS)
                o = SLICE_MAPS;
            else if (mesh_slice_over(deadline_ns))
                o = SLICE_TIME;
            continue;
        }
        size_t probes = nright < MESH_PROBES ? nright : MESH_PROBES;
        for (size_t k = 0; k < probes; k++) {
            cand_t *r = &M.cand[half + (i + k) % nright];
            if (r->used || l->chain + r->chain > MESH_MAX_CHAIN || !disjoint(l, r))
                continue;
            if (mesh_cands_locked(ch, cls, l, r, res, deadline_ns) == NO_MAPS)
                o = SLICE_MAPS;
            else if (mesh_slice_over(deadline_ns))
                o = SLICE_TIME;
            break;
        }
    }
    ch->sweep_pairs += (uint32_t)(res->npairs - before);
    if (o != SLICE_TIME)
        set_drop(&M.sets[cls]);
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
