/*
 * Signal handlers that write into the heap while the allocator meshes:
 *
 *   - a per-worker realtime timer (every millisecond, to that thread only)
 *     whose handler runs with every signal blocked (sa_mask full) and
 *     checks and rewrites one of the thread's handler objects;
 *   - SIGALRM from setitimer, every millisecond, to whichever thread, whose
 *     handler checks and rewrites one of a shared set of heap objects;
 *   - SIGSEGV (SA_SIGINFO | SA_ONSTACK, on an alternate stack): each worker
 *     now and then protects a guard page of its own and stores into it; the
 *     handler rewrites a heap object, unprotects the page and returns, and
 *     the store completes.
 *
 * Handler objects are reallocated now and then with the signal blocked, so
 * that they move between spans; sweeps check them the same way.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "soak.h"

#define ALTSTACK_SIZE (64 * 1024)

static __thread soak_sigstate_t *tls_sig;
static long page_size;

static size_t handler_obj_size(uint64_t *rng)
{
    return 16 + soak_rnd(rng) % 1009;
}

/* Checks an object and writes it again under the next generation. */
static void touch(soak_obj_t *o, soak_thread_t *t, const char *what)
{
    if (!o->p)
        return;
    soak_verify(t, o, what);
    o->gen++;
    soak_stamp(o->p, o->size, o->id, o->gen);
}

/* ---- the handlers ---- */

static void on_timer(int sig)
{
    soak_sigstate_t *s = tls_sig;
    if (!s || !atomic_load_explicit(&s->ready, memory_order_acquire))
        return;
    atomic_store_explicit(&s->t->in_handler, sig, memory_order_relaxed);
    uint64_t n = atomic_load_explicit(&s->hcount, memory_order_relaxed);
    atomic_store_explicit(&s->hcount, n + 1, memory_order_relaxed);
    touch(&s->hobj[n % SOAK_HOBJS], NULL, "timer handler");
    SOAK_ADD(rt_signals, 1);
    atomic_store_explicit(&s->t->in_handler, 0, memory_order_relaxed);
}

static soak_obj_t alarm_objs[SOAK_ALARM_OBJS];
static atomic_flag alarm_busy = ATOMIC_FLAG_INIT;
static uint64_t alarm_count, alarm_next_id = 0xa1a2ull << 48;

static void on_alarm(int sig)
{
    (void)sig;
    if (atomic_flag_test_and_set_explicit(&alarm_busy, memory_order_acquire))
        return; /* another thread's handler is at it */
    touch(&alarm_objs[alarm_count++ % SOAK_ALARM_OBJS], NULL, "SIGALRM handler");
    atomic_flag_clear_explicit(&alarm_busy, memory_order_release);
    SOAK_ADD(alarm_signals, 1);
}

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    soak_sigstate_t *s = tls_sig;
    unsigned char *a = si->si_addr;
    if (!s || !s->guard || a < s->guard || a >= s->guard + page_size) {
        /* A real fault: let it happen again with the default action. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigaction(sig, &dfl, NULL);
        soak_say("soak: SIGSEGV at %p (code %d) in %s, not the guard page\n", (void *)a, si->si_code,
                 s ? s->t->name : "a thread without a guard page");
        return;
    }
    atomic_store_explicit(&s->t->in_handler, sig, memory_order_relaxed);
    touch(&s->segv_obj, NULL, "SIGSEGV handler");
    if (mprotect(s->guard, (size_t)page_size, PROT_READ | PROT_WRITE) != 0)
        _exit(5);
    SOAK_ADD(segv_handled, 1);
    atomic_store_explicit(&s->t->in_handler, 0, memory_order_relaxed);
}

void soak_signals_install(void)
{
    page_size = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_timer;
    sigfillset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* interrupted calls fail with EINTR: the I/O threads must cope */
    sigaction(SIGALRM, &sa, NULL);

    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
}

/* ---- per worker ---- */

static void block(int sig, bool on)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    pthread_sigmask(on ? SIG_BLOCK : SIG_UNBLOCK, &set, NULL);
}

static void renew(soak_obj_t *o, soak_thread_t *t, size_t size, uint64_t id)
{
    if (o->p) {
        soak_verify(t, o, "handler");
        free(o->p);
        soak_count(&t->ops, 1);
    }
    o->p = malloc(size);
    soak_count(&t->ops, 1);
    if (!o->p) {
        SOAK_ADD(syscall_errors, 1);
        soak_report("%s: malloc(%zu) for a handler object failed", t->name, size);
        return;
    }
    o->size = (uint32_t)size;
    o->id = id;
    o->gen = 0;
    soak_stamp(o->p, size, id, 0);
}

void soak_signals_thread_start(soak_sigstate_t *s, soak_thread_t *t, int index)
{
    s->t = t;
    s->index = index;
    s->rng = soak_seed_for("signals", index);
    uint64_t id = ((uint64_t)(index + 1) << 48) | (0xffull << 40);
    for (int i = 0; i < SOAK_HOBJS; i++)
        renew(&s->hobj[i], t, handler_obj_size(&s->rng), id + (uint64_t)i);
    renew(&s->segv_obj, t, handler_obj_size(&s->rng), id + SOAK_HOBJS);

    s->altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    s->guard = mmap(NULL, (size_t)page_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->altstack == MAP_FAILED || s->guard == MAP_FAILED) {
        soak_say("soak: mmap failed: %s\n", strerror(errno));
        _exit(2);
    }
    stack_t ss = {.ss_sp = s->altstack, .ss_size = ALTSTACK_SIZE};
    sigaltstack(&ss, NULL);
    tls_sig = s;
    atomic_store_explicit(&s->ready, 1, memory_order_release);

    if (!SOAK_PART_ON(SOAK_PART_TIMER))
        return;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = SIGRTMIN;
    ev._sigev_un._tid = (int)gettid();
    struct itimerspec its = {{0, 1000000}, {0, 1000000}};
    s->has_timer = timer_create(CLOCK_MONOTONIC, &ev, &s->timer) == 0 && timer_settime(s->timer, 0, &its, NULL) == 0;
    if (!s->has_timer)
        soak_say("soak: %s: no timer: %s\n", t->name, strerror(errno));
}

void soak_signals_thread_stop(soak_sigstate_t *s)
{
    if (s->has_timer)
        timer_delete(s->timer);
    block(SIGRTMIN, true);
    atomic_store(&s->ready, 0);
    for (int i = 0; i < SOAK_HOBJS; i++)
        if (s->hobj[i].p) {
            soak_verify(s->t, &s->hobj[i], "timer handler");
            free(s->hobj[i].p);
            s->hobj[i].p = NULL;
        }
    if (s->segv_obj.p) {
        soak_verify(s->t, &s->segv_obj, "SIGSEGV handler");
        free(s->segv_obj.p);
        s->segv_obj.p = NULL;
    }
    block(SIGRTMIN, false);
}

/* Moves one timer object (and now and then the SIGSEGV one) elsewhere. */
void soak_signals_maintain(soak_sigstate_t *s)
{
    soak_set_state(s->t, ST_SIG_MAINT);
    int i = (int)(soak_rnd(&s->rng) % SOAK_HOBJS);
    block(SIGRTMIN, true);
    renew(&s->hobj[i], s->t, handler_obj_size(&s->rng), s->hobj[i].id);
    block(SIGRTMIN, false);
    if (soak_rnd(&s->rng) % 8 == 0)
        renew(&s->segv_obj, s->t, handler_obj_size(&s->rng), s->segv_obj.id);
}

void soak_signals_sweep(soak_sigstate_t *s)
{
    block(SIGRTMIN, true);
    for (int i = 0; i < SOAK_HOBJS; i++)
        if (s->hobj[i].p)
            soak_verify(s->t, &s->hobj[i], "timer handler");
    block(SIGRTMIN, false);
    if (s->segv_obj.p)
        soak_verify(s->t, &s->segv_obj, "SIGSEGV handler");
}

/* Protects the guard page and stores into it: the handler lets the store
 * through.  The value must be there afterwards. */
void soak_guard_touch(soak_sigstate_t *s)
{
    if (!SOAK_PART_ON(SOAK_PART_GUARD))
        return;
    soak_set_state(s->t, ST_GUARD);
    if (mprotect(s->guard, (size_t)page_size, PROT_NONE) != 0)
        return;
    uint64_t v = soak_rnd(&s->rng);
    size_t at = (soak_rnd(&s->rng) % (size_t)(page_size / 8)) * 8;
    *(volatile uint64_t *)(s->guard + at) = v;
    if (*(volatile uint64_t *)(s->guard + at) != v) {
        SOAK_ADD(corruptions, 1);
        soak_report("%s: the store into the guard page was lost", s->t->name);
    }
}

/* ---- SIGALRM ---- */

void soak_alarm_start(soak_thread_t *t)
{
    uint64_t rng = soak_seed_for("alarm", 0);
    for (int i = 0; i < SOAK_ALARM_OBJS; i++)
        renew(&alarm_objs[i], t, handler_obj_size(&rng), alarm_next_id++);
    struct itimerval it = {{0, 1000}, {0, 1000}};
    if (SOAK_PART_ON(SOAK_PART_ALARM))
        setitimer(ITIMER_REAL, &it, NULL);
}

static void alarm_lock(void)
{
    block(SIGALRM, true);
    while (atomic_flag_test_and_set_explicit(&alarm_busy, memory_order_acquire))
        sched_yield();
}

static void alarm_unlock(void)
{
    atomic_flag_clear_explicit(&alarm_busy, memory_order_release);
    block(SIGALRM, false);
}

void soak_alarm_maintain(soak_thread_t *t, uint64_t *rng)
{
    soak_set_state(t, ST_SIG_MAINT);
    alarm_lock();
    soak_obj_t *o = &alarm_objs[soak_rnd(rng) % SOAK_ALARM_OBJS];
    renew(o, t, handler_obj_size(rng), alarm_next_id++);
    if (soak_rnd(rng) % 16 == 0)
        for (int i = 0; i < SOAK_ALARM_OBJS; i++)
            soak_verify(t, &alarm_objs[i], "SIGALRM handler");
    alarm_unlock();
}

void soak_alarm_stop(soak_thread_t *t)
{
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    alarm_lock();
    for (int i = 0; i < SOAK_ALARM_OBJS; i++) {
        soak_verify(t, &alarm_objs[i], "SIGALRM handler");
        free(alarm_objs[i].p);
        alarm_objs[i].p = NULL;
    }
    alarm_unlock();
}
