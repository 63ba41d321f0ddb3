/*
 * Signals as the program sees them.
 *
 * The write barrier (barrier.c) stops a thread that writes into a page
 * being meshed, or copied for a fork child, with a SIGSEGV that libmesh
 * handles: the thread waits and writes again.  That works only while
 * SIGSEGV can be delivered; the kernel kills a thread that faults with
 * SIGSEGV blocked.  Programs block it without meaning any harm: a handler
 * installed with sigfillset() as its mask, a SIGSEGV handler of their own
 * (the kernel runs a handler with its own signal blocked), a thread that
 * blocks every signal around a critical section.
 *
 * So SIGSEGV and SIGBUS are never blocked for real while libmesh runs: they
 * are taken out of every mask the program hands over (sigaction's sa_mask,
 * sigprocmask, pthread_sigmask, sigsuspend here; the masks of ppoll,
 * pselect and epoll_pwait in idle.c), and libmesh's own handler for
 * them runs with SA_NODEFER.  The program still sees what it asked for:
 * sigaction reports the masks it installed, sigprocmask and pthread_sigmask
 * report SIGSEGV and SIGBUS blocked in a thread that blocked them (a view
 * kept per thread; a siglongjmp that restores a saved mask does not update
 * it).  What changes: a genuine fault while the program has SIGSEGV
 * blocked reaches its handler (or the default action) where the kernel
 * would have ended the process at once.
 *
 * Once the barrier is installed, the kernel's handler for SIGSEGV and
 * SIGBUS is libmesh's; the program's own is kept here and called for every
 * fault that is not the barrier's (mesh_signals_chain).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "internal.h"

extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

static _Atomic int sig_lock;             /* spinlock: sigaction must stay async-signal-safe */
static bool taken;                       /* libmesh's handler holds SIGSEGV and SIGBUS */
static struct sigaction program_act[2];  /* the program's SIGSEGV and SIGBUS handlers, once taken */
/* For every other signal: which of SIGSEGV and SIGBUS the program put in
 * the sa_mask of the handler it installed, and that handler. */
static uint8_t program_mask_faults[NSIG];
static void *program_mask_handler[NSIG];

/* The faults this thread has blocked, as the program sees it: bit 0
 * SIGSEGV, bit 1 SIGBUS. */
static __thread uint8_t tls_blocked __attribute__((tls_model("initial-exec")));

static void spin_lock(void)
{
    while (atomic_exchange_explicit(&sig_lock, 1, memory_order_acquire))
        ;
}

static void spin_unlock(void)
{
    atomic_store_explicit(&sig_lock, 0, memory_order_release);
}

static int slot_of(int sig)
{
    return sig == SIGSEGV ? 0 : 1;
}

static bool is_fault(int sig)
{
    return sig == SIGSEGV || sig == SIGBUS;
}

/* The faults in a set, as bits (bit 0 SIGSEGV, bit 1 SIGBUS). */
static uint8_t faults_in(const sigset_t *set)
{
    return (uint8_t)((sigismember(set, SIGSEGV) == 1) | (sigismember(set, SIGBUS) == 1) << 1);
}

static void add_faults(sigset_t *set, uint8_t bits)
{
    if (bits & 1)
        sigaddset(set, SIGSEGV);
    if (bits & 2)
        sigaddset(set, SIGBUS);
}

void mesh_signals_strip(sigset_t *set)
{
    sigdelset(set, SIGSEGV);
    sigdelset(set, SIGBUS);
}

static void *handler_of(const struct sigaction *sa)
{
    return (sa->sa_flags & SA_SIGINFO) ? (void *)sa->sa_sigaction : (void *)sa->sa_handler;
}

/* Installs handler for SIGSEGV and SIGBUS, keeping what the program had
 * installed as its own.  Called before the first mesh and the first fork. */
void mesh_signals_take_faults(void (*handler)(int, siginfo_t *, void *))
{
    spin_lock();
    if (!taken) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        __sigaction(SIGSEGV, &sa, &program_act[0]);
        __sigaction(SIGBUS, &sa, &program_act[1]);
        taken = true;
    }
    spin_unlock();
}

/* Hands a fault that is not the barrier's to the program's handler, with
 * that handler's mask (less the faults) and flags, or lets the default
 * action happen. */
void mesh_signals_chain(int sig, siginfo_t *si, void *ctx)
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
    mesh_os_sigmask(SIG_BLOCK, NULL, &mask);
    for (int s = 1; s < NSIG; s++)
        if (sigismember(&act.sa_mask, s) == 1)
            sigaddset(&mask, s);
    if (!(act.sa_flags & SA_NODEFER))
        sigaddset(&mask, sig);
    mesh_signals_strip(&mask);
    mesh_os_sigmask(SIG_SETMASK, &mask, &old);
    if (info)
        act.sa_sigaction(sig, si, ctx);
    else
        act.sa_handler(sig);
    mesh_os_sigmask(SIG_SETMASK, &old, NULL);
}

/* ---- sigaction and signal ---- */

MESH_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *oldact)
{
    if (sig <= 0 || sig >= NSIG)
        return __sigaction(sig, act, oldact);
    spin_lock();
    int rc = 0;
    if (is_fault(sig) && taken) {
        struct sigaction prev = program_act[slot_of(sig)];
        if (act)
            program_act[slot_of(sig)] = *act;
        if (oldact)
            *oldact = prev;
    } else {
        struct sigaction mine;
        if (act) {
            mine = *act;
            mesh_signals_strip(&mine.sa_mask);
        }
        rc = __sigaction(sig, act ? &mine : NULL, oldact);
        if (rc == 0 && oldact && handler_of(oldact) == program_mask_handler[sig])
            add_faults(&oldact->sa_mask, program_mask_faults[sig]);
        if (rc == 0 && act) {
            program_mask_faults[sig] = faults_in(&act->sa_mask);
            program_mask_handler[sig] = handler_of(act);
        }
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

/* ---- masks ---- */

/* glibc keeps two signals for itself (thread cancellation and set*id
 * across threads): a program cannot block them, through libmesh either. */
static void strip_libc_signals(sigset_t *set)
{
    sigdelset(set, __SIGRTMIN);
    sigdelset(set, __SIGRTMIN + 1);
}

/* pthread_sigmask's semantics; returns an errno value. */
static int set_mask(int how, const sigset_t *set, sigset_t *oldset)
{
    if (set && how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
        return EINVAL;
    uint8_t before = tls_blocked;
    sigset_t mine;
    if (set) {
        mine = *set;
        mesh_signals_strip(&mine);
        if (how != SIG_UNBLOCK)
            strip_libc_signals(&mine);
    }
    int err = mesh_os_sigmask(how, set ? &mine : NULL, oldset);
    if (err)
        return err;
    if (oldset)
        add_faults(oldset, before);
    if (set) {
        uint8_t f = faults_in(set);
        tls_blocked = how == SIG_BLOCK ? (uint8_t)(before | f) : how == SIG_UNBLOCK ? (uint8_t)(before & ~f) : f;
    }
    return 0;
}

MESH_EXPORT int pthread_sigmask(int how, const sigset_t *set, sigset_t *oldset)
{
    return set_mask(how, set, oldset);
}

MESH_EXPORT int sigprocmask(int how, const sigset_t *set, sigset_t *oldset)
{
    int err = set_mask(how, set, oldset);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

MESH_EXPORT int sigsuspend(const sigset_t *mask)
{
    NEXT_SYMBOL(sigsuspend);
    sigset_t mine = *mask;
    mesh_signals_strip(&mine);
    return real_sigsuspend(&mine);
}

/* A copy of a wait's mask without the faults, for ppoll, pselect and
 * epoll_pwait; NULL stays NULL. */
const sigset_t *mesh_signals_wait_mask(const sigset_t *mask, sigset_t *copy)
{
    if (!mask || faults_in(mask) == 0)
        return mask;
    *copy = *mask;
    mesh_signals_strip(copy);
    return copy;
}

void mesh_signals_fork_child(void)
{
    atomic_store(&sig_lock, 0);
}
