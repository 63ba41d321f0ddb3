/*
 * Dissolved chains: when a chain's last object is freed, its aliases keep
 * the head's mappings as stale free spans instead of a system call each.
 * Nothing is handed out of a stale span; the heap grows back into stale
 * spans (restoring each one's own mapping) before it takes new pages;
 * malloc_trim restores them all; a fork child starts without any; and
 * meshing at its mapping budget restores some to go on.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

/* The file offset the kernel maps addr to, from /proc/self/maps, or -1. */
static int64_t file_offset_of(const void *addr)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[512];
    int64_t off = -1;
    uintptr_t a = (uintptr_t)addr;
    while (off < 0 && fgets(line, sizeof line, f)) {
        unsigned long start, end, pgoff;
        if (sscanf(line, "%lx-%lx %*s %lx", &start, &end, &pgoff) == 3 && a >= start && a < end)
            off = (int64_t)(pgoff + (a - start));
    }
    fclose(f);
    return off;
}

static int64_t identity_offset(const void *addr)
{
    return (int64_t)((const char *)addr - mesh_arena.base);
}

#define MAX_ALIASES 64

typedef struct meshed {
    frag_t f;
    uint64_t meshes;
    char *alias[MAX_ALIASES]; /* the first byte of each alias span found */
    char *head[MAX_ALIASES];  /* and of its head */
    unsigned naliases;
} meshed_t;

/* Fragments spans of 896-byte objects and meshes them; notes the aliases
 * the kept objects lie in. */
static void mesh_some(meshed_t *m)
{
    memset(m, 0, sizeof *m);
    m->f = (frag_t){.size = 896, .groups = 2, .max_spans = 8};
    fragment(&m->f);
    uint64_t meshes0 = ctl("stats.mesh_count");
    ctl("mesh.compact");
    m->meshes = ctl("stats.mesh_count") - meshes0;
    for (size_t i = 0; i < m->f.nkept && m->naliases < MAX_ALIASES; i++) {
        mesh_miniheap_t *a = mesh_arena_lookup(m->f.kept[i]);
        if (a->kind != MESH_KIND_ALIAS)
            continue;
        char *start = mesh_mh_start(a);
        unsigned k;
        for (k = 0; k < m->naliases && m->alias[k] != start; k++)
            ;
        if (k < m->naliases)
            continue;
        m->alias[m->naliases] = start;
        m->head[m->naliases++] = mesh_mh_start(mesh_alias_head(a));
    }
}

static bool is_stale(const char *start)
{
    const mesh_miniheap_t *r = mesh_arena_lookup(start);
    return r && r->kind == MESH_KIND_FREE && r->state == MESH_MH_FREE_STALE && mesh_mh_start(r) == start;
}

/* The last free of each chain leaves its aliases stale, mapped as they
 * were, with no system call: no alias is restored. */
static void test_chain_leaves_stale_spans(void)
{
    meshed_t m;
    mesh_some(&m);
    CHECK(m.meshes >= 1 && m.naliases >= 1);
    for (unsigned k = 0; k < m.naliases; k++)
        CHECK_EQ(file_offset_of(m.alias[k]), identity_offset(m.head[k]));
    uint64_t unmesh0 = atomic_load(&mesh_stats.unmesh_count);
    uint64_t stale0 = atomic_load(&mesh_stats.stale_pages);
    free_all(&m.f);
    CHECK_EQ(atomic_load(&mesh_stats.unmesh_count), unmesh0);
    CHECK_EQ(atomic_load(&mesh_stats.stale_pages) - stale0, m.meshes * mesh_classes[mesh_size_class(896)].npages);
    for (unsigned k = 0; k < m.naliases; k++) {
        CHECK(is_stale(m.alias[k]));
        CHECK_EQ(file_offset_of(m.alias[k]), identity_offset(m.head[k]));
    }
    mesh_global_check();
    malloc_trim(0);
}

/* A freed pointer into a stale span is reported as a double free. */
static void test_free_into_stale_span(void)
{
    meshed_t m;
    mesh_some(&m);
    CHECK(m.naliases >= 1);
    void *p = NULL;
    for (size_t i = 0; i < m.f.nkept && !p; i++)
        if (mesh_arena_lookup(m.f.kept[i])->kind == MESH_KIND_ALIAS)
            p = m.f.kept[i];
    free_all(&m.f);
    CHECK(p && is_stale(mesh_mh_start(mesh_arena_lookup(p))));
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
        free(p);
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    malloc_trim(0);
}

/* Once nothing free fits, the heap takes stale spans back (each with its
 * own mapping again) before it grows: every live span maps its own pages,
 * and what is written into the new objects stays apart. */
static void test_heap_grows_back_into_stale_spans(void)
{
    meshed_t m;
    mesh_some(&m);
    free_all(&m.f);
    uint64_t stale = atomic_load(&mesh_stats.stale_pages), unmesh0 = atomic_load(&mesh_stats.unmesh_count);
    CHECK(stale > 0);
    enum { N = 40000 };
    static char *objs[N];
    size_t n = 0;
    while (n < N && atomic_load(&mesh_stats.stale_pages) > 0)
        objs[n++] = malloc(896);
    CHECK_EQ(atomic_load(&mesh_stats.stale_pages), 0);
    CHECK(atomic_load(&mesh_stats.unmesh_count) > unmesh0);
    for (size_t i = 0; i < n; i++)
        fill(objs[i], 896, i);
    int apart = 1, own = 1;
    for (size_t i = 0; i < n; i++) {
        apart &= intact(objs[i], 896, i);
        if (mesh_arena_lookup(objs[i])->kind == MESH_KIND_SMALL && i % 64 == 0)
            own &= file_offset_of(objs[i]) == identity_offset(objs[i]);
    }
    CHECK(apart);
    CHECK(own);
    for (unsigned k = 0; k < m.naliases; k++)
        CHECK_EQ(file_offset_of(m.alias[k]), identity_offset(m.alias[k]));
    for (size_t i = 0; i < n; i++)
        free(objs[i]);
    mesh_global_check();
    malloc_trim(0);
}

/* malloc_trim restores every stale span; a fork child has none. */
static void test_trim_and_fork_restore(void)
{
    meshed_t m;
    mesh_some(&m);
    free_all(&m.f);
    CHECK(atomic_load(&mesh_stats.stale_pages) > 0);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = atomic_load(&mesh_stats.stale_pages) == 0;
        for (unsigned k = 0; k < m.naliases; k++)
            ok &= file_offset_of(m.alias[k]) == identity_offset(m.alias[k]);
        char *p = malloc(896);
        fill(p, 896, 7);
        ok &= intact(p, 896, 7);
        free(p);
        mesh_global_check();
        _exit(ok ? 0 : 1);
    }
    int status;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    uint64_t unmesh0 = atomic_load(&mesh_stats.unmesh_count);
    uint64_t stale = atomic_load(&mesh_stats.stale_pages);
    malloc_trim(0);
    CHECK_EQ(atomic_load(&mesh_stats.stale_pages), 0);
    CHECK_EQ(atomic_load(&mesh_stats.unmesh_count) - unmesh0, stale / mesh_classes[mesh_size_class(896)].npages);
    for (unsigned k = 0; k < m.naliases; k++) {
        CHECK(!is_stale(m.alias[k]));
        CHECK_EQ(file_offset_of(m.alias[k]), identity_offset(m.alias[k]));
    }
    mesh_global_check();
}

/* Under a small mapping budget, the chains of each round dissolve and
 * leave their mappings with their stale spans.  The spans of the next
 * rounds come from free pages (an 8 MiB block freed first), so nothing
 * takes the stale spans back but meshing, which restores some when it
 * reaches the budget and goes on meshing, round after round (how many
 * mappings a round keeps varies: runs of neighbours merge). */
static int child_budget_rounds(void)
{
    enum { ROUNDS = 6 };
    free(malloc(8 << 20));
    int good = 1, rounds_meshed = 0;
    uint64_t unmesh0 = atomic_load(&mesh_stats.unmesh_count);
    for (int round = 0; round < ROUNDS; round++) {
        meshed_t m;
        mesh_some(&m);
        good &= all_intact(&m.f);
        rounds_meshed += m.meshes > 0;
        free_all(&m.f);
    }
    uint64_t restored = atomic_load(&mesh_stats.unmesh_count) - unmesh0;
    fprintf(stderr, "  budget: %d of %d rounds meshed, %llu stale spans restored, %llu mappings, %llu stale pages\n",
            rounds_meshed, ROUNDS, (unsigned long long)restored, (unsigned long long)mesh_maps_in_use(),
            (unsigned long long)atomic_load(&mesh_stats.stale_pages));
    return good && rounds_meshed == ROUNDS && restored > 0 && mesh_maps_in_use() <= 8 ? 0 : 1;
}

static void test_budget_restores_stale_spans(void)
{
    CHECK_EQ(run_self("budget-rounds", "MESH_MAX_MAPS=8"), 0);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "budget-rounds") == 0)
        return child_budget_rounds();
    free(malloc(1));
    TEST_RUN(test_chain_leaves_stale_spans);
    TEST_RUN(test_free_into_stale_span);
    TEST_RUN(test_heap_grows_back_into_stale_spans);
    TEST_RUN(test_trim_and_fork_restore);
    TEST_RUN(test_budget_restores_stale_spans);
    TEST_DONE();
}
