/*
 * Signal handlers that write into the heap while it is being meshed: they
 * must neither hang the process nor get it killed.  Each scenario runs in a
 * child process for about a second with meshing going on all the time; the
 * parent fails it if the child hangs (20 s), dies, or finds its objects
 * changed.
 *
 *   - a handler that writes into the heap, run on a thread that holds the
 *     arena lock inside a large allocation;
 *   - the program's own SIGSEGV handler (SA_SIGINFO | SA_ONSTACK, for a
 *     guard page) writing into the heap, with SIGSEGV blocked while it runs
 *     as the kernel does;
 *   - a handler installed with a full mask (sigfillset);
 *   - a thread that blocks every signal and writes into the heap;
 * and the program's view: sigaction and pthread_sigmask report SIGSEGV in
 * the masks the program set.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mesh.h"
#include "test.h"

#define NOBJ 4096
#define OBJ 256

static unsigned char *target[NOBJ / 4];   /* written by handlers; never freed */
static unsigned char *churn[NOBJ];       /* freed and taken again, so spans stay sparse */
static _Atomic int stop;
static _Atomic uint64_t handled;

static void mesh_now(void)
{
    uint64_t v = 0;
    size_t len = sizeof v;
    mesh_mallctl("mesh.compact", &v, &len, NULL, 0);
}

/* Targets interleaved with churn objects, so that they share spans that
 * churn leaves sparse enough to mesh. */
static void setup(void)
{
    int t = 0;
    for (int i = 0; i < NOBJ; i++) {
        unsigned char *p = malloc(OBJ);
        if (i % 4 == 0 && t < NOBJ / 4) {
            memset(p, 0x5a, OBJ);
            target[t++] = p;
        } else {
            churn[i] = p;
        }
    }
}

static void *mesher(void *arg)
{
    unsigned x = 1;
    while (!atomic_load(&stop)) {
        for (int i = 0; i < NOBJ; i++) {
            x = x * 1103515245 + 12345;
            if (churn[i] && (x >> 16) % 4 != 0) {
                free(churn[i]);
                churn[i] = NULL;
            } else if (!churn[i] && (x >> 16) % 4 == 0) {
                churn[i] = malloc(OBJ);
            }
        }
        mesh_now();
    }
    return NULL;
}

/* What every handler does: rewrite a few targets with what they hold. */
static void write_targets(unsigned words)
{
    static _Thread_local unsigned next;
    for (unsigned k = 0; k < words; k++) {
        unsigned char *p = target[next++ % (NOBJ / 4)];
        ((volatile uint64_t *)p)[k % (OBJ / 8)] = 0x5a5a5a5a5a5a5a5aULL;
    }
    atomic_fetch_add_explicit(&handled, 1, memory_order_relaxed);
}

static int targets_intact(void)
{
    for (int t = 0; t < NOBJ / 4; t++)
        for (int b = 0; b < OBJ; b++)
            if (target[t][b] != 0x5a)
                return 0;
    return 1;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void nap_us(long us)
{
    struct timespec ts = {0, us * 1000};
    nanosleep(&ts, NULL);
}

/* Runs scenario in a child with the mesher going; true if it exits 0. */
static int in_child(int (*scenario)(void), const char *name)
{
    pid_t pid = fork();
    if (pid == 0) {
        setup();
        pthread_t m;
        pthread_create(&m, NULL, mesher, NULL);
        int rc = scenario();
        atomic_store(&stop, 1);
        pthread_join(m, NULL);
        if (!targets_intact())
            rc = 10;
        fprintf(stderr, "  %s: %llu handler runs\n", name, (unsigned long long)atomic_load(&handled));
        _exit(rc);
    }
    double t0 = now_s();
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
        if (now_s() - t0 > 20) {
            fprintf(stderr, "  %s: hung\n", name);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return 0;
        }
        nap_us(10000);
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fprintf(stderr, "  %s: child status %#x\n", name, status);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* ---- a handler run inside a large allocation ---- */

static pthread_t allocator_thread;

static void on_usr1(int sig)
{
    write_targets(64);
}

static void *large_allocations(void *arg)
{
    while (!atomic_load(&stop)) {
        void *p = malloc(64 << 10);
        free(p);
    }
    return NULL;
}

static int scenario_large_alloc(void)
{
    signal(SIGUSR1, on_usr1);
    pthread_create(&allocator_thread, NULL, large_allocations, NULL);
    for (double t0 = now_s(); now_s() - t0 < 1.0;) {
        pthread_kill(allocator_thread, SIGUSR1);
        nap_us(20);
    }
    atomic_store(&stop, 1);
    pthread_join(allocator_thread, NULL);
    return 0;
}

static void test_handler_inside_large_allocation(void)
{
    CHECK(in_child(scenario_large_alloc, "large allocation"));
}

/* ---- the program's own SIGSEGV handler ---- */

static char *guard;

static void on_segv(int sig, siginfo_t *si, void *ctx)
{
    if ((char *)si->si_addr < guard || (char *)si->si_addr >= guard + 4096)
        _exit(20); /* a fault the program did not expect */
    write_targets(500);
    mprotect(guard, 4096, PROT_READ | PROT_WRITE);
}

static int scenario_segv_handler(void)
{
    static char altstack[64 << 10];
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
    sigaltstack(&ss, NULL);
    guard = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, NULL);
    for (double t0 = now_s(); now_s() - t0 < 1.0;) {
        mprotect(guard, 4096, PROT_NONE);
        ((volatile char *)guard)[0] = 1; /* the handler opens it */
    }
    return 0;
}

static void test_segv_handler_writes_heap(void)
{
    CHECK(in_child(scenario_segv_handler, "SIGSEGV handler"));
}

/* ---- a handler with a full mask ---- */

static pthread_t main_thread;

static void on_alarm(int sig)
{
    write_targets(64);
}

static void *alarm_sender(void *arg)
{
    while (!atomic_load(&stop)) {
        pthread_kill(main_thread, SIGALRM);
        nap_us(20);
    }
    return NULL;
}

static int scenario_full_mask(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigfillset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, NULL);
    main_thread = pthread_self();
    pthread_t t;
    pthread_create(&t, NULL, alarm_sender, NULL);
    for (double t0 = now_s(); now_s() - t0 < 1.0;)
        write_targets(8);
    atomic_store(&stop, 1);
    pthread_join(t, NULL);
    return 0;
}

static void test_full_mask_handler_writes_heap(void)
{
    CHECK(in_child(scenario_full_mask, "full-mask handler"));
}

/* ---- a thread that blocks every signal ---- */

static int scenario_blocked_thread(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (double t0 = now_s(); now_s() - t0 < 1.0;)
        write_targets(8);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return 0;
}

static void test_blocked_thread_writes_heap(void)
{
    CHECK(in_child(scenario_blocked_thread, "blocked thread"));
}

/* ---- what the program sees ---- */

static void test_program_view(void)
{
    struct sigaction sa, got;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigfillset(&sa.sa_mask);
    CHECK(sigaction(SIGUSR2, &sa, NULL) == 0);
    CHECK(sigaction(SIGUSR2, NULL, &got) == 0);
    CHECK(sigismember(&got.sa_mask, SIGSEGV) == 1);
    CHECK(sigismember(&got.sa_mask, SIGBUS) == 1);
    CHECK(sigismember(&got.sa_mask, SIGINT) == 1);
    signal(SIGUSR2, SIG_DFL);

    sigset_t set, old, now;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigaddset(&set, SIGUSR2);
    CHECK(pthread_sigmask(SIG_BLOCK, &set, &old) == 0);
    CHECK(pthread_sigmask(SIG_BLOCK, NULL, &now) == 0);
    CHECK(sigismember(&now, SIGSEGV) == 1);
    CHECK(sigismember(&now, SIGUSR2) == 1);
    CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);
    CHECK(sigprocmask(SIG_BLOCK, NULL, &now) == 0);
    CHECK(sigismember(&now, SIGSEGV) == 0);
    CHECK(sigismember(&now, SIGUSR2) == 0);
    CHECK(sigprocmask(99, &set, NULL) == -1 && errno == EINVAL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_program_view);
    TEST_RUN(test_handler_inside_large_allocation);
    TEST_RUN(test_segv_handler_writes_heap);
    TEST_RUN(test_full_mask_handler_writes_heap);
    TEST_RUN(test_blocked_thread_writes_heap);
    TEST_DONE();
}
