/* regular: a strictly regular pattern. Objects of one size are allocated
 * in order, then every other object (in allocation order) is freed, and
 * again every other survivor, for --halvings rounds. With slots handed out
 * in address order every span ends up with the same occupancy bitmap
 * (slots 0, 8, 16, ... after three halvings), so no two spans can be meshed
 * however sparse they are; only randomised slot order makes their bitmaps
 * differ. One free of every other object alone would leave spans half full,
 * which even random placement can rarely mesh; repeating the halving walks
 * the occupancy down (50%, 25%, 12.5%) to where randomisation pays, and the
 * pause after each step lets the memory curve show each level. */
#include <stdio.h>
#include <string.h>

#include "wl.h"

#define MAX_HALVINGS 16

static int64_t total_bytes;
static int64_t size;
static int64_t halvings;
static double pause_s;
static double hold_s;

static const wl_opt_t opts[] = {
    { "bytes", WL_OPT_SIZE, &total_bytes, 128 << 20, WL_LINEAR, "bytes allocated at first", NULL },
    { "size", WL_OPT_SIZE, &size, 256, WL_FIXED, "object size", NULL },
    { "halvings", WL_OPT_INT, &halvings, 3, WL_FIXED, "times every other survivor is freed", NULL },
    { "pause", WL_OPT_DOUBLE, &pause_s, 0.3, WL_TIME, "seconds of pause after each halving", "step" },
    { "hold", WL_OPT_DOUBLE, &hold_s, 1.5, WL_TIME, "seconds to hold at the end", NULL },
};

static const wl_spec_t spec = {
    .name = "regular",
    .summary = "Allocates objects of one size in order, then repeatedly frees every\n"
               "other surviving object: a pattern only randomised placement can mesh.",
    .phases = "alloc, halve-1 .. halve-<halvings>, hold, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (size < 1 || halvings < 0 || halvings > MAX_HALVINGS) {
        fprintf(stderr, "regular: --size must be positive and --halvings within [0, %d]\n",
                MAX_HALVINGS);
        return 2;
    }
    const size_t sz = (size_t)size;

    wl_phase("alloc");
    size_t n = (size_t)(total_bytes / size);
    if (n == 0)
        n = 1;
    size_t cap = n;
    unsigned char **objs = wl_malloc(cap * sizeof *objs);
    for (size_t i = 0; i < n; i++) {
        uint64_t tag = wl_mix64(wl_cfg.seed + i);
        objs[i] = wl_malloc(sz);
        memset(objs[i], (int)(tag >> 56), sz);
        memcpy(objs[i], &tag, sz < 8 ? sz : 8);
    }

    static char names[MAX_HALVINGS][24];
    for (int h = 0; h < halvings && n > 1; h++) {
        snprintf(names[h], sizeof names[h], "halve-%d", h + 1);
        wl_phase(names[h]);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (i % 2 == 0)
                objs[kept++] = objs[i];
            else
                wl_free(objs[i], sz);
        }
        n = kept;
        objs = wl_realloc(objs, cap * sizeof *objs, n * sizeof *objs);
        cap = n;
        wl_sleep(pause_s);
    }

    wl_phase("hold");
    wl_sleep(hold_s);

    uint64_t checksum = 0;
    for (size_t i = 0; i < n; i++)
        checksum += wl_hash_bytes(objs[i], sz, i);
    int64_t held = (int64_t)(n * sz + cap * sizeof *objs);

    wl_phase("teardown");
    for (size_t i = 0; i < n; i++)
        wl_free(objs[i], sz);
    wl_free(objs, cap * sizeof *objs);

    wl_result_int("objects_kept", (int64_t)n);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
