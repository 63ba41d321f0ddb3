/*
 * A small allocation benchmark, run under each allocator by
 * scripts/alloc-bench.sh:
 *   churn    one thread replaces random objects in a table of 10,000
 *            (sizes mostly 16-256 bytes, a tail to 4 KiB);
 *   xthread  two threads each allocate objects and hand them to the other
 *            through a lock-free ring; every free is a cross-thread free.
 * Prints a checksum so that runs can be compared.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t size_of(uint64_t r)
{
    unsigned k = (unsigned)(r % 100);
    if (k < 80)
        return 16 + (r >> 8) % 241;
    if (k < 97)
        return 256 + (r >> 8) % 769;
    return 1024 + (r >> 8) % 3073;
}

static uint64_t churn(long iters)
{
    enum { SLOTS = 10000 };
    static unsigned char *slot[SLOTS];
    uint64_t s = 88172645463325252ULL, sum = 0;
    for (long i = 0; i < iters; i++) {
        uint64_t r = rnd(&s);
        unsigned k = (unsigned)(r % SLOTS);
        if (slot[k])
            sum += slot[k][0];
        free(slot[k]);
        size_t n = size_of(r >> 16);
        slot[k] = malloc(n);
        slot[k][0] = (unsigned char)r;
        slot[k][n - 1] = 1;
    }
    for (unsigned k = 0; k < SLOTS; k++)
        free(slot[k]);
    return sum;
}

#define RING 8192
typedef struct ring {
    _Atomic(void *) cell[RING];
    _Atomic unsigned long head, tail; /* written by consumer, producer */
    char pad[64];
} ring_t;

static ring_t rings[2];
static long xiters;
static _Atomic uint64_t xsum;

static void push(ring_t *r, void *p)
{
    unsigned long t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    while (t - atomic_load_explicit(&r->head, memory_order_acquire) >= RING)
        sched_yield(); /* the other thread is behind: let it run */
    atomic_store_explicit(&r->cell[t % RING], p, memory_order_relaxed);
    atomic_store_explicit(&r->tail, t + 1, memory_order_release);
}

static void *pop(ring_t *r)
{
    unsigned long h = atomic_load_explicit(&r->head, memory_order_relaxed);
    if (h == atomic_load_explicit(&r->tail, memory_order_acquire))
        return NULL;
    void *p = atomic_load_explicit(&r->cell[h % RING], memory_order_relaxed);
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return p;
}

static void *xworker(void *arg)
{
    int me = (int)(uintptr_t)arg;
    ring_t *out = &rings[me], *in = &rings[1 - me];
    uint64_t s = 0x2545F4914F6CDD1DULL + (uint64_t)me, sum = 0;
    long received = 0;
    for (long i = 0; i < xiters; i++) {
        uint64_t r = rnd(&s);
        size_t n = size_of(r);
        unsigned char *p = malloc(n);
        p[0] = (unsigned char)r;
        push(out, p);
        unsigned char *q;
        while ((q = pop(in)) != NULL) {
            sum += q[0];
            free(q);
            received++;
        }
    }
    while (received < xiters) {
        unsigned char *q = pop(in);
        if (!q) {
            sched_yield();
            continue;
        }
        sum += q[0];
        free(q);
        received++;
    }
    atomic_fetch_add(&xsum, sum);
    return NULL;
}

static uint64_t xthread(long iters)
{
    pthread_t t[2];
    xiters = iters;
    for (uintptr_t i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, xworker, (void *)i);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    return atomic_load(&xsum);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: alloc_bench churn|xthread [iterations]\n");
        return 2;
    }
    long iters = argc > 2 ? atol(argv[2]) : 20000000;
    uint64_t sum;
    if (strcmp(argv[1], "churn") == 0)
        sum = churn(iters);
    else if (strcmp(argv[1], "xthread") == 0)
        sum = xthread(iters);
    else
        return 2;
    printf("%s %ld checksum %llu\n", argv[1], iters, (unsigned long long)sum);
    return 0;
}
