/*
 * When to mesh: a pass at most once per MESH_PERIOD_MS (from the free
 * path, refills and idle points, together with the period's scavenge and
 * trim) or on demand (mesh.compact).  A pass shares its time budget out
 * among the classes with candidates in slices (a slice holds its class's
 * lock, and gives it up once a program thread waits for it); a class whose
 * sweep found nothing sits out the next passes.  A pass run by a thread
 * about to wait (an idle pass) may take longer, and stops as soon as the
 * wait would return at once; an event loop's work waits for one of its
 * idle points whose wait would not.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>

#include "internal.h"
#include "mesher.h"

#define M mesh_mesher

mesh_mesher_t mesh_mesher = {.lock = PTHREAD_MUTEX_INITIALIZER, .punch_ns = 4000, .events_fd = -1};

void mesh_mesh_init(void)
{
    M.start_ns = mesh_os_now_ns();
    M.rng.s = (mesh_opt.seed ? mesh_opt.seed ^ 0x6a09e667f3bcc909ULL : mesh_os_random64()) | 1;
}

/*
 * An idle pass runs in the thread of a wait that is about to begin, and in
 * a server that thread is the event loop: a request that arrives during
 * the pass waits for it.  So the pass gives way as soon as the wait would
 * return at once (an event ready, a signal pending), checked when it
 * starts and then at most every MESH_READY_CHECK_NS between meshes (a
 * zero-timeout poll costs a microsecond or two; every 100 us left Redis's
 * p99 under SET churn 0.3 ms above the no-meshing run's).
 */
#define MESH_READY_CHECK_NS 25000
static __thread const mesh_wait_t *tls_wait;
static __thread uint64_t tls_wait_check_ns;
static __thread bool tls_gave_way;

/*
 * A thread whose wait for descriptors (poll, select, epoll) returned
 * within the last period runs an event loop: it will be back at an idle
 * point soon.  Its period's work waits for that idle point instead of
 * starting from the allocation path, where the request being served would
 * wait for a whole busy pass; and at the idle point, a wait that would
 * return at once leaves the work due for the next one (checked at most
 * every MESH_READY_CHECK_NS).  A loop that never finds a quiet moment
 * still gets its period's work once it has been due for
 * MESH_LOOP_STARVE_PERIODS periods, with a busy pass's budget: a
 * saturated server meshes, more slowly, and its requests meet a pass once
 * a second instead of several times a period (Redis under redis-benchmark:
 * docs/results.md).
 */
#define MESH_LOOP_STARVE_PERIODS 10
static __thread uint64_t tls_loop_ns;      /* when this thread's last wait for descriptors returned */
static __thread uint64_t tls_loop_retry_ns; /* a due period's next look at the wait, no sooner */

/* Called as a wait for descriptors returns (idle.c): measured from the
 * wait's start, a loop whose waits last a period (Redis's, idle, wait up
 * to 100 ms for its timer) would pass for a busy thread as it wakes. */
void mesh_loop_woke(void)
{
    tls_loop_ns = mesh_os_now_ns();
}

static bool in_loop(uint64_t now)
{
    return tls_loop_ns && now - tls_loop_ns < mesh_ms_to_ns(mesh_opt.period_ms);
}

/* When a due period's work was first put off for a loop's quiet moment
 * (0: it is not being put off). */
static _Atomic uint64_t deferred_since_ns;

static bool defer(uint64_t now)
{
    uint64_t zero = 0;
    atomic_compare_exchange_strong(&deferred_since_ns, &zero, now);
    return false;
}

/* Whether the period's work has been put off so long that it runs, quiet
 * moment or not. */
static bool starving(uint64_t now)
{
    uint64_t since = atomic_load_explicit(&deferred_since_ns, memory_order_relaxed);
    return since && now - since >= MESH_LOOP_STARVE_PERIODS * mesh_ms_to_ns(mesh_opt.period_ms);
}

static bool gives_way(uint64_t now)
{
    if (!tls_wait) /* no wait ahead: nothing to give way to */
        return false;
    if (tls_gave_way || now < tls_wait_check_ns)
        return tls_gave_way;
    tls_wait_check_ns = now + MESH_READY_CHECK_NS;
    if (tls_wait->ready(tls_wait)) {
        tls_gave_way = true;
        MESH_STAT_ADD(idle_gave_way, 1);
    }
    return tls_gave_way;
}

/* Whether a slice must stop: its deadline, less the time the punches it
 * has queued will take once it stops (4-5 us each here, measured as they
 * are made: a slice of Redis's may queue a hundred); a
 * thread of the program waiting for the class lock (the slice gives it
 * way, and the class gets another slice later in the pass); or the wait
 * this idle pass precedes has something to return. */
bool mesh_slice_over(uint64_t deadline_ns)
{
    uint64_t now = mesh_os_now_ns();
    return now + (uint64_t)(M.punch_n / 2) * M.punch_ns > deadline_ns ||
           (M.slice_class && atomic_load_explicit(&M.slice_class->waiters, memory_order_relaxed)) || gives_way(now);
}

/* Whether the meshing thread is the process's only thread, asked at the
 * first mesh of a slice (one system call).  The slice runs with the
 * program's signals blocked on this thread, so then no thread can exist
 * until the slice ends but one this thread creates, and it creates none:
 * nobody can write into a span being meshed, and it need not be
 * protected; nor can the arena's descriptor change, so it is checked once
 * for the slice (mesh_arena_fd_hold_locked).  Arena lock held. */
bool mesh_slice_alone(void)
{
    if (!M.alone_known) {
        M.alone = M.slice_class && mesh_os_thread_count() == 1;
        M.alone_known = true;
        if (M.alone)
            mesh_arena_fd_hold_locked(true);
    }
    return M.alone;
}

/* The classes a pass visits, in order[]; returns how many.  A class whose
 * last sweep through its partial spans found nothing sits out the next 1,
 * 2, 4, then 8 passes (64 while fewer than a sixteenth of its partial
 * spans, plus 64, objects are freed into its detached spans: an idle
 * program's heap stays as unmeshable as it was), unless it gains an eighth
 * more partial spans: collecting candidates walks lists of cold records,
 * which costs as much as a few meshes.  A forced pass visits them all.
 * Each pass starts one class further on, so that ties do not always go the
 * same way. */
static unsigned classes_to_visit(bool forced, unsigned order[MESH_NUM_CLASSES])
{
    unsigned nmeshable = 0, n = 0;
    while (nmeshable < MESH_NUM_CLASSES && mesh_classes[nmeshable].object_size <= MESH_MAX_MESHABLE)
        nmeshable++;
    M.first_class = (M.first_class + 1) % nmeshable;
    for (unsigned k = 0; k < nmeshable; k++) {
        unsigned c = (M.first_class + k) % nmeshable;
        mesh_class_heap_t *ch = &mesh_class_heaps[c];
        uint32_t np = __atomic_load_n(&ch->npartial, __ATOMIC_RELAXED);
        if (np < 2)
            continue;
        if (!forced && ch->fruitless_runs && np <= ch->fruitless_partial + ch->fruitless_partial / 8) {
            /* fruitless_runs is 1 to 4 here: the shift is defined */
            uint32_t freed = atomic_load_explicit(&ch->detached_frees, memory_order_relaxed) - ch->fruitless_frees;
            uint32_t sit_out = freed < ch->fruitless_partial / 16 + 64 ? 64 : 1u << (ch->fruitless_runs - 1);
            if (ch->skipped < sit_out) {
                ch->skipped++;
                continue;
            }
        }
        order[n++] = c;
    }
    return n;
}

/* One slice of class c, until end: its lock held, the program's signal
 * handlers kept off this thread (one could write into a span made
 * read-only; faults stay deliverable).  Window after window of candidates
 * while the slice lasts, to the end of the cursor's sweep at most: a
 * window that held nothing says little about the next.  A class sits out
 * passes after a sweep that found nothing, and only a pass that meshes in
 * it ends that. */
static enum slice_outcome run_slice(unsigned c, uint64_t end, pass_result_t *res)
{
    mesh_class_heap_t *ch = &mesh_class_heaps[c];
    sigset_t all, old;
    sigfillset(&all);
    mesh_signals_strip(&all);
    mesh_os_sigmask(SIG_BLOCK, &all, &old);
    pthread_mutex_lock(&ch->lock);
    M.slice_class = ch;
    M.alone_known = false;
    ch->slices++;
    enum slice_outcome o;
    uint64_t pairs_before = res->npairs;
    uint32_t windows = ch->npartial / (MESH_MAX_CANDIDATES / 2) + 1;
    do
        o = mesh_class_locked(c, end, res);
    while (o == SLICE_DONE && ch->sweep_seen && --windows && !mesh_slice_over(end));
    if (o == SLICE_EMPTY) {
        ch->fruitless_partial = ch->npartial;
        ch->fruitless_frees = atomic_load_explicit(&ch->detached_frees, memory_order_relaxed);
        ch->fruitless_runs = ch->fruitless_runs < 4 ? ch->fruitless_runs + 1 : 4;
    } else if (res->npairs > pairs_before) {
        ch->fruitless_runs = 0;
    }
    ch->skipped = 0;
    /* The punches go before the lock: once it is released, the last free
     * of a chain can give a meshed-away span its own pages back, as clean
     * pages that a new span may be writing to by the time a late punch
     * would zero them. */
    mesh_punch_flush();
    if (M.alone_known && M.alone) {
        mesh_arena_lock();
        mesh_arena_fd_hold_locked(false);
        pthread_mutex_unlock(&mesh_arena.lock);
    }
    M.slice_class = NULL;
    M.alone_known = false;
    pthread_mutex_unlock(&ch->lock);
    mesh_os_sigmask(SIG_SETMASK, &old, NULL);
    return o;
}

/* After a busy pass: the next short one of the period, if this one had
 * more to do.  Under M.lock. */
static void schedule_resume(const pass_result_t *res, uint64_t t1)
{
    bool more = res->out_of_time && !res->out_of_maps && ++M.busy_slices < MESH_BUSY_SLICES;
    atomic_store(&M.resume_ns, more ? t1 + mesh_ms_to_ns(mesh_opt.period_ms) / MESH_BUSY_SLICES : 0);
}

static void pass_done(uint64_t t0, uint64_t cpu0, const pass_result_t *res, enum pass_kind kind)
{
    uint64_t t1 = mesh_os_now_ns();
    MESH_STAT_ADD(mesh_passes, 1);
    MESH_STAT_ADD(mesh_pass_ns, t1 - t0);
    MESH_STAT_ADD(mesh_pass_cpu_ns, mesh_os_thread_cpu_ns() - cpu0);
    mesh_stat_max(&mesh_stats.mesh_pass_max_ns, t1 - t0);
    if (res->out_of_time)
        MESH_STAT_ADD(mesh_time_limited, 1);
    if (res->out_of_maps)
        MESH_STAT_ADD(mesh_map_limited, 1);
    mesh_log_event(t0, t1, res, res->released_pages << MESH_PAGE_SHIFT, kind);
}

/* A slice costs some time before it can stop (its signal mask, its lock,
 * the first records its collection reads): a pass with less than this left
 * starts none.  And a pass aims this much short of its budget: what it can
 * run on after its last look at the clock (a mesh, punches costed from an
 * average; Redis's passes ended 50-150 us late without it). */
#define MESH_MIN_SLICE_NS 100000
#define MESH_PASS_SLACK_NS 100000

/* One pass over every meshable class; returns the pairs meshed.  A forced
 * pass waits for a running one instead of skipping, and looks at every
 * class, even those whose last sweep found nothing.  The time is shared
 * out: each class with spans to mesh gets a slice of what is left (none
 * longer than MESH_PASS_MS), and a class whose slice ran out, or gave its
 * lock up to a waiting thread, gets another in the next round while time
 * is left.  One busy class cannot starve the others, and the time a class
 * does not need goes to those that do. */
static uint64_t run_pass(bool forced, uint64_t budget_ns, enum pass_kind kind)
{
    if (!mesh_opt.meshing)
        return 0;
    if (forced)
        pthread_mutex_lock(&M.lock);
    else if (pthread_mutex_trylock(&M.lock) != 0)
        return 0;
    if (!mesh_arena_fd_ok()) {
        /* Without the arena file there is nothing to map pages onto. */
        pthread_mutex_unlock(&M.lock);
        return 0;
    }
    mesh_barrier_install();
    if (kind == PASS_BUSY || kind == PASS_IDLE)
        M.busy_slices = 0; /* a new period */
    /* This thread's own spans can be meshed once detached (a resumed pass
     * follows one that detached them this period): all of them for a
     * forced pass and for one run by a thread about to wait, only those
     * of the classes it has stopped using for a busy thread's. */
    if (mesh_tls_heap && kind == PASS_BUSY)
        mesh_thread_heap_period(mesh_tls_heap);
    else if (mesh_tls_heap && kind != PASS_RESUMED)
        mesh_thread_heap_flush(mesh_tls_heap);

    uint64_t cpu0 = mesh_os_thread_cpu_ns();
    /* A forced pass (mesh.compact) asks for everything there is: it
     * collects anew, where a kept set would miss the spans made since. */
    mesh_cands_drop_stale(forced ? UINT64_MAX : mesh_os_now_ns());
    uint64_t t0 = mesh_os_now_ns(), budget = budget_ns ? budget_ns : mesh_ms_to_ns(mesh_opt.pass_ms);
    uint64_t deadline = t0 + (budget > 4 * MESH_PASS_SLACK_NS ? budget - MESH_PASS_SLACK_NS : budget);
    unsigned order[MESH_NUM_CLASSES], nactive = classes_to_visit(forced, order);
    if (!nactive) {
        pthread_mutex_unlock(&M.lock);
        return 0;
    }
    pass_result_t res;
    memset(&res, 0, sizeof res);
    const uint64_t slice_max = mesh_ms_to_ns(mesh_opt.pass_ms);
    while (nactive && !res.out_of_maps && !res.out_of_time) {
        unsigned still = 0;
        for (unsigned i = 0; i < nactive && !res.out_of_maps; i++) {
            uint64_t now = mesh_os_now_ns();
            if (now + MESH_MIN_SLICE_NS >= deadline || gives_way(now)) {
                res.out_of_time = true;
                break;
            }
            uint64_t slice = (deadline - now) / (nactive - i);
            if (run_slice(order[i], now + (slice < slice_max ? slice : slice_max), &res) == SLICE_TIME)
                order[still++] = order[i];
        }
        nactive = still;
    }
    res.gave_way = tls_wait && tls_gave_way;
    pass_done(t0, cpu0, &res, kind);
    uint64_t t1 = mesh_os_now_ns();
    if (kind == PASS_BUSY || kind == PASS_RESUMED)
        schedule_resume(&res, t1);
    else if (kind == PASS_IDLE)
        atomic_store(&M.resume_ns, 0);
    if (kind != PASS_FORCED && kind != PASS_RESUMED)
        atomic_store(&M.last_pass_ns, t1);
    pthread_mutex_unlock(&M.lock);
    return res.npairs;
}

uint64_t mesh_pass(bool forced, uint64_t budget_ns)
{
    return run_pass(forced, budget_ns, forced ? PASS_FORCED : PASS_IDLE);
}

/* For a busy thread between periods: the period's next short pass, when
 * the last one ran out of time and this one is due.  One load when none
 * is. */
void mesh_maybe_resume(void)
{
    uint64_t at = atomic_load_explicit(&M.resume_ns, memory_order_relaxed);
    if (!at)
        return;
    uint64_t now = mesh_os_now_ns();
    if (now < at || in_loop(now) || !atomic_compare_exchange_strong(&M.resume_ns, &at, 0))
        return;
    run_pass(false, mesh_busy_budget_ns(), PASS_RESUMED);
}

/* A pass run by a thread about to sleep for idle_ns may take longer than
 * MESH_PASS_MS, a quarter of the sleep, up to MESH_IDLE_PASS_MS: the thread
 * has nothing else to do until its wait would return, and the pass gives
 * way as soon as it would (gives_way). */
static uint64_t idle_budget(uint64_t idle_ns)
{
    uint64_t base = mesh_ms_to_ns(mesh_opt.pass_ms), cap = mesh_ms_to_ns(mesh_opt.idle_pass_ms);
    uint64_t b = idle_ns / 4;
    if (b < base)
        b = base;
    return b < cap ? b : cap > base ? cap : base;
}

/* The period's work: give back the pages that stayed freed and unused for
 * a period (a crude decay: a free span stays backed for at most two,
 * unless a scavenge is cut short),
 * then, with meshing on, run a pass (which may skip itself if the heap
 * looks as it did when the last pass found nothing), then trim. */
static void period_work(bool busy, uint64_t idle_ns)
{
    /* The scavenge's punches stop as a pass does: at a pass's budget, or
     * when the wait ahead would return (each holds the arena lock, and an
     * event loop's requests wait for them). */
    uint64_t budget = busy ? mesh_busy_budget_ns() : mesh_ms_to_ns(mesh_opt.pass_ms);
    mesh_arena_lock();
    mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + budget, gives_way);
    pthread_mutex_unlock(&mesh_arena.lock);
    if (mesh_opt.meshing)
        run_pass(false, busy ? mesh_busy_budget_ns() : idle_budget(idle_ns), busy ? PASS_BUSY : PASS_IDLE);
    if (!gives_way(mesh_os_now_ns()))
        mesh_trim(mesh_os_now_ns() + (busy ? mesh_busy_budget_ns() : mesh_ms_to_ns(mesh_opt.pass_ms)));
}

/* Once a period, the period's work.  idle_ns: how long the calling thread
 * is about to sleep (0 when it is not), and wait what it is about to wait
 * for (NULL when it is not): the work stops where the wait would return
 * at once, and an event loop's work waits for a quiet idle point (in_loop
 * above).  Returns whether the period's work was done.  Cheap when no
 * period is due: one clock read.  The scavenging happens with
 * MESH_MESHING=0 too, so that the no-meshing control differs from libmesh
 * by meshing alone. */
bool mesh_maybe_mesh(uint64_t idle_ns, mesh_wait_t *wait)
{
    uint64_t now = mesh_os_now_ns(), last = atomic_load_explicit(&M.last_pass_ns, memory_order_relaxed);
    if (now - last < mesh_ms_to_ns(mesh_opt.period_ms))
        return false;
    bool starved = starving(now);
    if (!wait && in_loop(now) && !starved)
        return defer(now); /* the loop's next idle point does it */
    if (wait) {
        if (now < tls_loop_retry_ns && !starved)
            return false;
        tls_loop_retry_ns = now + MESH_READY_CHECK_NS;
        if (!wait->has_mask) {
            mesh_os_sigmask(SIG_BLOCK, NULL, &wait->mask);
            wait->has_mask = true;
        }
    }
    tls_wait = wait;
    tls_wait_check_ns = 0;
    tls_gave_way = false;
    bool ready = gives_way(now);
    if (ready) {
        /* The wait has something to return: the period stays due, unless
         * it has waited too long; then it runs as a busy thread's would. */
        tls_wait = NULL;
        tls_gave_way = false;
        if (!starved)
            return defer(now);
    }
    if (!atomic_compare_exchange_strong(&M.last_pass_ns, &last, now)) {
        tls_wait = NULL;
        return false;
    }
    atomic_store_explicit(&deferred_since_ns, 0, memory_order_relaxed);
    if (starved)
        MESH_STAT_ADD(loop_starved, 1);
    period_work(ready || (!idle_ns && !wait), idle_ns);
    tls_wait = NULL;
    return true;
}

/* For a thread about to wait up to wait_ns (UINT64_MAX: no limit): how
 * long until the next period begins, if it begins during the wait with
 * time left for a pass after it; 0 if the wait needs no split (a period is
 * already due, or the wait ends first). */
uint64_t mesh_idle_split_ns(uint64_t wait_ns)
{
    uint64_t now = mesh_os_now_ns(), last = atomic_load_explicit(&M.last_pass_ns, memory_order_relaxed);
    uint64_t period = mesh_ms_to_ns(mesh_opt.period_ms), since = now - last;
    if (since >= period)
        return 0;
    uint64_t until = period - since;
    if (wait_ns != UINT64_MAX && wait_ns < until + 4 * mesh_ms_to_ns(mesh_opt.pass_ms))
        return 0;
    return until;
}

void mesh_mesh_fork_prepare(void)
{
    pthread_mutex_lock(&M.lock);
}

void mesh_mesh_fork_parent(void)
{
    pthread_mutex_unlock(&M.lock);
}

void mesh_mesh_fork_child(void)
{
    pthread_mutex_init(&M.lock, NULL);
}
