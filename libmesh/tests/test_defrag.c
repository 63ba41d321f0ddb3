/* Defragmentation by moving: mesh_defrag_hint picks exactly the objects of
 * detached partial spans below their class's threshold, mesh_defrag_malloc
 * fills the fullest partial spans, and moving the hinted objects frees
 * spans that meshing could never merge (16-byte objects, 256 a span). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <malloc.h>

#include "mesh.h"
#include "internal.h"
#include "test.h"

#define SIZE 16
#define N (256 * 64) /* 64 spans of 16-byte objects */
static void *objs[N];
static void *gone[N]; /* addresses freed before the moves */

static void *fill_thread(void *arg)
{
    for (int i = 0; i < N; i++) {
        objs[i] = malloc(SIZE);
        memset(objs[i], i * 7 + 1, SIZE);
    }
    return NULL; /* exit detaches its spans: they go onto the class's lists */
}

static uint64_t stat(const char *name)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    mesh_mallctl(name, &v, &len, NULL, 0);
    return v;
}

static bool intact(int i)
{
    unsigned char want = (unsigned char)(i * 7 + 1);
    for (int k = 0; k < SIZE; k++)
        if (((unsigned char *)objs[i])[k] != want)
            return false;
    return true;
}

/* The hint's threshold, from its definition: the class's live objects fit
 * in keep = ceil(live / 256) spans; spans with fewer live objects than the
 * keep-th fullest span are drained. */
static unsigned drain_threshold(unsigned cls)
{
    static unsigned hist[MESH_MAX_OBJECTS + 1];
    uint64_t live = 0, spans = 0;
    memset(hist, 0, sizeof hist);
    for (uint32_t id = 1; id < mesh_arena.nrecords; id++) {
        mesh_miniheap_t *mh = &mesh_arena.records[id];
        if (mh->kind != MESH_KIND_SMALL || mh->cls != cls)
            continue;
        hist[mesh_mh_live(mh)]++;
        live += mesh_mh_live(mh);
        spans++;
    }
    unsigned n = mesh_classes[cls].nobjects, t = 0;
    uint64_t keep = (live + n - 1) / n, seen = 0;
    if (spans > keep + 1)
        for (t = n; t > 0 && seen + hist[t] < keep; t--)
            seen += hist[t];
    return t;
}

static void test_hint_and_moves(void)
{
    unsigned cls = mesh_size_class(SIZE);
    pthread_t t;
    pthread_create(&t, NULL, fill_thread, NULL);
    pthread_join(t, NULL);
    /* Free about 60% at random, unevenly: each span keeps 30-50% of its objects. */
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned keep = 30 + (unsigned)((i / 256) % 5) * 5; /* percent, by span */
        if (x % 100 >= keep) {
            gone[i] = objs[i];
            free(objs[i]);
            objs[i] = NULL;
        }
    }
    uint64_t spans_before = mesh_class_heaps[cls].nspans, active_before = stat("stats.active");

    /* The hint is the definition: detached, partial, below the threshold. */
    unsigned threshold = drain_threshold(cls);
    CHECK(threshold > 0);
    int hinted = 0, mismatches = 0;
    for (int i = 0; i < N; i++) {
        if (!objs[i])
            continue;
        mesh_miniheap_t *mh = mesh_arena_lookup(objs[i]);
        bool want = atomic_load(&mh->owner) == 0 && mesh_state_is_partial(mh->state) && mesh_mh_live(mh) < threshold;
        int h = mesh_defrag_hint(objs[i]);
        mismatches += h != want;
        hinted += h;
    }
    CHECK_EQ(mismatches, 0);
    CHECK(hinted > 0);

    /* Never for what is not a live small object of a detached span. */
    int local = 0;
    void *mine = malloc(SIZE); /* in a span this thread has attached */
    void *big = malloc(64 * 1024);
    CHECK_EQ(mesh_defrag_hint(mine), 0);
    CHECK_EQ(mesh_defrag_hint(big), 0);
    CHECK_EQ(mesh_defrag_hint(&local), 0);
    CHECK_EQ(mesh_defrag_hint(NULL), 0);
    int freed_checked = 0;
    for (int i = 0; i < N && freed_checked < 16; i++) {
        mesh_miniheap_t *mh = gone[i] ? mesh_arena_lookup(gone[i]) : NULL;
        if (mh && mh->kind == MESH_KIND_SMALL && mesh_state_is_partial(mh->state)) {
            CHECK_EQ(mesh_defrag_hint(gone[i]), 0); /* a freed slot: its bit is clear */
            freed_checked++;
        }
    }
    CHECK(freed_checked > 0);
    free(mine);
    free(big);

    /* Move what the hint names, pass after pass, as a defragmenter would. */
    int moves = 0, attached_copies = 0;
    for (int pass = 0; pass < 4; pass++) {
        for (int i = 0; i < N; i++) {
            if (!objs[i] || !mesh_defrag_hint(objs[i]))
                continue;
            void *q = mesh_defrag_malloc(SIZE);
            mesh_miniheap_t *qm = mesh_arena_lookup(q);
            attached_copies += atomic_load(&qm->owner) != 0;
            memcpy(q, objs[i], SIZE);
            free(objs[i]);
            objs[i] = q;
            moves++;
        }
        usleep(110000); /* the hint's thresholds are refreshed every 100 ms */
    }
    CHECK(moves > 0);
    CHECK_EQ(attached_copies, 0); /* copies go to detached spans, not this thread's */
    int bad = 0, full_hinted = 0, in_full = 0;
    for (int i = 0; i < N; i++) {
        if (!objs[i])
            continue;
        bad += !intact(i);
        mesh_miniheap_t *mh = mesh_arena_lookup(objs[i]);
        if (mh->state == MESH_MH_FULL) {
            in_full++;
            full_hinted += mesh_defrag_hint(objs[i]);
        }
    }
    CHECK_EQ(bad, 0);
    CHECK(in_full > 0);
    CHECK_EQ(full_hinted, 0);
    uint64_t spans_after = mesh_class_heaps[cls].nspans, active_after = stat("stats.active");
    fprintf(stderr, "  %d moves: %llu -> %llu spans of %d-byte objects, active %llu -> %llu KiB\n", moves,
            (unsigned long long)spans_before, (unsigned long long)spans_after, SIZE,
            (unsigned long long)active_before >> 10, (unsigned long long)active_after >> 10);
    /* 40% live: perfectly packed that is 26 spans of 64. */
    CHECK(spans_after * 10 <= spans_before * 6);
    CHECK(active_after + 20 * 4096 <= active_before);
    for (int i = 0; i < N; i++)
        free(objs[i]);
    mesh_global_check();
}

static void test_defrag_malloc_without_partial_spans(void)
{
    /* A class nobody used: no partial span to fill, so an ordinary object. */
    void *p = mesh_defrag_malloc(3000);
    CHECK(p != NULL);
    memset(p, 1, 3000);
    CHECK(malloc_usable_size(p) >= 3000);
    free(p);
    void *big = mesh_defrag_malloc(100000);
    CHECK(big != NULL);
    memset(big, 2, 100000);
    free(big);
}

int main(void)
{
    TEST_RUN(test_hint_and_moves);
    TEST_RUN(test_defrag_malloc_without_partial_spans);
    TEST_DONE();
}
