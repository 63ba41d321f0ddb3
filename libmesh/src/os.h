/*
 * The operating system, as libmesh uses it: every system call libmesh
 * makes on its own behalf goes through these functions (os.c), which
 * return 0 or an errno value and leave the caller's errno alone; the calls
 * libmesh interposes go on to libc's own: memory and processes in os.c,
 * files and limits in os_files.c.  Also formatting without malloc and the
 * messages libmesh prints (messages.c).
 */
#ifndef MESH_OS_H
#define MESH_OS_H

#include "types.h"

/* For os.c and os_files.c: keep the caller's errno, return the call's. */
#define SAVE_ERRNO int saved_errno_ = errno
#define RETURN_ERR(ok) do { int e_ = (ok) ? 0 : errno; errno = saved_errno_; return e_; } while (0)

int mesh_os_memfd(const char *name, int *fd_out);
int mesh_os_truncate(int fd, uint64_t bytes);
int mesh_os_map_reserve(size_t bytes, void **out);            /* private, NORESERVE */
void *mesh_os_mmap(void *addr, size_t bytes, int prot, int flags, int fd, off_t off);
int mesh_os_map_none(size_t bytes, void **out);                /* PROT_NONE reservation */
int mesh_os_map_fixed_anon(void *addr, size_t bytes);          /* private, read-write, MAP_FIXED */
int mesh_os_map_shared(void *addr, size_t bytes, int fd, uint64_t off, bool fixed, bool populate, void **out);
int mesh_os_map_anon(size_t bytes, size_t align, void **out);  /* private, read-write */
int mesh_os_unmap(void *addr, size_t bytes);
int mesh_os_remap(void *old, size_t old_bytes, size_t new_bytes, bool may_move, void **out);
int mesh_os_remap_fixed(void *old, size_t bytes, void *new_addr, void **out);
int mesh_os_punch(int fd, uint64_t off, uint64_t bytes);
int mesh_os_remove(void *addr, size_t bytes);                  /* MADV_REMOVE */
int mesh_os_dontneed(void *addr, size_t bytes);
int mesh_os_protect(void *addr, size_t bytes, bool writable);
void mesh_os_populate(void *addr, size_t bytes);
int mesh_os_sigmask(int how, const sigset_t *set, sigset_t *old);  /* the kernel's, unfiltered */
uint32_t mesh_os_getpid(void);
void mesh_os_yield(void);
int mesh_os_futex_wait(_Atomic uint32_t *word, uint32_t expected, uint64_t timeout_ns);
void mesh_os_futex_wake_all(_Atomic uint32_t *word);
int mesh_os_open_append(const char *path, int *fd_out);
int mesh_os_write_all(int fd, const void *buf, size_t len);
uint64_t mesh_os_max_map_count(void);
uint64_t mesh_os_count_maps(void);
unsigned mesh_os_thread_count(void);
int mesh_os_fd_identity(int fd, uint64_t *dev, uint64_t *ino);
int mesh_os_file_blocks(int fd, uint64_t *bytes);
int mesh_os_seek_data(int fd, uint64_t from, uint64_t *data, uint64_t *hole);
int mesh_os_pwrite_all(int fd, const void *buf, size_t bytes, uint64_t off);
int mesh_os_dup_high(int fd, int *out);
uint64_t mesh_os_file_size_limit(void);
void mesh_os_address_space(uint64_t *limit, uint64_t *mapped);
int mesh_os_mlockall(int flags);
void mesh_os_munlock(void *addr, size_t bytes);
void mesh_os_close(int fd);
uint64_t mesh_os_random64(void);
uint64_t mesh_os_now_ns(void);
uint64_t mesh_os_thread_cpu_ns(void);
uint64_t mesh_os_physical_bytes(void);
int mesh_os_overcommit_mode(void);
void mesh_os_write_stderr(const char *buf, size_t len);
void mesh_os_abort(void) __attribute__((noreturn));

/* Formatting without malloc: appends to a caller's fixed buffer. */
typedef struct mesh_buf {
    char *p;
    size_t len, cap;
} mesh_buf_t;
void mesh_buf_str(mesh_buf_t *b, const char *s);
void mesh_buf_u64(mesh_buf_t *b, uint64_t v);
void mesh_buf_hex(mesh_buf_t *b, uint64_t v);
void mesh_buf_fixed1(mesh_buf_t *b, uint64_t num, uint64_t den);  /* num/den, one decimal */
void mesh_warn(const char *msg);                     /* "mesh: msg\n" on stderr */
void mesh_fatal_ptr(const char *what, const void *p) __attribute__((noreturn, cold));
void mesh_fatal_errno(const char *what, int err, const char *then) __attribute__((noreturn, cold));

#endif
