/* prodcons: producer threads allocate messages, consumer threads free
 * them, so every free is a remote free, the pattern of a pipeline or a
 * thread pool fed by a queue. Messages travel in batches (the batch is an
 * allocation too) through one bounded queue. Each consumer checks every
 * message's 16-byte header and, past it, its last byte before freeing it,
 * and adds a hash of it to its sum; sums are added, so the checksum does not depend on which
 * consumer got which batch. Reports messages per second. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "wl.h"

#define MAX_THREADS 16
#define MAX_QUEUE 4096

struct msg_header {
    uint32_t producer;
    uint32_t size;
    uint64_t seq;
};

struct batch {
    uint32_t n;
    unsigned char *msgs[];
};

static int64_t producers, consumers;
static int64_t messages;
static int64_t min_size, max_size;
static int64_t batch_len;
static int64_t queue_len;

static const wl_opt_t opts[] = {
    { "producers", WL_OPT_INT, &producers, 2, WL_FIXED, "producer threads", NULL },
    { "consumers", WL_OPT_INT, &consumers, 2, WL_FIXED, "consumer threads", NULL },
    { "messages", WL_OPT_INT, &messages, 32000000, WL_LINEAR, "messages in all", NULL },
    { "min", WL_OPT_SIZE, &min_size, 16, WL_FIXED, "smallest message, at least 16", NULL },
    { "max", WL_OPT_SIZE, &max_size, 512, WL_FIXED, "largest message", NULL },
    { "batch", WL_OPT_INT, &batch_len, 64, WL_FIXED, "messages per batch", NULL },
    { "queue", WL_OPT_INT, &queue_len, 64, WL_FIXED, "batches the queue holds", NULL },
};

static const wl_spec_t spec = {
    .name = "prodcons",
    .summary = "Producer threads allocate messages that consumer threads check and free:\n"
               "every free is made by a thread that did not allocate the object.",
    .phases = "run, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

/* The queue: a ring of batch pointers; NULL tells a consumer to stop. */
static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t q_not_full = PTHREAD_COND_INITIALIZER;
static struct batch *q_ring[MAX_QUEUE];
static size_t q_head, q_count;

static void q_push(struct batch *b)
{
    pthread_mutex_lock(&q_lock);
    while (q_count == (size_t)queue_len)
        pthread_cond_wait(&q_not_full, &q_lock);
    q_ring[(q_head + q_count) % (size_t)queue_len] = b;
    q_count++;
    pthread_cond_signal(&q_not_empty);
    pthread_mutex_unlock(&q_lock);
}

static struct batch *q_pop(void)
{
    pthread_mutex_lock(&q_lock);
    while (q_count == 0)
        pthread_cond_wait(&q_not_empty, &q_lock);
    struct batch *b = q_ring[q_head];
    q_head = (q_head + 1) % (size_t)queue_len;
    q_count--;
    pthread_cond_signal(&q_not_full);
    pthread_mutex_unlock(&q_lock);
    return b;
}

static size_t batch_bytes(uint32_t n)
{
    return sizeof(struct batch) + n * sizeof(unsigned char *);
}

static unsigned char last_byte(uint32_t producer, uint64_t seq)
{
    return (unsigned char)wl_mix64(((uint64_t)producer << 48) ^ seq);
}

struct worker {
    int id;
    pthread_t thread;
    uint64_t sum;
    int64_t count;
};

/* Consumers own slots 1..consumers and producers the slots above them:
 * those who free read lower slots, as live.h requires. */
static void *producer_main(void *arg)
{
    struct worker *w = arg;
    wl_live_bind((unsigned)(1 + consumers + w->id));
    wl_rng_t rng;
    wl_rng_seed(&rng, wl_cfg.seed, (uint64_t)w->id + 1);
    int64_t mine = messages / producers + (w->id < messages % producers);
    uint64_t seq = 0;
    while ((int64_t)seq < mine) {
        uint32_t n = (uint32_t)(mine - (int64_t)seq < batch_len ? mine - (int64_t)seq : batch_len);
        struct batch *b = wl_malloc(batch_bytes(n));
        b->n = n;
        for (uint32_t i = 0; i < n; i++, seq++) {
            uint32_t size = (uint32_t)wl_rng_range(&rng, (uint64_t)min_size, (uint64_t)max_size);
            unsigned char *m = wl_malloc(size);
            struct msg_header h = { (uint32_t)w->id, size, seq };
            memcpy(m, &h, sizeof h);
            if (size > sizeof h)
                m[size - 1] = last_byte(h.producer, seq);
            b->msgs[i] = m;
        }
        q_push(b);
    }
    w->count = (int64_t)seq;
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct worker *w = arg;
    wl_live_bind((unsigned)(1 + w->id));
    struct batch *b;
    while ((b = q_pop()) != NULL) {
        for (uint32_t i = 0; i < b->n; i++) {
            unsigned char *m = b->msgs[i];
            struct msg_header h;
            memcpy(&h, m, sizeof h);
            if (h.size < sizeof h || h.size > (uint64_t)max_size ||
                (h.size > sizeof h && m[h.size - 1] != last_byte(h.producer, h.seq)))
                wl_die("prodcons: a message arrived corrupted");
            w->sum += wl_mix64(((uint64_t)h.producer << 40) ^ ((uint64_t)h.size << 52) ^ h.seq);
            w->count++;
            wl_free(m, h.size);
        }
        wl_free(b, batch_bytes(b->n));
    }
    return NULL;
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (producers < 1 || consumers < 1 || producers + consumers > MAX_THREADS ||
        min_size < (int64_t)sizeof(struct msg_header) || max_size < min_size ||
        max_size > UINT32_MAX || batch_len < 1 || batch_len > UINT32_MAX ||
        queue_len < 1 || queue_len > MAX_QUEUE) {
        fprintf(stderr, "prodcons: bad parameters (at most %d threads, 16 <= min <= max, "
                        "queue within [1, %d])\n", MAX_THREADS, MAX_QUEUE);
        return 2;
    }

    static struct worker prod[MAX_THREADS], cons[MAX_THREADS];
    wl_phase("run");
    wl_threads_starting();
    double t0 = wl_now();
    for (int i = 0; i < consumers; i++) {
        cons[i].id = i;
        if (pthread_create(&cons[i].thread, NULL, consumer_main, &cons[i]) != 0)
            wl_die("prodcons: cannot start a consumer");
    }
    for (int i = 0; i < producers; i++) {
        prod[i].id = i;
        if (pthread_create(&prod[i].thread, NULL, producer_main, &prod[i]) != 0)
            wl_die("prodcons: cannot start a producer");
    }
    for (int i = 0; i < producers; i++)
        pthread_join(prod[i].thread, NULL);
    for (int i = 0; i < consumers; i++)
        q_push(NULL);
    uint64_t checksum = 0;
    int64_t consumed = 0, produced = 0;
    for (int i = 0; i < consumers; i++) {
        pthread_join(cons[i].thread, NULL);
        checksum += cons[i].sum;
        consumed += cons[i].count;
    }
    double run_s = wl_now() - t0;
    for (int i = 0; i < producers; i++)
        produced += prod[i].count;
    if (consumed != produced || produced != messages)
        wl_die("prodcons: messages were lost");

    /* Every message produced was consumed and freed (checked above), so the
     * program holds nothing: held_bytes is 0 by that count, and the trace's
     * live bytes must agree. The phase is kept so that every workload's
     * trace ends the same way. */
    wl_phase("teardown");

    wl_result_double("ops_per_sec", (double)messages / run_s);
    wl_result_int("messages", messages);
    wl_result_double("run_s", run_s);
    wl_result_int("producers", producers);
    wl_result_int("consumers", consumers);
    wl_result_int("held_bytes", 0);
    return wl_finish(checksum);
}
