/*
 * Passes started by a busy thread (from the allocation path, not before a
 * wait) are short: 1/MESH_BUSY_SLICES of MESH_PASS_MS each.  One that runs
 * out of time leaves the rest of the period's work to the next short pass,
 * due 1/MESH_BUSY_SLICES of a period later, up to MESH_BUSY_SLICES in a
 * period; a busy thread runs it
 * when it is due (mesh_maybe_resume), and not before.  The checks are on
 * what ran, never on how long anything took.
 */
#define _GNU_SOURCE
#include "meshing.h"
#include "mesher.h"
#include "test.h"

/* Waits without sleeping: a sleep is an idle point, where libmesh would
 * run a pass of its own once a period is up. */
static void sleep_ms(long ms)
{
    uint64_t until = mesh_os_now_ns() + (uint64_t)ms * 1000000ULL;
    while (mesh_os_now_ns() < until)
        ;
}

static uint64_t passes(void)
{
    return atomic_load(&mesh_stats.mesh_passes);
}

static void start_period(void)
{
    atomic_store(&mesh_mesher.last_pass_ns, 0);
}

static void test_short_passes_resume(void)
{
    /* 512 pairs to mesh: far more than a quarter of a millisecond's work. */
    frag_t f = {.size = 256, .groups = 2, .max_spans = 1024};
    fragment(&f);
    mesh_opt.pass_ms = 1;
    mesh_opt.period_ms = 40;
    uint64_t meshes0 = ctl("stats.mesh_count"), p0 = passes();

    start_period();
    CHECK(mesh_maybe_mesh(0, NULL));
    CHECK_EQ(passes() - p0, 1);
    uint64_t at = atomic_load(&mesh_mesher.resume_ns);
    CHECK(at != 0); /* it ran out of time with work left */
    mesh_maybe_resume();
    if (mesh_os_now_ns() < at) /* not due during the call: nothing ran */
        CHECK_EQ(passes() - p0, 1);

    for (int k = 2; k <= MESH_BUSY_SLICES; k++) {
        sleep_ms(mesh_opt.period_ms / MESH_BUSY_SLICES + 2);
        mesh_maybe_resume();
        CHECK_EQ(passes() - p0, (uint64_t)k);
    }
    /* MESH_BUSY_SLICES short passes make a period's budget: the rest waits
     * for the next period. */
    CHECK_EQ(atomic_load(&mesh_mesher.resume_ns), 0);
    sleep_ms(mesh_opt.period_ms / MESH_BUSY_SLICES + 2);
    mesh_maybe_resume();
    CHECK_EQ(passes() - p0, MESH_BUSY_SLICES);
    CHECK(ctl("stats.mesh_count") > meshes0);
    CHECK(all_intact(&f));

    /* A pass by a thread about to wait has the whole budget and leaves
     * nothing to resume. */
    start_period();
    CHECK(mesh_maybe_mesh(1000000000ULL, NULL));
    CHECK_EQ(atomic_load(&mesh_mesher.resume_ns), 0);
    CHECK(all_intact(&f));
    free_all(&f);
    mesh_global_check();
}

static bool always_ready(const mesh_wait_t *w)
{
    (void)w;
    return true;
}

/* An idle pass that gave way to its wait leaves nothing behind: a pass the
 * same thread runs later, with no wait ahead of it, meshes (it used to
 * find the old "gave way" and stop at once). */
static void test_gave_way_forgotten(void)
{
    frag_t f = {.size = 256, .groups = 2, .max_spans = 256};
    fragment(&f);
    flush_frees();
    mesh_opt.pass_ms = 100;
    mesh_opt.period_ms = 40;
    mesh_wait_t w = {.ready = always_ready, .fd = -1};
    uint64_t meshes0 = ctl("stats.mesh_count"), gave0 = atomic_load(&mesh_stats.idle_gave_way);
    start_period();
    CHECK(!mesh_maybe_mesh(1000000000ULL, &w)); /* the period stays due */
    CHECK_EQ(atomic_load(&mesh_mesher.last_pass_ns), 0);
    CHECK(atomic_load(&mesh_stats.idle_gave_way) > gave0);
    CHECK_EQ(ctl("stats.mesh_count"), meshes0); /* it gave way before meshing */
    CHECK(mesh_pass(true, 1000000000ULL) > 0);
    CHECK(ctl("stats.mesh_count") > meshes0);
    CHECK(all_intact(&f));
    free_all(&f);
    mesh_global_check();
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_short_passes_resume);
    TEST_RUN(test_gave_way_forgotten);
    TEST_DONE();
}
