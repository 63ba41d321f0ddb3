/*
 * Candidates kept between slices (mesher.h, cand_set_t): a slice that runs
 * out of time keeps the candidates it collected, and the class's next
 * slice meshes from them.  In between the class lock is let go, and a
 * thread may attach a kept span, allocate from it and let it go again: its
 * bitmap in the set is then stale.  Two spans whose kept bitmaps are
 * disjoint may now overlap, and meshing them would copy one's live objects
 * over the other's.  The kept candidates must be checked against their
 * records first.
 */
#define _GNU_SOURCE
#include <string.h>

#include "meshing.h"
#include "mesher.h"
#include "test.h"

#define NSPANS 64

/* Span k of a pair keeps the slots of mask m, its partner the others: the
 * pairs fit exactly (as in test_mesh_pass.c's exact matching). */
static uint16_t masks[NSPANS / 2];

static bool keep_complement(unsigned rank, unsigned slot)
{
    uint16_t m = masks[rank / 2];
    return ((rank % 2 ? ~m : m) >> slot) & 1;
}

/* Allocated by a thread of its own after the set was kept: its refills
 * attach the kept spans, take their free slots, and its exit lets them go
 * with these objects in them. */
#define NLATE 256
static void *late[NLATE];

static void *allocate_late(void *arg)
{
    for (int i = 0; i < NLATE; i++) {
        late[i] = malloc(256);
        fill(late[i], 256, (uint64_t)(uintptr_t)late[i]);
    }
    return NULL;
}

/* A slice that runs out of time at once: it collects what it can and keeps
 * the set (mesh_pass itself starts no slice that has no time). */
static void slice_out_of_time(unsigned cls)
{
    pass_result_t res;
    memset(&res, 0, sizeof res);
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    pthread_mutex_lock(&mesh_mesher.lock);
    pthread_mutex_lock(&ch->lock);
    enum slice_outcome o = mesh_class_locked(cls, mesh_os_now_ns(), &res);
    pthread_mutex_unlock(&ch->lock);
    pthread_mutex_unlock(&mesh_mesher.lock);
    CHECK_EQ(o, SLICE_TIME);
    CHECK_EQ(res.npairs, 0);
}

/* NSPANS fragmented 256-byte spans in pairs that fit exactly, and a set
 * of them kept by a slice that ran out of time. */
static cand_set_t *kept_set(frag_t *f)
{
    const unsigned cls = mesh_size_class(256);
    *f = (frag_t){.size = 256, .max_spans = NSPANS, .keep = keep_complement};
    fragment(f);
    CHECK_EQ(f->nkept, NSPANS * 8);
    slice_out_of_time(cls);
    cand_set_t *set = &mesh_mesher.sets[cls];
    CHECK(set->n >= 2);
    return set;
}

static void test_stale_candidates(void)
{
    const unsigned cls = mesh_size_class(256);
    CHECK_EQ(mesh_classes[cls].nobjects, 16);
    frag_t f;
    cand_set_t *set = kept_set(&f);

    pthread_t t;
    pthread_create(&t, NULL, allocate_late, NULL);
    pthread_join(t, NULL);

    /* The next periodic pass takes the kept set on (a forced one would
     * collect anew). */
    uint64_t before = mesh_class_heaps[cls].meshes;
    mesh_pass(false, 1000000000ULL);
    CHECK_EQ(set->n, 0);
    CHECK(mesh_class_heaps[cls].meshes > before);
    CHECK(all_intact(&f));
    int bad = 0;
    for (int i = 0; i < NLATE; i++)
        bad += !intact(late[i], 256, (uint64_t)(uintptr_t)late[i]);
    CHECK_EQ(bad, 0);
    for (int i = 0; i < NLATE; i++)
        free(late[i]);
    free_all(&f);
}

/* A kept set goes stale after MESH_CANDS_KEEP_PERIODS periods: the next
 * slice collects anew (and finds the spans freed meanwhile gone). */
static void test_old_set_dropped(void)
{
    frag_t f;
    cand_set_t *set = kept_set(&f);
    set->collected_ns -= MESH_CANDS_KEEP_PERIODS * mesh_ms_to_ns(mesh_opt.period_ms);
    free_all(&f);
    mesh_pass(false, 1000000000ULL);
    CHECK_EQ(set->n, 0);
}

/* A kept set stands for its class until the class gains an eighth more
 * partial spans (plus 64) than it had: then the next slice collects anew,
 * and sees them. */
static void test_grown_class_recollected(void)
{
    const unsigned cls = mesh_size_class(256);
    frag_t f;
    cand_set_t *set = kept_set(&f);
    uint64_t first = set->collected_ns;
    slice_out_of_time(cls); /* the same class: goes on with the set */
    CHECK_EQ(set->collected_ns, first);
    frag_t more = {.size = 256, .max_spans = 2 * NSPANS + 64, .groups = 4};
    fragment(&more);
    slice_out_of_time(cls);
    CHECK(set->collected_ns != first);
    mesh_pass(true, 1000000000ULL);
    CHECK(all_intact(&f) && all_intact(&more));
    free_all(&more);
    free_all(&f);
}

int main(void)
{
    uint64_t x = 0x2545f4914f6cdd1dULL;
    for (int p = 0; p < NSPANS / 2; p++) {
        uint16_t m = 0;
        while (mesh_popcount64(m) < 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            m |= (uint16_t)(1u << (x % 16));
        }
        masks[p] = m;
    }
    free(malloc(1));
    TEST_RUN(test_stale_candidates);
    TEST_RUN(test_old_set_dropped);
    TEST_RUN(test_grown_class_recollected);
    TEST_DONE();
}
