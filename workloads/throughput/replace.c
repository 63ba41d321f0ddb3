#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "replace.h"

#define MAX_THREADS 16

struct worker {
    const wl_replace_t *r;
    int id;
    pthread_t thread;
    wl_object_t *slots; /* its share of the live set */
    int64_t nslots, ops;
    wl_rng_t rng;
    wl_batch_t *out;     /* objects replaced and not yet sent */
    wl_mailbox_t inbox;  /* objects the previous worker replaced */
    int64_t remote_frees; /* objects it freed that another worker allocated */
};

static struct worker workers[MAX_THREADS];
/* Passed by the workers and main twice: fill done, then run may start. */
static pthread_barrier_t run_barrier;

/* Live-byte slots (live.h): worker t counts what it frees in slot 1 + t
 * and what it allocates in slot 1 + threads + t. Every cross-thread free
 * is then counted in a lower slot than its allocation, so the sampler,
 * reading slots upward, never sees a free without its allocation. */
static unsigned free_slot(const struct worker *w)
{
    return 1u + (unsigned)w->id;
}

static unsigned alloc_slot(const struct worker *w)
{
    return 1u + (unsigned)(w->r->threads + w->id);
}

/* The marks wl_replace_mark wrote, read back just before the free. */
static void check_and_free(const wl_object_t *o)
{
    uint64_t tag = 0, want = o->tag;
    memcpy(&tag, o->p, o->size < 8 ? o->size : 8);
    if (o->size < 8)
        want &= ((uint64_t)1 << (8 * o->size)) - 1;
    if (tag != want || (o->size > 8 && o->p[o->size - 1] != (unsigned char)(o->tag >> 56)))
        wl_die("replace: an object's contents changed while it was live");
    wl_free(o->p, o->size);
}

static void new_object(struct worker *w, wl_object_t *o)
{
    o->size = wl_powerlaw_draw(&w->r->sizes, &w->rng);
    o->tag = wl_rng_next(&w->rng);
    o->p = wl_malloc(o->size);
    w->r->write(o->p, o->size, o->tag);
}

static void drain(wl_batch_t *list, void *arg)
{
    struct worker *w = arg;
    wl_live_bind(free_slot(w));
    while (list) {
        wl_batch_t *next = list->next;
        for (uint32_t i = 0; i < list->n; i++)
            check_and_free(&list->obj[i]);
        w->remote_frees += list->n;
        wl_free(list, wl_batch_bytes(list->cap));
        list = next;
    }
    wl_live_bind(alloc_slot(w));
}

static struct worker *next_worker(const struct worker *w)
{
    return &workers[(w->id + 1) % w->r->threads];
}

/* Queues an object the worker no longer holds for the next worker to free;
 * a full batch is sent, and then the worker frees what it was sent. */
static void retire(struct worker *w, const wl_object_t *old)
{
    if (!w->out) {
        uint32_t cap = (uint32_t)w->r->batch;
        w->out = wl_malloc(wl_batch_bytes(cap));
        w->out->n = 0;
        w->out->cap = cap;
    }
    w->out->obj[w->out->n++] = *old;
    if (w->out->n < w->out->cap)
        return;
    wl_mailbox_send(&next_worker(w)->inbox, w->out, &w->inbox, drain, w);
    w->out = NULL;
    wl_batch_t *mine = wl_mailbox_take(&w->inbox);
    if (mine)
        drain(mine, w);
}

static void replace_one(struct worker *w)
{
    wl_object_t *o = &w->slots[wl_rng_below(&w->rng, (uint64_t)w->nslots)];
    if (w->r->threads == 1) {
        check_and_free(o);
        new_object(w, o);
        return;
    }
    wl_object_t old = *o;
    new_object(w, o);
    retire(w, &old);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    wl_live_bind(free_slot(w));
    wl_live_bind(alloc_slot(w));
    for (int64_t i = 0; i < w->nslots; i++)
        new_object(w, &w->slots[i]);
    pthread_barrier_wait(&run_barrier);
    pthread_barrier_wait(&run_barrier);
    for (int64_t i = 0; i < w->ops; i++)
        replace_one(w);
    if (w->r->threads > 1) {
        wl_mailbox_close(&next_worker(w)->inbox, w->out);
        w->out = NULL;
        wl_mailbox_drain_until_closed(&w->inbox, drain, w);
    }
    return NULL;
}

static void start_workers(const wl_replace_t *r, wl_object_t *set)
{
    int n = (int)r->threads;
    if (pthread_barrier_init(&run_barrier, NULL, (unsigned)n + 1) != 0)
        wl_die("replace: cannot make a barrier");
    int64_t first = 0;
    for (int t = 0; t < n; t++) {
        struct worker *w = &workers[t];
        w->r = r;
        w->id = t;
        w->nslots = r->objects / n + (t < r->objects % n);
        w->ops = r->ops / n + (t < r->ops % n);
        w->slots = set + first;
        first += w->nslots;
        wl_rng_seed(&w->rng, wl_cfg.seed, (uint64_t)t + 1);
        wl_mailbox_init(&w->inbox);
    }
    wl_threads_starting();
    for (int t = 0; t < n; t++)
        if (pthread_create(&workers[t].thread, NULL, worker_main, &workers[t]) != 0)
            wl_die("replace: cannot start a worker");
}

static bool bad_params(const wl_replace_t *r)
{
    return r->threads < 1 || r->threads > MAX_THREADS || r->objects < r->threads ||
           r->ops < 0 || r->batch < 1 || r->batch > UINT32_MAX;
}

int wl_replace_main(const wl_replace_t *r)
{
    if (bad_params(r)) {
        fprintf(stderr, "%s: bad parameters (threads within [1, %d], at least one object "
                        "per thread, batch at least 1)\n", r->name, MAX_THREADS);
        return 2;
    }
    wl_phase("fill");
    size_t set_bytes = (size_t)r->objects * sizeof(wl_object_t);
    wl_object_t *set = wl_malloc(set_bytes);
    start_workers(r, set);
    pthread_barrier_wait(&run_barrier);
    wl_phase("run");
    double t0 = wl_now();
    pthread_barrier_wait(&run_barrier);
    for (int t = 0; t < r->threads; t++)
        pthread_join(workers[t].thread, NULL);
    double run_s = wl_now() - t0;
    int64_t remote_frees = 0;
    for (int t = 0; t < r->threads; t++)
        remote_frees += workers[t].remote_frees;

    uint64_t checksum = 0;
    int64_t held = (int64_t)set_bytes;
    for (int64_t i = 0; i < r->objects; i++) {
        const wl_object_t *o = &set[i];
        checksum += wl_mix64(o->tag ^ ((uint64_t)o->size << 40) ^ (uint64_t)i);
        held += o->size;
    }

    wl_phase("teardown");
    for (int64_t i = 0; i < r->objects; i++)
        check_and_free(&set[i]);
    wl_free(set, set_bytes);
    pthread_barrier_destroy(&run_barrier);

    wl_result_double("ops_per_sec", (double)r->ops / run_s);
    wl_result_int("ops", r->ops);
    wl_result_double("run_s", run_s);
    wl_result_int("threads", r->threads);
    wl_result_int("objects", r->objects);
    wl_result_int("remote_frees", remote_frees);
    wl_result_double("mean_size", wl_powerlaw_mean(&r->sizes));
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
