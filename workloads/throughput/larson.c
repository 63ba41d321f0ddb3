/* larson: server churn after Larson and Krishnan (ISMM 1998). Each of
 * --threads lineages owns an array of --blocks objects of 8..1000 bytes and
 * replaces random ones, free then malloc, --rounds times over the array;
 * then its thread starts a successor thread that inherits the array and
 * exits, --generations times. The main thread allocates the first objects,
 * so from the start objects are freed by threads that did not allocate
 * them, and every generation brings a new thread with an empty thread
 * cache: the pattern of a server handing connections to fresh workers.
 *
 * Unlike the original, which runs for a fixed time, each lineage does a
 * fixed amount of work with its own random stream handed down with the
 * array, so the objects alive at the end, and the checksum, do not depend
 * on scheduling. Each object carries a tag at its start, checked when it is
 * freed. Reports operations (one free plus one malloc) per second. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "wl.h"

#define MAX_THREADS 32

struct block {
    unsigned char *p;
    uint32_t size;
    uint64_t tag;
};

struct lineage {
    int id;
    int64_t generation;
    struct block *blocks;
    wl_rng_t rng;
    int64_t ops;
};

static int64_t threads;
static int64_t blocks_per;
static int64_t min_size, max_size;
static int64_t rounds;
static int64_t generations;

static const wl_opt_t opts[] = {
    { "threads", WL_OPT_INT, &threads, 4, WL_FIXED, "lineages running at once", NULL },
    { "blocks", WL_OPT_INT, &blocks_per, 5000, WL_FIXED, "objects per lineage", NULL },
    { "min", WL_OPT_SIZE, &min_size, 8, WL_FIXED, "smallest object", NULL },
    { "max", WL_OPT_SIZE, &max_size, 1000, WL_FIXED, "largest object", NULL },
    { "rounds", WL_OPT_INT, &rounds, 25, WL_FIXED, "passes over the array per generation", NULL },
    { "generations", WL_OPT_INT, &generations, 200, WL_LINEAR, "threads per lineage, one after another", NULL },
};

static const wl_spec_t spec = {
    .name = "larson",
    .summary = "Server churn after Larson and Krishnan: threads replace random objects\n"
               "in arrays they inherit from threads that exited; most frees are remote.",
    .phases = "warmup, run, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int lineages_running;

static void block_fill(struct block *b, wl_rng_t *rng)
{
    b->size = (uint32_t)wl_rng_range(rng, (uint64_t)min_size, (uint64_t)max_size);
    b->tag = wl_rng_next(rng);
    b->p = wl_malloc(b->size);
    memcpy(b->p, &b->tag, b->size < 8 ? b->size : 8);
}

static void block_free(struct block *b)
{
    uint64_t tag = 0;
    memcpy(&tag, b->p, b->size < 8 ? b->size : 8);
    uint64_t want = b->tag;
    if (b->size < 8)
        want &= ((uint64_t)1 << (8 * b->size)) - 1;
    if (tag != want)
        wl_die("larson: an object's contents changed while it was live");
    wl_free(b->p, b->size);
}

static void *lineage_main(void *arg)
{
    struct lineage *l = arg;
    /* Slots 1..threads: one per lineage, handed from thread to thread. The
     * warm-up objects were counted by the main thread (slot 0) before any
     * lineage started, and it frees what is left only after they all end,
     * so the sampler's sum never sees a free before its allocation. */
    wl_live_bind((unsigned)l->id + 1);
    int64_t n = rounds * blocks_per;
    for (int64_t i = 0; i < n; i++) {
        struct block *b = &l->blocks[wl_rng_below(&l->rng, (uint64_t)blocks_per)];
        block_free(b);
        block_fill(b, &l->rng);
    }
    l->ops += n;

    if (++l->generation < generations) {
        pthread_t next;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&next, &attr, lineage_main, l) != 0)
            wl_die("larson: cannot start a successor thread");
        pthread_attr_destroy(&attr);
        return NULL;
    }
    pthread_mutex_lock(&done_lock);
    lineages_running--;
    pthread_cond_signal(&done_cond);
    pthread_mutex_unlock(&done_lock);
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (threads < 1 || threads > MAX_THREADS || blocks_per < 1 || min_size < 1 ||
        max_size < min_size || max_size > UINT32_MAX || rounds < 0 || generations < 1) {
        fprintf(stderr, "larson: bad parameters (threads within [1, %d], min <= max)\n",
                MAX_THREADS);
        return 2;
    }

    static struct lineage lineages[MAX_THREADS];
    wl_phase("warmup");
    for (int t = 0; t < threads; t++) {
        struct lineage *l = &lineages[t];
        l->id = t;
        wl_rng_seed(&l->rng, wl_cfg.seed, (uint64_t)t + 1);
        l->blocks = wl_malloc((size_t)blocks_per * sizeof *l->blocks);
        for (int64_t i = 0; i < blocks_per; i++)
            block_fill(&l->blocks[i], &l->rng);
    }

    wl_phase("run");
    double t0 = wl_now();
    lineages_running = (int)threads;
    wl_threads_starting();
    for (int t = 0; t < threads; t++) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &attr, lineage_main, &lineages[t]) != 0)
            wl_die("larson: cannot start a thread");
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_lock(&done_lock);
    while (lineages_running > 0)
        pthread_cond_wait(&done_cond, &done_lock);
    pthread_mutex_unlock(&done_lock);
    double run_s = wl_now() - t0;

    uint64_t checksum = 0;
    int64_t held = 0, ops = 0;
    for (int t = 0; t < threads; t++) {
        struct lineage *l = &lineages[t];
        for (int64_t i = 0; i < blocks_per; i++) {
            struct block *b = &l->blocks[i];
            checksum += wl_mix64(b->tag ^ ((uint64_t)b->size << 40) ^ ((uint64_t)t << 56) ^ (uint64_t)i);
            held += b->size;
        }
        held += blocks_per * (int64_t)sizeof *l->blocks;
        ops += l->ops;
    }

    wl_phase("teardown");
    for (int t = 0; t < threads; t++) {
        for (int64_t i = 0; i < blocks_per; i++)
            block_free(&lineages[t].blocks[i]);
        wl_free(lineages[t].blocks, (size_t)blocks_per * sizeof *lineages[t].blocks);
    }

    wl_result_double("ops_per_sec", (double)ops / run_s);
    wl_result_int("ops", ops);
    wl_result_double("run_s", run_s);
    wl_result_int("threads", threads);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
