/* replace-small: a large live set of small objects replaced at random.
 * --objects objects of 8 B - 1 KiB, sizes spread by a power law (most of
 * them small: the mean is about 90 bytes), each written in full when
 * allocated; then --ops replacements at random positions, each checking
 * the old object's marks before it is freed. The live set (about 23 MiB
 * of objects spread over far more memory than any cache) makes the
 * allocator's metadata and the objects themselves cold, unlike churn's
 * 10,000 objects. With --threads 2 every object is freed by the thread
 * that did not allocate it (replace.h). Reports replacements per second. */
#include <stdio.h>
#include <string.h>

#include "replace.h"

static int64_t objects, ops, threads, batch;
static int64_t min_size, max_size;
static double alpha;

static const wl_opt_t opts[] = {
    { "objects", WL_OPT_INT, &objects, 262144, WL_LINEAR, "objects in the live set", NULL },
    { "ops", WL_OPT_INT, &ops, 4000000, WL_LINEAR, "replacements", NULL },
    { "threads", WL_OPT_INT, &threads, 1, WL_FIXED, "threads; above 1, every free is remote", NULL },
    { "min", WL_OPT_SIZE, &min_size, 8, WL_FIXED, "smallest object", NULL },
    { "max", WL_OPT_SIZE, &max_size, 1024, WL_FIXED, "largest object", NULL },
    { "alpha", WL_OPT_DOUBLE, &alpha, 1.5, WL_FIXED, "power-law exponent of the size density", NULL },
    { "batch", WL_OPT_INT, &batch, 64, WL_FIXED, "objects handed to another thread at once", NULL },
};

static const wl_spec_t spec = {
    .name = "replace-small",
    .summary = "A live set of hundreds of thousands of small objects (8 B - 1 KiB,\n"
               "power-law sizes), replaced at random and written in full.",
    .phases = "fill, run, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

static void write_full(unsigned char *p, uint32_t size, uint64_t tag)
{
    memset(p, (int)(tag >> 48) & 0xff, size);
    wl_replace_mark(p, size, tag);
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (min_size < 1 || max_size < min_size || max_size > UINT32_MAX || alpha < 0) {
        fprintf(stderr, "replace-small: need 1 <= --min <= --max and --alpha >= 0\n");
        return 2;
    }
    static wl_replace_t r;
    r = (wl_replace_t){
        .name = spec.name, .objects = objects, .ops = ops, .threads = threads,
        .batch = batch, .write = write_full,
    };
    wl_powerlaw_init(&r.sizes, (uint32_t)min_size, (uint32_t)max_size, alpha);
    return wl_replace_main(&r);
}
