/*
 * Runs of neighbours.  Each meshed span is a mapping of its own unless its
 * virtual neighbours map the file pages next to its new ones: then the
 * kernel merges them into one.  Left to chance, nearly every mesh costs the
 * kernel two mappings (about 200 bytes each, charged to the program's
 * memory: in Redis 35k of them, 6.6 MiB, a twentieth of what it uses).  So
 * a span whose neighbour was meshed onto span D is meshed, when it can be,
 * onto D's neighbour on the same side, which makes the two one mapping, and
 * each mesh is grown into a run both ways for as long as the next two spans
 * fit.
 *
 * A run is also cheaper: the srcs of a run (when they have no aliases of
 * their own) are protected with one mprotect and mapped onto the dsts with
 * one mmap, in one write-protect pause, instead of a call of each, and a
 * TLB shootdown of each, a span (mesh.c).
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"
#include "mesher.h"

#define M mesh_mesher

static cand_t *cand_lookup(uint32_t id)
{
    uint32_t i = M.cand_of[id];
    return i < M.ncand && M.cand[i].id == id ? &M.cand[i] : NULL;
}

static void mark_used(const mesh_miniheap_t *mh)
{
    cand_t *c = cand_lookup(mesh_mh_id(mh));
    if (c)
        c->used = 1;
}

/* Meshes src[i] onto dst[i] for the k pairs, detached partial spans of the
 * class (class lock held; a run when k > 1, see mesh_pairs_locked), and
 * marks them used where they are candidates.  Each pair counts as a mesh,
 * with the pause of the whole run. */
static enum mesh_outcome mesh_k_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *const *dst,
                                       mesh_miniheap_t *const *src, uint32_t k, pass_result_t *res)
{
    for (uint32_t i = 0; i < k; i++) {
        mesh_global_list_remove_locked(ch, dst[i]);
        mesh_global_list_remove_locked(ch, src[i]);
    }
    uint64_t pause = 0;
    uint32_t released[MESH_MAX_RUN] = {0};
    enum mesh_outcome o = mesh_pairs_locked(ch, dst, src, k, &pause, released);
    if (o == MESHED) {
        res->pairs[cls] += k;
        res->npairs += k;
        for (uint32_t i = 0; i < k; i++)
            res->released_pages += released[i];
        if (pause > res->max_pause_ns)
            res->max_pause_ns = pause;
        unsigned bucket = 0;
        while (bucket < MESH_PAUSE_BUCKETS - 1 && pause >= mesh_pause_bounds_us[bucket] * 1000ULL)
            bucket++;
        res->pauses[bucket] += k;
    } else {
        for (uint32_t i = 0; i < k; i++)
            mesh_global_place_locked(ch, src[i]);
        if (o == FAILED)
            MESH_STAT_ADD(mesh_failed, 1);
    }
    for (uint32_t i = 0; i < k; i++) {
        mesh_global_place_locked(ch, dst[i]);
        mark_used(dst[i]);
        mark_used(src[i]);
    }
    if (o == NO_MAPS)
        res->out_of_maps = true;
    return o;
}

static enum mesh_outcome mesh_two_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *dst,
                                         mesh_miniheap_t *src, pass_result_t *res)
{
    return mesh_k_locked(ch, cls, &dst, &src, 1, res);
}

/* The detached partial span of cls that starts at page, or NULL. */
static mesh_miniheap_t *span_at(uint32_t page, unsigned cls)
{
    if (!mesh_arena_page_in_file(page))
        return NULL;
    mesh_miniheap_t *mh = mesh_rec(atomic_load_explicit(&mesh_arena.table[page], memory_order_acquire));
    if (mh->kind != MESH_KIND_SMALL || mh->cls != cls || mh->span_page != page || !mesh_arena_span_in_file(mh) ||
        !mesh_state_is_partial(mh->state))
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
bool mesh_run_partner(mesh_miniheap_t *mh, mesh_miniheap_t **dst, mesh_miniheap_t **src)
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
        mesh_miniheap_t *h = mesh_rec(atomic_load_explicit(&mesh_arena.table[page], memory_order_acquire));
        if (h->kind != MESH_KIND_SMALL || (side < 0 ? h->span_page + h->npages != v : h->span_page != page))
            continue;
        unsigned k = 0;
        for (uint32_t id = h->mesh_next; id && k < MESH_MAX_CHAIN; id = mesh_rec(id)->mesh_next, k++) {
            const mesh_miniheap_t *a = mesh_rec(id);
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

/* Whether the pair can join a run meshed in one go: src has no aliases
 * (the run is one range of virtual pages), and neither span has pages
 * trimming gave back (every pair of the run then gives back all of src's
 * pages). */
static bool batchable(const mesh_miniheap_t *d, const mesh_miniheap_t *s)
{
    return !s->mesh_next && !mesh_arena.trimmed[mesh_mh_id(s)] && !mesh_arena.trimmed[mesh_mh_id(d)];
}

/* A run being grown: pairs (dst[i], src[i]) in address order, the srcs'
 * spans next to each other from page v, the dsts' from page f. */
typedef struct run {
    mesh_miniheap_t *dst[MESH_MAX_RUN], *src[MESH_MAX_RUN];
    uint32_t k, v, f, np;
} run_t;

/* Whether the spans at src page s and dst page d, just past one end of the
 * run, can join it: neither is in the run already (the srcs' and the dsts'
 * ranges may be close), they fit, and the pair can be meshed with it. */
static bool run_takes(const run_t *r, uint32_t s, uint32_t d, unsigned cls, mesh_miniheap_t **ms,
                      mesh_miniheap_t **md)
{
    const uint32_t len = r->k * r->np;
    if (r->k == MESH_MAX_RUN || (s >= r->f && s < r->f + len) || (d >= r->v && d < r->v + len))
        return false;
    *ms = span_at(s, cls);
    *md = span_at(d, cls);
    return *ms && *md && can_mesh(*md, *ms) && batchable(*md, *ms);
}

/* Grows a run of one batchable pair both ways: first to lower addresses,
 * then to higher ones. */
static void grow_run(run_t *r, unsigned cls)
{
    mesh_miniheap_t *s, *d;
    while (r->v >= r->np && r->f >= r->np && run_takes(r, r->v - r->np, r->f - r->np, cls, &s, &d)) {
        memmove(r->dst + 1, r->dst, r->k * sizeof *r->dst);
        memmove(r->src + 1, r->src, r->k * sizeof *r->src);
        r->dst[0] = d;
        r->src[0] = s;
        r->v -= r->np;
        r->f -= r->np;
        r->k++;
    }
    while (run_takes(r, r->v + r->k * r->np, r->f + r->k * r->np, cls, &s, &d)) {
        r->dst[r->k] = d;
        r->src[r->k] = s;
        r->k++;
    }
}

/* Meshes the pairs of a run one by one, after meshing them together
 * failed (a buffer pinned in one of them): the pair that fails is left
 * alone, the others go on.  Every pair could be meshed when the run was
 * grown, and nothing since has made one overlap or lengthened a chain.
 * Returns whether the mapping budget ran out. */
static bool one_by_one_locked(mesh_class_heap_t *ch, unsigned cls, const run_t *r, pass_result_t *res)
{
    for (uint32_t i = 0; i < r->k; i++)
        if (mesh_two_locked(ch, cls, r->dst[i], r->src[i], res) == NO_MAPS)
            return true;
    return false;
}

/* Meshes the run r, grown from the pair in it, and puts its far end on
 * the given side in *v and *f (class lock held). */
static enum mesh_outcome mesh_grown_locked(mesh_class_heap_t *ch, unsigned cls, run_t *r, int side, uint32_t *v,
                                           uint32_t *f, pass_result_t *res)
{
    if (batchable(r->dst[0], r->src[0]))
        grow_run(r, cls);
    enum mesh_outcome o = mesh_k_locked(ch, cls, r->dst, r->src, r->k, res);
    if (o != MESHED) {
        /* the run stops here either way */
        if (r->k > 1 && o != NO_MAPS && one_by_one_locked(ch, cls, r, res))
            o = NO_MAPS;
        return o;
    }
    uint32_t end = side < 0 ? 0 : (r->k - 1) * r->np;
    *v = r->v + end;
    *f = r->f + end;
    return MESHED;
}

/* Goes on meshing past one end of a run (the virtual span v of a src
 * meshed onto f): the next pair on that side, and the run grown from it,
 * for as long as they fit and add no mapping. */
static enum mesh_outcome extend_locked(mesh_class_heap_t *ch, unsigned cls, uint32_t v, uint32_t f, uint32_t np,
                                       int side, pass_result_t *res, uint64_t deadline_ns)
{
    for (;;) {
        v += side * (int32_t)np;
        f += side * (int32_t)np;
        mesh_miniheap_t *s = span_at(v, cls), *d = span_at(f, cls);
        if (!s || !d || !can_mesh(d, s) || mesh_cost(d, s) > 0 || mesh_slice_over(deadline_ns))
            return MESHED;
        run_t r = {.k = 1, .v = v, .f = f, .np = np, .dst = {d}, .src = {s}};
        enum mesh_outcome o = mesh_grown_locked(ch, cls, &r, side, &v, &f, res);
        if (o != MESHED)
            return o == NO_MAPS ? NO_MAPS : MESHED;
    }
}

/* Meshes src onto dst and grows the run both ways: the spans next to src's
 * virtual span onto the spans next to dst's, for as long as they fit and
 * add no mapping.  Pairs that can (batchable) are meshed together, up to
 * MESH_MAX_RUN at a time; the others one by one. */
enum mesh_outcome mesh_run_locked(mesh_class_heap_t *ch, unsigned cls, mesh_miniheap_t *dst, mesh_miniheap_t *src,
                                  pass_result_t *res, uint64_t deadline_ns)
{
    run_t r = {.k = 1, .v = src->span_page, .f = dst->span_page, .np = src->npages, .dst = {dst}, .src = {src}};
    uint32_t v, f;
    enum mesh_outcome o = mesh_grown_locked(ch, cls, &r, -1, &v, &f, res);
    if (o != MESHED)
        return o;
    o = extend_locked(ch, cls, v, f, r.np, -1, res, deadline_ns);
    if (o == MESHED)
        o = extend_locked(ch, cls, r.v + (r.k - 1) * r.np, r.f + (r.k - 1) * r.np, r.np, 1, res, deadline_ns);
    return o;
}
