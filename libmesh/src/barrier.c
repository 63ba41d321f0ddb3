/*
 * The write barrier (DESIGN §2.5): while a span's objects are copied onto
 * another span, its pages are read-only.  A thread that writes there takes a
 * SIGSEGV; this handler makes it wait until the mesh is done and returns, so
 * that the store runs again on the new mapping.  Any other fault goes to the
 * program's own handler, or ends the process as it would have.
 *
 * Programs install SIGSEGV handlers too (language runtimes do, for stack
 * overflow and null checks), so sigaction() and signal() are interposed for
 * SIGSEGV and SIGBUS: once the barrier is installed, the program's handler
 * is recorded here and called from ours, and the program sees its own
 * handler when it asks.
 *
 * The kernel does not raise SIGSEGV when a system call writes into a
 * read-only page: the call fails with EFAULT.  The calls through which
 * programs most often receive data into heap buffers (read, pread, readv,
 * recv, recvfrom, recvmsg, epoll_wait, epoll_pwait) are interposed and
 * retried when they fail so while a mesh is in progress or has just
 * completed.  epoll_wait and epoll_pwait are also idle points: a server
 * about to sleep there is a good moment to mesh.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "internal.h"

extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);
extern ssize_t __read(int fd, void *buf, size_t n);

static _Atomic uint32_t mesh_seq;        /* futex word: bumped as each mesh ends */
static _Atomic int in_progress;
static _Atomic int sig_lock;             /* spinlock: sigaction must stay async-signal-safe */
static bool installed;
static struct sigaction program_act[2];  /* the program's SIGSEGV and SIGBUS handlers */

static __thread bool tls_meshing __attribute__((tls_model("initial-exec")));
static __thread void *tls_fault_addr __attribute__((tls_model("initial-exec")));
static __thread uint32_t tls_fault_seq __attribute__((tls_model("initial-exec")));

static void spin_lock(void)
{
    while (atomic_exchange_explicit(&sig_lock, 1, memory_order_acquire))
        ;
}

static void spin_unlock(void)
{
    atomic_store_explicit(&sig_lock, 0, memory_order_release);
}

/* ---- begin, end, wait ---- */

/* Between begin and end, the meshing thread itself must not fault on the
 * spans it protects: it would wait for itself.  Its signals are blocked by
 * the caller for the whole class being meshed, so that no handler of the
 * program runs on it meanwhile. */
void mesh_barrier_begin(void)
{
    tls_meshing = true;
    atomic_store(&in_progress, 1);
}

void mesh_barrier_end(void)
{
    tls_meshing = false;
    atomic_store(&in_progress, 0);
    atomic_fetch_add(&mesh_seq, 1);
    mesh_os_futex_wake_all(&mesh_seq);
}

bool mesh_barrier_active(void)
{
    return atomic_load(&in_progress) != 0;
}

/* Waits until no mesh is in progress.  Async-signal-safe. */
void mesh_barrier_wait(void)
{
    while (atomic_load(&in_progress)) {
        uint32_t seq = atomic_load(&mesh_seq);
        if (!atomic_load(&in_progress))
            break;
        mesh_os_futex_wait(&mesh_seq, seq, 1000000);
    }
}

/* ---- the handler ---- */

static int slot_of(int sig)
{
    return sig == SIGSEGV ? 0 : 1;
}

/* Hands a fault that is not ours to the program's handler, with that
 * handler's mask and flags, or lets the default action happen. */
static void chain(int sig, siginfo_t *si, void *ctx)
{
    spin_lock();
    struct sigaction act = program_act[slot_of(sig)];
    if (act.sa_flags & SA_RESETHAND) {
        program_act[slot_of(sig)].sa_handler = SIG_DFL;
        program_act[slot_of(sig)].sa_flags &= ~SA_SIGINFO;
    }
    spin_unlock();

    bool info = (act.sa_flags & SA_SIGINFO) != 0;
    if ((!info && (act.sa_handler == SIG_DFL || act.sa_handler == SIG_IGN)) || (info && !act.sa_sigaction)) {
        /* The default action: restore it and let the fault happen again
         * (or, for a signal someone sent, send it again). */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        __sigaction(sig, &dfl, NULL);
        if (si->si_code <= 0)
            raise(sig);
        return;
    }
    sigset_t mask, old;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&act.sa_mask, s) == 1)
            sigaddset(&mask, s);
    if (act.sa_flags & SA_NODEFER)
        sigdelset(&mask, sig);
    else
        sigaddset(&mask, sig);
    pthread_sigmask(SIG_SETMASK, &mask, &old);
    if (info)
        act.sa_sigaction(sig, si, ctx);
    else
        act.sa_handler(sig);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void handler(int sig, siginfo_t *si, void *ctx)
{
    int saved = errno;
    uintptr_t off = (uintptr_t)si->si_addr - (uintptr_t)mesh_arena.base;
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && off < mesh_arena.bytes && !tls_meshing) {
        uint32_t seq = atomic_load(&mesh_seq);
        if (atomic_load(&in_progress)) {
            MESH_STAT_ADD(barrier_waits, 1);
            mesh_barrier_wait();
            tls_fault_addr = NULL;
            errno = saved;
            return;
        }
        /* No mesh now, but one may have ended since the fault: retry once.
         * The same fault again with no mesh in between is the program's. */
        if (tls_fault_addr != si->si_addr || tls_fault_seq != seq) {
            tls_fault_addr = si->si_addr;
            tls_fault_seq = seq;
            errno = saved;
            return;
        }
    }
    tls_fault_addr = NULL;
    chain(sig, si, ctx);
    errno = saved;
}

/* Installs the handler for SIGSEGV and SIGBUS, keeping whatever the program
 * had installed as its own.  Called before the first mesh. */
void mesh_barrier_install(void)
{
    spin_lock();
    if (!installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigemptyset(&sa.sa_mask);
        __sigaction(SIGSEGV, &sa, &program_act[0]);
        __sigaction(SIGBUS, &sa, &program_act[1]);
        installed = true;
    }
    spin_unlock();
}

/* ---- sigaction and signal, as the program sees them ---- */

MESH_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *oldact)
{
    if (sig != SIGSEGV && sig != SIGBUS)
        return __sigaction(sig, act, oldact);
    spin_lock();
    int rc = 0;
    if (installed) {
        struct sigaction prev = program_act[slot_of(sig)];
        if (act)
            program_act[slot_of(sig)] = *act;
        if (oldact)
            *oldact = prev;
    } else {
        rc = __sigaction(sig, act, oldact);
    }
    spin_unlock();
    return rc;
}

/* glibc's signal(): BSD semantics, the handler's own signal blocked while
 * it runs and interrupted calls restarted. */
MESH_EXPORT sighandler_t signal(int sig, sighandler_t fn)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sig > 0 && sig < NSIG)
        sigaddset(&sa.sa_mask, sig);
    if (sigaction(sig, &sa, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

/* ---- system calls that write into the heap ---- */

static bool in_arena(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p, base = (uintptr_t)mesh_arena.base;
    return len && a < base + mesh_arena.bytes && a + len > base;
}

static bool iov_in_arena(const struct iovec *iov, int n)
{
    for (int i = 0; i < n && iov; i++)
        if (in_arena(iov[i].iov_base, iov[i].iov_len))
            return true;
    return false;
}

/* After EFAULT on a buffer in the arena: worth another try if a mesh was in
 * progress or ended during the call. */
static bool retry_after_efault(bool buffer_in_arena, uint32_t seq_before, int tries)
{
    if (errno != EFAULT || !buffer_in_arena || tries >= 64)
        return false;
    if (!atomic_load(&in_progress) && atomic_load(&mesh_seq) == seq_before)
        return false;
    MESH_STAT_ADD(efault_retries, 1);
    mesh_barrier_wait();
    return true;
}

#define NEXT(name) \
    static __typeof__(name) *real_##name; \
    if (!real_##name) \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

#define RETRYING(call, buffer_in_arena)                                    \
    do {                                                                   \
        for (int tries_ = 0;; tries_++) {                                  \
            uint32_t seq_ = atomic_load(&mesh_seq);                        \
            r = (call);                                                    \
            if (r >= 0 || !retry_after_efault(buffer_in_arena, seq_, tries_)) \
                break;                                                     \
        }                                                                  \
    } while (0)

MESH_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    ssize_t r;
    RETRYING(__read(fd, buf, n), in_arena(buf, n));
    return r;
}

MESH_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    NEXT(pread);
    ssize_t r;
    RETRYING(real_pread(fd, buf, n, off), in_arena(buf, n));
    return r;
}

MESH_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
    NEXT(pread64);
    ssize_t r;
    RETRYING(real_pread64(fd, buf, n, off), in_arena(buf, n));
    return r;
}

MESH_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    NEXT(readv);
    ssize_t r;
    RETRYING(real_readv(fd, iov, n), iov_in_arena(iov, n));
    return r;
}

MESH_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    NEXT(recv);
    ssize_t r;
    RETRYING(real_recv(fd, buf, n, flags), in_arena(buf, n));
    return r;
}

MESH_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen)
{
    NEXT(recvfrom);
    ssize_t r;
    RETRYING(real_recvfrom(fd, buf, n, flags, addr, alen),
             in_arena(buf, n) || in_arena(addr, alen ? *alen : 0) || in_arena(alen, sizeof *alen));
    return r;
}

MESH_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    NEXT(recvmsg);
    ssize_t r;
    RETRYING(real_recvmsg(fd, msg, flags),
             iov_in_arena(msg->msg_iov, (int)msg->msg_iovlen) || in_arena(msg->msg_name, msg->msg_namelen) ||
                 in_arena(msg->msg_control, msg->msg_controllen) || in_arena(msg, sizeof *msg));
    return r;
}

MESH_EXPORT int epoll_wait(int epfd, struct epoll_event *events, int maxevents, int timeout)
{
    NEXT(epoll_wait);
    if (timeout != 0 && atomic_load_explicit(&mesh_init_state, memory_order_relaxed) == 2)
        mesh_maybe_mesh();
    int r;
    RETRYING(real_epoll_wait(epfd, events, maxevents, timeout),
             in_arena(events, (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events));
    return r;
}

MESH_EXPORT int epoll_pwait(int epfd, struct epoll_event *events, int maxevents, int timeout, const sigset_t *ss)
{
    NEXT(epoll_pwait);
    if (timeout != 0 && atomic_load_explicit(&mesh_init_state, memory_order_relaxed) == 2)
        mesh_maybe_mesh();
    int r;
    RETRYING(real_epoll_pwait(epfd, events, maxevents, timeout, ss),
             in_arena(events, (size_t)(maxevents > 0 ? maxevents : 0) * sizeof *events));
    return r;
}

/* ---- fork ---- */

void mesh_barrier_fork_child(void)
{
    atomic_store(&in_progress, 0);
    atomic_store(&sig_lock, 0);
}
