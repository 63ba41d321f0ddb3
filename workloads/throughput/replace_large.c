/* replace-large: medium and large objects replaced at random. A live set
 * of --bytes in objects of 1 - 64 KiB (log-uniform sizes by default: as
 * many of 1-2 KiB as of 32-64 KiB, the mean about 15 KiB), then --ops
 * replacements at random positions. Each new object is written in its
 * first and last cache line of every page it spans, not in full: every
 * page is touched, so the cost of an allocator that hands out pages it
 * gave back to the kernel (a page fault each, and zeroing) is counted,
 * while writing whole objects would make the run a memset benchmark.
 * With --threads 2 every object is freed by the thread that did not
 * allocate it (replace.h). Reports replacements per second. */
#include <stdio.h>
#include <string.h>

#include "replace.h"

#define PAGE 4096u
#define LINE 64u

static int64_t live_bytes, ops, threads, batch;
static int64_t min_size, max_size;
static double alpha;

static const wl_opt_t opts[] = {
    { "bytes", WL_OPT_SIZE, &live_bytes, 32 << 20, WL_LINEAR, "bytes of the live set", NULL },
    { "ops", WL_OPT_INT, &ops, 3000000, WL_LINEAR, "replacements", NULL },
    { "threads", WL_OPT_INT, &threads, 1, WL_FIXED, "threads; above 1, every free is remote", NULL },
    { "min", WL_OPT_SIZE, &min_size, 1024, WL_FIXED, "smallest object", NULL },
    { "max", WL_OPT_SIZE, &max_size, 64 << 10, WL_FIXED, "largest object", NULL },
    { "alpha", WL_OPT_DOUBLE, &alpha, 1.0, WL_FIXED, "power-law exponent of the size density", NULL },
    { "batch", WL_OPT_INT, &batch, 16, WL_FIXED, "objects handed to another thread at once", NULL },
};

static const wl_spec_t spec = {
    .name = "replace-large",
    .summary = "A live set of medium and large objects (1 - 64 KiB) replaced at random;\n"
               "each new object is written at both ends of every page it spans.",
    .phases = "fill, run, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

/* Per page the object spans: the first and the last cache line of its
 * part of that page (once if the part is shorter than two lines). */
static void write_page_ends(unsigned char *p, uint32_t size, uint64_t tag)
{
    int fill = (int)(tag >> 48) & 0xff;
    unsigned char *end = p + size;
    for (unsigned char *a = p; a < end;) {
        unsigned char *stop = (unsigned char *)(((uintptr_t)a | (PAGE - 1)) + 1);
        if (stop > end)
            stop = end;
        size_t n = (size_t)(stop - a);
        if (n <= 2 * LINE) {
            memset(a, fill, n);
        } else {
            memset(a, fill, LINE);
            memset(stop - LINE, fill, LINE);
        }
        a = stop;
    }
    wl_replace_mark(p, size, tag);
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (min_size < 1 || max_size < min_size || max_size > UINT32_MAX || alpha < 0 ||
        live_bytes < 1) {
        fprintf(stderr, "replace-large: need 1 <= --min <= --max, --alpha >= 0, --bytes >= 1\n");
        return 2;
    }
    static wl_replace_t r;
    r = (wl_replace_t){
        .name = spec.name, .ops = ops, .threads = threads, .batch = batch,
        .write = write_page_ends,
    };
    wl_powerlaw_init(&r.sizes, (uint32_t)min_size, (uint32_t)max_size, alpha);
    /* As many objects as the budget holds at the mean size, and at least
     * one per thread. */
    r.objects = (int64_t)((double)live_bytes / wl_powerlaw_mean(&r.sizes) + 0.5);
    if (r.objects < threads)
        r.objects = threads;
    return wl_replace_main(&r);
}
