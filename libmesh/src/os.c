/*
 * Every system call libmesh makes lives here, behind small functions that
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

#define SAVE_ERRNO int saved_errno_ = errno
#define RETURN_ERR(ok) do { int e_ = (ok) ? 0 : errno; errno = saved_errno_; return e_; } while (0)

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

/* Maps [off, off + bytes) of fd shared; with fixed, exactly at addr. */
int mesh_os_map_shared(void *addr, size_t bytes, int fd, uint64_t off, bool fixed, void **out)
{
    SAVE_ERRNO;
    int flags = MAP_SHARED | MAP_NORESERVE | (fixed ? MAP_FIXED : 0);
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

int mesh_os_open_append(const char *path, int *fd_out)
{
    SAVE_ERRNO;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    *fd_out = fd;
    RETURN_ERR(fd >= 0);
}

static uint64_t read_u64_file(const char *path, uint64_t fallback)
{
    char buf[32];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fallback;
    ssize_t n = __read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return fallback;
    uint64_t v = 0;
    for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
        v = v * 10 + (uint64_t)(buf[i] - '0');
    return v ? v : fallback;
}

/* vm.max_map_count: every meshed span costs mappings, and the kernel
 * refuses mmap beyond this many. */
uint64_t mesh_os_max_map_count(void)
{
    SAVE_ERRNO;
    uint64_t v = read_u64_file("/proc/sys/vm/max_map_count", 65530);
    errno = saved_errno_;
    return v;
}

/* Mappings the process has now: the lines of /proc/self/maps. */
uint64_t mesh_os_count_maps(void)
{
    SAVE_ERRNO;
    uint64_t lines = 0;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[4096];
        ssize_t n;
        while ((n = __read(fd, buf, sizeof buf)) > 0)
            for (ssize_t i = 0; i < n; i++)
                lines += buf[i] == '\n';
        close(fd);
    }
    errno = saved_errno_;
    return lines;
}

int mesh_os_fd_identity(int fd, uint64_t *dev, uint64_t *ino)
{
    SAVE_ERRNO;
    struct stat st;
    int ok = fstat(fd, &st) == 0;
    if (ok) {
        *dev = (uint64_t)st.st_dev;
        *ino = (uint64_t)st.st_ino;
    }
    RETURN_ERR(ok);
}

int mesh_os_file_blocks(int fd, uint64_t *bytes)
{
    SAVE_ERRNO;
    struct stat st;
    int ok = fstat(fd, &st) == 0;
    *bytes = ok ? (uint64_t)st.st_blocks * 512 : 0;
    RETURN_ERR(ok);
}

/* The next range of data at or after `from`: [*data, *hole).  ENXIO when
 * there is no more data. */
int mesh_os_seek_data(int fd, uint64_t from, uint64_t *data, uint64_t *hole)
{
    SAVE_ERRNO;
    off_t d = lseek(fd, (off_t)from, SEEK_DATA);
    if (d < 0)
        RETURN_ERR(false);
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0)
        RETURN_ERR(false);
    *data = (uint64_t)d;
    *hole = (uint64_t)h;
    errno = saved_errno_;
    return 0;
}

/* write(2) or, with off >= 0, pwrite(2) until everything is written. */
static int write_loop(int fd, const void *buf, size_t len, int64_t off)
{
    SAVE_ERRNO;
    const char *p = buf;
    while (len) {
        ssize_t n = off < 0 ? write(fd, p, len) : pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int e = n < 0 ? errno : EIO;
            errno = saved_errno_;
            return e;
        }
        p += n;
        len -= (size_t)n;
        if (off >= 0)
            off += n;
    }
    errno = saved_errno_;
    return 0;
}

int mesh_os_pwrite_all(int fd, const void *buf, size_t bytes, uint64_t off)
{
    return write_loop(fd, buf, bytes, (int64_t)off);
}

int mesh_os_write_all(int fd, const void *buf, size_t len)
{
    return write_loop(fd, buf, len, -1);
}

/* RLIMIT_FSIZE's soft limit in bytes (UINT64_MAX: none): a file grown
 * past it raises SIGXFSZ, which kills the process by default. */
uint64_t mesh_os_file_size_limit(void)
{
    SAVE_ERRNO;
    struct rlimit rl;
    uint64_t v = UINT64_MAX;
    if (getrlimit(RLIMIT_FSIZE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        v = (uint64_t)rl.rlim_cur;
    errno = saved_errno_;
    return v;
}

/* RLIMIT_AS's soft limit (UINT64_MAX: none) and the address space the
 * process has mapped now (VmSize), both in bytes. */
void mesh_os_address_space(uint64_t *limit, uint64_t *mapped)
{
    SAVE_ERRNO;
    struct rlimit rl;
    *limit = UINT64_MAX;
    *mapped = 0;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        *limit = (uint64_t)rl.rlim_cur;
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        char buf[4096];
        ssize_t n = __read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        const char *p = n > 0 ? strstr(buf, "\nVmSize:") : NULL;
        if (p) {
            for (p += 8; *p == ' ' || *p == '\t'; p++)
                ;
            uint64_t kb = 0;
            for (; *p >= '0' && *p <= '9'; p++)
                kb = kb * 10 + (uint64_t)(*p - '0');
            *mapped = kb << 10;
        }
    }
    errno = saved_errno_;
}

/* Moves fd above the numbers programs commonly dup2() onto. */
int mesh_os_dup_high(int fd, int *out)
{
    SAVE_ERRNO;
    int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 100);
    if (nfd >= 0) {
        close(fd);
        *out = nfd;
    } else {
        *out = fd;
    }
    RETURN_ERR(nfd >= 0);
}

int mesh_os_mlockall(int flags)
{
    SAVE_ERRNO;
    RETURN_ERR(syscall(SYS_mlockall, flags) == 0);
}

void mesh_os_munlock(void *addr, size_t bytes)
{
    SAVE_ERRNO;
    if (bytes)
        munlock(addr, bytes);
    errno = saved_errno_;
}

void mesh_os_close(int fd)
{
    SAVE_ERRNO;
    close(fd);
    errno = saved_errno_;
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

/* ---- formatting into fixed buffers ---- */

void mesh_buf_str(mesh_buf_t *b, const char *s)
{
    while (*s && b->len + 1 < b->cap)
        b->p[b->len++] = *s++;
    b->p[b->len] = 0;
}

void mesh_buf_u64(mesh_buf_t *b, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && b->len + 1 < b->cap)
        b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

void mesh_buf_hex(mesh_buf_t *b, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    mesh_buf_str(b, "0x");
    while (n && b->len + 1 < b->cap)
        b->p[b->len++] = tmp[--n];
    b->p[b->len] = 0;
}

void mesh_buf_fixed1(mesh_buf_t *b, uint64_t num, uint64_t den)
{
    uint64_t tenths = den ? (num * 10 + den / 2) / den : 0;
    mesh_buf_u64(b, tenths / 10);
    mesh_buf_str(b, ".");
    mesh_buf_u64(b, tenths % 10);
}

void mesh_warn(const char *msg)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: ");
    mesh_buf_str(&b, msg);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
}

/* "mesh: <what> (errno N)<then>" on stderr, then abort. */
void mesh_fatal_errno(const char *what, int err, const char *then)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, what);
    mesh_buf_str(&b, " (errno ");
    mesh_buf_u64(&b, (uint64_t)err);
    mesh_buf_str(&b, ")");
    mesh_buf_str(&b, then);
    mesh_warn(buf);
    mesh_os_abort();
}

void mesh_fatal_ptr(const char *what, const void *p)
{
    char buf[256];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: ");
    mesh_buf_str(&b, what);
    mesh_buf_str(&b, " ");
    mesh_buf_hex(&b, (uint64_t)(uintptr_t)p);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
    mesh_os_abort();
}

void mesh_assert_fail(const char *expr, const char *file, int line)
{
    char buf[512];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "mesh: assertion failed: ");
    mesh_buf_str(&b, expr);
    mesh_buf_str(&b, " at ");
    mesh_buf_str(&b, file);
    mesh_buf_str(&b, ":");
    mesh_buf_u64(&b, (uint64_t)line);
    mesh_buf_str(&b, "\n");
    mesh_os_write_stderr(buf, b.len);
    mesh_os_abort();
}
