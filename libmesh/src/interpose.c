/*
 * The libc calls libmesh interposes besides the malloc family and the
 * signal calls (signals.c), for two reasons.
 *
 * Buffers the kernel writes into: while a span is being meshed its pages
 * are read-only, and while a fork child's heap is copied so is the arena;
 * the kernel does not raise SIGSEGV when a system call writes there, the
 * call fails with EFAULT, and some calls have consumed their data by then
 * (a datagram, the messages of recvmmsg, the signal of sigtimedwait).  So
 * the calls through which programs most often receive data into heap
 * buffers (read, pread, preadv, readv, recv, recvfrom, recvmsg, recvmmsg,
 * sigtimedwait, sigwaitinfo, and the poll, select and epoll families,
 * which write back their event arrays) pin their buffers for the call
 * (pin.c): meshing and fork leave pinned ranges writable.  Only when every
 * pin slot is taken does a call go unpinned, retried after EFAULT.
 *
 * Idle points: a thread about to sleep (the sleep, poll, select and epoll
 * families, with a timeout that is not zero) is a good moment to give back
 * freed pages and mesh, as the paper does for servers in epoll_wait.  A
 * thread going to sleep for a period or longer also detaches its own spans
 * first, so that what it leaves behind can be meshed while it sleeps.
 * Waits with a limit are shortened by the time this took: a program sleeps
 * as long as it asked, not longer.  A wait during which a period begins is
 * split there, so that the idle work is not slept through.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern ssize_t __read(int fd, void *buf, size_t n);

/* ---- system calls that write into the heap ---- */

static void add_iov(mesh_pinset_t *ps, const struct iovec *iov, size_t n)
{
    if (!iov)
        return;
    mesh_pinset_add(ps, iov, n * sizeof *iov);
    for (size_t i = 0; i < n; i++)
        mesh_pinset_add(ps, iov[i].iov_base, iov[i].iov_len);
}

/* What recvmsg writes: the data, the address, the control data, and the
 * header's lengths and flags. */
static void add_msghdr(mesh_pinset_t *ps, struct msghdr *msg)
{
    mesh_pinset_add(ps, msg, sizeof *msg);
    add_iov(ps, msg->msg_iov, msg->msg_iovlen);
    mesh_pinset_add(ps, msg->msg_name, msg->msg_namelen);
    mesh_pinset_add(ps, msg->msg_control, msg->msg_controllen);
}

/* After EFAULT on an unpinned call: worth another try if a mesh or a fork
 * was in progress or ended during the call. */
static bool retry_after_efault(uint32_t seq_before, int tries)
{
    if (errno != EFAULT || tries >= 64)
        return false;
    uint32_t seq = mesh_barrier_seq();
    if (!mesh_barrier_active() && seq == seq_before)
        return false;
    MESH_STAT_ADD(efault_retries, 1);
    mesh_barrier_wait(seq);
    return true;
}

/* r = call, with the buffers in ps pinned for it. */
#define WRITING_INTO(ps, call)                                              \
    do {                                                                    \
        if (mesh_pinset_hold(&(ps))) {                                      \
            r = (call);                                                     \
            int errno_ = errno;                                             \
            mesh_pinset_release(&(ps));                                     \
            errno = errno_;                                                 \
            break;                                                          \
        }                                                                   \
        for (int tries_ = 0;; tries_++) {                                   \
            uint32_t seq_ = mesh_barrier_seq();                             \
            r = (call);                                                     \
            if (r >= 0 || !retry_after_efault(seq_, tries_))                \
                break;                                                      \
        }                                                                   \
    } while (0)

/* The same for a call that writes into one buffer. */
#define WRITING_INTO_BUF(buf, len, call)                                    \
    do {                                                                    \
        mesh_pinset_t ps_ = {0};                                            \
        mesh_pinset_add(&ps_, (buf), (len));                                \
        WRITING_INTO(ps_, call);                                            \
    } while (0)

MESH_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    ssize_t r;
    WRITING_INTO_BUF(buf, n, __read(fd, buf, n));
    return r;
}

MESH_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    NEXT_SYMBOL(pread);
    ssize_t r;
    WRITING_INTO_BUF(buf, n, real_pread(fd, buf, n, off));
    return r;
}

MESH_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
    NEXT_SYMBOL(pread64);
    ssize_t r;
    WRITING_INTO_BUF(buf, n, real_pread64(fd, buf, n, off));
    return r;
}

MESH_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    NEXT_SYMBOL(readv);
    ssize_t r;
    mesh_pinset_t ps = {0};
    add_iov(&ps, iov, n > 0 ? (size_t)n : 0);
    WRITING_INTO(ps, real_readv(fd, iov, n));
    return r;
}

MESH_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    NEXT_SYMBOL(preadv);
    ssize_t r;
    mesh_pinset_t ps = {0};
    add_iov(&ps, iov, n > 0 ? (size_t)n : 0);
    WRITING_INTO(ps, real_preadv(fd, iov, n, off));
    return r;
}

MESH_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    NEXT_SYMBOL(recv);
    ssize_t r;
    WRITING_INTO_BUF(buf, n, real_recv(fd, buf, n, flags));
    return r;
}

MESH_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen)
{
    NEXT_SYMBOL(recvfrom);
    ssize_t r;
    mesh_pinset_t ps = {0};
    mesh_pinset_add(&ps, buf, n);
    mesh_pinset_add(&ps, addr, alen ? *alen : 0);
    mesh_pinset_add(&ps, alen, alen ? sizeof *alen : 0);
    WRITING_INTO(ps, real_recvfrom(fd, buf, n, flags, addr, alen));
    return r;
}

MESH_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    NEXT_SYMBOL(recvmsg);
    ssize_t r;
    mesh_pinset_t ps = {0};
    if (msg)
        add_msghdr(&ps, msg);
    WRITING_INTO(ps, real_recvmsg(fd, msg, flags));
    return r;
}

MESH_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags, struct timespec *timeout)
{
    NEXT_SYMBOL(recvmmsg);
    int r;
    mesh_pinset_t ps = {0};
    if (vec) {
        mesh_pinset_add(&ps, vec, (size_t)n * sizeof *vec);
        for (unsigned i = 0; i < n; i++)
            add_msghdr(&ps, &vec[i].msg_hdr);
    }
    mesh_pinset_add(&ps, timeout, timeout ? sizeof *timeout : 0);
    WRITING_INTO(ps, real_recvmmsg(fd, vec, n, flags, timeout));
    return r;
}

MESH_EXPORT int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout)
{
    NEXT_SYMBOL(sigtimedwait);
    int r;
    WRITING_INTO_BUF(info, info ? sizeof *info : 0, real_sigtimedwait(set, info, timeout));
    return r;
}

MESH_EXPORT int sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
    NEXT_SYMBOL(sigwaitinfo);
    int r;
    WRITING_INTO_BUF(info, info ? sizeof *info : 0, real_sigwaitinfo(set, info));
    return r;
}

/* ---- idle points ---- */

static bool started(void)
{
    return atomic_load_explicit(&mesh_init_state, memory_order_relaxed) == 2;
}

/* Called before a thread blocks for up to timeout_ns (UINT64_MAX: no
 * limit) in the wait w. */
static void idle_point(uint64_t timeout_ns, mesh_wait_t *w)
{
    if (!started() || timeout_ns == 0)
        return;
    mesh_thread_heap_t *th = mesh_tls_heap;
    if (th) {
        if (timeout_ns >= mesh_opt.period_ms * 1000000ULL)
            mesh_thread_heap_flush(th);
        else
            mesh_thread_heap_tick(th);
    }
    mesh_maybe_mesh(timeout_ns == UINT64_MAX ? 4 * mesh_opt.idle_pass_ms * 1000000ULL : timeout_ns, w);
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
    if (w->n > POLL_CHECK_MAX)
        return false;
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
    return started() && want_ns ? mesh_idle_split_ns(want_ns) : 0;
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
    }
    mesh_wait_t w = wait_of(sleep_ready, NULL, 0, -1, NULL);
    idle_rest(want, t0, &w);
    struct timespec left = ns_ts(left_ns(want, t0));
    return real_clock_nanosleep(clock, flags, &left, rem);
}

MESH_EXPORT int nanosleep(const struct timespec *req, struct timespec *rem)
{
    if (!req || req->tv_nsec < 0 || req->tv_nsec >= 1000000000L || req->tv_sec < 0) {
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

MESH_EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    NEXT_SYMBOL(poll);
    uint64_t t0 = mesh_os_now_ns(), want = ms_ns(timeout), first = split_ns(want);
    int r;
    if (first) {
        WRITING_INTO_BUF(fds, n * sizeof *fds, real_poll(fds, n, ns_ms(first)));
        if (r != 0)
            return r;
    }
    mesh_wait_t w = wait_of(poll_ready, fds, n, -1, NULL);
    idle_rest(want, t0, &w);
    WRITING_INTO_BUF(fds, n * sizeof *fds, real_poll(fds, n, ns_ms(left_ns(want, t0))));
    return r;
}

MESH_EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout, const sigset_t *mask)
{
    NEXT_SYMBOL(ppoll);
    int r;
    sigset_t mask_copy;
    mask = mesh_signals_wait_mask(mask, &mask_copy);
    if (bad_ts(timeout)) {
        WRITING_INTO_BUF(fds, n * sizeof *fds, real_ppoll(fds, n, timeout, mask));
        return r;
    }
    uint64_t t0 = mesh_os_now_ns(), want = ts_ns(timeout), first = split_ns(want);
    if (first) {
        struct timespec f = ns_ts(first);
        WRITING_INTO_BUF(fds, n * sizeof *fds, real_ppoll(fds, n, &f, mask));
        if (r != 0)
            return r;
    }
    mesh_wait_t w = wait_of(poll_ready, fds, n, -1, mask);
    idle_rest(want, t0, &w);
    struct timespec left = ns_ts(left_ns(want, t0));
    WRITING_INTO_BUF(fds, n * sizeof *fds, real_ppoll(fds, n, timeout ? &left : NULL, mask));
    return r;
}

/* r = call, with the descriptor sets select writes back pinned. */
#define WRITING_INTO_SETS(rd, wr, ex, call)                                 \
    do {                                                                    \
        mesh_pinset_t ps_ = {0};                                            \
        mesh_pinset_add(&ps_, (rd), (rd) ? sizeof(fd_set) : 0);             \
        mesh_pinset_add(&ps_, (wr), (wr) ? sizeof(fd_set) : 0);             \
        mesh_pinset_add(&ps_, (ex), (ex) ? sizeof(fd_set) : 0);             \
        WRITING_INTO(ps_, call);                                            \
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
        WRITING_INTO_SETS(rd, wr, ex, real_pselect(n, rd, wr, ex, &f, mask));
        if (r != 0) {
            *left_ns_out = left_ns(want, t0);
            return r;
        }
        sets_copy(&kept, rd, wr, ex, false);
    }
    fd_sets_t sets = {rd, wr, ex};
    mesh_wait_t w = wait_of(select_ready, &sets, n >= 0 ? (size_t)n : 0, -1, mask);
    idle_rest(want, t0, &w);
    struct timespec left = ns_ts(left_ns(want, t0));
    WRITING_INTO_SETS(rd, wr, ex, real_pselect(n, rd, wr, ex, want == UINT64_MAX ? NULL : &left, mask));
    *left_ns_out = left_ns(want, t0);
    return r;
}

MESH_EXPORT int select(int n, fd_set *rd, fd_set *wr, fd_set *ex, struct timeval *timeout)
{
    NEXT_SYMBOL(select);
    int r;
    if (bad_tv(timeout)) {
        WRITING_INTO_SETS(rd, wr, ex, real_select(n, rd, wr, ex, timeout));
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
        WRITING_INTO_SETS(rd, wr, ex, real_pselect(n, rd, wr, ex, timeout, mask));
        return r;
    }
    uint64_t left;
    return select_split(n, rd, wr, ex, ts_ns(timeout), mask, &left);
}

MESH_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    NEXT_SYMBOL(epoll_wait);
    size_t bytes = (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events;
    uint64_t t0 = mesh_os_now_ns(), want = ms_ns(timeout), first = split_ns(want);
    int r;
    if (first) {
        WRITING_INTO_BUF(events, bytes, real_epoll_wait(epfd, events, maxevents, ns_ms(first)));
        if (r != 0)
            return r;
    }
    mesh_wait_t w = wait_of(epoll_ready, NULL, 0, epfd, NULL);
    idle_rest(want, t0, &w);
    WRITING_INTO_BUF(events, bytes, real_epoll_wait(epfd, events, maxevents, ns_ms(left_ns(want, t0))));
    return r;
}

MESH_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *ss)
{
    sigset_t ss_copy;
    ss = mesh_signals_wait_mask(ss, &ss_copy);
    NEXT_SYMBOL(epoll_pwait);
    size_t bytes = (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events;
    uint64_t t0 = mesh_os_now_ns(), want = ms_ns(timeout), first = split_ns(want);
    int r;
    if (first) {
        WRITING_INTO_BUF(events, bytes, real_epoll_pwait(epfd, events, maxevents, ns_ms(first), ss));
        if (r != 0)
            return r;
    }
    mesh_wait_t w = wait_of(epoll_ready, NULL, 0, epfd, ss);
    idle_rest(want, t0, &w);
    WRITING_INTO_BUF(events, bytes, real_epoll_pwait(epfd, events, maxevents, ns_ms(left_ns(want, t0)), ss));
    return r;
}
