/*
 * What the supervisor and the worker process share: the thread registry,
 * the state names, reporting and time.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "soak.h"

soak_shared_t *S;

const char *const soak_state_names[ST_NSTATES] = {
    [ST_START] = "starting",        [ST_MALLOC] = "malloc",         [ST_CALLOC] = "calloc",
    [ST_REALLOC] = "realloc",       [ST_MEMALIGN] = "memalign",     [ST_FREE] = "free",
    [ST_VERIFY] = "verify",         [ST_SWEEP] = "full sweep",      [ST_HANDOFF] = "handoff",
    [ST_PUBLISH] = "publish",       [ST_THIN] = "thinning",         [ST_GUARD] = "guard page touch",
    [ST_SIG_MAINT] = "handler objects", [ST_FORK] = "fork",         [ST_WAIT_CHILD] = "waiting for child",
    [ST_SEND] = "send",             [ST_RECV] = "recv",             [ST_POLL] = "poll",
    [ST_READ] = "read",             [ST_WRITE] = "write",           [ST_COMPACT] = "mesh.compact",
    [ST_SLEEP] = "sleep",           [ST_SHUTDOWN] = "shutting down", [ST_DONE] = "done",
};

const char *const soak_part_names[SOAK_NPARTS] = {
    [SOAK_PART_FORK] = "fork",   [SOAK_PART_TIMER] = "timer", [SOAK_PART_ALARM] = "alarm",
    [SOAK_PART_GUARD] = "guard", [SOAK_PART_DGRAM] = "dgram", [SOAK_PART_PIPE] = "pipe",
    [SOAK_PART_COMPACT] = "compact",
};

soak_thread_t *soak_thread_register(const char *name)
{
    int i = atomic_fetch_add(&S->nthreads, 1);
    if (i >= SOAK_MAX_THREADS) {
        soak_say("soak: too many threads\n");
        _exit(2);
    }
    soak_thread_t *t = &S->threads[i];
    snprintf(t->name, sizeof t->name, "%s", name);
    atomic_store(&t->tid, (int)gettid());
    atomic_store(&t->beats, 1);
    return t;
}

static void write_all(const char *buf, size_t n)
{
    while (n) {
        ssize_t w = write(2, buf, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        buf += w;
        n -= (size_t)w;
    }
}

static void vsay(const char *prefix, const char *fmt, va_list ap)
{
    char buf[512];
    int n = snprintf(buf, sizeof buf, "%s", prefix);
    n += vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    if (n >= (int)sizeof buf)
        n = sizeof buf - 1;
    write_all(buf, (size_t)n);
}

void soak_say(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vsay("", fmt, ap);
    va_end(ap);
    errno = saved;
}

/* Detail lines for problems, capped so that a broken allocator does not
 * flood the terminal; the counters keep counting. */
void soak_report(const char *fmt, ...)
{
    int saved = errno;
    int n = atomic_fetch_add(&S->reports, 1);
    if (n < 40) {
        char fmt2[384];
        snprintf(fmt2, sizeof fmt2, "%s\n", fmt);
        va_list ap;
        va_start(ap, fmt);
        vsay("soak: ", fmt2, ap);
        va_end(ap);
    } else if (n == 40) {
        soak_say("soak: (further problem reports suppressed; the counters go on)\n");
    }
    errno = saved;
}

uint64_t soak_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void soak_sleep_ms(double ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000 * (time_t)(ms / 1000)) * 1e6)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* First line of a /proc file, trimmed, or "?". */
static void proc_line(const char *path, char *out, size_t len)
{
    snprintf(out, len, "?");
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(out, (int)len, f))
        out[strcspn(out, "\n")] = 0;
    fclose(f);
}

/* What the kernel says a thread is doing: its state, the kernel function
 * it sleeps in and the system call it is in (number, arguments). */
void soak_print_task(pid_t pid, pid_t tid, const char *label)
{
    char path[96], stat[512], wchan[96], sys[256];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", pid, tid);
    proc_line(path, stat, sizeof stat);
    char *state = strrchr(stat, ')');
    char st = state && state[1] ? state[2] : '?';
    snprintf(path, sizeof path, "/proc/%d/task/%d/wchan", pid, tid);
    proc_line(path, wchan, sizeof wchan);
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", pid, tid);
    proc_line(path, sys, sizeof sys);
    soak_say("soak:     %s: kernel state %c, wchan %s, syscall %s\n", label, st, wchan, sys);
}
