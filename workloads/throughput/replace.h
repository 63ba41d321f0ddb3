/* The replacement loop shared by replace-small and replace-large: a live
 * set of --objects objects, each written when allocated, then --ops
 * replacements at random positions. Each program brings its size spread
 * and the way it writes an object; this file owns the rest (threads,
 * phases, the handoff of objects between threads, checks, results).
 *
 * With --threads 1 the one worker frees each object when it replaces it.
 * With --threads N > 1 each worker owns N-th of the slots and hands every
 * object it replaces to the next worker (t -> t + 1 mod N), which checks
 * and frees it: every free is made by a thread that did not allocate the
 * object. What each slot holds at the end depends only on its worker's
 * random stream, so the checksum is the same under every allocator and
 * every interleaving. */
#ifndef WL_REPLACE_H
#define WL_REPLACE_H

#include <stdbool.h>
#include <string.h>

#include "handoff.h"
#include "powerlaw.h"
#include "wl.h"

typedef struct {
    const char *name; /* for messages */
    int64_t objects, ops, threads, batch;
    wl_powerlaw_t sizes;
    /* Writes a new object of the given size and tag as the program's
     * pattern says, then wl_replace_mark: the marks are checked before the
     * object is freed. */
    void (*write)(unsigned char *p, uint32_t size, uint64_t tag);
} wl_replace_t;

/* The marks of a live object: the tag's low bytes at its start (up to 8)
 * and, past them, the tag's top byte at its end. */
static inline void wl_replace_mark(unsigned char *p, uint32_t size, uint64_t tag)
{
    memcpy(p, &tag, size < 8 ? size : 8);
    if (size > 8)
        p[size - 1] = (unsigned char)(tag >> 56);
}

/* Checks the parameters (exit 2 when bad), then runs the phases fill, run
 * and teardown and finishes the workload; returns the exit status for
 * main. Call after wl_init. */
int wl_replace_main(const wl_replace_t *r);

#endif
