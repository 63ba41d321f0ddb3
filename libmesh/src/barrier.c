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
 * System calls that write into a read-only page fail with EFAULT instead:
 * interpose.c retries them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

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

/* Counts the meshes that have ended: a call that saw it change may have
 * met a protected page. */
uint32_t mesh_barrier_seq(void)
{
    return atomic_load(&mesh_seq);
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
    /* Past the usable part the arena is PROT_NONE: a fault there is the
     * program's. */
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && off < atomic_load(&mesh_arena.usable) && !tls_meshing) {
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

/* ---- fork ---- */

void mesh_barrier_fork_child(void)
{
    atomic_store(&in_progress, 0);
    atomic_store(&sig_lock, 0);
}
