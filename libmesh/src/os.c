/*
 * The system calls libmesh makes for memory, signals, futexes, time and
 * randomness (files and limits: os_files.c), behind small functions that
 * return 0 or an errno value and never touch the caller's errno: they run
 * inside free() and realloc(), where a changed errno would surprise the
 * program.  Nothing here may call malloc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* libmesh interposes read() to retry it when a mesh makes it fail with
 * EFAULT; its own reads go straight to libc. */
extern ssize_t __read(int fd, void *buf, size_t n);

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 1U
#endif

/* libmesh exports mmap (interpose.c): its own mappings go straight to the
 * kernel, never through that. */
static void *sys_mmap(void *addr, size_t bytes, int prot, int flags, int fd, off_t off)
{
    return (void *)syscall(SYS_mmap, addr, bytes, prot, flags, fd, off);
}


int mesh_os_memfd(const char *name, int *fd_out)
{
    SAVE_ERRNO;
    int fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC);
    *fd_out = fd;
    RETURN_ERR(fd >= 0);
}

int mesh_os_truncate(int fd, uint64_t bytes)
{
    SAVE_ERRNO;
    RETURN_ERR(ftruncate(fd, (off_t)bytes) == 0);
}

/* Address space only: NORESERVE so that nothing is charged until touched. */
int mesh_os_map_reserve(size_t bytes, void **out)
{
    SAVE_ERRNO;
    void *p = sys_mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    *out = p == MAP_FAILED ? NULL : p;
    RETURN_ERR(p != MAP_FAILED);
}

/* The program's own mmap(2), errno and all (interpose.c). */
void *mesh_os_mmap(void *addr, size_t bytes, int prot, int flags, int fd, off_t off)
{
    return sys_mmap(addr, bytes, prot, flags, fd, off);
}

/* Address space that nothing can use yet: PROT_NONE, so that neither
 * mlockall(MCL_CURRENT) nor a fault can bring memory into it, until a
 * part is mapped over it (mesh_os_map_fixed_anon, mesh_os_map_shared). */
int mesh_os_map_none(size_t bytes, void **out)
{
    SAVE_ERRNO;
    void *p = sys_mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    *out = p == MAP_FAILED ? NULL : p;
    if (p != MAP_FAILED)
        munlock(p, bytes); /* after mlockall(MCL_FUTURE), not counted as locked */
    RETURN_ERR(p != MAP_FAILED);
}

/* Private read-write memory exactly at addr, replacing what was there (a
 * new mapping: it is locked only if the program asked for MCL_FUTURE). */
int mesh_os_map_fixed_anon(void *addr, size_t bytes)
{
    SAVE_ERRNO;
    void *p = sys_mmap(addr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    RETURN_ERR(p != MAP_FAILED);
}

/* Maps [off, off + bytes) of fd shared; with fixed, exactly at addr; with
 * populate, the page-table entries of the file's present pages are filled
 * in at once (a read fault each would cost more than the whole call). */
int mesh_os_map_shared(void *addr, size_t bytes, int fd, uint64_t off, bool fixed, bool populate, void **out)
{
    SAVE_ERRNO;
    int flags = MAP_SHARED | MAP_NORESERVE | (fixed ? MAP_FIXED : 0) | (populate ? MAP_POPULATE : 0);
    void *p = sys_mmap(addr, bytes, PROT_READ | PROT_WRITE, flags, fd, (off_t)off);
    *out = p == MAP_FAILED ? NULL : p;
    RETURN_ERR(p != MAP_FAILED);
}

/* Private read-write memory with the given alignment (a power of two >= a
 * page), trimming the over-reservation so that nothing is wasted. */
int mesh_os_map_anon(size_t bytes, size_t align, void **out)
{
    SAVE_ERRNO;
    size_t extra = align > MESH_PAGE_SIZE ? align : 0;
    if (bytes + extra < bytes) {
        errno = saved_errno_;
        return ENOMEM;
    }
    char *p = sys_mmap(NULL, bytes + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        *out = NULL;
        RETURN_ERR(false);
    }
    if (extra) {
        char *aligned = (char *)(((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1));
        if (aligned > p)
            munmap(p, (size_t)(aligned - p));
        size_t tail = (size_t)(p + bytes + extra - (aligned + bytes));
        if (tail)
            munmap(aligned + bytes, tail);
        p = aligned;
    }
    *out = p;
    errno = saved_errno_;
    return 0;
}

int mesh_os_unmap(void *addr, size_t bytes)
{
    SAVE_ERRNO;
    RETURN_ERR(munmap(addr, bytes) == 0);
}

int mesh_os_remap(void *old, size_t old_bytes, size_t new_bytes, bool may_move, void **out)
{
    SAVE_ERRNO;
    void *p = mremap(old, old_bytes, new_bytes, may_move ? MREMAP_MAYMOVE : 0);
    *out = p == MAP_FAILED ? NULL : p;
    RETURN_ERR(p != MAP_FAILED);
}

/* Gives the file's pages back to the OS; the range then reads as zeros.
 * Precondition: fd is the arena's memfd (see mesh_os_fd_identity). */
/* Moves the pages of [old, old + bytes) to new_addr, replacing what was
 * mapped there: page tables move, no byte is copied. */
int mesh_os_remap_fixed(void *old, size_t bytes, void *new_addr, void **out)
{
    SAVE_ERRNO;
    void *p = mremap(old, bytes, bytes, MREMAP_MAYMOVE | MREMAP_FIXED, new_addr);
    *out = p == MAP_FAILED ? NULL : p;
    RETURN_ERR(p != MAP_FAILED);
}

int mesh_os_punch(int fd, uint64_t off, uint64_t bytes)
{
    SAVE_ERRNO;
    RETURN_ERR(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)bytes) == 0);
}

/* The same punch through a shared mapping, for when the fd is gone. */
int mesh_os_remove(void *addr, size_t bytes)
{
    SAVE_ERRNO;
    RETURN_ERR(madvise(addr, bytes, MADV_REMOVE) == 0);
}

int mesh_os_dontneed(void *addr, size_t bytes)
{
    SAVE_ERRNO;
    RETURN_ERR(madvise(addr, bytes, MADV_DONTNEED) == 0);
}

int mesh_os_protect(void *addr, size_t bytes, bool writable)
{
    SAVE_ERRNO;
    RETURN_ERR(mprotect(addr, bytes, writable ? PROT_READ | PROT_WRITE : PROT_READ) == 0);
}

/* Faults in [addr, addr + bytes) for writing, in one call (Linux 5.14 and
 * later; elsewhere nothing happens and the pages fault in one by one). */
void mesh_os_populate(void *addr, size_t bytes)
{
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
    int saved = errno;
    madvise(addr, bytes, MADV_POPULATE_WRITE);
    errno = saved;
}

/* Async-signal-safe: used by the write barrier inside the SIGSEGV handler. */
int mesh_os_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns)
{
    SAVE_ERRNO;
    struct timespec ts = {(time_t)(timeout_ns / 1000000000ULL), (long)(timeout_ns % 1000000000ULL)};
    long r = syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
    RETURN_ERR(r == 0);
}

void mesh_os_futex_wake_all(_Atomic uint32_t *word)
{
    SAVE_ERRNO;
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
    errno = saved_errno_;
}

/* The calling thread's signal mask, straight to the kernel: libmesh's own
 * masking must not go through the program's view of masks (signals.c).
 * Async-signal-safe. */
int mesh_os_sigmask(int how, const sigset_t *set, sigset_t *old)
{
    SAVE_ERRNO;
    long r = syscall(SYS_rt_sigprocmask, how, set, old, (size_t)(_NSIG / 8));
    RETURN_ERR(r == 0);
}

/* Gives the processor up.  Async-signal-safe. */
void mesh_os_yield(void)
{
    SAVE_ERRNO;
    syscall(SYS_sched_yield);
    errno = saved_errno_;
}

/* The process id from the kernel, never from a cache: a fork child asks it
 * before libc has set itself up again.  Async-signal-safe. */
uint32_t mesh_os_getpid(void)
{
    SAVE_ERRNO;
    long r = syscall(SYS_getpid);
    errno = saved_errno_;
    return (uint32_t)r;
}

uint64_t mesh_os_random64(void)
{
    SAVE_ERRNO;
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)&v ^ (uint64_t)getpid() << 32;
    }
    errno = saved_errno_;
    return v;
}

uint64_t mesh_os_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* The calling thread's CPU time (a system call, not the vDSO's clock):
 * what a mesh pass costs, apart from the time other processes had the
 * CPU. */
uint64_t mesh_os_thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* RAM plus swap: the kernel's heuristic overcommit refuses any single
 * request larger than this, and so do we, to behave like glibc. */
uint64_t mesh_os_physical_bytes(void)
{
    SAVE_ERRNO;
    struct sysinfo si;
    uint64_t total = 0;
    if (sysinfo(&si) == 0)
        total = ((uint64_t)si.totalram + (uint64_t)si.totalswap) * si.mem_unit;
    errno = saved_errno_;
    return total;
}

/* /proc/sys/vm/overcommit_memory, or -1 if it cannot be read. */
int mesh_os_overcommit_mode(void)
{
    SAVE_ERRNO;
    int mode = -1;
    int fd = open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char c;
        if (__read(fd, &c, 1) == 1 && c >= '0' && c <= '2')
            mode = c - '0';
        close(fd);
    }
    errno = saved_errno_;
    return mode;
}

void mesh_os_write_stderr(const char *buf, size_t len)
{
    SAVE_ERRNO;
    while (len) {
        ssize_t n = write(2, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf += n;
        len -= (size_t)n;
    }
    errno = saved_errno_;
}

/* Abort as glibc does on heap corruption: SIGABRT, after the program's own
 * handler if it has one. */
void mesh_os_abort(void)
{
    abort();
}
