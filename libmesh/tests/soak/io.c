/*
 * System calls writing into heap buffers that may be being meshed:
 *
 *   - datagrams: a sender sends numbered, patterned datagrams over an
 *     AF_UNIX SOCK_DGRAM socketpair (reliable and ordered: a gap in the
 *     numbers is a datagram lost on the receiving side); the receiver takes
 *     them with recv, recvfrom, recvmsg and recvmmsg into heap buffers it
 *     keeps reallocating among filler objects of the same size classes, so
 *     that its buffers sit in sparse spans;
 *   - a pipe: a writer writes a patterned byte stream, the reader reads it
 *     with read and readv into heap buffers and checks every byte against
 *     its position in the stream.
 *
 * The I/O threads cope with EINTR (SIGALRM is installed without
 * SA_RESTART); any other failure counts as a system call error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "soak.h"

#define DGRAM_MAX 1024          /* header included; buffers are 1-2 KiB */
#define DGRAM_TAG (0xd6ull << 56)
#define STREAM_ID 0x5354524541ull
#define MMSG 8

static int dgram_fd[2], pipe_fd[2];

int soak_io_setup(void)
{
    if (socketpair(AF_UNIX, SOCK_DGRAM, 0, dgram_fd) != 0 || pipe(pipe_fd) != 0)
        return -1;
    return 0;
}

static void io_error(const char *who, const char *call)
{
    SOAK_ADD(syscall_errors, 1);
    soak_report("%s: %s failed: %s", who, call, strerror(errno));
}

static void *xmalloc(soak_thread_t *t, size_t size)
{
    void *p = malloc(size);
    soak_count(&t->ops, 1);
    if (!p) {
        SOAK_ADD(syscall_errors, 1);
        soak_report("%s: malloc(%zu) failed", t->name, size);
        abort();
    }
    return p;
}

static void xfree(soak_thread_t *t, void *p)
{
    free(p);
    soak_count(&t->ops, 1);
}

/* ---- datagrams ---- */

typedef struct dgram_header {
    uint64_t seq;
    uint32_t len;
    uint32_t magic;
} dgram_header_t;

static uint32_t dgram_magic(uint64_t seq)
{
    return (uint32_t)soak_splitmix(seq);
}

/* Sends one datagram, waiting (in poll, so that stop is seen) while the
 * receiver's queue is full.  False if stopped first. */
static bool send_one(soak_thread_t *t, uint64_t *rng, const unsigned char *buf, size_t len)
{
    for (;;) {
        ssize_t n;
        soak_set_state(t, ST_SEND);
        if (soak_rnd(rng) % 2) {
            n = send(dgram_fd[0], buf, len, MSG_DONTWAIT);
        } else {
            size_t cut = soak_rnd(rng) % (len + 1);
            struct iovec iov[2] = {{(void *)buf, cut}, {(void *)(buf + cut), len - cut}};
            struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
            n = sendmsg(dgram_fd[0], &mh, MSG_DONTWAIT);
        }
        if (n == (ssize_t)len)
            return true;
        if (n >= 0) {
            errno = EMSGSIZE;
            io_error(t->name, "send (short)");
            return true;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            io_error(t->name, "send");
            return true;
        }
        if (SOAK_STOPPING())
            return false;
        soak_set_state(t, ST_POLL);
        struct pollfd pfd = {dgram_fd[0], POLLOUT, 0};
        poll(&pfd, 1, 100);
        soak_beat(t);
    }
}

void *soak_dgram_sender(void *arg)
{
    (void)arg;
    soak_thread_t *t = soak_thread_register("dgram sender");
    uint64_t rng = soak_seed_for("dgram sender", 0);
    for (uint64_t seq = 0; !SOAK_STOPPING();) {
        for (int burst = 0; burst < 32; burst++, seq++) {
            if (seq == SOAK_INJECT_AT && S->inject == SOAK_INJECT_LOSE)
                continue;
            size_t len = sizeof(dgram_header_t) + soak_rnd(&rng) % (DGRAM_MAX - sizeof(dgram_header_t) + 1);
            unsigned char *buf = xmalloc(t, len);
            soak_stamp(buf, len, seq | DGRAM_TAG, 0);
            dgram_header_t h = {seq, (uint32_t)len, dgram_magic(seq)};
            memcpy(buf, &h, sizeof h);
            bool sent = send_one(t, &rng, buf, len);
            xfree(t, buf);
            if (!sent)
                goto out;
            SOAK_ADD(dgram_sent, 1);
            atomic_store(&S->sent_last, seq + 1);
            soak_beat(t);
        }
        soak_set_state(t, ST_SLEEP);
        soak_sleep_ms(1);
    }
out:
    atomic_store(&S->sender_done, 1);
    soak_set_state(t, ST_DONE);
    return NULL;
}

typedef struct receiver {
    soak_thread_t *t;
    uint64_t rng;
    uint64_t expected;              /* next sequence number */
    unsigned char *buf[MMSG];
    size_t cap[MMSG];
    unsigned char *filler[128];     /* same classes as the buffers, half freed now and then */
} receiver_t;

static void check_dgram(receiver_t *r, const unsigned char *p, size_t n, int flags)
{
    dgram_header_t h;
    SOAK_ADD(dgram_received, 1);
    soak_count(&r->t->verified, n);
    if (n < sizeof h || (flags & MSG_TRUNC)) {
        SOAK_ADD(dgram_bad, 1);
        soak_report("datagram receiver: a datagram of %zu bytes (flags %#x) after number %llu", n, flags,
                    (unsigned long long)r->expected - 1);
        return;
    }
    memcpy(&h, p, sizeof h);
    if (h.magic != dgram_magic(h.seq) || h.len != n || h.seq < r->expected) {
        SOAK_ADD(dgram_bad, 1);
        soak_report("datagram receiver: datagram %llu (expected %llu) of %zu bytes says length %u, magic %#x: "
                    "garbled, duplicated or out of order",
                    (unsigned long long)h.seq, (unsigned long long)r->expected, n, h.len, h.magic);
        return;
    }
    if (h.seq > r->expected) {
        SOAK_ADD(dgram_lost, h.seq - r->expected);
        soak_report("datagram receiver: datagrams %llu to %llu lost",
                    (unsigned long long)r->expected, (unsigned long long)h.seq - 1);
    }
    r->expected = h.seq + 1;
    ssize_t bad = soak_check(p, sizeof h, n, h.seq | DGRAM_TAG, 0);
    if (bad >= 0) {
        SOAK_ADD(dgram_bad, 1);
        soak_report("datagram receiver: datagram %llu of %zu bytes: byte %zd is %#x, expected %#x",
                    (unsigned long long)h.seq, n, bad, p[bad], soak_pattern_byte(h.seq | DGRAM_TAG, 0, (size_t)bad));
    }
}

/* Reallocates receive buffers and churns fillers of the same classes. */
static void churn(receiver_t *r)
{
    soak_set_state(r->t, ST_MALLOC);
    int i = (int)(soak_rnd(&r->rng) % MMSG);
    xfree(r->t, r->buf[i]);
    r->cap[i] = DGRAM_MAX + soak_rnd(&r->rng) % (2048 - DGRAM_MAX + 1);
    r->buf[i] = xmalloc(r->t, r->cap[i]);
    for (int k = 0; k < 4; k++) {
        unsigned char **f = &r->filler[soak_rnd(&r->rng) % 128];
        if (*f) {
            xfree(r->t, *f);
            *f = NULL;
        } else {
            *f = xmalloc(r->t, 512 + soak_rnd(&r->rng) % 1537);
        }
    }
}

static const char *const recv_calls[4] = {"recv", "recvfrom", "recvmsg", "recvmmsg"};

static ssize_t recv_some(receiver_t *r, int method)
{
    ssize_t n;
    soak_set_state(r->t, ST_RECV);
    if (method == 0) {
        if ((n = recv(dgram_fd[1], r->buf[0], r->cap[0], MSG_DONTWAIT)) >= 0)
            check_dgram(r, r->buf[0], (size_t)n, 0);
    } else if (method == 1) {
        struct sockaddr_un *from = xmalloc(r->t, sizeof *from);
        socklen_t *alen = xmalloc(r->t, sizeof *alen);
        *alen = sizeof *from;
        if ((n = recvfrom(dgram_fd[1], r->buf[1], r->cap[1], MSG_DONTWAIT, (struct sockaddr *)from, alen)) >= 0)
            check_dgram(r, r->buf[1], (size_t)n, 0);
        xfree(r->t, from);
        xfree(r->t, alen);
    } else if (method == 2) {
        /* Scattered over two buffers, put together again to be checked. */
        struct msghdr *mh = xmalloc(r->t, sizeof *mh);
        struct iovec *iov = xmalloc(r->t, 2 * sizeof *iov);
        size_t cut = 1 + soak_rnd(&r->rng) % 512;
        iov[0] = (struct iovec){r->buf[2], cut};
        iov[1] = (struct iovec){r->buf[3], r->cap[3]};
        *mh = (struct msghdr){.msg_iov = iov, .msg_iovlen = 2};
        if ((n = recvmsg(dgram_fd[1], mh, MSG_DONTWAIT)) >= 0) {
            unsigned char whole[2048 + 512];
            size_t a = (size_t)n < cut ? (size_t)n : cut;
            memcpy(whole, r->buf[2], a);
            memcpy(whole + a, r->buf[3], (size_t)n - a);
            check_dgram(r, whole, (size_t)n, mh->msg_flags);
        }
        xfree(r->t, iov);
        xfree(r->t, mh);
    } else {
        struct mmsghdr *mm = xmalloc(r->t, MMSG * sizeof *mm);
        struct iovec *iov = xmalloc(r->t, MMSG * sizeof *iov);
        unsigned vlen = 1 + (unsigned)(soak_rnd(&r->rng) % MMSG);
        for (unsigned i = 0; i < vlen; i++) {
            iov[i] = (struct iovec){r->buf[i], r->cap[i]};
            mm[i] = (struct mmsghdr){.msg_hdr = {.msg_iov = &iov[i], .msg_iovlen = 1}};
        }
        int got = recvmmsg(dgram_fd[1], mm, vlen, MSG_DONTWAIT, NULL);
        for (int i = 0; i < got; i++)
            check_dgram(r, r->buf[i], mm[i].msg_len, mm[i].msg_hdr.msg_flags);
        n = got;
        xfree(r->t, iov);
        xfree(r->t, mm);
    }
    return n;
}

void *soak_dgram_receiver(void *arg)
{
    (void)arg;
    static receiver_t rv;
    receiver_t *r = &rv;
    r->t = soak_thread_register("dgram receiver");
    r->rng = soak_seed_for("dgram receiver", 0);
    for (int i = 0; i < MMSG; i++)
        r->buf[i] = xmalloc(r->t, r->cap[i] = 2048);
    struct pollfd *pfd = xmalloc(r->t, sizeof *pfd);
    uint64_t stop_at = 0;
    for (;;) {
        if (SOAK_STOPPING()) {
            if (!stop_at)
                stop_at = soak_now_ns();
            /* Drain what was sent, for a second at most once the sender is done. */
            if (!atomic_load(&S->sender_done))
                stop_at = soak_now_ns();
            else if (r->expected >= atomic_load(&S->sent_last) || soak_now_ns() - stop_at > 1000000000ull)
                break;
        }
        soak_set_state(r->t, ST_POLL);
        *pfd = (struct pollfd){dgram_fd[1], POLLIN, 0};
        int ready = poll(pfd, 1, 50);
        soak_beat(r->t);
        if (ready < 0 && errno != EINTR)
            io_error(r->t->name, "poll");
        if (ready <= 0 || !(pfd->revents & POLLIN))
            continue;
        int method = (int)(soak_rnd(&r->rng) % 4);
        ssize_t n = recv_some(r, method);
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            io_error(r->t->name, recv_calls[method]);
        if (soak_rnd(&r->rng) % 4 == 0)
            churn(r);
    }
    uint64_t last = atomic_load(&S->sent_last);
    if (r->expected < last) {
        SOAK_ADD(dgram_lost, last - r->expected);
        soak_report("datagram receiver: datagrams %llu to %llu never arrived", (unsigned long long)r->expected,
                    (unsigned long long)last - 1);
    }
    for (int i = 0; i < MMSG; i++)
        xfree(r->t, r->buf[i]);
    for (int i = 0; i < 128; i++)
        xfree(r->t, r->filler[i]);
    xfree(r->t, pfd);
    soak_set_state(r->t, ST_DONE);
    return NULL;
}

/* ---- the pipe ---- */

void *soak_pipe_writer(void *arg)
{
    (void)arg;
    soak_thread_t *t = soak_thread_register("pipe writer");
    uint64_t rng = soak_seed_for("pipe writer", 0);
    uint64_t pos = 0;
    while (!SOAK_STOPPING()) {
        size_t len = 1 + soak_rnd(&rng) % 16384, done = 0;
        unsigned char *buf = xmalloc(t, len);
        soak_fill_at(buf, pos, len, STREAM_ID, 0);
        soak_set_state(t, ST_WRITE);
        while (done < len) {
            ssize_t n = write(pipe_fd[1], buf + done, len - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                io_error(t->name, "write");
                goto out;
            }
            done += (size_t)n;
            soak_beat(t);
        }
        pos += len;
        xfree(t, buf);
        if (soak_rnd(&rng) % 4 == 0) {
            soak_set_state(t, ST_SLEEP);
            soak_sleep_ms(1);
        }
    }
out:
    close(pipe_fd[1]);
    soak_set_state(t, ST_DONE);
    return NULL;
}

/* Reads until the writer closes its end. */
void *soak_pipe_reader(void *arg)
{
    (void)arg;
    soak_thread_t *t = soak_thread_register("pipe reader");
    uint64_t rng = soak_seed_for("pipe reader", 0);
    uint64_t pos = 0;
    bool broken = false;
    unsigned char *a = NULL, *b = NULL;
    for (;;) {
        size_t alen = 1 + soak_rnd(&rng) % 8192, blen = 1 + soak_rnd(&rng) % 8192;
        soak_set_state(t, ST_MALLOC);
        xfree(t, a);
        xfree(t, b);
        a = xmalloc(t, alen);
        b = xmalloc(t, blen);
        soak_set_state(t, ST_READ);
        ssize_t n;
        if (soak_rnd(&rng) % 2) {
            n = read(pipe_fd[0], a, alen);
            blen = 0;
        } else {
            struct iovec *iov = xmalloc(t, 2 * sizeof *iov);
            iov[0] = (struct iovec){a, alen};
            iov[1] = (struct iovec){b, blen};
            n = readv(pipe_fd[0], iov, 2);
            xfree(t, iov);
        }
        soak_beat(t);
        if (n == 0)
            break;
        if (n < 0) {
            if (errno != EINTR) {
                io_error(t->name, "read");
                break;
            }
            continue;
        }
        size_t in_a = (size_t)n < alen ? (size_t)n : alen, in_b = (size_t)n - in_a;
        ssize_t bad = soak_check_at(a, pos, in_a, STREAM_ID, 0);
        if (bad < 0 && (bad = soak_check_at(b, pos + in_a, in_b, STREAM_ID, 0)) >= 0)
            bad += (ssize_t)in_a;
        if (bad >= 0 && !broken) {
            SOAK_ADD(stream_bad, 1);
            soak_report("pipe reader: a read of %zd bytes at stream position %llu is wrong from byte %zd on; "
                        "not checking the rest of the stream",
                        n, (unsigned long long)pos, bad);
            broken = true;
        }
        pos += (uint64_t)n;
        SOAK_ADD(stream_bytes, (uint64_t)n);
        soak_count(&t->verified, (uint64_t)n);
    }
    xfree(t, a);
    xfree(t, b);
    close(pipe_fd[0]);
    soak_set_state(t, ST_DONE);
    return NULL;
}
