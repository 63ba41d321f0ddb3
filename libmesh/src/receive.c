/*
 * The calls through which programs most often receive data into heap
 * buffers: read, pread, preadv, readv, recv, recvfrom, recvmsg, recvmmsg,
 * sigtimedwait and sigwaitinfo.  Each pins the buffers the kernel will
 * write for the duration of the call (pin.c): while a span is being meshed
 * its pages are read-only, and while a fork child's heap is copied so is
 * the arena, and the kernel does not raise SIGSEGV when a system call
 * writes there: the call fails with EFAULT, and some calls have consumed
 * their data by then (a datagram, the messages of recvmmsg, the signal of
 * sigtimedwait).  Meshing and fork leave pinned ranges writable.  The poll,
 * select and epoll families pin their event arrays the same way (idle.c).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

extern ssize_t __read(int fd, void *buf, size_t n);

static void add_iov(mesh_pinset_t *ps, const struct iovec *iov, size_t n)
{
    if (!iov)
        return;
    mesh_pinset_add(ps, iov, n * sizeof *iov);
    for (size_t i = 0; i < n; i++)
        mesh_pinset_add(ps, iov[i].iov_base, iov[i].iov_len);
}

/* What recvmsg writes: the data, the address, the control data, and the
 * header's lengths and flags. */
static void add_msghdr(mesh_pinset_t *ps, struct msghdr *msg)
{
    mesh_pinset_add(ps, msg, sizeof *msg);
    add_iov(ps, msg->msg_iov, msg->msg_iovlen);
    mesh_pinset_add(ps, msg->msg_name, msg->msg_namelen);
    mesh_pinset_add(ps, msg->msg_control, msg->msg_controllen);
}

MESH_EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    ssize_t r;
    MESH_PINNED_CALL_BUF(buf, n, __read(fd, buf, n));
    return r;
}

MESH_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
    NEXT_SYMBOL(pread);
    ssize_t r;
    MESH_PINNED_CALL_BUF(buf, n, real_pread(fd, buf, n, off));
    return r;
}

MESH_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off64_t off)
{
    NEXT_SYMBOL(pread64);
    ssize_t r;
    MESH_PINNED_CALL_BUF(buf, n, real_pread64(fd, buf, n, off));
    return r;
}

MESH_EXPORT ssize_t readv(int fd, const struct iovec *iov, int n)
{
    NEXT_SYMBOL(readv);
    ssize_t r;
    mesh_pinset_t ps = {0};
    add_iov(&ps, iov, n > 0 ? (size_t)n : 0);
    MESH_PINNED_CALL(ps, real_readv(fd, iov, n));
    return r;
}

MESH_EXPORT ssize_t preadv(int fd, const struct iovec *iov, int n, off_t off)
{
    NEXT_SYMBOL(preadv);
    ssize_t r;
    mesh_pinset_t ps = {0};
    add_iov(&ps, iov, n > 0 ? (size_t)n : 0);
    MESH_PINNED_CALL(ps, real_preadv(fd, iov, n, off));
    return r;
}

MESH_EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    NEXT_SYMBOL(recv);
    ssize_t r;
    MESH_PINNED_CALL_BUF(buf, n, real_recv(fd, buf, n, flags));
    return r;
}

MESH_EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *addr, socklen_t *alen)
{
    NEXT_SYMBOL(recvfrom);
    ssize_t r;
    mesh_pinset_t ps = {0};
    mesh_pinset_add(&ps, buf, n);
    mesh_pinset_add(&ps, addr, alen ? *alen : 0);
    mesh_pinset_add(&ps, alen, alen ? sizeof *alen : 0);
    MESH_PINNED_CALL(ps, real_recvfrom(fd, buf, n, flags, addr, alen));
    return r;
}

MESH_EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    NEXT_SYMBOL(recvmsg);
    ssize_t r;
    mesh_pinset_t ps = {0};
    if (msg)
        add_msghdr(&ps, msg);
    MESH_PINNED_CALL(ps, real_recvmsg(fd, msg, flags));
    return r;
}

MESH_EXPORT int recvmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags, struct timespec *timeout)
{
    NEXT_SYMBOL(recvmmsg);
    int r;
    mesh_pinset_t ps = {0};
    if (vec) {
        mesh_pinset_add(&ps, vec, (size_t)n * sizeof *vec);
        for (unsigned i = 0; i < n; i++)
            add_msghdr(&ps, &vec[i].msg_hdr);
    }
    mesh_pinset_add(&ps, timeout, timeout ? sizeof *timeout : 0);
    MESH_PINNED_CALL(ps, real_recvmmsg(fd, vec, n, flags, timeout));
    return r;
}

MESH_EXPORT int sigtimedwait(const sigset_t *set, siginfo_t *info, const struct timespec *timeout)
{
    NEXT_SYMBOL(sigtimedwait);
    int r;
    MESH_PINNED_CALL_BUF(info, info ? sizeof *info : 0, real_sigtimedwait(set, info, timeout));
    return r;
}

MESH_EXPORT int sigwaitinfo(const sigset_t *set, siginfo_t *info)
{
    NEXT_SYMBOL(sigwaitinfo);
    int r;
    MESH_PINNED_CALL_BUF(info, info ? sizeof *info : 0, real_sigwaitinfo(set, info));
    return r;
}
