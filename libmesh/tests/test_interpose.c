/*
 * The interposed system calls: waits (poll, ppoll, epoll_wait, select,
 * pselect, nanosleep, usleep, clock_nanosleep) are idle points, split where
 * a mesh period begins during them, and give the kernel's answer for
 * timeouts it refuses; read(2) into a span under the write barrier waits
 * for the mesh and then reads, also while real meshing runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

/* ---- read(2) into a span under the barrier ---- */

static int pipe_fds[2];
static _Atomic ssize_t read_result = -2;

static void *late_reader(void *arg)
{
    while (!atomic_load(&go))
        ;
    atomic_store(&read_result, read(pipe_fds[0], held_obj, 100));
    return NULL;
}

static void test_barrier_read_syscall(void)
{
    held_obj = malloc(300);
    memset(held_obj, 0, 300);
    CHECK(pipe(pipe_fds) == 0);
    CHECK(write(pipe_fds[1], "hello through a meshed page", 27) == 27);
    uint64_t waits0 = atomic_load(&mesh_stats.pin_waits);
    hold_span(late_reader, &mesh_stats.pin_waits);
    CHECK_EQ(atomic_load(&read_result), 27);
    CHECK(memcmp(held_obj, "hello through a meshed page", 27) == 0);
    CHECK(atomic_load(&mesh_stats.pin_waits) > waits0); /* it waited before reading */
    close(pipe_fds[0]);
    close(pipe_fds[1]);
    free(held_obj);
}

/* ---- read(2) while real meshing runs ---- */

static void *pipe_writer(void *arg)
{
    unsigned char buf[200];
    unsigned char v = 0;
    while (!atomic_load(&stop_meshing)) {
        for (int i = 0; i < 200; i++)
            buf[i] = v++;
        if (write(pipe_fds[1], buf, sizeof buf) != (ssize_t)sizeof buf)
            break;
    }
    close(pipe_fds[1]);
    return NULL;
}

static void test_read_while_meshing(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_sparse, NULL);
    pthread_join(t, NULL);
    CHECK(pipe(pipe_fds) == 0);
    pthread_t w, m;
    pthread_create(&w, NULL, pipe_writer, NULL);
    pthread_create(&m, NULL, mesher, NULL);
    unsigned char expect = 0;
    int errors = 0;
    size_t total = 0;
    for (int round = 0; round < 20000 && !errors; round++) {
        unsigned char *dst = wobj[round % WOBJ];
        ssize_t n = read(pipe_fds[0], dst, 256);
        if (n <= 0) {
            errors++;
            break;
        }
        for (ssize_t i = 0; i < n; i++)
            if (dst[i] != expect++)
                errors++;
        total += (size_t)n;
    }
    atomic_store(&stop_meshing, 1);
    char sink[4096];
    while (read(pipe_fds[0], sink, sizeof sink) > 0)
        ;
    pthread_join(w, NULL);
    pthread_join(m, NULL);
    close(pipe_fds[0]);
    CHECK_EQ(errors, 0);
    CHECK(total > 0);
    for (int i = 0; i < WOBJ; i++)
        free(wobj[i]);
    mesh_global_check();
}

/* ---- waits as idle points ---- */

static double since(const struct timespec *t0)
{
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static uint64_t splits(void)
{
    return atomic_load(&mesh_stats.idle_splits);
}

/* Makes a period begin now, at *at: sleeps out the current one with the
 * raw system call (usleep would be an idle point, and could begin it
 * itself), then has mesh.check_period begin the next. */
static void begin_period(struct timespec *at)
{
    struct timespec ts = {0, (long)mesh_opt.period_ms * 1000000L};
    syscall(SYS_nanosleep, &ts, NULL);
    clock_gettime(CLOCK_MONOTONIC, at);
    CHECK_EQ(ctl("mesh.check_period"), 1);
}

/* Timing is checked only from below: a wait that ends early is a bug on
 * any machine, one that ends late may be a busy machine. */
static void test_idle_points(void)
{
    frag_t f = {.size = 896, .groups = 2, .max_spans = 8};
    fragment(&f);
    uint64_t meshes0 = ctl("stats.mesh_count");
    struct timespec t0, ts = {0, 150 * 1000000L};
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(nanosleep(&ts, NULL), 0);
    CHECK_EQ(usleep(150000), 0);
    CHECK(ctl("stats.mesh_count") > meshes0);
    CHECK(since(&t0) >= 0.299);
    CHECK(all_intact(&f));
    free_all(&f);
}

/* One of six waits of 300 ms on a pipe with nothing to read. */
static void wait_300ms(int kind, int fd, const struct timespec *t0)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    fd_set rd;
    FD_ZERO(&rd);
    FD_SET(fd, &rd);
    if (kind == 0) {
        CHECK_EQ(poll(&pfd, 1, 300), 0);
    } else if (kind == 1) {
        struct timespec ts = {0, 300 * 1000000L};
        CHECK_EQ(ppoll(&pfd, 1, &ts, NULL), 0);
    } else if (kind == 2) {
        int ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN}, out;
        CHECK_EQ(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev), 0);
        CHECK_EQ(epoll_wait(ep, &out, 1, 300), 0);
        close(ep);
    } else if (kind == 3) {
        struct timeval tv = {0, 300 * 1000};
        CHECK_EQ(select(fd + 1, &rd, NULL, NULL, &tv), 0);
        CHECK(!FD_ISSET(fd, &rd));
        CHECK(tv.tv_sec == 0 && tv.tv_usec == 0); /* Linux: nothing left */
    } else if (kind == 4) {
        struct timespec ts = {0, 300 * 1000000L};
        CHECK_EQ(pselect(fd + 1, &rd, NULL, NULL, &ts, NULL), 0);
    } else {
        struct timespec until = *t0;
        until.tv_nsec += 300 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL), 0);
    }
}

/* A wait that begins just after a pass, during which the next period
 * begins, is split there (idle_splits counts it): the pass runs during the
 * wait, which still lasts what was asked.  A wait that an event ends
 * before then returns with the event, as it would have, unsplit and with
 * no idle work. */
static void test_idle_split(void)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    struct timespec t0, period;

    ctl("mesh.check_period");          /* a period begins now */
    CHECK_EQ(write(fds[1], "x", 1), 1);
    uint64_t splits0 = splits(), passes0 = atomic_load(&mesh_stats.mesh_passes);
    CHECK_EQ(poll(&pfd, 1, 1000), 1);  /* the event, not the split */
    CHECK(pfd.revents & POLLIN);
    CHECK_EQ(splits(), splits0);
    CHECK_EQ(atomic_load(&mesh_stats.mesh_passes), passes0);

    for (int kind = 0; kind < 6; kind++) {
        char c;
        CHECK_EQ(read(fds[0], &c, 1), 1);
        begin_period(&period);
        frag_t f = {.size = 896, .groups = 2, .max_spans = 8};
        fragment(&f);
        uint64_t meshes0 = ctl("stats.mesh_count");
        splits0 = splits();
        clock_gettime(CLOCK_MONOTONIC, &t0);
        /* Split when the wait began well before the next period (100 ms
         * after this one): a stalled machine may start it later. */
        bool before_period = since(&period) < 0.05;
        wait_300ms(kind, fds[0], &t0);
        CHECK(since(&t0) >= 0.299);
        CHECK(ctl("stats.mesh_count") > meshes0);
        CHECK(!before_period || splits() == splits0 + 1);
        CHECK(all_intact(&f));
        free_all(&f);
        CHECK_EQ(write(fds[1], "x", 1), 1);
    }
    close(fds[0]);
    close(fds[1]);
}

/* Timeouts the kernel refuses still fail with EINVAL, as they would
 * without libmesh: no split wait, no idle work first. */
static void test_bad_timeouts(void)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    struct timespec bad = {0, 1000000000L}, neg = {-1, 0};
    struct timeval badtv = {0, -1};
    fd_set rd;
    ctl("mesh.check_period");          /* a period begins now */
    uint64_t splits0 = splits(), passes0 = atomic_load(&mesh_stats.mesh_passes);
    errno = 0;
    CHECK_EQ(ppoll(&pfd, 1, &bad, NULL), -1);
    CHECK_EQ(errno, EINVAL);
    FD_ZERO(&rd);
    FD_SET(fds[0], &rd);
    errno = 0;
    CHECK_EQ(pselect(fds[0] + 1, &rd, NULL, NULL, &neg, NULL), -1);
    CHECK_EQ(errno, EINVAL);
    FD_ZERO(&rd);
    FD_SET(fds[0], &rd);
    errno = 0;
    CHECK_EQ(select(fds[0] + 1, &rd, NULL, NULL, &badtv), -1);
    CHECK_EQ(errno, EINVAL);
    CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC, 0, &bad, NULL), EINVAL);
    CHECK_EQ(clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &bad, NULL), EINVAL);
    CHECK_EQ(splits(), splits0);
    CHECK_EQ(atomic_load(&mesh_stats.mesh_passes), passes0);
    close(fds[0]);
    close(fds[1]);
}

static void *write_later(void *arg)
{
    int fd = *(int *)arg;
    struct timespec ts = {0, 200 * 1000000L};
    syscall(SYS_nanosleep, &ts, NULL); /* not an idle point: no split of its own */
    if (write(fd, "y", 1) != 1)
        abort();
    return NULL;
}

/* A select split where a period begins watches the same descriptors in
 * the rest of its wait: an event 200 ms into a 5 s wait (the next period
 * begins at 100 ms) is seen, and the timeout says what was left. */
static void test_select_split_keeps_its_sets(void)
{
    int fds[2];
    CHECK_EQ(pipe(fds), 0);
    for (int kind = 0; kind < 2; kind++) {
        struct timespec period, t0;
        begin_period(&period);
        pthread_t t;
        pthread_create(&t, NULL, write_later, &fds[1]);
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(fds[0], &rd);
        uint64_t splits0 = splits();
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool before_period = since(&period) < 0.05;
        if (kind == 0) {
            struct timeval tv = {5, 0};
            CHECK_EQ(select(fds[0] + 1, &rd, NULL, NULL, &tv), 1);
            /* the event, not the timeout: some of the wait is left */
            long long left_us = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
            CHECK(left_us > 0 && left_us <= 4800 * 1000);
        } else {
            struct timespec ts = {5, 0};
            CHECK_EQ(pselect(fds[0] + 1, &rd, NULL, NULL, &ts, NULL), 1);
        }
        CHECK(since(&t0) >= 0.19);     /* not before the write */
        CHECK(FD_ISSET(fds[0], &rd));
        CHECK(!before_period || splits() == splits0 + 1);
        pthread_join(t, NULL);
        char c;
        CHECK_EQ(read(fds[0], &c, 1), 1);
    }
    close(fds[0]);
    close(fds[1]);
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_barrier_read_syscall);
    TEST_RUN(test_read_while_meshing);
    TEST_RUN(test_idle_points);
    TEST_RUN(test_idle_split);
    TEST_RUN(test_select_split_keeps_its_sets);
    TEST_RUN(test_bad_timeouts);
    TEST_DONE();
}
