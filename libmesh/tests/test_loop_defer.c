/*
 * An event loop's period work waits for its idle points: a thread whose
 * wait for descriptors returned within the last period does not start a
 * busy pass from the allocation path, and at an idle point whose wait
 * would return at once the period stays due.  A loop that never finds a quiet moment gets the
 * work anyway once it has been put off for MESH_LOOP_STARVE_PERIODS
 * periods.  The checks are on what ran, never on how long it took.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <unistd.h>

#include "meshing.h"
#include "mesher.h"
#include "test.h"

static uint64_t passes(void)
{
    return atomic_load(&mesh_stats.mesh_passes);
}

static bool always_ready(const mesh_wait_t *w)
{
    (void)w;
    return true;
}

static bool never_ready(const mesh_wait_t *w)
{
    (void)w;
    return false;
}

/* A period due now, put off by nobody yet. */
static void period_due(void)
{
    atomic_store(&mesh_mesher.last_pass_ns, mesh_os_now_ns() - mesh_ms_to_ns(mesh_opt.period_ms) - 1);
}

/* Waits without sleeping: a sleep is an idle point of its own. */
static void spin_ms(uint64_t ms)
{
    uint64_t until = mesh_os_now_ns() + ms * 1000000ULL;
    while (mesh_os_now_ns() < until)
        ;
}

/* Spans of 256-byte objects, half of them freed: pairs to mesh. */
static void fragmented(frag_t *f)
{
    *f = (frag_t){.size = 256, .groups = 2, .max_spans = 256};
    fragment(f);
    flush_frees();
}

/* Every object intact, freed, and the heap consistent. */
static void done(frag_t *f)
{
    CHECK(all_intact(f));
    free_all(f);
    mesh_global_check();
}

static void test_busy_path_waits_for_the_loop(void)
{
    frag_t f;
    fragmented(&f);
    mesh_wait_t busy = {.ready = always_ready, .fd = -1}, quiet = {.ready = never_ready, .fd = -1};

    /* A wait for descriptors marks the thread as a loop; a sleep does not. */
    atomic_store(&mesh_mesher.last_pass_ns, mesh_os_now_ns());
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    CHECK_EQ(write(fds[1], "x", 1), 1);
    struct pollfd p = {.fd = fds[0], .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 1000), 1);
    close(fds[0]);
    close(fds[1]);

    period_due();
    uint64_t p0 = passes(), meshes0 = ctl("stats.mesh_count");
    CHECK(!mesh_maybe_mesh(0, NULL)); /* from the allocation path: put off */
    CHECK_EQ(passes(), p0);
    CHECK(!mesh_maybe_mesh(1000000000ULL, &busy)); /* a wait with events: still due */
    CHECK_EQ(passes(), p0);
    CHECK_EQ(ctl("stats.mesh_count"), meshes0);

    /* The first quiet idle point does the period's work. */
    spin_ms(1); /* past the retry interval */
    CHECK(mesh_maybe_mesh(1000000000ULL, &quiet));
    CHECK_EQ(passes(), p0 + 1);
    CHECK(ctl("stats.mesh_count") > meshes0);
    done(&f);
}

/* A thread that only sleeps is no event loop: its busy passes run. */
static void test_sleeper_is_no_loop(void)
{
    frag_t f;
    fragmented(&f);
    atomic_store(&mesh_mesher.last_pass_ns, mesh_os_now_ns());
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
    spin_ms(2 * mesh_opt.period_ms); /* past any earlier wait for descriptors */
    nanosleep(&ts, NULL);
    period_due();
    CHECK(mesh_maybe_mesh(0, NULL));
    done(&f);
}

static void test_starved_loop_meshes(void)
{
    frag_t f;
    fragmented(&f);
    mesh_wait_t busy = {.ready = always_ready, .fd = -1};
    uint64_t p0 = passes(), meshes0 = ctl("stats.mesh_count"), starved0 = atomic_load(&mesh_stats.loop_starved);

    period_due();
    CHECK(!mesh_maybe_mesh(1000000000ULL, &busy));
    /* Events at every idle point for nearly MESH_LOOP_STARVE_PERIODS
     * periods: nothing runs. */
    uint64_t t0 = mesh_os_now_ns(), starve = 10 * mesh_ms_to_ns(mesh_opt.period_ms);
    while (mesh_os_now_ns() - t0 < starve * 8 / 10) {
        mesh_loop_woke(); /* as a wait for descriptors returning */
        CHECK(!mesh_maybe_mesh(1000000000ULL, &busy));
        CHECK(!mesh_maybe_mesh(0, NULL));
        spin_ms(1);
    }
    CHECK_EQ(passes(), p0);
    /* Then the work runs, wait or no wait. */
    spin_ms(starve * 3 / 10 / 1000000ULL);
    CHECK(mesh_maybe_mesh(1000000000ULL, &busy));
    CHECK_EQ(passes(), p0 + 1);
    CHECK(ctl("stats.mesh_count") > meshes0);
    CHECK_EQ(atomic_load(&mesh_stats.loop_starved), starved0 + 1);
    done(&f);
}

int main(void)
{
    free(malloc(1));
    mesh_opt.period_ms = 20;
    mesh_opt.pass_ms = 100;
    TEST_RUN(test_busy_path_waits_for_the_loop);
    TEST_RUN(test_sleeper_is_no_loop);
    TEST_RUN(test_starved_loop_meshes);
    TEST_DONE();
}
