/*
 * The arena past RLIMIT_FSIZE: the file stops growing short of the limit,
 * the heap goes on in private memory, spans there are never meshed (a
 * mesh maps file pages, which would replace their contents), pages freed
 * there go back to the OS all the same, and fork gives the child a heap of
 * its own on both sides of the border.  The limit is set first thing in
 * main, while the arena file is still smaller than it.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../include/mesh.h"
#include "internal.h"
#include "test.h"

#define LIMIT (4UL << 20)
#define N (192 * 1024) /* 256-byte objects: 48 MiB, most of it past the file */

static char *obj[N];

static void fill(char *p, size_t i)
{
    memset(p, (int)(i * 7 + 1), 256);
    memcpy(p, &i, sizeof i);
}

static bool intact(const char *p, size_t i)
{
    size_t j;
    memcpy(&j, p, sizeof j);
    return j == i && (unsigned char)p[255] == (unsigned char)(i * 7 + 1);
}

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            v = atol(line + 6);
    if (f)
        fclose(f);
    return v;
}

/* Every alias and every span it is meshed onto lies in the file. */
static bool aliases_in_file(unsigned *naliases)
{
    bool ok = true;
    *naliases = 0;
    pthread_mutex_lock(&mesh_arena.lock);
    for (uint32_t id = 1; id < mesh_arena.nrecords; id++) {
        mesh_miniheap_t *mh = &mesh_arena.records[id];
        if (mh->kind != MESH_KIND_ALIAS)
            continue;
        (*naliases)++;
        ok &= mesh_arena_span_in_file(mh) && mesh_arena_span_in_file(mesh_alias_head(mh));
    }
    pthread_mutex_unlock(&mesh_arena.lock);
    return ok;
}

static void test_file_stops_at_limit(void)
{
    for (size_t i = 0; i < N; i++) {
        obj[i] = malloc(256);
        fill(obj[i], i);
    }
    struct stat st;
    CHECK(fstat(mesh_arena.fd, &st) == 0 && (uint64_t)st.st_size <= LIMIT);
    CHECK((uint64_t)mesh_arena.file_pages << MESH_PAGE_SHIFT == (uint64_t)st.st_size);
    CHECK(mesh_arena.file_full);
    CHECK(mesh_arena.frontier > mesh_arena.file_pages + (32U << 20 >> MESH_PAGE_SHIFT));
}

/* Three objects in four freed: spans on both sides of the border are
 * meshable by their bitmaps, only those in the file may be meshed. */
static void test_mesh_only_in_file(void)
{
    for (size_t i = 0; i < N; i++)
        if ((i * 2654435761u >> 7) % 4 != 0) {
            free(obj[i]);
            obj[i] = NULL;
        }
    size_t len = sizeof(uint64_t);
    uint64_t pairs = 0;
    CHECK(mesh_mallctl("mesh.compact", &pairs, &len, NULL, 0) == 0);
    unsigned naliases;
    CHECK(aliases_in_file(&naliases));
    CHECK(pairs > 0 && naliases > 0); /* the file part was meshed */
    bool ok = true;
    for (size_t i = 0; i < N; i++)
        if (obj[i])
            ok &= intact(obj[i], i);
    CHECK(ok);
    mesh_global_check();
}

static void test_fork_both_sides(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        bool ok = true;
        for (size_t i = 0; i < N; i++)
            if (obj[i]) {
                ok &= intact(obj[i], i);
                memset(obj[i], 0, 256);
            }
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    bool ok = true;
    for (size_t i = 0; i < N; i++)
        if (obj[i])
            ok &= intact(obj[i], i);
    CHECK(ok); /* the child's writes stayed in the child */
}

/* Pages past the file go back with MADV_DONTNEED: a punch there would
 * leave them in place. */
static void test_trim_past_file(void)
{
    long before = rss_kb();
    for (size_t i = 0; i < N; i++)
        free(obj[i]);
    malloc_trim(0);
    long after = rss_kb();
    fprintf(stderr, "VmRSS %ld kB -> %ld kB\n", before, after);
    CHECK(after < before - 8 * 1024);
    mesh_global_check();
}

int main(void)
{
    struct rlimit rl = {LIMIT, LIMIT};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0 || mesh_arena.file_pages > (LIMIT >> MESH_PAGE_SHIFT)) {
        fprintf(stderr, "cannot set the limit below the arena file\n");
        return 1;
    }
    signal(SIGXFSZ, SIG_DFL); /* a SIGXFSZ kills the test */
    TEST_RUN(test_file_stops_at_limit);
    TEST_RUN(test_mesh_only_in_file);
    TEST_RUN(test_fork_both_sides);
    TEST_RUN(test_trim_past_file);
    TEST_DONE();
}
