/*
 * A small program the resource-limit tests (tests/programs/test_*limit*.sh,
 * test_no_memfd.sh, test_mlockall.sh) run under LD_PRELOAD with a limit
 * set.  Built against libc alone, so that whichever malloc is preloaded is
 * the one measured.  Modes:
 *   alloc MB SIZE   allocate MB MiB in SIZE-byte blocks, write each, free
 *                   half, allocate them again, fork a child that checks
 *                   and writes the heap; prints "ok" if every byte is right
 *   open PATH       allocate, then open and read PATH; prints its size
 *   mlock MB        mlockall(MCL_CURRENT | MCL_FUTURE), then as alloc;
 *                   prints "locked KB used KB" (VmLck, and bytes allocated)
 *   max SIZE CAP    allocate SIZE-byte blocks, one byte written in each
 *                   page, until malloc fails or CAP MiB; prints the MiB had
 *   room N MB       allocate 16 MiB, then start N threads (default stacks)
 *                   that each allocate, then map MB MiB; prints "ok"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static unsigned char pattern(size_t i, size_t j)
{
    return (unsigned char)(i * 31 + j * 7 + 1);
}

static int fill_check(char **v, size_t n, size_t size, int check)
{
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < size; j += 61) {
            if (check && (unsigned char)v[i][j] != pattern(i, j))
                return 0;
            if (!check)
                v[i][j] = (char)pattern(i, j);
        }
    return 1;
}

/* Allocates mb MiB in size-byte blocks and checks them through a free
 * and reuse round and a fork. */
static int alloc_mode(size_t mb, size_t size)
{
    size_t n = (mb << 20) / size;
    char **v = malloc(n * sizeof *v);
    if (!v)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if (!(v[i] = malloc(size))) {
            fprintf(stderr, "malloc failed at block %zu of %zu\n", i, n);
            return 1;
        }
        memset(v[i], 0, size);
    }
    fill_check(v, n, size, 0);
    for (size_t i = 0; i < n; i += 2)
        free(v[i]);
    for (size_t i = 0; i < n; i += 2)
        if (!(v[i] = malloc(size)))
            return 1;
    fill_check(v, n, size, 0);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = fill_check(v, n, size, 1);
        for (size_t i = 0; i < n; i++)
            v[i][0] = 0;
        _exit(ok ? 0 : 1);
    }
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "the fork child saw a wrong heap\n");
        return 1;
    }
    if (!fill_check(v, n, size, 1)) {
        fprintf(stderr, "the heap is wrong after the child wrote its copy\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    printf("ok\n");
    return 0;
}

static int open_mode(const char *path)
{
    void *p = malloc(100);
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char buf[4096];
    ssize_t k, total = 0;
    while ((k = read(fd, buf, sizeof buf)) > 0)
        total += k;
    close(fd);
    free(p);
    printf("read %zd\n", total);
    return 0;
}

static long status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    if (f)
        fclose(f);
    return v;
}

static int mlock_mode(size_t mb)
{
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        perror("mlockall");
        return 1;
    }
    size_t size = 1000, n = (mb << 20) / size;
    char **v = malloc(n * sizeof *v);
    for (size_t i = 0; v && i < n; i++)
        if (!(v[i] = malloc(size)))
            return 1;
    if (!v || !fill_check(v, n, size, 0) || !fill_check(v, n, size, 1))
        return 1;
    printf("locked %ld used %zu\n", status_kb("VmLck"), (n * (size + sizeof *v)) >> 10);
    return 0;
}

static int max_mode(size_t size, size_t cap_mb)
{
    size_t total = 0, n = 0, cap = cap_mb << 20;
    char **v = NULL;
    size_t nv = 0;
    while (total < cap) {
        if (n == nv) {
            /* the index lives in its own mappings, as a program's arrays would */
            size_t nn = nv ? nv * 2 : 4096;
            char **w = mmap(NULL, nn * sizeof *w, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (w == MAP_FAILED)
                break;
            if (v) {
                memcpy(w, v, nv * sizeof *v);
                munmap(v, nv * sizeof *v);
            }
            v = w;
            nv = nn;
        }
        char *p = malloc(size);
        if (!p)
            break;
        for (size_t j = 0; j < size; j += 4096)
            p[j] = 1;
        v[n++] = p;
        total += size;
    }
    printf("%zu\n", total >> 20);
    return 0;
}

static void *thread_main(void *arg)
{
    char *p = malloc(1000);
    if (p)
        memset(p, 1, 1000);
    free(p);
    return p ? arg : NULL;
}

/* Address space for the program's own mappings once the heap has started:
 * thread stacks (mapped inside libc) and a mapping of its own. */
static int room_mode(int nthreads, size_t mb)
{
    char *heap = malloc(16 << 20);
    if (!heap)
        return 1;
    memset(heap, 1, 16 << 20);
    pthread_t t[256];
    for (int i = 0; i < nthreads && i < 256; i++) {
        int rc = pthread_create(&t[i], NULL, thread_main, t);
        if (rc != 0) {
            fprintf(stderr, "pthread_create %d of %d: %s\n", i + 1, nthreads, strerror(rc));
            return 1;
        }
    }
    for (int i = 0; i < nthreads && i < 256; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r != t)
            return 1;
    }
    char *m = mmap(NULL, mb << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    m[0] = m[(mb << 20) - 1] = 1;
    free(heap);
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && strcmp(argv[1], "alloc") == 0)
        return alloc_mode(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    if (argc >= 3 && strcmp(argv[1], "open") == 0)
        return open_mode(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "mlock") == 0)
        return mlock_mode(strtoul(argv[2], NULL, 10));
    if (argc >= 4 && strcmp(argv[1], "max") == 0)
        return max_mode(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    if (argc >= 4 && strcmp(argv[1], "room") == 0)
        return room_mode(atoi(argv[2]), strtoul(argv[3], NULL, 10));
    fprintf(stderr, "usage: limits_child alloc MB SIZE | open PATH | mlock MB | max SIZE CAP_MB | room N MB\n");
    return 2;
}
