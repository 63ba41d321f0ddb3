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

static void put_col(mesh_buf_t *b, uint64_t v, unsigned width)
{
    char tmp[24];
    mesh_buf_t t = {tmp, 0, sizeof tmp};
    mesh_buf_u64(&t, v);
    for (size_t i = t.len; i < width; i++)
        mesh_buf_str(b, " ");
    mesh_buf_str(b, tmp);
}

/* MALLOCSTATS=2: one line per size class in use. */
static void print_classes(mesh_buf_t *b)
{
    uint64_t spans[MESH_NUM_CLASSES] = {0}, live[MESH_NUM_CLASSES] = {0};
    uint64_t attached[MESH_NUM_CLASSES] = {0}, full[MESH_NUM_CLASSES] = {0};
    uint64_t partial[MESH_NUM_CLASSES] = {0}, empty[MESH_NUM_CLASSES] = {0};
    uint64_t aliases[MESH_NUM_CLASSES] = {0};
    uint64_t large = 0, large_pages = 0;
    mesh_arena_lock();
    uint32_t n = mesh_arena.nrecords;
    pthread_mutex_unlock(&mesh_arena.lock);
    for (uint32_t id = 1; id < n; id++) {
        mesh_miniheap_t *mh = mesh_rec(id);
        if (mh->kind == MESH_KIND_LARGE) {
            large++;
            large_pages += mh->npages;
        }
        if (mh->kind == MESH_KIND_ALIAS)
            aliases[mh->cls]++;
        if (mh->kind != MESH_KIND_SMALL)
            continue;
        unsigned c = mh->cls;
        spans[c]++;
        live[c] += mesh_mh_live(mh);
        attached[c] += mh->state == MESH_MH_ATTACHED;
        full[c] += mh->state == MESH_MH_FULL;
        partial[c] += mesh_state_is_partial(mh->state);
        empty[c] += mh->state == MESH_MH_EMPTY;
    }
    mesh_buf_str(b, "-- size classes --\n"
                    " class  pages objs   spans  live objs occupancy%  attached    full partial   empty  "
                    "meshed  meshes\n");
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        if (!spans[c] && !aliases[c])
            continue;
        const mesh_size_class_t *sc = &mesh_classes[c];
        put_col(b, sc->object_size, 6);
        put_col(b, sc->npages, 7);
        put_col(b, sc->nobjects, 5);
        put_col(b, spans[c], 8);
        put_col(b, live[c], 11);
        put_col(b, spans[c] ? live[c] * 100 / (spans[c] * sc->nobjects) : 0, 11);
        put_col(b, attached[c], 10);
        put_col(b, full[c], 8);
        put_col(b, partial[c], 8);
        put_col(b, empty[c], 8);
        put_col(b, aliases[c], 8);
        put_col(b, mesh_class_heaps[c].meshes, 8);
        mesh_buf_str(b, "\n");
        flush(b);
    }
    mesh_buf_str(b, "large objects: ");
    mesh_buf_u64(b, large);
    mesh_buf_str(b, " in ");
    mesh_buf_fixed1(b, large_pages * MESH_PAGE_SIZE, 1024 * 1024);
    mesh_buf_str(b, " MB; arena resident: ");
    mesh_buf_fixed1(b, mesh_arena_resident_bytes(), 1024 * 1024);
    mesh_buf_str(b, " MB\n");
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
    print_classes(&b);
    flush(&b);
}
