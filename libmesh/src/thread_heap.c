/*
 * Thread heaps: one per thread, created on the thread's first malloc and
 * reached through an initial-exec TLS pointer (one instruction), released
 * at thread exit so that its spans go back to the global heap, where they
 * can be reused and meshed.
 *
 * Heaps are registered by id (miniheap owner fields hold the id, 0 meaning
 * detached) so that fork can release the heaps of threads that do not exist
 * in the child.  A heap's memory is never unmapped: released heaps are
 * reused by later threads.
 */
#define _GNU_SOURCE
#include <string.h>

#include "internal.h"

__thread mesh_thread_heap_t *mesh_tls_heap __attribute__((tls_model("initial-exec")));

/* Set once this thread's heap was released at exit: allocations made by
 * later destructors go straight to the global heap instead of creating a
 * heap that nothing would release. */
static __thread bool tls_exiting __attribute__((tls_model("initial-exec")));

static pthread_key_t heap_key;
static pthread_mutex_t heaps_lock = PTHREAD_MUTEX_INITIALIZER;
static mesh_thread_heap_t **heaps; /* id -> heap; ids [1, nheaps) exist */
static uint32_t nheaps = 1;
static uint32_t free_heaps;        /* released heaps, linked through next_free */

static void thread_exit(void *arg)
{
    mesh_thread_heap_t *th = arg;
    tls_exiting = true;
    mesh_tls_heap = NULL;
    if (th)
        mesh_thread_heap_release(th);
}

int mesh_thread_heaps_init(void)
{
    void *p;
    int err = mesh_os_map_reserve(MESH_MAX_THREAD_HEAPS * sizeof(*heaps), &p);
    if (err)
        return err;
    heaps = p;
    return pthread_key_create(&heap_key, thread_exit);
}

static void heap_init(mesh_thread_heap_t *th, uint32_t id)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        mesh_sv_init(&th->sv[c], c);
    th->id = id;
    th->next_free = 0;
    /* With MESH_SEED, runs are repeatable thread by thread. */
    th->rng.s = (mesh_opt.seed ? mesh_opt.seed * 0x9e3779b97f4a7c15ULL + id : mesh_os_random64()) | 1;
    th->tick = MESH_TICK_FREES;
    th->last_flush_ns = mesh_os_now_ns();
    th->live = true;
}

/* Returns this thread's heap, creating it; NULL when the thread is exiting
 * or no heap can be had, in which case the caller allocates from the
 * global heap directly. */
mesh_thread_heap_t *mesh_thread_heap_get_slow(void)
{
    if (mesh_tls_heap)
        return mesh_tls_heap;
    if (tls_exiting)
        return NULL;
    mesh_thread_heap_t *th = NULL;
    pthread_mutex_lock(&heaps_lock);
    uint32_t id = free_heaps;
    if (id) {
        th = heaps[id];
        free_heaps = th->next_free;
    } else if (nheaps < MESH_MAX_THREAD_HEAPS) {
        void *p;
        if (mesh_os_map_anon(sizeof(mesh_thread_heap_t), MESH_PAGE_SIZE, &p) == 0) {
            id = nheaps++;
            th = p;
            heaps[id] = th;
        }
    }
    if (th)
        heap_init(th, id);
    pthread_mutex_unlock(&heaps_lock);
    if (!th)
        return NULL;
    pthread_setspecific(heap_key, th);
    mesh_tls_heap = th;
    return th;
}

/* Detaches every span of th, so that other threads can use the free slots
 * and empty spans go back to the arena (and, with meshing, so that they can
 * be meshed).  Only th's own thread calls this, or fork in the child. */
void mesh_thread_heap_flush(mesh_thread_heap_t *th)
{
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        mesh_cache_flush(th, c, 0);
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        if (!th->sv[c].nattached)
            continue;
        mesh_class_lock(&mesh_class_heaps[c]);
        mesh_global_detach_all_locked(th, c);
        pthread_mutex_unlock(&mesh_class_heaps[c].lock);
    }
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        th->sv[c].flush_top = 0;
    th->last_flush_ns = mesh_os_now_ns();
}

/* The period's detach: the free caches go back, and so do the spans of
 * each class whose vector has not moved since the last period (top
 * unchanged: no malloc, free or refill of it, or as many of each).  A
 * class the thread is using keeps its spans: detaching them only made its
 * next malloc attach them again, claim their slots anew and fault in the
 * pages trimming had given back meanwhile (churn: a sixth of its time
 * went there).  What it keeps is bounded per class (MESH_SV_MAX_BYTES),
 * and spans it has filled leave at refills that need room
 * (detach_full_locked); an unused class is detached within two periods. */
void mesh_thread_heap_period(mesh_thread_heap_t *th)
{
    /* Once a period: a pass started by the detach that just ran (tick,
     * then the pass) must not take every class for idle. */
    uint64_t now = mesh_os_now_ns();
    if (now - th->last_flush_ns < mesh_ms_to_ns(mesh_opt.period_ms) / 2)
        return;
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
        mesh_cache_flush(th, c, 0);
    for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
        mesh_shuffle_vector_t *sv = &th->sv[c];
        if (sv->nattached && sv->top == sv->flush_top) {
            mesh_class_lock(&mesh_class_heaps[c]);
            mesh_global_detach_all_locked(th, c);
            pthread_mutex_unlock(&mesh_class_heaps[c].lock);
        }
        sv->flush_top = sv->top;
    }
    th->last_flush_ns = now;
}

/* Called every MESH_TICK_FREES fast frees and at each refill, and at idle
 * points (idle: the thread is about to wait): once a period has passed,
 * the period's detach; a thread about to wait detaches everything, as it
 * is not allocating now. */
void mesh_thread_heap_tick(mesh_thread_heap_t *th, bool idle)
{
    th->tick = MESH_TICK_FREES;
    uint64_t now = mesh_os_now_ns();
    if (now - th->last_flush_ns >= mesh_ms_to_ns(mesh_opt.period_ms)) {
        if (idle)
            mesh_thread_heap_flush(th);
        else
            mesh_thread_heap_period(th);
        mesh_maybe_mesh(0, NULL);
    } else {
        mesh_maybe_resume();
    }
}

void mesh_thread_heap_release(mesh_thread_heap_t *th)
{
    mesh_thread_heap_flush(th);
    pthread_mutex_lock(&heaps_lock);
    th->live = false;
    th->next_free = free_heaps;
    free_heaps = th->id;
    pthread_mutex_unlock(&heaps_lock);
}

/* Bytes of free slots sitting in threads' shuffle vectors: their bits are
 * set in the span bitmaps, but no object lives there.  Approximate while
 * threads run, exact when they are quiet. */
uint64_t mesh_thread_heaps_reserved_bytes(void)
{
    uint64_t bytes = 0;
    pthread_mutex_lock(&heaps_lock);
    for (uint32_t id = 1; id < nheaps; id++) {
        mesh_thread_heap_t *th = heaps[id];
        if (!th->live)
            continue;
        for (unsigned c = 0; c < MESH_NUM_CLASSES; c++)
            bytes += ((uint64_t)__atomic_load_n(&th->sv[c].top, __ATOMIC_RELAXED) +
                      __atomic_load_n(&th->sv[c].ncached, __ATOMIC_RELAXED)) * th->sv[c].object_size;
    }
    pthread_mutex_unlock(&heaps_lock);
    return bytes;
}

void mesh_thread_heaps_fork_prepare(void)
{
    pthread_mutex_lock(&heaps_lock);
}

void mesh_thread_heaps_fork_parent(void)
{
    pthread_mutex_unlock(&heaps_lock);
}

/* Only the forking thread exists in the child.  The others were running
 * when the process was copied, so their vectors may have been caught in the
 * middle of a push or a pop: their spans go back to the global heap, but
 * only the slots that are certainly free (in the vector, with their free
 * key) go back to the bitmaps; the rest, at most a vector's worth, stay
 * taken in the child rather than risk handing out a live object.  Their
 * free caches stay taken too, as if allocated: at most MESH_CACHE_KB a
 * class and thread, and nothing in a torn cache is trusted. */
void mesh_thread_heaps_fork_child(void)
{
    pthread_mutex_init(&heaps_lock, NULL);
    for (uint32_t id = 1; id < nheaps; id++) {
        mesh_thread_heap_t *th = heaps[id];
        if (!th->live || th == mesh_tls_heap)
            continue;
        for (unsigned c = 0; c < MESH_NUM_CLASSES; c++) {
            if (!th->sv[c].nattached)
                continue;
            pthread_mutex_lock(&mesh_class_heaps[c].lock);
            mesh_global_detach_torn_locked(th, c);
            pthread_mutex_unlock(&mesh_class_heaps[c].lock);
        }
        th->live = false;
        th->next_free = free_heaps;
        free_heaps = th->id;
    }
}
