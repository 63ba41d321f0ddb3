/*
 * Idle passes give way to the wait they precede: a thread about to block
 * in poll, ppoll, epoll_wait or select when a period is due does the
 * period's work (scavenge, mesh, trim) first, but not when the wait would
 * return at once: an event is ready, or a signal the wait unblocks is
 * pending.  In a server that thread is the event loop, and the work would
 * delay the request that is waiting.
 *
 * Each case makes spans that a pass would mesh, makes a period due, and
 * checks that the wait returned its event and that no mesh was made
 * before it.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

/* Sparse 256-byte spans (meshing.h), detached when their thread exits. */
static void make_meshable(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_sparse, NULL);
    pthread_join(t, NULL);
}

static void free_objs(void)
{
    for (int i = 0; i < WOBJ; i++)
        free(wobj[i]);
    memset(wobj, 0, sizeof wobj);
}

/* Lets the current period run out without passing an idle point. */
static void period_due(void)
{
    struct timespec ts = {0, (long)(mesh_opt.period_ms + 2) * 1000000L};
    syscall(SYS_nanosleep, &ts, NULL);
}

static int pipe_fds[2];

static void test_ready_poll_skips_the_pass(void)
{
    make_meshable();
    CHECK(pipe(pipe_fds) == 0);
    CHECK(write(pipe_fds[1], "x", 1) == 1);
    period_due();
    uint64_t meshes0 = ctl("stats.mesh_count"), gave0 = atomic_load(&mesh_stats.idle_gave_way);
    struct pollfd p = {.fd = pipe_fds[0], .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 5000), 1);
    CHECK_EQ(ctl("stats.mesh_count"), meshes0);
    CHECK(atomic_load(&mesh_stats.idle_gave_way) > gave0);

    /* The same through epoll and select. */
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET}, out;
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, pipe_fds[0], &ev) == 0);
    period_due();
    gave0 = atomic_load(&mesh_stats.idle_gave_way);
    CHECK_EQ(epoll_wait(ep, &out, 1, 5000), 1); /* edge-triggered: the check took nothing */
    CHECK(atomic_load(&mesh_stats.idle_gave_way) > gave0);
    period_due();
    gave0 = atomic_load(&mesh_stats.idle_gave_way);
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(pipe_fds[0], &rd);
    struct timeval tv = {5, 0};
    CHECK_EQ(select(pipe_fds[0] + 1, &rd, NULL, NULL, &tv), 1);
    CHECK(atomic_load(&mesh_stats.idle_gave_way) > gave0);
    CHECK_EQ(ctl("stats.mesh_count"), meshes0);
    close(ep);
    close(pipe_fds[0]);
    close(pipe_fds[1]);

    /* Nothing ready: the period's work is done as before. */
    make_meshable();
    period_due();
    CHECK_EQ(poll(NULL, 0, 100), 0);
    CHECK(ctl("stats.mesh_count") > meshes0);
    free_objs();
}

static _Atomic int handled;

static void on_usr1(int sig)
{
    atomic_store(&handled, 1);
}

/* The classic pattern: SIGUSR1 blocked, and unblocked by ppoll's mask
 * only.  One pending makes ppoll return EINTR at once. */
static void test_pending_signal_skips_the_pass(void)
{
    make_meshable();
    signal(SIGUSR1, on_usr1);
    sigset_t block, old, during;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    raise(SIGUSR1);
    during = old;
    sigdelset(&during, SIGUSR1);
    period_due();
    uint64_t meshes0 = ctl("stats.mesh_count"), gave0 = atomic_load(&mesh_stats.idle_gave_way);
    struct timespec ts = {5, 0};
    CHECK_EQ(ppoll(NULL, 0, &ts, &during), -1);
    CHECK(atomic_load(&handled));
    CHECK_EQ(ctl("stats.mesh_count"), meshes0);
    CHECK(atomic_load(&mesh_stats.idle_gave_way) > gave0);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    signal(SIGUSR1, SIG_DFL);
    free_objs();
}

int main(void)
{
    free(malloc(1));
    mesh_opt.period_ms = 20;
    TEST_RUN(test_ready_poll_skips_the_pass);
    TEST_RUN(test_pending_signal_skips_the_pass);
    TEST_DONE();
}
