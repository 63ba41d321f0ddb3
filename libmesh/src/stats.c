/*
 * Statistics: counters declared once in internal.h (MESH_STATS), printed at
 * exit with MALLOCSTATS=1 in the original Mesh's format (plus a line when
 * the arena has no file and nothing was meshed), and with every
 * counter and per-class occupancy added at MALLOCSTATS=2.
 */
#include "internal.h"

mesh_stats_t mesh_stats;

void mesh_stat_max(_Atomic uint64_t *hwm, uint64_t value)
{
    uint64_t cur = atomic_load_explicit(hwm, memory_order_relaxed);
    while (value > cur && !atomic_compare_exchange_weak_explicit(hwm, &cur, value, memory_order_relaxed,
                                                                 memory_order_relaxed))
        ;
}

static uint64_t get(_Atomic uint64_t *v)
{
    return atomic_load_explicit(v, memory_order_relaxed);
}

static void line_u64(mesh_buf_t *b, const char *label, uint64_t v)
{
    mesh_buf_str(b, label);
    mesh_buf_str(b, ": ");
    mesh_buf_u64(b, v);
    mesh_buf_str(b, "\n");
}

static void line_mb(mesh_buf_t *b, const char *label, uint64_t pages)
{
    mesh_buf_str(b, label);
    mesh_buf_str(b, ": ");
    mesh_buf_fixed1(b, pages * MESH_PAGE_SIZE, 1024 * 1024);
    mesh_buf_str(b, "\n");
}

static void flush(mesh_buf_t *b)
{
    mesh_os_write_stderr(b->p, b->len);
    b->len = 0;
}

void mesh_stats_print(int level)
{
    char buf[4096];
    mesh_buf_t b = {buf, 0, sizeof buf};

    /* The seven lines of the original, in its order and format. */
    line_u64(&b, "MESH COUNT", get(&mesh_stats.mesh_count));
    line_mb(&b, "Meshed MB (total)", get(&mesh_stats.meshed_pages_total));
    line_u64(&b, "Meshed pages HWM", get(&mesh_stats.meshed_pages_hwm));
    line_mb(&b, "Meshed MB HWM", get(&mesh_stats.meshed_pages_hwm));
    line_u64(&b, "MH Alloc Count", get(&mesh_stats.mh_alloc_count));
    line_u64(&b, "MH Free Count", get(&mesh_stats.mh_free_count));
    line_u64(&b, "MH High Water Mark", get(&mesh_stats.mh_hwm));
    if (mesh_arena.no_file) {
        /* One line more, only when there was nothing to mesh with. */
        mesh_buf_str(&b, "Meshing off: ");
        mesh_buf_str(&b, mesh_arena.no_file);
        mesh_buf_str(&b, ", the heap is private memory\n");
    }
    flush(&b);
    if (level < 2)
        return;

    mesh_buf_str(&b, "-- counters --\n");
#define MESH_STAT_PRINT(name, doc)              \
    mesh_buf_str(&b, #name " (" doc ")");       \
    mesh_buf_str(&b, ": ");                     \
    mesh_buf_u64(&b, get(&mesh_stats.name));    \
    mesh_buf_str(&b, "\n");
    MESH_STATS(MESH_STAT_PRINT)
#undef MESH_STAT_PRINT
    flush(&b);
    mesh_global_print_classes(&b, flush);
    flush(&b);
}
