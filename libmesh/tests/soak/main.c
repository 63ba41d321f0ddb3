/*
 * soak: runs the allocator it is linked or preloaded with under a mixed
 * multithreaded load for a given time and prints what it found:
 *
 *   soak [--minutes M | --seconds S] [--threads N] [--objects N] [--seed S] [--hang-seconds H]
 *        [--inject corrupt|lose|hang] [--without PART,...]
 *
 * PART: fork, timer (the full-mask timer handler), alarm, guard (the
 * SIGSEGV handler), dgram, pipe, compact (mesh.compact calls).
 *
 * Exit status: 0 PASS; 1 FAIL (corruption, stale fork child, lost or bad
 * datagram, bad stream, failed system call); 3 a hang (no progress from a
 * thread for --hang-seconds; every thread's state is printed and the worker
 * process killed); 4 the worker process crashed; 2 bad usage.
 *
 * The supervisor (this process) forks the worker process, watches every
 * thread's progress through shared memory and prints the verdict, so that
 * a crash or a hang is reported with the figures up to it.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "soak.h"

int (*soak_mallctl)(const char *, void *, size_t *, void *, size_t);

typedef struct options {
    double seconds;
    int progress_seconds;
} options_t;

static void usage(void)
{
    fprintf(stderr, "usage: soak [--minutes M | --seconds S] [--threads N] [--objects N] [--seed S] "
                    "[--hang-seconds H] [--progress-seconds P] [--inject corrupt|lose|hang]\n"
                    "            [--without fork,timer,alarm,guard,dgram,pipe,compact]\n"
                    "  --inject plants one fault of that kind (a heap byte changed, a datagram not sent, a\n"
                    "  worker stopped), to see that the soak catches it\n");
    exit(2);
}

static double number(const char *s, double lo, double hi)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < lo || v > hi)
        usage();
    return v;
}

static void without(char *list)
{
    for (char *save, *part = strtok_r(list, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
        int i = 0;
        while (i < SOAK_NPARTS && strcmp(part, soak_part_names[i]))
            i++;
        if (i == SOAK_NPARTS)
            usage();
        S->without |= 1u << i;
    }
}

static void parse(int argc, char **argv, options_t *o)
{
    static const struct option longs[] = {
        {"minutes", 1, 0, 'm'}, {"seconds", 1, 0, 's'}, {"threads", 1, 0, 't'},        {"objects", 1, 0, 'o'},
        {"seed", 1, 0, 'S'},    {"hang-seconds", 1, 0, 'h'}, {"progress-seconds", 1, 0, 'p'},
        {"inject", 1, 0, 'i'},  {"without", 1, 0, 'w'}, {0, 0, 0, 0},
    };
    o->seconds = 120;
    o->progress_seconds = 60;
    S->workers = 4;
    S->objects = 4096;
    S->hang_seconds = 10;
    S->seed = (uint64_t)time(NULL) % 1000000;
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'm': o->seconds = 60 * number(optarg, 0.01, 1e6); break;
        case 's': o->seconds = number(optarg, 1, 1e8); break;
        case 't': S->workers = (int)number(optarg, 1, SOAK_MAX_WORKERS); break;
        case 'o': S->objects = (int)number(optarg, 16, 1 << 22); break;
        case 'S': S->seed = (uint64_t)number(optarg, 0, 1e18); break;
        case 'h': S->hang_seconds = (int)number(optarg, 2, 3600); break;
        case 'p': o->progress_seconds = (int)number(optarg, 1, 1e6); break;
        case 'i':
            S->inject = !strcmp(optarg, "corrupt") ? SOAK_INJECT_CORRUPT
                        : !strcmp(optarg, "lose")  ? SOAK_INJECT_LOSE
                        : !strcmp(optarg, "hang")  ? SOAK_INJECT_HANG
                                                   : -1;
            if (S->inject < 0)
                usage();
            break;
        case 'w': without(optarg); break;
        default: usage();
        }
    }
    if (optind != argc)
        usage();
}

/* ---- the worker process ---- */

static void *mesher_main(void *arg)
{
    (void)arg;
    soak_thread_t *t = soak_thread_register("compactor");
    uint64_t rng = soak_seed_for("compactor", 0);
    while (!SOAK_STOPPING()) {
        soak_set_state(t, ST_SLEEP);
        soak_sleep_ms(100 + (double)(soak_rnd(&rng) % 901));
        soak_set_state(t, ST_COMPACT);
        if (soak_mallctl) {
            uint64_t v;
            size_t len = sizeof v;
            soak_mallctl("mesh.compact", &v, &len, NULL, 0);
            len = sizeof v;
            if (soak_mallctl("stats.mesh_count", &v, &len, NULL, 0) == 0)
                atomic_store(&S->meshes, v);
        } else {
            malloc_trim(0);
        }
        SOAK_ADD(compactions, 1);
        soak_beat(t);
    }
    soak_set_state(t, ST_DONE);
    return NULL;
}

static pthread_t start(void *(*fn)(void *), void *arg)
{
    pthread_t th;
    int err = pthread_create(&th, NULL, fn, arg);
    if (err) {
        soak_say("soak: pthread_create: %s\n", strerror(err));
        _exit(2);
    }
    return th;
}

static void worker_process(void)
{
    soak_mallctl = (int (*)(const char *, void *, size_t *, void *, size_t))dlsym(RTLD_DEFAULT, "mesh_mallctl");
    atomic_store(&S->has_mesh, soak_mallctl != NULL);
    soak_thread_t *t = soak_thread_register("main");
    soak_signals_install();
    if (soak_io_setup() != 0) {
        soak_say("soak: socketpair or pipe: %s\n", strerror(errno));
        _exit(2);
    }
    pthread_t th[SOAK_MAX_THREADS];
    int n = 0;
    for (int i = 0; i < S->workers; i++)
        th[n++] = start(soak_worker_main, (void *)(intptr_t)i);
    if (SOAK_PART_ON(SOAK_PART_FORK))
        th[n++] = start(soak_forker_main, NULL);
    if (SOAK_PART_ON(SOAK_PART_COMPACT))
        th[n++] = start(mesher_main, NULL);
    if (SOAK_PART_ON(SOAK_PART_DGRAM)) {
        th[n++] = start(soak_dgram_sender, NULL);
        th[n++] = start(soak_dgram_receiver, NULL);
    }
    if (SOAK_PART_ON(SOAK_PART_PIPE)) {
        th[n++] = start(soak_pipe_writer, NULL);
        th[n++] = start(soak_pipe_reader, NULL);
    }
    soak_alarm_start(t);
    uint64_t rng = soak_seed_for("main", 0);
    for (unsigned k = 0; !SOAK_STOPPING(); k++) {
        soak_set_state(t, ST_SLEEP);
        soak_sleep_ms(10);
        soak_beat(t);
        if (k % 5 == 0)
            soak_alarm_maintain(t, &rng);
    }
    soak_set_state(t, ST_SHUTDOWN);
    soak_alarm_stop(t);
    for (int i = 0; i < n; i++)
        pthread_join(th[i], NULL);
    soak_handoff_drain();
    if (soak_mallctl) {
        uint64_t v;
        size_t len = sizeof v;
        if (soak_mallctl("stats.mesh_count", &v, &len, NULL, 0) == 0)
            atomic_store(&S->meshes, v);
    }
    soak_set_state(t, ST_DONE);
    exit(0);
}

/* ---- the supervisor ---- */

static uint64_t total_ops(void)
{
    uint64_t ops = 0;
    for (int i = 0; i < atomic_load(&S->nthreads) && i < SOAK_MAX_THREADS; i++)
        ops += atomic_load(&S->threads[i].ops);
    return ops;
}

static uint64_t total_verified(void)
{
    uint64_t v = atomic_load(&S->sig_verified);
    for (int i = 0; i < atomic_load(&S->nthreads) && i < SOAK_MAX_THREADS; i++)
        v += atomic_load(&S->threads[i].verified);
    return v;
}

static uint64_t signals(void)
{
    return atomic_load(&S->rt_signals) + atomic_load(&S->alarm_signals) + atomic_load(&S->segv_handled);
}

static void print_threads(pid_t pid, const uint64_t *last_change, uint64_t now)
{
    for (int i = 0; i < atomic_load(&S->nthreads) && i < SOAK_MAX_THREADS; i++) {
        soak_thread_t *t = &S->threads[i];
        int st = atomic_load(&t->state), sig = atomic_load(&t->in_handler);
        char handler[48] = "";
        char since[48] = "";
        if (sig)
            snprintf(handler, sizeof handler, ", inside its handler of %s", sig == SIGRTMIN ? "the timer signal"
                                                                        : sig == SIGALRM  ? "SIGALRM"
                                                                                          : "SIGSEGV");
        if (last_change)
            snprintf(since, sizeof since, ", last progress %.1f s ago", (double)(now - last_change[i]) / 1e9);
        soak_say("soak:   %-15s tid %d: %s%s%s\n", t->name, atomic_load(&t->tid),
                 st >= 0 && st < ST_NSTATES ? soak_state_names[st] : "?", handler, since);
        if (pid > 0 && st != ST_DONE)
            soak_print_task(pid, atomic_load(&t->tid), t->name);
    }
}

/* The mesh count, or n/a when the allocator is not libmesh. */
static const char *meshes(char *buf, size_t len)
{
    if (atomic_load(&S->has_mesh))
        snprintf(buf, len, "%llu", (unsigned long long)atomic_load(&S->meshes));
    else
        snprintf(buf, len, "n/a");
    return buf;
}

static void progress(double secs)
{
    char m[32];
    soak_say("soak: %4.0f s: %llu ops, %.1f GB verified, %s meshes, %llu forks, %llu signals, %llu datagrams\n",
             secs, (unsigned long long)total_ops(), (double)total_verified() / 1e9, meshes(m, sizeof m),
             (unsigned long long)atomic_load(&S->forks),
             (unsigned long long)signals(), (unsigned long long)atomic_load(&S->dgram_received));
}

/* Watches the worker until it exits (returns its wait status) or hangs
 * (kills it, returns -1). */
static int supervise(pid_t pid, const options_t *o, uint64_t t0)
{
    uint64_t last_beats[SOAK_MAX_THREADS] = {0}, last_change[SOAK_MAX_THREADS];
    uint64_t hang_ns = (uint64_t)S->hang_seconds * 1000000000ull, next_progress = (uint64_t)o->progress_seconds;
    for (int i = 0; i < SOAK_MAX_THREADS; i++)
        last_change[i] = t0;
    for (;;) {
        int status;
        soak_sleep_ms(100);
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        uint64_t now = soak_now_ns();
        double secs = (double)(now - t0) / 1e9;
        if (secs >= o->seconds && !SOAK_STOPPING())
            atomic_store(&S->stop, 1);
        if (!SOAK_STOPPING() && secs >= (double)next_progress) {
            progress(secs);
            next_progress += (uint64_t)o->progress_seconds;
        }
        for (int i = 0; i < atomic_load(&S->nthreads) && i < SOAK_MAX_THREADS; i++) {
            soak_thread_t *t = &S->threads[i];
            uint64_t b = atomic_load(&t->beats);
            if (b != last_beats[i] || atomic_load(&t->state) == ST_DONE) {
                last_beats[i] = b;
                last_change[i] = now;
            } else if (now - last_change[i] > hang_ns) {
                soak_say("soak: HANG: no progress from %s for %.1f s (at %.1f s into the run); every thread:\n",
                         t->name, (double)(now - last_change[i]) / 1e9, secs);
                print_threads(pid, last_change, now);
                kill(pid, SIGKILL);
                while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                    ;
                return -1;
            }
        }
    }
}

static uint64_t get(_Atomic uint64_t *c)
{
    return atomic_load(c);
}

/* Prints the figures and the verdict; returns the exit status. */
static int verdict(int status, double secs)
{
    bool hung = status == -1, crashed = !hung && (!WIFEXITED(status) || WEXITSTATUS(status) != 0);
    uint64_t hangs = get(&S->child_hangs) + (hung ? 1 : 0), ops = total_ops();
    uint64_t problems = get(&S->corruptions) + get(&S->fork_stale) + get(&S->fork_bad_objects) +
                        get(&S->child_failures) + get(&S->dgram_lost) + get(&S->dgram_bad) + get(&S->stream_bad) +
                        get(&S->syscall_errors) + hangs + crashed;
    if (crashed) {
        if (WIFSIGNALED(status))
            soak_say("soak: CRASH: the worker process was killed by signal %d (%s); its threads were:\n",
                     WTERMSIG(status), strsignal(WTERMSIG(status)));
        else
            soak_say("soak: CRASH: the worker process exited with status %d; its threads were:\n", WEXITSTATUS(status));
        print_threads(0, NULL, 0);
    }
    char m[32];
    meshes(m, sizeof m);
    soak_say("soak: operations       %llu allocator calls\n", (unsigned long long)ops);
    soak_say("soak: bytes verified   %.2f GB\n", (double)total_verified() / 1e9);
    soak_say("soak: meshes           %s (%llu compactions requested)\n", m,
             (unsigned long long)get(&S->compactions));
    soak_say("soak: forks            %llu: %llu children saw a stale heap (%llu sequence objects older than "
             "their globals, %llu bad published objects); %llu children failed (%llu hung)\n",
             (unsigned long long)get(&S->forks), (unsigned long long)get(&S->stale_children),
             (unsigned long long)get(&S->fork_stale), (unsigned long long)get(&S->fork_bad_objects),
             (unsigned long long)get(&S->child_failures), (unsigned long long)get(&S->child_hangs));
    soak_say("soak: signals          %llu timer (full mask), %llu SIGALRM, %llu SIGSEGV on the guard page\n",
             (unsigned long long)get(&S->rt_signals), (unsigned long long)get(&S->alarm_signals),
             (unsigned long long)get(&S->segv_handled));
    soak_say("soak: datagrams        %llu sent, %llu received, %llu lost, %llu bad\n",
             (unsigned long long)get(&S->dgram_sent), (unsigned long long)get(&S->dgram_received),
             (unsigned long long)get(&S->dgram_lost), (unsigned long long)get(&S->dgram_bad));
    soak_say("soak: pipe             %.2f GB read back, %llu bad reads\n", (double)get(&S->stream_bytes) / 1e9,
             (unsigned long long)get(&S->stream_bad));
    soak_say("soak: errors           %llu corruptions, %llu failed system calls, %s\n",
             (unsigned long long)get(&S->corruptions), (unsigned long long)get(&S->syscall_errors),
             hung ? "the worker process hung" : crashed ? "the worker process crashed" : "no crash");
    if (ops == 0)
        problems++;
    const char *word = problems ? "FAIL" : "PASS";
    soak_say("soak: %.0f s, %llu ops, %.1f GB verified, %s meshes, %llu forks (%llu stale), %llu signals, %llu "
             "datagrams (%llu lost), %llu corruptions, %llu hangs%s: %s\n",
             secs, (unsigned long long)ops, (double)total_verified() / 1e9, m,
             (unsigned long long)get(&S->forks), (unsigned long long)get(&S->stale_children),
             (unsigned long long)signals(), (unsigned long long)get(&S->dgram_received),
             (unsigned long long)get(&S->dgram_lost), (unsigned long long)get(&S->corruptions),
             (unsigned long long)hangs, crashed ? ", crashed" : "", word);
    return hung ? 3 : crashed ? 4 : problems ? 1 : 0;
}

int main(int argc, char **argv)
{
    S = mmap(NULL, sizeof *S, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (S == MAP_FAILED) {
        perror("soak: mmap");
        return 2;
    }
    options_t o;
    parse(argc, argv, &o);
    const char *preload = getenv("LD_PRELOAD"), *period = getenv("MESH_PERIOD_MS");
    char left_out[128] = "";
    for (int i = 0; i < SOAK_NPARTS; i++)
        if (!SOAK_PART_ON(i))
            snprintf(left_out + strlen(left_out), sizeof left_out - strlen(left_out), "%s%s",
                     left_out[0] ? "," : ", without ", soak_part_names[i]);
    soak_say("soak: %.0f s, %d workers, %d objects each, seed %llu%s, LD_PRELOAD=%s, MESH_PERIOD_MS=%s "
             "(reproduce with --seed %llu)\n",
             o.seconds, S->workers, S->objects, (unsigned long long)S->seed, left_out, preload ? preload : "",
             period ? period : "", (unsigned long long)S->seed);
    uint64_t t0 = soak_now_ns();
    pid_t pid = fork();
    if (pid < 0) {
        perror("soak: fork");
        return 2;
    }
    if (pid == 0)
        worker_process();
    int status = supervise(pid, &o, t0);
    return verdict(status, (double)(soak_now_ns() - t0) / 1e9);
}
