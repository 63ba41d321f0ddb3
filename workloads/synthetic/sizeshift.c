/* sizeshift: a program whose object sizes change over its life. It fills
 * memory with objects of one size, frees a random 90% of them, then
 * allocates as many bytes again in objects of another size. The 10% that
 * survive are scattered over nearly every page of the first size, so an
 * allocator that segregates sizes cannot reuse those pages for the second
 * size nor return them, unless it compacts (meshes) the sparse pages. */
#include <stdio.h>
#include <string.h>

#include "wl.h"

static int64_t fill_bytes;
static int64_t size1;
static int64_t size2;
static double keep;
static double hold_s;

static const wl_opt_t opts[] = {
    { "bytes", WL_OPT_SIZE, &fill_bytes, 256 << 20, WL_LINEAR, "bytes of each fill", "fill" },
    { "size1", WL_OPT_SIZE, &size1, 64, WL_FIXED, "object size of the first fill", NULL },
    { "size2", WL_OPT_SIZE, &size2, 256, WL_FIXED, "object size of the second fill", NULL },
    { "keep", WL_OPT_DOUBLE, &keep, 0.10, WL_FIXED, "fraction of the first fill kept", NULL },
    { "hold", WL_OPT_DOUBLE, &hold_s, 1.5, WL_TIME, "seconds to hold at the end", NULL },
};

static const wl_spec_t spec = {
    .name = "sizeshift",
    .summary = "Fills memory with one object size, frees a random 90%, then allocates\n"
               "the same number of bytes again in a different object size.",
    .phases = "fill, free, refill, hold, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

static void fill(unsigned char *p, size_t size, uint64_t tag)
{
    memset(p, (int)(tag >> 56), size);
    memcpy(p, &tag, size < 8 ? size : 8);
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (size1 < 1 || size2 < 1 || keep < 0 || keep > 1) {
        fprintf(stderr, "sizeshift: sizes must be positive and --keep within [0, 1]\n");
        return 2;
    }
    wl_rng_t rng;
    wl_rng_seed(&rng, wl_cfg.seed, 0);

    wl_phase("fill");
    size_t n1 = (size_t)(fill_bytes / size1);
    if (n1 == 0)
        n1 = 1;
    unsigned char **first = wl_malloc(n1 * sizeof *first);
    for (size_t i = 0; i < n1; i++) {
        first[i] = wl_malloc((size_t)size1);
        fill(first[i], (size_t)size1, wl_rng_next(&rng));
    }

    wl_phase("free");
    size_t kept = 0;
    for (size_t i = 0; i < n1; i++) {
        if (wl_rng_chance(&rng, keep)) {
            first[kept++] = first[i];
        } else {
            wl_free(first[i], (size_t)size1);
        }
    }
    /* The index shrinks with the objects, as a program's container would. */
    if (kept > 0)
        first = wl_realloc(first, n1 * sizeof *first, kept * sizeof *first);

    wl_phase("refill");
    size_t n2 = (size_t)(fill_bytes / size2);
    if (n2 == 0)
        n2 = 1;
    unsigned char **second = wl_malloc(n2 * sizeof *second);
    for (size_t i = 0; i < n2; i++) {
        second[i] = wl_malloc((size_t)size2);
        fill(second[i], (size_t)size2, wl_rng_next(&rng));
    }

    wl_phase("hold");
    wl_sleep(hold_s);

    uint64_t checksum = 0;
    for (size_t i = 0; i < kept; i++)
        checksum += wl_hash_bytes(first[i], (size_t)size1, i);
    for (size_t i = 0; i < n2; i++)
        checksum += wl_hash_bytes(second[i], (size_t)size2, ~i);
    size_t first_len = kept > 0 ? kept : n1;
    int64_t held = (int64_t)(kept * (size_t)size1 + first_len * sizeof *first +
                             n2 * ((size_t)size2 + sizeof *second));

    wl_phase("teardown");
    for (size_t i = 0; i < kept; i++)
        wl_free(first[i], (size_t)size1);
    for (size_t i = 0; i < n2; i++)
        wl_free(second[i], (size_t)size2);
    wl_free(first, first_len * sizeof *first);
    wl_free(second, n2 * sizeof *second);

    wl_result_int("first_objects", (int64_t)n1);
    wl_result_int("kept_objects", (int64_t)kept);
    wl_result_int("second_objects", (int64_t)n2);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
