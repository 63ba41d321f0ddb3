/*
 * A program that closes libmesh's memfd and reuses its number for a file
 * of its own (a daemon's closefrom, then open): nothing of that file is
 * punched or mapped over the heap, meshing stops, and the heap stays
 * intact.  Once with the meshing thread alone in the process (its slices
 * check the descriptor once each) and once beside another thread (a check
 * at every use).  Each case runs in a process of its own: the loss is for
 * good.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "meshing.h"
#include "test.h"

static void *sleeper(void *arg)
{
    int *stop = arg;
    while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE))
        usleep(1000);
    return NULL;
}

static int number; /* the arena's descriptor, then the program's file */

/* Replaces the arena's descriptor by a file of the program's, as large as
 * the arena file and filled with 0x5a; returns its size. */
static size_t take_the_number(void)
{
    number = mesh_arena.fd;
    size_t bytes = (size_t)mesh_arena.file_pages * MESH_PAGE_SIZE;
    int fd = memfd_create("program-data", MFD_CLOEXEC);
    char *p = fd >= 0 && ftruncate(fd, (off_t)bytes) == 0
                  ? mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    if (p == MAP_FAILED || close(number) != 0 || dup2(fd, number) != number)
        return 0;
    memset(p, 0x5a, bytes);
    munmap(p, bytes);
    close(fd);
    return bytes;
}

/* Whether the program's file still holds every byte. */
static bool file_intact(size_t bytes)
{
    struct stat st;
    char *p = mmap(NULL, bytes, PROT_READ, MAP_SHARED, number, 0);
    if (p == MAP_FAILED || fstat(number, &st) != 0)
        return false;
    bool ok = (size_t)st.st_blocks * 512 >= bytes;
    for (size_t i = 0; i < bytes && ok; i++)
        ok = p[i] == 0x5a;
    munmap(p, bytes);
    return ok;
}

static int child_fd_lost(bool alone)
{
    frag_t f = {.size = 256, .groups = 2, .max_spans = 16};
    fragment(&f);
    int stop = 0;
    pthread_t t;
    if (!alone && pthread_create(&t, NULL, sleeper, &stop) != 0)
        return 2;
    size_t bytes = take_the_number();
    if (!bytes)
        return 3;
    uint64_t meshes0 = ctl("stats.mesh_count");
    ctl("mesh.compact");
    uint64_t meshes = ctl("stats.mesh_count") - meshes0;
    bool heap = all_intact(&f);
    free_all(&f);
    ctl("mesh.scavenge");
    for (int i = 0; i < 20000; i++) /* spans emptied and punched again */
        free(malloc((size_t)(i % 3000) + 1));
    bool file = file_intact(bytes);
    if (!alone) {
        __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
        pthread_join(t, NULL);
    }
    if (meshes || !heap || !file)
        fprintf(stderr, "  %s: %llu meshes, heap %s, the program's file %s\n", alone ? "alone" : "threaded",
                (unsigned long long)meshes, heap ? "intact" : "CHANGED", file ? "intact" : "PUNCHED");
    return meshes == 0 && heap && file ? 0 : 1;
}

static void test_fd_lost_alone(void)
{
    CHECK_EQ(run_self("alone", NULL), 0);
}

static void test_fd_lost_threaded(void)
{
    CHECK_EQ(run_self("threaded", NULL), 0);
}

int main(int argc, char **argv)
{
    if (argc == 2)
        return child_fd_lost(strcmp(argv[1], "alone") == 0);
    TEST_RUN(test_fd_lost_alone);
    TEST_RUN(test_fd_lost_threaded);
    TEST_DONE();
}
