/*
 * The write barrier: while a span's objects are copied onto another span,
 * its pages are read-only, and while a fork child's copy of the heap is
 * made, so is the whole file-backed part of the arena.  A thread that writes there takes a SIGSEGV; this handler
 * makes it wait until the mesh or the fork is done and returns, so that the
 * store runs again.  Any other fault goes to the program's own handler, or
 * ends the process as it would have (signals.c keeps the program's
 * handlers and makes sure SIGSEGV is never really blocked).
 *
 * A fork child that writes into the heap before libmesh's fork handler has
 * run (libc resets its own state in the child first) faults on the
 * protected arena too: the handler gives it its own heap there and then.
 *
 * System calls that write into a read-only page fail with EFAULT instead:
 * their buffers are pinned (pin.c) so that neither meshing nor fork
 * protects them while the call runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "internal.h"

static _Atomic uint32_t barrier_seq;     /* futex word: bumped as each mesh or fork ends */
static _Atomic uint32_t waiters;         /* threads in mesh_barrier_wait */
static _Atomic int meshing;              /* a mesh has spans read-only */
static _Atomic int forking;              /* fork has the arena read-only */
static _Atomic uint32_t fork_pid;        /* the forking process, while forking */
/* The address ranges the mesh in progress protects (written before meshing
 * is set; a reader that sees a later mesh's ranges half written is still
 * safe, see mesh_barrier_blocks). */
static _Atomic uintptr_t mesh_range[MESH_MAX_CHAIN][2];
static _Atomic uint32_t mesh_nranges;
static bool installed;

/* The thread that protects: it must not wait for itself. */
static __thread bool tls_holder __attribute__((tls_model("initial-exec")));
static __thread void *tls_fault_addr __attribute__((tls_model("initial-exec")));
static __thread uint32_t tls_fault_seq __attribute__((tls_model("initial-exec")));
static __thread uint64_t tls_fault_ns __attribute__((tls_model("initial-exec")));

/* How long the same fault may repeat with no mesh under way before it is
 * taken for the program's (barrier_fault). */
#define MESH_STALE_FAULT_NS 10000000ULL

/* ---- begin, end, wait ---- */

/* Between begin and end, the meshing thread itself must not fault on the
 * spans it protects: it would wait for itself.  Its signals are blocked by
 * the caller for the whole class being meshed, so that no handler of the
 * program runs on it meanwhile.  The ranges are those it will protect; the
 * store of meshing is sequentially consistent: a pinner that does not see
 * it has published its pin before (pin.c). */
void mesh_barrier_begin(const uintptr_t ranges[][2], unsigned n)
{
    tls_holder = true;
    for (unsigned i = 0; i < n && i < MESH_MAX_CHAIN; i++) {
        atomic_store(&mesh_range[i][0], ranges[i][0]);
        atomic_store(&mesh_range[i][1], ranges[i][1]);
    }
    atomic_store(&mesh_nranges, n < MESH_MAX_CHAIN ? n : MESH_MAX_CHAIN);
    atomic_store(&meshing, 1);
}

/* The wake is a system call, made only when a thread waits: most meshes
 * hold nobody up.  Both sides are sequentially consistent: either this
 * sees the waiter, or the waiter, counted later, sees the count bumped and
 * does not sleep (mesh_barrier_wait). */
static void end(void)
{
    tls_holder = false;
    atomic_fetch_add(&barrier_seq, 1);
    if (atomic_load(&waiters))
        mesh_os_futex_wake_all(&barrier_seq);
}

void mesh_barrier_end(void)
{
    atomic_store(&meshing, 0);
    end();
}

/* fork's prepare step, before it protects the arena; the caller holds
 * every allocator lock and has its signals blocked. */
void mesh_barrier_fork_begin(void)
{
    tls_holder = true;
    atomic_store(&fork_pid, mesh_os_getpid());
    atomic_store(&forking, 1);
}

void mesh_barrier_fork_end(void)
{
    atomic_store(&forking, 0);
    end();
}

bool mesh_barrier_active(void)
{
    return atomic_load(&meshing) || atomic_load(&forking);
}

/* Counts the meshes and forks that have ended: a call that saw it change
 * may have met a protected page. */
uint32_t mesh_barrier_seq(void)
{
    return atomic_load(&barrier_seq);
}

/* Whether [s, e) may be made read-only by the mesh or fork under way; for
 * a pinner, after it published its pin.  Only the mesh in progress when
 * the pin was published can have missed it; if a later one has begun
 * since, the earlier has ended, and the later one sees the pin: so ranges
 * from either, even mixed, give a safe answer. */
bool mesh_barrier_blocks(uintptr_t s, uintptr_t e)
{
    if (atomic_load(&forking))
        return true;
    if (!atomic_load(&meshing))
        return false;
    uint32_t n = atomic_load(&mesh_nranges);
    for (uint32_t i = 0; i < n && i < MESH_MAX_CHAIN; i++)
        if (atomic_load(&mesh_range[i][0]) < e && atomic_load(&mesh_range[i][1]) > s)
            return true;
    return false;
}

/* Waits until the mesh or fork that was under way when the barrier's
 * count read seq has ended (not for the ones after it: a thread held up
 * by one mesh must not wait out a whole pass).  Async-signal-safe. */
void mesh_barrier_wait(uint32_t seq)
{
    atomic_fetch_add(&waiters, 1);
    while (atomic_load(&barrier_seq) == seq && mesh_barrier_active())
        mesh_os_futex_wait(&barrier_seq, seq, 1000000);
    atomic_fetch_sub(&waiters, 1);
}

/* ---- the handler ---- */

/* Whether a write fault at addr, in the arena, was the barrier's (and has
 * been dealt with: the write may run again). */
static bool barrier_fault(void *addr)
{
    if (atomic_load(&forking) && mesh_os_getpid() != atomic_load(&fork_pid)) {
        /* In a fork child, before libmesh's fork handler ran. */
        mesh_fork_child_heap();
        return true;
    }
    if (tls_holder) {
        /* The forking thread itself, in another library's fork handler
         * or in libc: it cannot wait for its own fork, so the page is let
         * go (the child's copy is made already). */
        if (!atomic_load(&forking))
            return false;
        char *page = (char *)((uintptr_t)addr & ~(MESH_PAGE_SIZE - 1));
        return mesh_os_protect(page, MESH_PAGE_SIZE, true) == 0;
    }
    uint32_t seq = atomic_load(&barrier_seq);
    if (mesh_barrier_active()) {
        bool for_mesh = !atomic_load(&forking);
        uint64_t t0 = mesh_os_now_ns();
        MESH_STAT_ADD(barrier_waits, 1);
        mesh_barrier_wait(seq);
        if (for_mesh)
            mesh_stall_note(&mesh_stall_barrier_ns, &mesh_stats.barrier_wait_max_ns, mesh_os_now_ns() - t0);
        tls_fault_addr = NULL;
        return true;
    }
    /* Nothing in progress now, but a mesh may have ended since the fault:
     * retry once.  The same fault again with none ended between is the
     * program's.  The count is read again after seeing no mesh under way:
     * one that ended between the first read and that look (the very mesh
     * that made this page fault) must count as ended, or a second fault
     * in the next mesh would look like the same one. */
    seq = atomic_load(&barrier_seq);
    uint64_t now = mesh_os_now_ns();
    if (tls_fault_addr != addr || tls_fault_seq != seq) {
        tls_fault_addr = addr;
        tls_fault_seq = seq;
        tls_fault_ns = now;
        return true;
    }
    /* The same fault again, and still no mesh.  The kernel can report a
     * write to a page that a mesh has just given back read-write as a
     * protection fault for a moment after (seen on a 6.18 kernel under
     * load, a few faults in a hundred thousand meshes): a page of the arena
     * is read-only only while a mesh or a fork protects it, so give the
     * kernel a little time before taking the fault for the program's. */
    if (now - tls_fault_ns < MESH_STALE_FAULT_NS) {
        mesh_os_yield();
        return true;
    }
    return false;
}

static void handler(int sig, siginfo_t *si, void *ctx)
{
    int saved = errno;
    uintptr_t off = (uintptr_t)si->si_addr - (uintptr_t)mesh_arena.base;
    /* Past the usable part the arena is PROT_NONE: a fault there is the
     * program's. */
    if (sig == SIGSEGV && si->si_code == SEGV_ACCERR && off < atomic_load(&mesh_arena.usable) &&
        barrier_fault(si->si_addr)) {
        errno = saved;
        return;
    }
    tls_fault_addr = NULL;
    mesh_signals_chain(sig, si, ctx);
    errno = saved;
}

/* Installs the handler for SIGSEGV and SIGBUS, keeping whatever the program
 * had installed as its own.  Called before the first mesh and fork. */
void mesh_barrier_install(void)
{
    if (!__atomic_load_n(&installed, __ATOMIC_ACQUIRE)) {
        mesh_signals_take_faults(handler);
        __atomic_store_n(&installed, true, __ATOMIC_RELEASE);
    }
}

/* ---- fork ---- */

void mesh_barrier_fork_child(void)
{
    atomic_store(&meshing, 0);
    atomic_store(&forking, 0);
    atomic_store(&waiters, 0); /* the parent's waiting threads are not here */
    tls_holder = false;
}
