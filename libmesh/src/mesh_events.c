/*
 * MESH_EVENTS=path: one JSON line per mesh pass, appended to path (written
 * with write(2) from a stack buffer, never through the heap): when it
 * began and how long it took, the pairs meshed per class, bytes given
 * back, the longest write-protect pause and a histogram of pauses, the
 * longest waits of program threads for the barrier and for a class lock,
 * the mappings used and the budget, and why the pass stopped.  The path
 * is an option (options.c, read at start-up); the file is opened when the
 * first pass ends, so a program that never meshes creates none.
 */
#define _GNU_SOURCE
#include "internal.h"
#include "mesher.h"

#define M mesh_mesher

const uint32_t mesh_pause_bounds_us[MESH_PAUSE_BUCKETS - 1] = {10, 20, 50, 100, 200, 500, 1000, 2000, 5000};

void mesh_log_event(uint64_t t0, uint64_t t1, const pass_result_t *res, uint64_t released, enum pass_kind kind)
{
    if (!M.events_opened) {
        M.events_opened = true;
        if (mesh_opt.events[0] && mesh_os_open_append(mesh_opt.events, &M.events_fd) == 0)
            mesh_os_dup_high(M.events_fd, &M.events_fd);
    }
    if (M.events_fd < 0)
        return;
    char buf[2048];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "{\"t\": ");
    uint64_t us = (t0 - M.start_ns) / 1000;
    mesh_buf_u64(&b, us / 1000000);
    mesh_buf_str(&b, ".");
    char frac[7];
    for (int i = 5; i >= 0; i--, us /= 10)
        frac[i] = (char)('0' + us % 10);
    frac[6] = 0;
    mesh_buf_str(&b, frac);
    mesh_buf_str(&b, ", \"duration_us\": ");
    mesh_buf_u64(&b, (t1 - t0) / 1000);
    mesh_buf_str(&b, ", \"pairs\": {");
    bool first = true;
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        if (!res->pairs[c])
            continue;
        mesh_buf_str(&b, first ? "\"" : ", \"");
        mesh_buf_u64(&b, mesh_classes[c].object_size);
        mesh_buf_str(&b, "\": ");
        mesh_buf_u64(&b, res->pairs[c]);
        first = false;
    }
    mesh_buf_str(&b, "}, \"meshes\": ");
    mesh_buf_u64(&b, res->npairs);
    mesh_buf_str(&b, ", \"bytes_released\": ");
    mesh_buf_u64(&b, released);
    mesh_buf_str(&b, ", \"max_pause_us\": ");
    mesh_buf_u64(&b, res->max_pause_ns / 1000);
    /* The longest any thread waited, since the last event, for a write the
     * barrier held and for a class lock. */
    mesh_buf_str(&b, ", \"max_barrier_wait_us\": ");
    mesh_buf_u64(&b, atomic_exchange(&mesh_stall_barrier_ns, 0) / 1000);
    mesh_buf_str(&b, ", \"max_lock_wait_us\": ");
    mesh_buf_u64(&b, atomic_exchange(&mesh_stall_lock_ns, 0) / 1000);
    /* and the longest scavenge, which holds the arena lock (every span
     * taken or freed waits for it), and the longest wait for that lock */
    mesh_buf_str(&b, ", \"max_scavenge_us\": ");
    mesh_buf_u64(&b, atomic_exchange(&mesh_stall_scavenge_ns, 0) / 1000);
    mesh_buf_str(&b, ", \"max_arena_wait_us\": ");
    mesh_buf_u64(&b, atomic_exchange(&mesh_stall_arena_ns, 0) / 1000);
    mesh_buf_str(&b, ", \"pause_us_hist\": {");
    for (unsigned k = 0; k < MESH_PAUSE_BUCKETS; k++) {
        mesh_buf_str(&b, k ? ", \"" : "\"");
        if (k < MESH_PAUSE_BUCKETS - 1) {
            mesh_buf_str(&b, "<");
            mesh_buf_u64(&b, mesh_pause_bounds_us[k]);
        } else {
            mesh_buf_str(&b, ">=");
            mesh_buf_u64(&b, mesh_pause_bounds_us[k - 1]);
        }
        mesh_buf_str(&b, "\": ");
        mesh_buf_u64(&b, res->pauses[k]);
    }
    mesh_buf_str(&b, "}, \"mappings\": ");
    mesh_buf_u64(&b, mesh_maps_in_use());
    mesh_buf_str(&b, ", \"mapping_budget\": ");
    mesh_buf_u64(&b, mesh_map_budget());
    mesh_buf_str(&b, ", \"meshed_bytes\": ");
    mesh_buf_u64(&b, atomic_load(&mesh_stats.meshed_pages) << MESH_PAGE_SHIFT);
    mesh_buf_str(&b, ", \"stopped\": ");
    mesh_buf_str(&b, res->out_of_maps ? "\"mappings\"" : res->out_of_time ? "\"time\"" : "null");
    mesh_buf_str(&b, ", \"forced\": ");
    mesh_buf_str(&b, kind == PASS_FORCED ? "true" : "false");
    /* Who ran it: a busy pass is a stall of the thread that started it (in
     * a server, of the request it was serving); an idle pass ran where the
     * thread would have waited, and gave way if something came. */
    static const char *const kinds[] = {"\"forced\"", "\"idle\"", "\"busy\"", "\"resumed\""};
    mesh_buf_str(&b, ", \"kind\": ");
    mesh_buf_str(&b, kinds[kind]);
    mesh_buf_str(&b, ", \"gave_way\": ");
    mesh_buf_str(&b, res->gave_way ? "true" : "false");
    mesh_buf_str(&b, "}\n");
    mesh_os_write_all(M.events_fd, buf, b.len);
}
