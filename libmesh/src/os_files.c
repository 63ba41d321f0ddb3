/*
 * The operating system's files and limits, as libmesh uses them: the event
 * log's file, /proc queries, the arena file's identity and blocks, resource
 * limits and descriptor moves.  Like os.c, each call leaves errno alone and
 * nothing here may call malloc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

/* libmesh interposes read() to retry it when a mesh makes it fail with
 * EFAULT; its own reads go straight to libc. */
extern ssize_t __read(int fd, void *buf, size_t n);

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

/* Threads in the process, from the link count of /proc/self/task (two
 * plus one a thread: one system call); 0 when it cannot be read (no
 * /proc), which no caller takes for one. */
unsigned mesh_os_thread_count(void)
{
    SAVE_ERRNO;
    struct stat st;
    unsigned n = stat("/proc/self/task", &st) == 0 && st.st_nlink > 2 ? (unsigned)(st.st_nlink - 2) : 0;
    errno = saved_errno_;
    return n;
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
