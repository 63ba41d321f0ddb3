/*
 * The forker: forks every 50-200 ms while the workers run, and each child
 * checks that its heap is the parent's memory at the moment of fork, not an
 * older copy:
 *
 *   - each worker stores a growing k into a heap object, then into a global
 *     (release order); the child reads the global first, so its heap object
 *     must hold at least that k: less is a heap older than the rest of the
 *     child's memory;
 *   - each object a worker published through a global pointer was fully
 *     written before it was published, so every object the child finds
 *     published must check.
 *
 * Then the child allocates, frees and checks a little on its own and exits
 * 0 (all well) or 1.  Children that crash or take longer than a few
 * seconds count as failures (the latter as hangs, with what the kernel
 * says the child was doing).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "soak.h"

static bool child_check_worker(int w)
{
    soak_pub_t *pub = &soak_pub[w];
    bool ok = true;
    uint64_t g = atomic_load_explicit(&pub->seq, memory_order_acquire);
    soak_seqobj_t *so = atomic_load_explicit(&pub->seqobj, memory_order_acquire);
    if (so) {
        uint64_t h = atomic_load_explicit(&so->k, memory_order_acquire);
        if (so->magic != SOAK_SEQ_MAGIC || h < g) {
            SOAK_ADD(fork_stale, 1);
            soak_report("fork child %d: worker %d's heap sequence object holds %llu (magic %#llx), its global "
                        "%llu: the child's heap is older than the rest of its memory",
                        (int)getpid(), w, (unsigned long long)h, (unsigned long long)so->magic,
                        (unsigned long long)g);
            ok = false;
        }
    }
    for (int i = 0; i < SOAK_PUB_SLOTS; i++) {
        soak_pub_slot_t *s = &pub->slots[i];
        unsigned char *p = atomic_load_explicit(&s->p, memory_order_acquire);
        if (!p)
            continue;
        soak_obj_t o = s->meta;
        ssize_t bad = soak_check(p, 0, o.size, o.id, o.gen);
        SOAK_ADD(sig_verified, o.size);
        if (bad >= 0) {
            SOAK_ADD(fork_bad_objects, 1);
            soak_report("fork child %d: worker %d's published object %p size %u id %#llx gen %llu: byte %zd "
                        "is %#x, expected %#x",
                        (int)getpid(), w, (void *)p, o.size, (unsigned long long)o.id,
                        (unsigned long long)o.gen, bad, p[bad], soak_pattern_byte(o.id, o.gen, (size_t)bad));
            ok = false;
        }
    }
    return ok;
}

/* The child's own allocations: the allocator must work after fork. */
static bool child_allocate(uint64_t *rng)
{
    enum { N = 256 };
    soak_obj_t objs[N];
    bool ok = true;
    uint64_t id = 0xc0ull << 48 | ((uint64_t)getpid() << 16);
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            if (round > 0 && objs[i].p && soak_rnd(rng) % 2)
                continue;
            if (round > 0 && objs[i].p) {
                ok &= soak_verify(NULL, &objs[i], "fork child's");
                free(objs[i].p);
            }
            size_t size = 16 + soak_rnd(rng) % 4081;
            objs[i] = (soak_obj_t){malloc(size), (uint32_t)size, id++, 0};
            if (!objs[i].p) {
                SOAK_ADD(syscall_errors, 1);
                soak_report("fork child %d: malloc(%zu) failed", (int)getpid(), size);
                return false;
            }
            soak_stamp(objs[i].p, size, objs[i].id, 0);
        }
    }
    for (int i = 0; i < N; i++) {
        ok &= soak_verify(NULL, &objs[i], "fork child's");
        free(objs[i].p);
    }
    return ok;
}

static void child_main(uint64_t *rng)
{
    bool ok = true;
    for (int w = 0; w < S->workers; w++)
        ok &= child_check_worker(w);
    if (!ok)
        SOAK_ADD(stale_children, 1);
    ok &= child_allocate(rng);
    _exit(ok ? 0 : 1);
}

static void child_failed(pid_t pid, int status)
{
    SOAK_ADD(child_failures, 1);
    if (WIFSIGNALED(status))
        soak_report("fork child %d killed by signal %d (%s)", (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
}

/* Waits for the child, up to a limit; the forker keeps beating meanwhile. */
static void wait_child(soak_thread_t *t, pid_t pid)
{
    uint64_t limit = (uint64_t)(S->hang_seconds > 1 ? S->hang_seconds / 2 : 1) * 1000000000ull;
    uint64_t t0 = soak_now_ns();
    int status;
    soak_set_state(t, ST_WAIT_CHILD);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            SOAK_ADD(syscall_errors, 1);
            soak_report("waitpid(%d): %s", (int)pid, strerror(errno));
            return;
        }
        soak_beat(t);
        if (soak_now_ns() - t0 > limit) {
            SOAK_ADD(child_hangs, 1);
            soak_report("fork child %d still running after %.1f s: hung", (int)pid, (double)limit / 1e9);
            soak_print_task(pid, pid, "the child");
            kill(pid, SIGKILL);
            while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
            SOAK_ADD(child_failures, 1);
            return;
        }
        soak_sleep_ms(0.5);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        child_failed(pid, status);
}

void *soak_forker_main(void *arg)
{
    (void)arg;
    soak_thread_t *t = soak_thread_register("forker");
    uint64_t rng = soak_seed_for("forker", 0);
    while (!SOAK_STOPPING()) {
        soak_set_state(t, ST_SLEEP);
        soak_sleep_ms(50 + (double)(soak_rnd(&rng) % 151));
        if (SOAK_STOPPING())
            break;
        soak_set_state(t, ST_FORK);
        uint64_t child_rng = soak_rnd(&rng);
        pid_t pid = fork();
        if (pid == 0)
            child_main(&child_rng);
        if (pid < 0) {
            SOAK_ADD(syscall_errors, 1);
            soak_report("fork: %s", strerror(errno));
            continue;
        }
        SOAK_ADD(forks, 1);
        wait_child(t, pid);
        soak_beat(t);
    }
    soak_set_state(t, ST_DONE);
    return NULL;
}
