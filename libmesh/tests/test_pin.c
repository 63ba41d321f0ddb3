/*
 * Pinned buffers: a system call that receives into the heap never meets a
 * page made read-only by meshing, so nothing it consumes is lost.  The
 * kernel dequeues a datagram (and the messages of recvmmsg, the signal of
 * sigtimedwait) before it finds the buffer unwritable, so a call retried
 * after EFAULT would have dropped it.
 *
 *   - a span held read-only as a mesh holds it: recv, recvmmsg and
 *     sigtimedwait into it wait and then get the first datagram or signal;
 *   - a receiver blocked in recv keeps its buffer's span out of meshing;
 *   - datagrams received into sparse spans while meshing runs all the
 *     time: none lost, none torn.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

static int sv[2];
static char *buf;
static _Atomic ssize_t got = -2;

static void *recv_one(void *arg)
{
    while (!atomic_load(&go))
        ;
    atomic_store(&got, recv(sv[0], buf, 100, 0));
    return NULL;
}

static void *recvmmsg_one(void *arg)
{
    while (!atomic_load(&go))
        ;
    struct iovec iov = {buf, 100};
    struct mmsghdr m;
    memset(&m, 0, sizeof m);
    m.msg_hdr.msg_iov = &iov;
    m.msg_hdr.msg_iovlen = 1;
    int n = recvmmsg(sv[0], &m, 1, 0, NULL);
    atomic_store(&got, n == 1 ? (ssize_t)m.msg_len : -1);
    return NULL;
}

static void *sigtimedwait_one(void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    while (!atomic_load(&go))
        ;
    struct timespec ts = {5, 0};
    int sig = sigtimedwait(&set, (siginfo_t *)buf, &ts);
    atomic_store(&got, sig);
    return NULL;
}

static void test_receive_during_protection(void)
{
    buf = malloc(300);
    memset(buf, 0, 300);
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    CHECK(send(sv[1], "first", 5, 0) == 5 && send(sv[1], "second", 6, 0) == 6);
    held_obj = buf;
    atomic_store(&got, -2);
    hold_span(recv_one, &mesh_stats.pin_waits);
    CHECK_EQ(atomic_load(&got), 5);
    CHECK(memcmp(buf, "first", 5) == 0);

    CHECK(send(sv[1], "third", 5, 0) == 5);
    atomic_store(&got, -2);
    hold_span(recvmmsg_one, &mesh_stats.pin_waits); /* "second" is next */
    CHECK_EQ(atomic_load(&got), 6);
    CHECK(memcmp(buf, "second", 6) == 0);
    char rest[16];
    CHECK_EQ(recv(sv[0], rest, sizeof rest, MSG_DONTWAIT), 5);
    close(sv[0]);
    close(sv[1]);

    /* A signal sigtimedwait took is gone; its siginfo must arrive. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old);
    union sigval v = {.sival_int = 77};
    CHECK(sigqueue(getpid(), SIGUSR1, v) == 0);
    atomic_store(&got, -2);
    hold_span(sigtimedwait_one, &mesh_stats.pin_waits);
    CHECK_EQ(atomic_load(&got), SIGUSR1);
    CHECK_EQ(((siginfo_t *)buf)->si_value.sival_int, 77);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(buf);
}

/* ---- meshing leaves a pinned buffer alone ---- */

#define NOBJ 4000
static char *objs[NOBJ];

/* 256-byte objects, three in four freed: spans a quarter full. */
static void *sparse(void *arg)
{
    for (int i = 0; i < NOBJ; i++)
        objs[i] = malloc(256);
    for (int i = 0; i < NOBJ; i++)
        if (i % 4 != 1) {
            free(objs[i]);
            objs[i] = NULL;
        }
    return NULL;
}

/* Two spans of 256-byte objects (one page each: no trimming) that can
 * mesh, the sparser one (which a mesh moves) holding only pair[0], the
 * other pair[1] and pair[2]; made in a thread of their own so that they
 * are detached when it exits. */
static char *pair[3];

static unsigned slot_in_span(const char *p)
{
    return (unsigned)((p - mesh_mh_start(mesh_arena_lookup(p))) / 256);
}

static void *two_spans(void *arg)
{
    enum { N = 64 };
    char *p[N];
    for (int i = 0; i < N; i++)
        p[i] = malloc(256);
    mesh_miniheap_t *a = mesh_arena_lookup(p[0]), *b = NULL;
    for (int i = 1; i < N && !b; i++)
        if (mesh_arena_lookup(p[i]) != a)
            b = mesh_arena_lookup(p[i]);
    pair[0] = p[0];
    pair[1] = pair[2] = NULL;
    for (int i = 1; i < N; i++) {
        bool other_slot = slot_in_span(p[i]) != slot_in_span(pair[0]);
        if (mesh_arena_lookup(p[i]) == b && other_slot && !pair[1])
            pair[1] = p[i];
        else if (mesh_arena_lookup(p[i]) == b && other_slot && !pair[2])
            pair[2] = p[i];
        else
            free(p[i]);
    }
    return NULL;
}

static void *recv_into_pair(void *arg)
{
    atomic_store(&got, recv(sv[0], pair[0], 256, 0));
    return NULL;
}

static void test_mesh_skips_pinned_buffer(void)
{
    pthread_t t;
    pthread_create(&t, NULL, two_spans, NULL);
    pthread_join(t, NULL);
    CHECK(pair[0] && pair[1] && pair[2]);
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    atomic_store(&got, -2);
    pthread_create(&t, NULL, recv_into_pair, NULL);
    struct timespec ts = {0, 1000000L};
    /* Until the receiver is blocked in recv with its buffer pinned. */
    for (int ms = 0; ms < 5000 && !mesh_pins_overlap((uintptr_t)pair[0], (uintptr_t)pair[0] + 1); ms++)
        syscall(SYS_nanosleep, &ts, NULL);
    uint64_t pinned0 = atomic_load(&mesh_stats.mesh_pinned), meshes0 = ctl("stats.mesh_count");
    ctl("mesh.compact");
    CHECK(atomic_load(&mesh_stats.mesh_pinned) > pinned0);
    CHECK_EQ(ctl("stats.mesh_count"), meshes0);
    CHECK(send(sv[1], "after the mesh", 14, 0) == 14);
    pthread_join(t, NULL);
    CHECK_EQ(atomic_load(&got), 14);
    CHECK(memcmp(pair[0], "after the mesh", 14) == 0);
    /* Unpinned, the two spans mesh. */
    ctl("mesh.compact");
    CHECK(ctl("stats.mesh_count") > meshes0);
    CHECK(memcmp(pair[0], "after the mesh", 14) == 0);
    close(sv[0]);
    close(sv[1]);
    for (int i = 0; i < 3; i++)
        free(pair[i]);
}

/* ---- datagrams while meshing runs ---- */

#define MSG 200
static _Atomic int stop;

static void *sender(void *arg)
{
    unsigned char m[MSG];
    for (uint32_t seq = 1; !atomic_load(&stop); seq++) {
        memcpy(m, &seq, 4);
        for (int i = 4; i < MSG; i++)
            m[i] = (unsigned char)(seq + i);
        while (send(sv[1], m, MSG, 0) != MSG && !atomic_load(&stop))
            ;
    }
    return NULL;
}

static void *churning_mesher(void *arg)
{
    unsigned x = 7;
    while (!atomic_load(&stop)) {
        for (int i = 0; i < NOBJ; i += 2) {
            x = x * 1103515245 + 12345;
            free(objs[i]);
            objs[i] = (x >> 16) % 4 == 0 ? malloc(256) : NULL;
        }
        ctl("mesh.compact");
    }
    return NULL;
}

static void test_datagrams_while_meshing(void)
{
    pthread_t t;
    pthread_create(&t, NULL, sparse, NULL);
    pthread_join(t, NULL);
    /* The receive buffers: the survivors (i % 4 == 1), in sparse spans. */
    CHECK(socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) == 0);
    atomic_store(&stop, 0);
    pthread_t s, m;
    pthread_create(&s, NULL, sender, NULL);
    pthread_create(&m, NULL, churning_mesher, NULL);
    uint32_t expect = 1;
    long lost = 0, torn = 0, received = 0;
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (now.tv_sec - t0.tv_sec >= 2)
            break;
        unsigned char *b = (unsigned char *)objs[1 + 4 * (received % (NOBJ / 4))];
        if (recv(sv[0], b, 256, 0) != MSG) {
            torn++;
            break;
        }
        uint32_t seq;
        memcpy(&seq, b, 4);
        lost += seq - expect;
        expect = seq + 1;
        for (int i = 4; i < MSG; i++)
            torn += b[i] != (unsigned char)(seq + i);
        received++;
    }
    atomic_store(&stop, 1);
    char sink[MSG];
    while (recv(sv[0], sink, sizeof sink, MSG_DONTWAIT) > 0)
        ;
    pthread_join(m, NULL);
    shutdown(sv[1], SHUT_RDWR);
    pthread_join(s, NULL);
    close(sv[0]);
    close(sv[1]);
    fprintf(stderr, "  %ld datagrams, %ld lost, %ld bytes torn, %llu meshes\n", received, lost, torn,
            (unsigned long long)ctl("stats.mesh_count"));
    CHECK(received > 1000);
    CHECK_EQ(lost, 0);
    CHECK_EQ(torn, 0);
    for (int i = 0; i < NOBJ; i++)
        free(objs[i]);
}

int main(void)
{
    free(malloc(1));
    TEST_RUN(test_receive_during_protection);
    TEST_RUN(test_mesh_skips_pinned_buffer);
    TEST_RUN(test_datagrams_while_meshing);
    TEST_DONE();
}
