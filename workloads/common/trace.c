/* The trace: JSON lines of live bytes and phase names, written by a sampler
 * thread at WL_TRACE_HZ and by wl_phase at every boundary, then one final
 * line with the result.  The sampler runs only where it is needed: with a
 * trace, or once a workload starts threads (their counts reach the peak
 * only through its samples).  A single-threaded run without a trace stays
 * single-threaded, as the program it models is: allocators treat such a
 * process differently (glibc's malloc skips its atomic operations, libmesh
 * meshes without write protection), and a sleeping extra thread would
 * make every run pay for the other case. Nothing here calls malloc: lines are formatted into
 * stack buffers and written with write(2), so tracing does not disturb the
 * heap it describes. The only heap use is glibc's own small allocation for
 * the sampler thread's TLS, made once at start. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* 100 Hz matches the harness's memory sampling; the contract asks for at
 * least 20 lines a second. */
#define WL_TRACE_HZ 100

static const wl_spec_t *spec;
static struct timespec start;
static int trace_fd = -1;
static pthread_t sampler;
static bool sampling;      /* the sampler was started (main thread only) */
static atomic_bool stopping;

/* Guards the trace file and peak: lines appear in time order and are never
 * interleaved. */
static pthread_mutex_t trace_lock = PTHREAD_MUTEX_INITIALIZER;
/* NULL until the workload starts its first phase: no line is written
 * before then, so every sample belongs to a named phase. */
static _Atomic(const char *) phase;
static int64_t peak_live;

static char result[8192];
static size_t result_len;

double wl_now(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) * 1e-9;
}

void wl_sleep(double seconds)
{
    if (seconds <= 0)
        return;
    struct timespec ts = { (time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            wl_die("cannot write the trace");
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Samples live bytes and, when tracing, writes one line. Caller holds
 * trace_lock. */
static void sample_locked(const char *name)
{
    int64_t live = wl_live_sum();
    if (live > peak_live)
        peak_live = live;
    if (trace_fd < 0)
        return;
    char line[256];
    int len = snprintf(line, sizeof line, "{\"t\": %.6f, \"live\": %lld, \"phase\": \"%s\"}\n",
                       wl_now(), (long long)live, name);
    write_all(trace_fd, line, (size_t)len);
}

static void *sampler_main(void *arg)
{
    (void)arg;
    const long period_ns = 1000000000L / WL_TRACE_HZ;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    while (!atomic_load(&stopping)) {
        next.tv_nsec += period_ns;
        if (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
            ;
        /* After a stall (the process stopped, the machine overloaded) start
         * afresh rather than write a burst of catch-up lines. */
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - next.tv_sec) * 1000000000L + (now.tv_nsec - next.tv_nsec) > period_ns)
            next = now;
        if (atomic_load(&stopping))
            break;
        pthread_mutex_lock(&trace_lock);
        const char *name = atomic_load(&phase);
        if (name)
            sample_locked(name);
        pthread_mutex_unlock(&trace_lock);
    }
    return NULL;
}

static void sampler_start(void);

void wl_init(const wl_spec_t *s, int argc, char **argv)
{
    spec = s;
    wl_args_parse(s, argc, argv);
    clock_gettime(CLOCK_MONOTONIC, &start);
    if (wl_cfg.trace_path) {
        trace_fd = open(wl_cfg.trace_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (trace_fd < 0) {
            perror(wl_cfg.trace_path);
            exit(2);
        }
    }
    if (trace_fd >= 0)
        sampler_start();
}

static void sampler_start(void)
{
    if (sampling)
        return;
    if (pthread_create(&sampler, NULL, sampler_main, NULL) != 0)
        wl_die("cannot start the sampler thread");
    sampling = true;
}

void wl_threads_starting(void)
{
    if (sampling)
        return;
    /* Until now only this thread counted: its peak is exact so far. */
    pthread_mutex_lock(&trace_lock);
    int64_t exact = wl_live_exact_peak();
    if (exact > peak_live)
        peak_live = exact;
    pthread_mutex_unlock(&trace_lock);
    sampler_start();
}

void wl_phase(const char *name)
{
    pthread_mutex_lock(&trace_lock);
    atomic_store(&phase, name);
    sample_locked(name);
    pthread_mutex_unlock(&trace_lock);
}

static void result_add(const char *key, const char *fmt_value)
{
    int n = snprintf(result + result_len, sizeof result - result_len, "%s\"%s\": %s",
                     result_len ? ", " : "", key, fmt_value);
    if (n < 0 || (size_t)n >= sizeof result - result_len)
        wl_die("result too long");
    result_len += (size_t)n;
}

void wl_result_int(const char *key, int64_t value)
{
    char v[32];
    snprintf(v, sizeof v, "%lld", (long long)value);
    result_add(key, v);
}

void wl_result_double(const char *key, double value)
{
    char v[64];
    if (isfinite(value))
        snprintf(v, sizeof v, "%.9g", value);
    else
        snprintf(v, sizeof v, "null");
    result_add(key, v);
}

void wl_result_string(const char *key, const char *value)
{
    char v[256];
    snprintf(v, sizeof v, "\"%s\"", value);
    result_add(key, v);
}

int wl_finish(uint64_t checksum)
{
    atomic_store(&stopping, true);
    if (sampling)
        pthread_join(sampler, NULL);

    double elapsed = wl_now();
    int64_t live = wl_live_sum();
    if (live > peak_live)
        peak_live = live;
    int64_t exact = wl_live_exact_peak();
    if (exact >= 0)
        peak_live = exact;
    char sum[20];
    snprintf(sum, sizeof sum, "%016llx", (unsigned long long)checksum);
    wl_result_string("workload", spec->name);
    wl_result_int("seed", (int64_t)wl_cfg.seed);
    wl_result_double("scale", wl_cfg.scale);
    wl_result_double("elapsed_s", elapsed);
    wl_result_int("peak_live", peak_live);
    wl_result_int("final_live", live);
    wl_result_string("checksum", sum);

    char line[sizeof result + 128];
    if (trace_fd >= 0) {
        int len = snprintf(line, sizeof line,
                           "{\"t\": %.6f, \"phase\": \"end\", \"live\": %lld, \"result\": {%s}}\n",
                           elapsed, (long long)live, result);
        write_all(trace_fd, line, (size_t)len);
        close(trace_fd);
        trace_fd = -1;
    }
    int len = snprintf(line, sizeof line, "{%s}\n", result);
    write_all(1, line, (size_t)len);
    return 0;
}
