/*
 * The worker threads: random malloc, calloc, realloc, memalign and free of
 * 16 B - 64 KiB (mostly below 4 KiB, the meshable classes), every object
 * patterned and checked before each realloc and free and in full sweeps.
 * Objects change hands through a ring (freed or reallocated by another
 * thread), the live set is thinned now and then (50-80% freed, then
 * refilled) so that spans are left sparse enough to mesh, and each worker
 * keeps what fork children check (soak_pub) up to date.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "soak.h"

soak_pub_t soak_pub[SOAK_MAX_WORKERS];

#define SWEEP_OPS 40000     /* a full check of every object this often */
#define THIN_OPS 30000      /* a thinning this often */
#define RING 1024

typedef struct worker {
    int index;
    soak_thread_t *t;
    uint64_t rng;
    uint64_t next_id;
    uint64_t k;             /* the sequence number fork children check */
    soak_obj_t *objs;
    int nobjs;
    soak_sigstate_t sig;
} worker_t;

/* ---- the handoff ring: objects passed to another thread ---- */

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static soak_obj_t ring[RING];
static int ring_head, ring_count;

static bool ring_push(const soak_obj_t *o)
{
    bool ok = false;
    pthread_mutex_lock(&ring_lock);
    if (ring_count < RING) {
        ring[(ring_head + ring_count++) % RING] = *o;
        ok = true;
    }
    pthread_mutex_unlock(&ring_lock);
    return ok;
}

static bool ring_pop(soak_obj_t *o)
{
    bool ok = false;
    pthread_mutex_lock(&ring_lock);
    if (ring_count > 0) {
        *o = ring[ring_head];
        ring_head = (ring_head + 1) % RING;
        ring_count--;
        ok = true;
    }
    pthread_mutex_unlock(&ring_lock);
    return ok;
}

/* At the end, after the workers: whatever is still in the ring. */
void soak_handoff_drain(void)
{
    soak_obj_t o;
    while (ring_pop(&o)) {
        soak_verify(NULL, &o, "handed-off");
        free(o.p);
    }
}

/* ---- one object ---- */

static size_t pick_size(uint64_t *rng)
{
    uint64_t r = soak_rnd(rng) % 100;
    if (r < 80)
        return 16 + soak_rnd(rng) % 1009;           /* 16 B - 1 KiB */
    if (r < 95)
        return 1025 + soak_rnd(rng) % 3071;         /* up to 4 KiB: still meshable */
    return 4096 + soak_rnd(rng) % (65536 - 4096 + 1);
}

static void fresh(worker_t *w, soak_obj_t *o, unsigned char *p, size_t size)
{
    o->p = p;
    o->size = (uint32_t)size;
    o->id = w->next_id++;
    o->gen = 0;
    soak_stamp(p, size, o->id, o->gen);
}

static void drop(worker_t *w, soak_obj_t *o, const char *what)
{
    if (!o->p)
        return;
    soak_set_state(w->t, ST_VERIFY);
    soak_verify(w->t, o, what);
    soak_set_state(w->t, ST_FREE);
    free(o->p);
    o->p = NULL;
    soak_count(&w->t->ops, 1);
}

static void no_memory(worker_t *w, const char *call, size_t size)
{
    SOAK_ADD(syscall_errors, 1);
    soak_report("%s: %s(%zu) failed: %s", w->t->name, call, size, strerror(errno));
}

static void op_malloc(worker_t *w, soak_obj_t *o)
{
    drop(w, o, "live");
    size_t size = pick_size(&w->rng);
    soak_set_state(w->t, ST_MALLOC);
    unsigned char *p = malloc(size);
    soak_count(&w->t->ops, 1);
    if (!p)
        return no_memory(w, "malloc", size);
    fresh(w, o, p, size);
}

static void op_calloc(worker_t *w, soak_obj_t *o)
{
    drop(w, o, "live");
    size_t size = pick_size(&w->rng);
    soak_set_state(w->t, ST_CALLOC);
    unsigned char *p = calloc(1, size);
    soak_count(&w->t->ops, 1);
    if (!p)
        return no_memory(w, "calloc", size);
    for (size_t i = 0; i < size; i++)
        if (p[i]) {
            SOAK_ADD(corruptions, 1);
            soak_report("%s: calloc(%zu) returned %p with byte %zu = %#x", w->t->name, size, (void *)p, i, p[i]);
            break;
        }
    soak_count(&w->t->verified, size);
    fresh(w, o, p, size);
}

static void op_memalign(worker_t *w, soak_obj_t *o)
{
    drop(w, o, "live");
    size_t align = (size_t)16 << (soak_rnd(&w->rng) % 9), size = pick_size(&w->rng);
    void *p = NULL;
    soak_set_state(w->t, ST_MEMALIGN);
    int err = posix_memalign(&p, align, size);
    soak_count(&w->t->ops, 1);
    if (err) {
        errno = err;
        return no_memory(w, "posix_memalign", size);
    }
    if ((uintptr_t)p % align) {
        SOAK_ADD(corruptions, 1);
        soak_report("%s: posix_memalign(%zu, %zu) returned misaligned %p", w->t->name, align, size, p);
    }
    fresh(w, o, p, size);
}

static void op_realloc(worker_t *w, soak_obj_t *o)
{
    if (!o->p)
        return op_malloc(w, o);
    soak_set_state(w->t, ST_VERIFY);
    soak_verify(w->t, o, "live (before realloc)");
    size_t size = pick_size(&w->rng);
    soak_set_state(w->t, ST_REALLOC);
    unsigned char *p = realloc(o->p, size);
    soak_count(&w->t->ops, 1);
    if (!p)
        return no_memory(w, "realloc", size);
    soak_obj_t moved = *o;
    moved.p = p;
    moved.size = (uint32_t)(size < o->size ? size : o->size);
    soak_set_state(w->t, ST_VERIFY);
    soak_verify(w->t, &moved, "reallocated");
    o->p = p;
    o->size = (uint32_t)size;
    o->gen++;
    soak_stamp(p, size, o->id, o->gen);
}

/* Reads an object and writes it again under a new generation: stores
 * into spans that may be being meshed. */
static void op_rewrite(worker_t *w, soak_obj_t *o)
{
    if (!o->p)
        return op_malloc(w, o);
    soak_set_state(w->t, ST_VERIFY);
    soak_verify(w->t, o, "live");
    o->gen++;
    soak_stamp(o->p, o->size, o->id, o->gen);
}

/* Gives an object away, or takes one another thread gave away and frees
 * it or keeps it (to be reallocated or freed here later). */
static void op_handoff(worker_t *w, soak_obj_t *o)
{
    soak_set_state(w->t, ST_HANDOFF);
    if (soak_rnd(&w->rng) % 2) {
        if (o->p) {
            soak_verify(w->t, o, "live (before handoff)");
            if (ring_push(o))
                o->p = NULL;
        }
        return;
    }
    soak_obj_t got;
    if (!ring_pop(&got))
        return;
    if (!o->p && soak_rnd(&w->rng) % 2) {
        soak_verify(w->t, &got, "handed-off");
        *o = got;
    } else {
        drop(w, &got, "handed-off");
    }
}

/* ---- what fork children check ---- */

/* The heap first, then the global: a child that reads the global first
 * must find the heap at least as new. */
static void bump_seq(worker_t *w)
{
    soak_pub_t *pub = &soak_pub[w->index];
    w->k++;
    soak_seqobj_t *so = atomic_load_explicit(&pub->seqobj, memory_order_relaxed);
    atomic_store_explicit(&so->k, w->k, memory_order_release);
    atomic_store_explicit(&pub->seq, w->k, memory_order_release);
}

static void new_seqobj(worker_t *w)
{
    soak_pub_t *pub = &soak_pub[w->index];
    soak_set_state(w->t, ST_MALLOC);
    soak_seqobj_t *so = malloc(sizeof *so + soak_rnd(&w->rng) % 200), *old;
    soak_count(&w->t->ops, 1);
    if (!so)
        return no_memory(w, "malloc", sizeof *so);
    so->magic = SOAK_SEQ_MAGIC;
    atomic_store_explicit(&so->k, w->k, memory_order_relaxed);
    old = atomic_exchange_explicit(&pub->seqobj, so, memory_order_acq_rel);
    soak_set_state(w->t, ST_FREE);
    free(old);
}

/* Replaces one published object: unpublished before it is touched again,
 * published only once fully written. */
static void op_publish(worker_t *w, bool keep)
{
    soak_pub_slot_t *s = &soak_pub[w->index].slots[soak_rnd(&w->rng) % SOAK_PUB_SLOTS];
    soak_set_state(w->t, ST_PUBLISH);
    unsigned char *old = atomic_exchange_explicit(&s->p, NULL, memory_order_seq_cst);
    if (old) {
        soak_obj_t o = s->meta;
        o.p = old;
        drop(w, &o, "published");
    }
    if (!keep)
        return;
    size_t size = 16 + soak_rnd(&w->rng) % 4081;
    soak_set_state(w->t, ST_MALLOC);
    unsigned char *p = malloc(size);
    soak_count(&w->t->ops, 1);
    if (!p)
        return no_memory(w, "malloc", size);
    fresh(w, &s->meta, p, size);
    s->meta.p = NULL;
    atomic_store_explicit(&s->p, p, memory_order_release);
}

/* ---- sweeps and thinning ---- */

static void sweep(worker_t *w)
{
    soak_set_state(w->t, ST_SWEEP);
    for (int i = 0; i < w->nobjs; i++)
        if (w->objs[i].p)
            soak_verify(w->t, &w->objs[i], "live");
    for (int i = 0; i < SOAK_PUB_SLOTS; i++) {
        soak_pub_slot_t *s = &soak_pub[w->index].slots[i];
        soak_obj_t o = s->meta;
        if ((o.p = atomic_load(&s->p)))
            soak_verify(w->t, &o, "published");
    }
    soak_signals_sweep(&w->sig);
    soak_beat(w->t);
}

static void thin(worker_t *w)
{
    unsigned pct = 50 + (unsigned)(soak_rnd(&w->rng) % 31);
    soak_set_state(w->t, ST_THIN);
    for (int i = 0; i < w->nobjs; i++)
        if (w->objs[i].p && soak_rnd(&w->rng) % 100 < pct)
            drop(w, &w->objs[i], "live");
}

/* ---- the thread ---- */

/* --inject: one fault in worker 0, which the soak must report. */
static void inject(worker_t *w)
{
    if (S->inject == SOAK_INJECT_CORRUPT) {
        for (int i = 0; i < w->nobjs; i++)
            if (w->objs[i].p) {
                w->objs[i].p[w->objs[i].size / 2] ^= 0x40;
                return;
            }
    } else if (S->inject == SOAK_INJECT_HANG) {
        soak_set_state(w->t, ST_SLEEP);
        for (;;)
            pause();
    }
}

static void one_op(worker_t *w)
{
    soak_obj_t *o = &w->objs[soak_rnd(&w->rng) % (uint64_t)w->nobjs];
    uint64_t r = soak_rnd(&w->rng) % 1000;
    if (r < 300)
        op_malloc(w, o);
    else if (r < 380)
        op_calloc(w, o);
    else if (r < 400)
        op_memalign(w, o);
    else if (r < 580)
        op_realloc(w, o);
    else if (r < 700)
        drop(w, o, "live");
    else if (r < 800)
        op_handoff(w, o);
    else if (r < 815)
        op_publish(w, true);
    else
        op_rewrite(w, o);
}

static void worker_setup(worker_t *w)
{
    w->objs = mmap(NULL, sizeof *w->objs * (size_t)w->nobjs, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (w->objs == MAP_FAILED) {
        soak_say("soak: mmap of the object table failed\n");
        _exit(2);
    }
    new_seqobj(w);
    for (int i = 0; i < SOAK_PUB_SLOTS; i++)
        op_publish(w, true);
    soak_signals_thread_start(&w->sig, w->t, w->index);
}

static void worker_teardown(worker_t *w)
{
    soak_set_state(w->t, ST_SHUTDOWN);
    sweep(w);
    soak_signals_thread_stop(&w->sig);
    for (int i = 0; i < w->nobjs; i++)
        drop(w, &w->objs[i], "live");
    for (int i = 0; i < SOAK_PUB_SLOTS; i++)
        op_publish(w, false);
    munmap(w->objs, sizeof *w->objs * (size_t)w->nobjs);
}

void *soak_worker_main(void *arg)
{
    static worker_t workers[SOAK_MAX_WORKERS];
    int index = (int)(intptr_t)arg;
    worker_t *w = &workers[index];
    char name[24];
    snprintf(name, sizeof name, "worker %d", index);
    w->index = index;
    w->t = soak_thread_register(name);
    w->rng = soak_seed_for("worker", index);
    w->next_id = (uint64_t)(index + 1) << 48;
    w->nobjs = S->objects;
    worker_setup(w);

    for (uint64_t op = 1; !SOAK_STOPPING(); op++) {
        bump_seq(w);
        one_op(w);
        soak_beat(w->t);
        if (op == SOAK_INJECT_AT && w->index == 0)
            inject(w);
        if (op % THIN_OPS == 0)
            thin(w);
        if (op % SWEEP_OPS == SWEEP_OPS / 2)
            sweep(w);
        if (op % 10000 == 0)
            new_seqobj(w);
        if (op % 2000 == 0)
            soak_guard_touch(&w->sig);
        if (op % 1500 == 0)
            soak_signals_maintain(&w->sig);
    }
    worker_teardown(w);
    soak_set_state(w->t, ST_DONE);
    return NULL;
}
