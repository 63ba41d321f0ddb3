/*
 * Mesh passes: what they mesh and when.  Trimming (the unused pages of
 * partial spans given back without meshing); classes that found nothing
 * sit out passes; exact matching; runs of neighbours meshed in one go;
 * dense spans; one-page aliases mapped in by the mesh itself
 * (MESH_POPULATE_MESHED); the mapping budget; meshing off.  The mesh
 * primitive itself is tested in test_mesh.c.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "meshing.h"
#include "test.h"

/* ---- the mapping budget ---- */

static int child_low_budget(void)
{
    pthread_t t;
    pthread_create(&t, NULL, alloc_sparse, NULL);
    pthread_join(t, NULL);
    for (int i = 0; i < WOBJ; i++)
        fill(wobj[i], 256, (uint64_t)i);
    for (int i = 0; i < 5; i++)
        ctl("mesh.compact");
    int good = 1;
    for (int i = 0; i < WOBJ; i++)
        good &= intact(wobj[i], 256, (uint64_t)i);
    /* Allocation goes on past the limit. */
    for (int i = 0; i < 100000; i++)
        free(malloc((size_t)(i % 2000) + 1));
    uint64_t meshes = ctl("stats.mesh_count");
    fprintf(stderr, "  low budget: %llu meshes, %llu mappings, limited %llu times\n",
            (unsigned long long)meshes, (unsigned long long)mesh_maps_in_use(),
            (unsigned long long)atomic_load(&mesh_stats.mesh_map_limited));
    return good && meshes > 0 && mesh_maps_in_use() <= 40 && atomic_load(&mesh_stats.mesh_map_limited) > 0 ? 0 : 1;
}

static void test_low_mapping_budget(void)
{
    CHECK_EQ(run_self("low-budget", "MESH_MAX_MAPS=40"), 0);
}

/* Freed objects that leave whole pages of a partial span unused give
 * those pages back (mesh.scavenge, and every period), without meshing: a
 * 4 KiB object has a page to itself.  What is kept stays intact, and the
 * freed slots work again when they are handed out. */
static void test_trim(void)
{
    ctl("mesh.scavenge");
    uint64_t before = file_bytes();
    frag_t f = {.size = 4000, .groups = 4, .max_spans = 8};
    fragment(&f);                      /* 2 of 8 objects kept per span */
    CHECK_EQ(f.nkept, 16);
    ctl("mesh.scavenge");
    uint64_t after = file_bytes();
    /* 8 spans of 8 pages each, of which 16 pages hold the kept objects. */
    CHECK(after < before + 32 * 4096);
    CHECK(all_intact(&f));
    void *more[64];
    for (int i = 0; i < 64; i++) {
        more[i] = malloc(4000);
        fill(more[i], 4000, (uint64_t)i);
    }
    for (int i = 0; i < 64; i++) {
        CHECK(intact(more[i], 4000, (uint64_t)i));
        free(more[i]);
    }
    CHECK(all_intact(&f));
    free_all(&f);
}

/* The numbers say what trim and meshing did to the file: pages trim gives
 * back leave stats.active, and a mesh of trimmed spans counts as released
 * only the pages it really gave back (src's pages still there, less dst's
 * trimmed pages that src's objects now land on).  A 2 KiB span has 8 slots
 * on 4 pages, 2 to a page: even-ranked spans keep slots 0 and 4 (pages 0
 * and 2); odd-ranked ones keep slots odd_slot and odd_slot + 4. */
static unsigned odd_slot;

static bool keep_trimmed(unsigned rank, unsigned slot)
{
    unsigned first = rank % 2 ? odd_slot : 0;
    return slot == first || slot == first + 4;
}

static void trim_then_mesh(unsigned slot, uint64_t pages_per_mesh, uint64_t want_meshes)
{
    odd_slot = slot;
    ctl("mesh.scavenge");
    frag_t f = {.size = 2048, .max_spans = 8, .keep = keep_trimmed};
    fragment(&f);
    CHECK_EQ(f.nkept, 16);
    mesh_global_release_empty();
    uint64_t active0 = ctl("stats.active"), trimmed0 = atomic_load(&mesh_stats.trimmed_now);
    CHECK(mesh_trim(0) >= 8 * 2);
    uint64_t trimmed1 = atomic_load(&mesh_stats.trimmed_now);
    CHECK(trimmed1 >= trimmed0 + 8 * 2);
    CHECK_EQ(active0 - ctl("stats.active"), (trimmed1 - trimmed0) * 4096);
    CHECK(all_intact(&f));

    uint64_t file0 = file_bytes(), total0 = atomic_load(&mesh_stats.meshed_pages_total);
    uint64_t meshes0 = atomic_load(&mesh_stats.mesh_count);
    mesh_pass(true, 1000000000ULL);
    uint64_t meshes = atomic_load(&mesh_stats.mesh_count) - meshes0;
    uint64_t file1 = file_bytes(), total1 = atomic_load(&mesh_stats.meshed_pages_total);
    CHECK_EQ(meshes, want_meshes);
    CHECK_EQ(total1 - total0, meshes * pages_per_mesh);
    CHECK_EQ(file0 - file1, (total1 - total0) * 4096);
    CHECK(all_intact(&f));

    /* Spans that go back to the arena take their count with them. */
    free_all(&f);
    mesh_global_release_empty();
    CHECK(atomic_load(&mesh_stats.trimmed_now) <= trimmed0);
}

static void test_trim_accounting(void)
{
    CHECK_EQ(mesh_classes[mesh_size_class(2048)].npages, 4);
    CHECK_EQ(mesh_classes[mesh_size_class(2048)].nobjects, 8);
    /* No periodic pass may mesh or trim the spans before the test does. */
    uint64_t period = mesh_opt.period_ms;
    mesh_opt.period_ms = 3600000;
    /* Odd spans on pages 0 and 2 as well: each even span meshes with an
     * odd one, giving back src's two pages. */
    trim_then_mesh(1, 2, 4);
    /* Odd spans on pages 1 and 3: src's objects would land on dst's
     * trimmed pages and bring them back; such meshes gain nothing and are
     * not made. */
    uint64_t no_gain = atomic_load(&mesh_stats.mesh_no_gain);
    trim_then_mesh(2, 0, 0);
    CHECK(atomic_load(&mesh_stats.mesh_no_gain) >= no_gain + 4);
    mesh_opt.period_ms = period;
}

/* A class whose spans cannot mesh (every span keeps its first four
 * slots) sits out passes once a sweep has found nothing, for longer than
 * the 1, 2, 4, 8 passes of a class that keeps changing while nothing is
 * freed into it; frees bring it back at the next pass. */
static bool keep_first_four(unsigned rank, unsigned slot)
{
    (void)rank;
    return slot < 4;
}

static void test_idle_class_sits_out(void)
{
    unsigned cls = mesh_size_class(512);
    mesh_class_heap_t *ch = &mesh_class_heaps[cls];
    CHECK_EQ(mesh_classes[cls].nobjects, 8);
    uint64_t period = mesh_opt.period_ms;
    mesh_opt.period_ms = 3600000;
    frag_t f = {.size = 512, .max_spans = 48, .keep = keep_first_four};
    fragment(&f);
    CHECK_EQ(f.nkept, 48 * 4);
    uint64_t meshes = ch->meshes;
    for (int i = 0; i < 8 && !ch->fruitless_runs; i++)
        mesh_pass(false, 100000000ULL);
    CHECK(ch->fruitless_runs > 0);
    /* Nothing freed since: twenty passes, none searches the class. */
    uint64_t slices = ch->slices;
    for (int i = 0; i < 20; i++)
        mesh_pass(false, 100000000ULL);
    CHECK_EQ(ch->slices, slices);
    CHECK_EQ(ch->meshes, meshes);

    /* Half of what each span keeps is freed (96 frees): still no pair,
     * but the class is swept again. */
    for (size_t i = 0; i < f.nkept; i++) {
        if (slot_of(f.kept[i]) < 2) {
            free(f.kept[i]);
            f.kept[i] = f.kept[--f.nkept];
            i--;
        }
    }
    CHECK_EQ(f.nkept, 48 * 2);
    mesh_pass(false, 100000000ULL);
    CHECK(ch->slices > slices);
    CHECK(all_intact(&f));
    free_all(&f);
    mesh_opt.period_ms = period;
}

/* Spans 2p and 2p + 1 keep complementary random halves of their 16 slots:
 * each span has exactly one partner among the 64, which random probing
 * finds only when the two fall into different halves of the split. */
static uint16_t half_masks[32];

static bool keep_complement(unsigned rank, unsigned slot)
{
    uint16_t m = half_masks[rank / 2];
    return ((rank % 2 ? ~m : m) >> slot) & 1;
}

static void test_exact_matching(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ULL;
    for (int p = 0; p < 32; p++) {
        uint16_t m = 0;
        while (mesh_popcount64(m) < 8) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            m |= (uint16_t)(1u << (x % 16));
        }
        half_masks[p] = m;
    }
    CHECK_EQ(mesh_classes[mesh_size_class(256)].nobjects, 16);
    frag_t f = {.size = 256, .max_spans = 64, .keep = keep_complement};
    fragment(&f);
    CHECK_EQ(f.nkept, 64 * 8);
    mesh_class_heap_t *ch = &mesh_class_heaps[mesh_size_class(256)];
    uint64_t before = ch->meshes;
    mesh_pass(true, 1000000000ULL); /* one pass, time enough */
    CHECK(ch->meshes - before >= 32);   /* (spans left by other tests may mesh too) */
    CHECK(all_intact(&f));
    free_all(&f);
}

/* Mappings in the arena, from /proc/self/maps. */
static unsigned arena_mappings(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    unsigned n = 0;
    uintptr_t lo = (uintptr_t)mesh_arena.base, hi = lo + mesh_arena.bytes;
    while (f && fgets(line, sizeof line, f)) {
        uintptr_t a, b;
        if (sscanf(line, "%lx-%lx", &a, &b) == 2 && a < hi && b > lo)
            n++;
    }
    if (f)
        fclose(f);
    return n;
}

static bool keep_halves(unsigned rank, unsigned slot)
{
    return rank < 32 ? slot < 8 : slot >= 8;
}

static int by_page(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Neighbouring spans meshed onto neighbouring spans make one mapping: 32
 * spans keeping their first 8 slots and 32 keeping their last 8 mesh in
 * runs, and the kernel keeps a few mappings for them, not one or two for
 * each mesh (left to chance, 32 meshes here cost 45-64 mappings).  In a
 * fresh process, so that the spans come out next to each other; the bound
 * allows for those that do not (each gap may start a run), and for a run
 * the shuffled candidates break in two (one run in about 150 added 9). */
static int child_mesh_runs(void)
{
    frag_t f = {.size = 256, .max_spans = 64, .keep = keep_halves};
    fragment(&f);
    uint32_t pages[64], n = 0, gaps = 0;
    for (size_t i = 0; i < f.nkept; i++) {
        uint32_t page = mesh_arena_lookup(f.kept[i])->span_page, k;
        for (k = 0; k < n && pages[k] != page; k++)
            ;
        if (k == n && n < 64)
            pages[n++] = page;
    }
    qsort(pages, n, sizeof *pages, by_page);
    for (uint32_t k = 1; k < n; k++)
        gaps += pages[k] != pages[k - 1] + 1;
    mesh_class_heap_t *ch = &mesh_class_heaps[mesh_size_class(256)];
    unsigned maps_before = arena_mappings();
    mesh_pass(true, 1000000000ULL);
    unsigned added = arena_mappings() - maps_before;
    bool ok = f.nkept == 64 * 8 && n == 64 && ch->meshes >= 32 && all_intact(&f) && gaps <= 2 &&
              added <= 12 + 4 * gaps;
    if (!ok)
        fprintf(stderr, "  %zu objects kept in %u spans (%u gaps); %u mappings added for %u meshes\n", f.nkept, n,
                gaps, added, (unsigned)ch->meshes);
    free_all(&f);
    return ok ? 0 : 1;
}

static void test_mesh_runs(void)
{
    CHECK_EQ(run_self("mesh-runs", NULL), 0);
}

static bool keep_dense_or_last(unsigned rank, unsigned slot)
{
    return rank < 16 ? slot < 14 : slot >= 14;
}

/* Spans fuller than the cut-off still take sparse spans that fit their
 * free slots, once a sweep below the cut-off found nothing: 16 spans with
 * 14 of 16 slots taken and 16 with the other 2 (which cannot mesh with
 * each other) make 16 meshes in two forced passes. */
static int child_dense_spans(void)
{
    frag_t f = {.size = 256, .max_spans = 32, .keep = keep_dense_or_last};
    fragment(&f);
    mesh_class_heap_t *ch = &mesh_class_heaps[mesh_size_class(256)];
    mesh_pass(true, 1000000000ULL);
    uint64_t first = ch->meshes;
    mesh_pass(true, 1000000000ULL);
    bool ok = f.nkept == 16 * 16 && first == 0 && ch->meshes == 16 && all_intact(&f);
    if (!ok)
        fprintf(stderr, "  %zu objects kept; %u meshes in the first pass, %u in both\n", f.nkept, (unsigned)first,
                (unsigned)ch->meshes);
    free_all(&f);
    return ok ? 0 : 1;
}

static void test_dense_spans(void)
{
    CHECK_EQ(run_self("dense-spans", NULL), 0);
}

/* Whether the page at p is mapped in this process's page table (bit 63 of
 * its /proc/self/pagemap entry), without touching it. */
static bool page_present(const void *p)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    uint64_t entry = 0;
    off_t at = (off_t)((uintptr_t)p / MESH_PAGE_SIZE * sizeof entry);
    bool ok = fd >= 0 && pread(fd, &entry, sizeof entry, at) == (ssize_t)sizeof entry;
    if (fd >= 0)
        close(fd);
    return ok && (entry >> 63) & 1;
}

/* With MESH_POPULATE_MESHED=1 a mesh of one-page spans leaves the alias
 * mapped in (the first touch of a moved object takes no page fault), and
 * without it the alias waits for a fault.  Populating may not allocate:
 * the file still gives back a page a mesh. */
static int child_remap_populated(void)
{
    frag_t f = {.size = 256, .groups = 2, .max_spans = 16};
    fragment(&f);
    uint64_t meshes0 = ctl("stats.mesh_count"), file0 = file_bytes();
    ctl("mesh.compact");
    uint64_t meshes = ctl("stats.mesh_count") - meshes0;
    size_t aliases = 0, present = 0;
    for (size_t i = 0; i < f.nkept; i++)
        if (mesh_arena_lookup(f.kept[i])->kind == MESH_KIND_ALIAS) {
            aliases++;
            present += page_present(f.kept[i]);
        }
    bool want = mesh_opt.populate_meshed;
    bool ok = mesh_classes[mesh_size_class(f.size)].npages == 1 && meshes >= 1 &&
              file0 - file_bytes() >= meshes * MESH_PAGE_SIZE && aliases >= 1 &&
              present == (want ? aliases : 0) && all_intact(&f);
    if (!ok)
        fprintf(stderr, "  populate %d: %llu meshes, %zu objects on aliases, %zu on mapped pages\n", (int)want,
                (unsigned long long)meshes, aliases, present);
    free_all(&f);
    mesh_global_check();
    return ok ? 0 : 1;
}

static void test_remap_populated(void)
{
    CHECK_EQ(run_self("remap-populated", "MESH_POPULATE_MESHED=1"), 0);
    CHECK_EQ(run_self("remap-populated", NULL), 0);
}

static int child_no_meshing(void)
{
    frag_t f = {.size = 896, .groups = 2, .max_spans = 8};
    fragment(&f);
    ctl("mesh.compact");
    return ctl("stats.mesh_count") == 0 && all_intact(&f) ? 0 : 1;
}

static void test_meshing_off(void)
{
    CHECK_EQ(run_self("no-meshing", "MESH_MESHING=0"), 0);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "low-budget") == 0)
        return child_low_budget();
    if (argc == 2 && strcmp(argv[1], "mesh-runs") == 0)
        return child_mesh_runs();
    if (argc == 2 && strcmp(argv[1], "dense-spans") == 0)
        return child_dense_spans();
    if (argc == 2 && strcmp(argv[1], "no-meshing") == 0)
        return child_no_meshing();
    if (argc == 2 && strcmp(argv[1], "remap-populated") == 0)
        return child_remap_populated();
    free(malloc(1));
    TEST_RUN(test_trim);
    TEST_RUN(test_trim_accounting);
    TEST_RUN(test_idle_class_sits_out);
    TEST_RUN(test_exact_matching);
    TEST_RUN(test_mesh_runs);
    TEST_RUN(test_dense_spans);
    TEST_RUN(test_remap_populated);
    TEST_RUN(test_low_mapping_budget);
    TEST_RUN(test_meshing_off);
    TEST_DONE();
}
