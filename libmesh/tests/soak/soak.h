/*
 * The soak: a multithreaded content-integrity fuzzer that runs an allocator
 * (libmesh under LD_PRELOAD, or any other) for minutes with everything that
 * stresses meshing at once: heap churn across threads, fork, signal
 * handlers writing into the heap, datagrams and pipe reads landing in heap
 * buffers, compaction.  Every byte it wrote is checked before it is freed
 * or reallocated and in periodic sweeps.
 *
 * Two processes: a supervisor (main.c) that watches progress and prints
 * the verdict, and the worker process that does the work.  What they share
 * (the counters and each thread's state) lives in one shared anonymous
 * mapping, so the verdict survives a worker that crashes or hangs.
 */
#ifndef SOAK_H
#define SOAK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#define SOAK_MAX_WORKERS 32
#define SOAK_MAX_THREADS (SOAK_MAX_WORKERS + 8)
#define SOAK_PUB_SLOTS 64       /* objects a worker publishes for fork children */
#define SOAK_HOBJS 32           /* heap objects each worker's timer handler writes */
#define SOAK_ALARM_OBJS 64      /* heap objects the SIGALRM handler writes */

/* What a thread is doing, for the watchdog's report. */
enum soak_state {
    ST_START, ST_MALLOC, ST_CALLOC, ST_REALLOC, ST_MEMALIGN, ST_FREE, ST_VERIFY, ST_SWEEP,
    ST_HANDOFF, ST_PUBLISH, ST_THIN, ST_GUARD, ST_SIG_MAINT, ST_FORK, ST_WAIT_CHILD,
    ST_SEND, ST_RECV, ST_POLL, ST_READ, ST_WRITE, ST_COMPACT, ST_SLEEP, ST_SHUTDOWN, ST_DONE,
    ST_NSTATES
};
extern const char *const soak_state_names[ST_NSTATES];

/* One thread's slot: written by that thread only, read by the supervisor.
 * A slot a cache line of its own, so counting costs no sharing. */
typedef struct soak_thread {
    char name[24];
    _Atomic int tid;
    _Atomic int state;
    _Atomic int in_handler;     /* signal number of a handler running on it, or 0 */
    _Atomic uint64_t beats;     /* bumped on every unit of progress */
    _Atomic uint64_t ops;       /* allocator calls */
    _Atomic uint64_t verified;  /* bytes compared */
} __attribute__((aligned(64))) soak_thread_t;

/* The counters the verdict is made of. */
#define SOAK_COUNTERS(X)                                                      \
    X(corruptions)      /* heap bytes that differ from what was written */    \
    X(forks)            /* fork children checked */                           \
    X(stale_children)   /* children that found either of the next two */      \
    X(fork_stale)       /* children whose heap was older than their globals */ \
    X(fork_bad_objects) /* published objects a child found wrong */           \
    X(child_failures)   /* children that failed, crashed or hung */           \
    X(child_hangs)                                                            \
    X(rt_signals)       /* timer signals handled by workers */                \
    X(alarm_signals)    /* SIGALRM handled */                                 \
    X(segv_handled)     /* guard page faults handled */                       \
    X(sig_verified)     /* bytes checked inside handlers */                   \
    X(dgram_sent)                                                             \
    X(dgram_received)                                                         \
    X(dgram_lost)       /* gaps in the sequence numbers */                    \
    X(dgram_bad)        /* wrong payload, length or order */                  \
    X(stream_bytes)     /* bytes read back from the pipe */                   \
    X(stream_bad)       /* pipe reads whose bytes were wrong */               \
    X(syscall_errors)   /* calls that failed where they cannot (EFAULT...) */ \
    X(meshes)                                                                 \
    X(compactions)

typedef struct soak_shared {
    uint64_t seed;
    int workers;
    int objects;                /* live-object slots per worker */
    int hang_seconds;
    int inject;                 /* a fault to plant (SOAK_INJECT_*), to see that it is caught */
    unsigned without;           /* parts left out (1 << SOAK_PART_*) */
    _Atomic int stop;           /* set by the supervisor at the deadline */
    _Atomic int nthreads;
    _Atomic int reports;        /* detail lines printed (capped) */
    _Atomic int has_mesh;       /* mesh_mallctl was found */
    _Atomic uint64_t sent_last; /* sequence number of the last datagram sent + 1 */
    _Atomic int sender_done;    /* sent_last is final */
#define X(name) _Atomic uint64_t name;
    SOAK_COUNTERS(X)
#undef X
    soak_thread_t threads[SOAK_MAX_THREADS];
} soak_shared_t;

extern soak_shared_t *S;

/* The parts --without can leave out, to tell apart what fails. */
enum { SOAK_PART_FORK, SOAK_PART_TIMER, SOAK_PART_ALARM, SOAK_PART_GUARD, SOAK_PART_DGRAM, SOAK_PART_PIPE,
       SOAK_PART_COMPACT, SOAK_NPARTS };
extern const char *const soak_part_names[SOAK_NPARTS];
#define SOAK_PART_ON(part) (!(S->without & (1u << (part))))

enum { SOAK_INJECT_NONE, SOAK_INJECT_CORRUPT, SOAK_INJECT_LOSE, SOAK_INJECT_HANG };
#define SOAK_INJECT_AT 20000    /* worker 0's operation, or the datagram, where the fault goes */

#define SOAK_ADD(name, n) atomic_fetch_add_explicit(&S->name, (n), memory_order_relaxed)
#define SOAK_STOPPING() atomic_load_explicit(&S->stop, memory_order_relaxed)

/* ---- an object and its pattern ---- */

/* A heap object the soak owns: its bytes are a function of (id, gen). */
typedef struct soak_obj {
    unsigned char *p;
    uint32_t size;
    uint64_t id, gen;
} soak_obj_t;

/* The word at index j of an object's pattern is base + j * K, so a stale
 * copy (another gen), another object (another id) or a shifted copy all
 * differ in every word. */
static inline uint64_t soak_pattern_base(uint64_t id, uint64_t gen)
{
    uint64_t x = id * 0x9E3779B97F4A7C15ull ^ (gen + 1) * 0xD1B54A32D192ED03ull;
    return x ^ (x >> 31);
}
#define SOAK_PATTERN_STEP 0x94D049BB133111EBull

void soak_stamp(unsigned char *p, size_t size, uint64_t id, uint64_t gen);
void soak_fill_at(unsigned char *dst, size_t pos, size_t n, uint64_t id, uint64_t gen);
ssize_t soak_check_at(const unsigned char *src, size_t pos, size_t n, uint64_t id, uint64_t gen);
/* Offset of the first wrong byte in [from, size), or -1. */
ssize_t soak_check(const unsigned char *p, size_t from, size_t size, uint64_t id, uint64_t gen);
unsigned char soak_pattern_byte(uint64_t id, uint64_t gen, size_t i);

/* Checks an object, counts and reports a mismatch (and writes the pattern
 * again); true if intact.  Safe in a signal handler. */
bool soak_verify(soak_thread_t *t, const soak_obj_t *o, const char *what);

/* ---- randomness: each thread its own stream from --seed ---- */

static inline uint64_t soak_splitmix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline uint64_t soak_rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static inline uint64_t soak_seed_for(const char *stream, int index)
{
    uint64_t h = S->seed;
    for (const char *c = stream; *c; c++)
        h = soak_splitmix(h ^ (unsigned char)*c);
    h = soak_splitmix(h + (uint64_t)index);
    return h ? h : 1;
}

/* ---- threads, states, reports ---- */

soak_thread_t *soak_thread_register(const char *name);
static inline void soak_set_state(soak_thread_t *t, int st)
{
    atomic_store_explicit(&t->state, st, memory_order_relaxed);
}
static inline void soak_beat(soak_thread_t *t)
{
    atomic_store_explicit(&t->beats, atomic_load_explicit(&t->beats, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}
/* Counts on the thread's own slot (only that thread writes it). */
static inline void soak_count(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

/* A line on stderr, written with one write(2); async-signal-safe for the
 * formats used here.  At most a few dozen detail lines a run. */
void soak_report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void soak_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint64_t soak_now_ns(void);
void soak_print_task(pid_t pid, pid_t tid, const char *label);
void soak_sleep_ms(double ms);

/* mesh_mallctl, when the allocator is libmesh (NULL otherwise). */
extern int (*soak_mallctl)(const char *, void *, size_t *, void *, size_t);

/* ---- the parts of the worker process ---- */

/* objects.c: the worker threads and what fork children check. */
typedef struct soak_seqobj {
    uint64_t magic;
    _Atomic uint64_t k;
} soak_seqobj_t;
#define SOAK_SEQ_MAGIC 0x5e90b1ec75eed5ull

typedef struct soak_pub_slot {
    soak_obj_t meta;                /* written only while p is NULL */
    _Atomic(unsigned char *) p;
} soak_pub_slot_t;

/* What a worker shares with fork children, outside the heap: the value k
 * it last wrote into its heap sequence object (written there first), and
 * objects fully written before they were published. */
typedef struct soak_pub {
    _Atomic uint64_t seq;
    _Atomic(soak_seqobj_t *) seqobj;
    soak_pub_slot_t slots[SOAK_PUB_SLOTS];
} __attribute__((aligned(64))) soak_pub_t;
extern soak_pub_t soak_pub[SOAK_MAX_WORKERS];

void *soak_worker_main(void *arg);
void soak_handoff_drain(void);

/* signals.c: timers, handlers, the guard page. */
typedef struct soak_sigstate {
    soak_thread_t *t;
    int index;
    uint64_t rng;
    soak_obj_t hobj[SOAK_HOBJS];    /* written by this thread's timer handler */
    soak_obj_t segv_obj;            /* written by its SIGSEGV handler */
    _Atomic uint64_t hcount;
    _Atomic int ready;
    unsigned char *guard;
    void *altstack;
    timer_t timer;
    bool has_timer;
} soak_sigstate_t;

void soak_signals_install(void);
void soak_signals_thread_start(soak_sigstate_t *s, soak_thread_t *t, int index);
void soak_signals_thread_stop(soak_sigstate_t *s);
void soak_signals_maintain(soak_sigstate_t *s);
void soak_signals_sweep(soak_sigstate_t *s);
void soak_guard_touch(soak_sigstate_t *s);
void soak_alarm_start(soak_thread_t *t);
void soak_alarm_maintain(soak_thread_t *t, uint64_t *rng);
void soak_alarm_stop(soak_thread_t *t);

/* fork.c */
void *soak_forker_main(void *arg);

/* io.c: datagrams and the pipe. */
int soak_io_setup(void);
void *soak_dgram_sender(void *arg);
void *soak_dgram_receiver(void *arg);
void *soak_pipe_writer(void *arg);
void *soak_pipe_reader(void *arg);

#endif
