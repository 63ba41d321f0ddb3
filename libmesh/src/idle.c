/*
 * Idle points: a thread about to block in a sleep, poll, select or epoll
 * call with a timeout that is not zero is at a good moment to give back
 * freed pages and mesh, as the paper does for servers in epoll_wait.  A
 * thread going to sleep for a period or longer also detaches its own spans
 * first, so that what it leaves behind can be meshed while it sleeps.
 * Waits with a limit are shortened by the time this took: a program sleeps
 * as long as it asked, not longer.  A wait during which a period begins is
 * split there, so that the idle work is not slept through, and the idle
 * work stops as soon as the wait would return at once (mesh_pass.c), which
 * this file tells it how to find out for each kind of wait.
 *
 * The event arrays and descriptor sets these calls write back are pinned
 * for the call (pin.c), as receive.c's buffers are.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* Called before a thread blocks for up to timeout_ns (UINT64_MAX: no
 * limit) in the wait w. */
static void idle_point(uint64_t timeout_ns, mesh_wait_t *w)
{
    if (!mesh_started() || timeout_ns == 0)
        return;
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (th) {
        if (timeout_ns >= mesh_ms_to_ns(mesh_opt.period_ms))
            mesh_thread_heap_flush(th);
        else
            mesh_thread_heap_tick(th, true);
    }
    mesh_maybe_mesh(timeout_ns == UINT64_MAX ? 4 * mesh_ms_to_ns(mesh_opt.idle_pass_ms) : timeout_ns, w);
}

/* ---- what a wait would return at once ---- */

/* A signal the wait leaves unblocked is pending: the wait would end with
 * EINTR (the idle work runs with the program's signals blocked). */
static bool signal_due(const mesh_wait_t *w)
{
    sigset_t pending;
    if (sigpending(&pending) != 0)
        return false;
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&pending, s) == 1 && sigismember(&w->mask, s) != 1)
            return true;
    return false;
}

static bool sleep_ready(const mesh_wait_t *w)
{
    return signal_due(w);
}

#define POLL_CHECK_MAX 64   /* descriptors a check copies; more: signals only */

static bool poll_ready(const mesh_wait_t *w)
{
    NEXT_SYMBOL(poll);
    struct pollfd copy[POLL_CHECK_MAX];
    if (signal_due(w))
        return true;
    if (w->n == 0 || w->n > POLL_CHECK_MAX)
        return false;   /* poll(NULL, 0, t) is a sleep: no descriptor to check */
    memcpy(copy, w->what, w->n * sizeof *copy);
    return real_poll(copy, w->n, 0) > 0;
}

/* An epoll descriptor is readable when events are ready; polling it
 * takes none of them. */
static bool epoll_ready(const mesh_wait_t *w)
{
    NEXT_SYMBOL(poll);
    struct pollfd p = {.fd = w->fd, .events = POLLIN};
    return signal_due(w) || real_poll(&p, 1, 0) > 0;
}

typedef struct fd_sets {
    fd_set *r, *w, *e;
} fd_sets_t;

static bool select_ready(const mesh_wait_t *w)
{
    NEXT_SYMBOL(select);
    const fd_sets_t *sets = w->what;
    fd_set r, wr, e;
    struct timeval zero = {0, 0};
    if (signal_due(w))
        return true;
    if (w->n > FD_SETSIZE)
        return false;
    if (sets->r)
        r = *sets->r;
    if (sets->w)
        wr = *sets->w;
    if (sets->e)
        e = *sets->e;
    return real_select((int)w->n, sets->r ? &r : NULL, sets->w ? &wr : NULL, sets->e ? &e : NULL, &zero) > 0;
}

/* The wait as an idle pass sees it; mask NULL: the thread's own, which
 * the pass reads only if it runs (a system call every wait would cost). */
static mesh_wait_t wait_of(bool (*ready)(const mesh_wait_t *), const void *what, size_t n, int fd,
                           const sigset_t *mask)
{
    mesh_wait_t w = {.ready = ready, .what = what, .n = n, .fd = fd, .has_mask = mask != NULL};
    if (mask)
        w.mask = *mask;
    return w;
}

/* A timeout the kernel refuses (EINVAL): such a call goes straight
 * through, neither split nor preceded by idle work. */
static bool bad_ts(const struct timespec *ts)
{
    return ts && (ts->tv_sec < 0 || ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000L);
}

/* select's, which Linux first normalizes (a million microseconds or more
 * make whole seconds). */
static bool bad_tv(const struct timeval *tv)
{
    return tv && (tv->tv_sec + tv->tv_usec / 1000000L < 0 || tv->tv_usec % 1000000L < 0);
}

static uint64_t ts_ns(const struct timespec *ts)
{
    return ts ? (uint64_t)ts->tv_sec * 1000000000ULL + (uint64_t)ts->tv_nsec : UINT64_MAX;
}

static uint64_t ms_ns(int ms)
{
    return ms < 0 ? UINT64_MAX : (uint64_t)ms * 1000000ULL;
}

static struct timespec ns_ts(uint64_t ns)
{
    return (struct timespec){(time_t)(ns / 1000000000ULL), (long)(ns % 1000000000ULL)};
}

/* Milliseconds, rounded up (a wait never ends early), -1 for no limit. */
static int ns_ms(uint64_t ns)
{
    if (ns == UINT64_MAX)
        return -1;
    uint64_t ms = (ns + 999999) / 1000000;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

/* What is left of a wait of want_ns begun at t0 (UINT64_MAX stays). */
static uint64_t left_ns(uint64_t want_ns, uint64_t t0)
{
    if (want_ns == UINT64_MAX)
        return want_ns;
    uint64_t spent = mesh_os_now_ns() - t0;
    return want_ns > spent ? want_ns - spent : 0;
}

/*
 * Waits are split where a period begins during them: a thread that goes to
 * sleep just before a period is due (Ruby's sleep after a burst of work,
 * say) would otherwise sleep through it, and its heap would wait for the
 * next burst.  So the wait goes first until the period begins; if it ends
 * earlier (an event, a signal, an error), that is the call's result, as it
 * would have been; if not, the idle work runs and the wait goes on for what
 * is left of it.  Either way a wait with a limit ends when it would have.
 */
static uint64_t split_ns(uint64_t want_ns)
{
    return mesh_started() && want_ns ? mesh_idle_split_ns(want_ns) : 0;
}

/* The idle work for a wait of want_ns begun at t0, with what is left of it.
 * The work may take a quarter of the whole wait (the thread is idle for
 * all of it, split or not), but never more than half of what is left. */
static void idle_rest(uint64_t want_ns, uint64_t t0, mesh_wait_t *w)
{
    uint64_t left = left_ns(want_ns, t0);
    idle_point(left == UINT64_MAX || want_ns / 2 < left ? want_ns : 2 * left, w);
}

MESH_EXPORT int clock_nanosleep(clockid_t clock, int flags, const struct timespec *req, struct timespec *rem)
{
    NEXT_SYMBOL(clock_nanosleep);
    if (!req || bad_ts(req))
        return real_clock_nanosleep(clock, flags, req, rem);
    if (flags & TIMER_ABSTIME) {
        /* A deadline: the idle work cannot make the sleep longer.  On the
         * wall and monotonic clocks the sleep is split where a period
         * begins, the first part relative, the rest to the deadline. */
        struct timespec now;
        uint64_t until = ts_ns(req), d = 0;
        if (req && clock_gettime(clock, &now) == 0 && until > ts_ns(&now))
            d = until - ts_ns(&now);
        bool wall = clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_BOOTTIME;
        uint64_t first = wall ? split_ns(d) : 0;
        if (first) {
            struct timespec f = ns_ts(first);
            int err = real_clock_nanosleep(clock, 0, &f, NULL);
            if (err)
                return err;
            MESH_STAT_ADD(idle_splits, 1);
            d = clock_gettime(clock, &now) == 0 && until > ts_ns(&now) ? until - ts_ns(&now) : 0;
        }
        mesh_wait_t w = wait_of(sleep_ready, NULL, 0, -1, NULL);
        idle_point(d, &w);
        return real_clock_nanosleep(clock, flags, req, rem);
    }
    uint64_t t0 = mesh_os_now_ns(), want = ts_ns(req), first = split_ns(want);
    if (first) {
        struct timespec f = ns_ts(first);
        int err = real_clock_nanosleep(clock, flags, &f, NULL);
        if (err) {
            if (err == EINTR && rem)
                *rem = ns_ts(left_ns(want, t0));
            return err;
        }
        MESH_STAT_ADD(idle_splits, 1);
    }
    mesh_wait_t w = wait_of(sleep_ready, NULL, 0, -1, NULL);
    idle_rest(want, t0, &w);
    struct timespec left = ns_ts(left_ns(want, t0));
    return real_clock_nanosleep(clock, flags, &left, rem);
}

MESH_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!req || bad_ts(req)) {
        errno = EINVAL;
        return -1;
    }
    int err = clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

MESH_EXPORT int usleep(useconds_t us)
{
    struct timespec ts = {(time_t)(us / 1000000), (long)(us % 1000000) * 1000};
    return nanosleep(&ts, NULL);
}

MESH_EXPORT unsigned int sleep(unsigned int seconds)
{
    struct timespec ts = {(time_t)seconds, 0}, rem = {0, 0};
    if (nanosleep(&ts, &rem) < 0 && errno == EINTR)
        return (unsigned int)rem.tv_sec + (rem.tv_nsec > 0);
    return 0;
}

/* r = a wait of want_ns (UINT64_MAX: no limit) split where a period
 * begins: call, an expression of wait_ns (the part to wait now), first
 * until the period begins; if that returned nothing, the idle work for the
 * wait w, then call again for what is left.  The len bytes at buf, which
 * the call writes back, are pinned for it. */
#define SPLIT_WAIT(want, w, buf, len, call)                                  \
    do {                                                                     \
        uint64_t t0_ = mesh_os_now_ns(), wait_ns = split_ns(want);           \
        if (wait_ns) {                                                       \
            MESH_PINNED_CALL_BUF(buf, len, call);                            \
            if (r != 0) {                                                    \
                mesh_loop_woke();                                            \
                return r;                                                    \
            }                                                                \
            MESH_STAT_ADD(idle_splits, 1);                                   \
        }                                                                    \
        idle_rest(want, t0_, &(w));                                          \
        wait_ns = left_ns(want, t0_);                                        \
        MESH_PINNED_CALL_BUF(buf, len, call);                                \
        mesh_loop_woke();                                                    \
    } while (0)

/* A timespec for wait_ns, or NULL for no limit. */
static const struct timespec *ts_or_null(struct timespec *ts, uint64_t wait_ns)
{
    if (wait_ns == UINT64_MAX)
        return NULL;
    *ts = ns_ts(wait_ns);
    return ts;
}

MESH_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    NEXT_SYMBOL(poll);
    int r;
    mesh_wait_t w = wait_of(poll_ready, fds, n, -1, NULL);
    SPLIT_WAIT(ms_ns(timeout), w, fds, n * sizeof *fds, real_poll(fds, n, ns_ms(wait_ns)));
    return r;
}

MESH_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
    NEXT_SYMBOL(ppoll);
    int r;
    sigset_t mask_copy;
    struct timespec ts;
    mask = mesh_signals_wait_mask(mask, &mask_copy);
    if (bad_ts(timeout)) {
        MESH_PINNED_CALL_BUF(fds, n * sizeof *fds, real_ppoll(fds, n, timeout, mask));
        return r;
    }
    mesh_wait_t w = wait_of(poll_ready, fds, n, -1, mask);
    SPLIT_WAIT(ts_ns(timeout), w, fds, n * sizeof *fds, real_ppoll(fds, n, ts_or_null(&ts, wait_ns), mask));
    return r;
}

/* r = call, with the descriptor sets select writes back pinned. */
#define PINNED_SETS_CALL(rd, wr, ex, call)                                  \
    do {                                                                    \
        mesh_pinset_t ps_ = {0};                                            \
        mesh_pinset_add(&ps_, (rd), (rd) ? sizeof(fd_set) : 0);             \
        mesh_pinset_add(&ps_, (wr), (wr) ? sizeof(fd_set) : 0);             \
        mesh_pinset_add(&ps_, (ex), (ex) ? sizeof(fd_set) : 0);             \
        MESH_PINNED_CALL(ps_, call);                                        \
    } while (0)

/* The sets a select watches, kept for the rest of a split wait: the first
 * part, when it times out, leaves them all empty.  Only for the sets of
 * the standard size (n <= FD_SETSIZE); larger waits are not split. */
typedef struct fdsets {
    fd_set r, w, e;
} fdsets_t;

static void sets_copy(fdsets_t *s, fd_set *r, fd_set *w, fd_set *e, bool save)
{
    fd_set *user[3] = {r, w, e}, *kept[3] = {&s->r, &s->w, &s->e};
    for (int i = 0; i < 3; i++)
        if (user[i])
            memcpy(save ? kept[i] : user[i], save ? user[i] : kept[i], sizeof(fd_set));
}

static uint64_t tv_ns(const struct timeval *tv)
{
    return tv ? (uint64_t)tv->tv_sec * 1000000000ULL + (uint64_t)tv->tv_usec * 1000ULL : UINT64_MAX;
}

static struct timeval ns_tv(uint64_t ns)
{
    return (struct timeval){(time_t)(ns / 1000000000ULL), (suseconds_t)((ns % 1000000000ULL + 999) / 1000)};
}

/* select and pselect, both through pselect: a wait of want_ns (UINT64_MAX:
 * no limit), split where a period begins; *left_ns_out is what is left of
 * it when the call returns. */
static int select_split(int n, fd_set *rd, fd_set *wr, fd_set *ex, uint64_t want, const sigset_t *mask,
                        uint64_t *left_ns_out)
{
    NEXT_SYMBOL(pselect);
    uint64_t t0 = mesh_os_now_ns(), first = n >= 0 && n <= FD_SETSIZE ? split_ns(want) : 0;
    int r;
    if (first) {
        fdsets_t kept;
        sets_copy(&kept, rd, wr, ex, true);
        struct timespec f = ns_ts(first);
        PINNED_SETS_CALL(rd, wr, ex, real_pselect(n, rd, wr, ex, &f, mask));
        if (r != 0) {
            mesh_loop_woke();
            *left_ns_out = left_ns(want, t0);
            return r;
        }
        MESH_STAT_ADD(idle_splits, 1);
        sets_copy(&kept, rd, wr, ex, false);
    }
    fd_sets_t sets = {rd, wr, ex};
    mesh_wait_t w = wait_of(select_ready, &sets, n >= 0 ? (size_t)n : 0, -1, mask);
    idle_rest(want, t0, &w);
    struct timespec left = ns_ts(left_ns(want, t0));
    PINNED_SETS_CALL(rd, wr, ex, real_pselect(n, rd, wr, ex, want == UINT64_MAX ? NULL : &left, mask));
    mesh_loop_woke();
    *left_ns_out = left_ns(want, t0);
    return r;
}

MESH_EXPORT int select(int n, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *timeout)
{
    NEXT_SYMBOL(select);
    int r;
    if (bad_tv(timeout)) {
        PINNED_SETS_CALL(rd, wr, ex, real_select(n, rd, wr, ex, timeout));
        return r;
    }
    uint64_t left;
    r = select_split(n, rd, wr, ex, tv_ns(timeout), NULL, &left);
    if (timeout) /* Linux tells what is left of the wait */
        *timeout = ns_tv(left);
    return r;
}

MESH_EXPORT int pselect(int n, fd_set *rd, fd_set *wr, fd_set *ex, const struct timespec *timeout,
                        const sigset_t *mask)
{
    NEXT_SYMBOL(pselect);
    int r;
    sigset_t mask_copy;
    mask = mesh_signals_wait_mask(mask, &mask_copy);
    if (bad_ts(timeout)) {
        PINNED_SETS_CALL(rd, wr, ex, real_pselect(n, rd, wr, ex, timeout, mask));
        return r;
    }
    uint64_t left;
    return select_split(n, rd, wr, ex, ts_ns(timeout), mask, &left);
}

MESH_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    NEXT_SYMBOL(epoll_wait);
    size_t bytes = (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events;
    int r;
    mesh_wait_t w = wait_of(epoll_ready, NULL, 0, epfd, NULL);
    SPLIT_WAIT(ms_ns(timeout), w, events, bytes, real_epoll_wait(epfd, events, maxevents, ns_ms(wait_ns)));
    return r;
}

MESH_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *ss)
{
    NEXT_SYMBOL(epoll_pwait);
    size_t bytes = (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events;
    int r;
    sigset_t ss_copy;
    ss = mesh_signals_wait_mask(ss, &ss_copy);
    mesh_wait_t w = wait_of(epoll_ready, NULL, 0, epfd, ss);
    SPLIT_WAIT(ms_ns(timeout), w, events, bytes, real_epoll_pwait(epfd, events, maxevents, ns_ms(wait_ns), ss));
    return r;
}
