/* A process whose memory is known exactly, for the sampler's tests.
 *
 *   known_memory anon    stage 0: nothing; stage 1: 64 MiB of private
 *                        anonymous memory, every page written.
 *   known_memory memfd   stage 0: nothing; stage 1: 64 MiB written into a
 *                        memfd, which is mapped twice and every page of
 *                        both mappings touched (RSS counts it twice);
 *                        stage 2: both mappings gone, the memfd still
 *                        open (PSS no longer sees it; it still costs).
 *
 * After reaching each stage it prints "stage N" and waits for a line on
 * stdin before going on; at EOF it exits. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SIZE (64UL << 20)

static void stage(int n)
{
    char line[16];
    printf("stage %d\n", n);
    fflush(stdout);
    if (!fgets(line, sizeof line, stdin))
        exit(0);
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    stage(0);
    if (strcmp(argv[1], "anon") == 0) {
        unsigned char *p = mmap(NULL, SIZE, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            die("mmap");
        memset(p, 0xa5, SIZE);
        stage(1);
        return p[SIZE - 1] == 0xa5 ? 0 : 1;
    }
    if (strcmp(argv[1], "memfd") == 0) {
        static char buf[1 << 16];
        int fd = memfd_create("known", 0);
        if (fd < 0)
            die("memfd_create");
        memset(buf, 0x5a, sizeof buf);
        for (unsigned long off = 0; off < SIZE; off += sizeof buf)
            if (pwrite(fd, buf, sizeof buf, off) != (ssize_t)sizeof buf)
                die("pwrite");
        volatile unsigned char *a = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
        volatile unsigned char *b = mmap(NULL, SIZE, PROT_READ, MAP_SHARED, fd, 0);
        if (a == MAP_FAILED || b == MAP_FAILED)
            die("mmap");
        unsigned sum = 0;
        for (unsigned long off = 0; off < SIZE; off += 4096)
            sum += a[off] + b[off];
        if (sum != 2u * 0x5a * (SIZE / 4096))
            return 1;
        stage(1);
        munmap((void *)a, SIZE);
        munmap((void *)b, SIZE);
        stage(2);
        close(fd);
        return 0;
    }
    return 2;
}
