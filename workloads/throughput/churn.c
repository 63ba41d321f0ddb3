/* churn: single-threaded small-object churn with a realistic size mix,
 * the cost of the allocator's fast paths. A working set of --slots objects
 * is filled, then each operation replaces a random object: mostly a free
 * and a malloc, sometimes a realloc that keeps the object's contents.
 * Sizes follow the mix of a typical C or C++ program: most requests 16-256
 * bytes, a tail up to 16 KiB. Each object carries a tag at its start and a
 * byte at its end, checked before it is freed or resized. Reports
 * operations per second. */
#include <stdio.h>
#include <string.h>

#include "wl.h"

struct obj {
    unsigned char *p;
    uint32_t size;
    uint64_t tag;
};

/* The size mix: share of requests (per mille) and the range they fall in. */
static const struct {
    int permille;
    uint32_t lo, hi;
} size_mix[] = {
    { 450, 16, 64 },
    { 300, 65, 256 },
    { 150, 257, 1024 },
    { 80, 1025, 4096 },
    { 20, 4097, 16384 },
};

static int64_t slots;
static int64_t ops;
static double realloc_share;

static const wl_opt_t opts[] = {
    { "slots", WL_OPT_INT, &slots, 10000, WL_FIXED, "objects in the working set", NULL },
    { "ops", WL_OPT_INT, &ops, 40000000, WL_LINEAR, "replacements", NULL },
    { "realloc", WL_OPT_DOUBLE, &realloc_share, 0.10, WL_FIXED, "share of replacements done by realloc", NULL },
};

static const wl_spec_t spec = {
    .name = "churn",
    .summary = "Single-threaded churn over a working set of small objects with a\n"
               "realistic size mix (mostly 16-256 bytes, a tail to 16 KiB).",
    .phases = "fill, churn, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

static uint32_t pick_size(wl_rng_t *rng)
{
    int r = (int)wl_rng_below(rng, 1000);
    for (size_t i = 0; i < sizeof size_mix / sizeof size_mix[0]; i++) {
        if (r < size_mix[i].permille)
            return (uint32_t)wl_rng_range(rng, size_mix[i].lo, size_mix[i].hi);
        r -= size_mix[i].permille;
    }
    return size_mix[0].lo;
}

static void stamp(struct obj *o)
{
    memcpy(o->p, &o->tag, 8);
    o->p[o->size - 1] = (unsigned char)o->tag;
}

static void check(const struct obj *o)
{
    uint64_t tag;
    memcpy(&tag, o->p, 8);
    if (tag != o->tag || o->p[o->size - 1] != (unsigned char)o->tag)
        wl_die("churn: an object's contents changed while it was live");
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (slots < 1 || ops < 0 || realloc_share < 0 || realloc_share > 1) {
        fprintf(stderr, "churn: --slots must be positive and --realloc within [0, 1]\n");
        return 2;
    }
    wl_rng_t rng;
    wl_rng_seed(&rng, wl_cfg.seed, 0);

    wl_phase("fill");
    struct obj *set = wl_malloc((size_t)slots * sizeof *set);
    for (int64_t i = 0; i < slots; i++) {
        set[i].size = pick_size(&rng);
        set[i].tag = wl_rng_next(&rng);
        set[i].p = wl_malloc(set[i].size);
        stamp(&set[i]);
    }

    wl_phase("churn");
    double t0 = wl_now();
    int64_t reallocs = 0;
    for (int64_t i = 0; i < ops; i++) {
        struct obj *o = &set[wl_rng_below(&rng, (uint64_t)slots)];
        check(o);
        uint32_t size = pick_size(&rng);
        if (wl_rng_chance(&rng, realloc_share)) {
            o->p = wl_realloc(o->p, o->size, size);
            o->size = size;
            reallocs++;
        } else {
            wl_free(o->p, o->size);
            o->size = size;
            o->p = wl_malloc(size);
        }
        o->tag = wl_rng_next(&rng);
        stamp(o);
    }
    double churn_s = wl_now() - t0;

    uint64_t checksum = 0;
    int64_t held = slots * (int64_t)sizeof *set;
    for (int64_t i = 0; i < slots; i++) {
        check(&set[i]);
        checksum += wl_mix64(set[i].tag ^ ((uint64_t)set[i].size << 40) ^ (uint64_t)i);
        held += set[i].size;
    }

    wl_phase("teardown");
    for (int64_t i = 0; i < slots; i++)
        wl_free(set[i].p, set[i].size);
    wl_free(set, (size_t)slots * sizeof *set);

    wl_result_double("ops_per_sec", (double)ops / churn_s);
    wl_result_int("ops", ops);
    wl_result_int("reallocs", reallocs);
    wl_result_double("churn_s", churn_s);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
