/* fragmenter: the allocation pattern of the Ruby script behind the Mesh
 * paper's Ruby figure, in C. Within a budget (128 MiB at scale 1, the
 * paper's), each round allocates as many objects of n - 16 bytes as the
 * budget allows, keeps every fourth and frees the rest, then sleeps; n
 * doubles from 512 until the budget is spent. The survivors pin one object
 * in four across every page of every round, so a non-compacting allocator
 * holds about four times the live bytes, while the freed space suits no
 * later request because every round's objects are twice the size. */
#include <stdio.h>
#include <string.h>

#include "wl.h"

#define MAX_ROUNDS 64

struct round {
    size_t size;
    size_t count;
    unsigned char **objs;
};

static int64_t budget;
static int64_t start_size;
static double pause_s;
static double hold_s;

static const wl_opt_t opts[] = {
    { "bytes", WL_OPT_SIZE, &budget, 128 << 20, WL_LINEAR, "bytes of the budget", "budget" },
    { "start", WL_OPT_SIZE, &start_size, 512, WL_FIXED, "first n; objects are n - 16 bytes", NULL },
    { "pause", WL_OPT_DOUBLE, &pause_s, 0.2, WL_TIME, "seconds of pause after each round", "sleep" },
    { "hold", WL_OPT_DOUBLE, &hold_s, 1.5, WL_TIME, "seconds to hold the survivors at the end", NULL },
};

static const wl_spec_t spec = {
    .name = "fragmenter",
    .summary = "Allocates rounds of objects that double in size, keeping every fourth\n"
               "object of each round (the Mesh paper's Ruby fragmentation script).",
    .phases = "round-<object size> per round, hold, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

/* Ruby's 's' * size writes every byte; so does this, so that every page the
 * allocator hands out is really touched. */
static void fill(unsigned char *p, size_t size, uint64_t tag)
{
    memset(p, (int)(tag & 0xff), size);
    memcpy(p, &tag, size < 8 ? size : 8);
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (start_size <= 16)
        start_size = 17;

    static struct round rounds[MAX_ROUNDS];
    static char names[MAX_ROUNDS][32];
    int nrounds = 0;
    int64_t available = budget;
    int64_t n = start_size;
    uint64_t allocated = 0;

    while (available >= n && nrounds < MAX_ROUNDS) {
        struct round *r = &rounds[nrounds];
        r->size = (size_t)(n - 16);
        size_t count = (size_t)(available / n);
        snprintf(names[nrounds], sizeof names[0], "round-%zu", r->size);
        wl_phase(names[nrounds]);

        unsigned char **table = wl_malloc(count * sizeof *table);
        for (size_t i = 0; i < count; i++) {
            table[i] = wl_malloc(r->size);
            fill(table[i], r->size, wl_mix64(wl_cfg.seed ^ ((uint64_t)nrounds << 48) ^ i));
        }
        allocated += count * r->size;

        r->count = (count + 3) / 4;
        r->objs = wl_malloc(r->count * sizeof *r->objs);
        for (size_t i = 0; i < count; i++) {
            if (i % 4 == 0)
                r->objs[i / 4] = table[i];
            else
                wl_free(table[i], r->size);
        }
        wl_free(table, count * sizeof *table);
        nrounds++;

        wl_sleep(pause_s);
        /* The Ruby script doubles n before charging the round to the budget,
         * so each round costs half of what it allocated, not the quarter it
         * kept. Kept as is: it sets how many rounds the figure has. */
        n *= 2;
        available -= (int64_t)count * n / 4;
    }

    wl_phase("hold");
    wl_sleep(hold_s);

    uint64_t checksum = 0;
    int64_t held = 0;
    for (int r = 0; r < nrounds; r++) {
        for (size_t i = 0; i < rounds[r].count; i++)
            checksum += wl_hash_bytes(rounds[r].objs[i], rounds[r].size, (uint64_t)r << 32 | i);
        held += (int64_t)(rounds[r].count * (rounds[r].size + sizeof *rounds[r].objs));
    }

    wl_phase("teardown");
    for (int r = 0; r < nrounds; r++) {
        for (size_t i = 0; i < rounds[r].count; i++)
            wl_free(rounds[r].objs[i], rounds[r].size);
        wl_free(rounds[r].objs, rounds[r].count * sizeof *rounds[r].objs);
    }

    wl_result_int("rounds", nrounds);
    wl_result_int("allocated_bytes", (int64_t)allocated);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
