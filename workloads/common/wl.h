/* The contract every workload shares: flags (--help, --seed, --scale,
 * --trace and its own), the trace of live bytes and phases, and the result
 * line. See ../README.md for the trace format the harness reads. */
#ifndef WL_H
#define WL_H

#include <stdbool.h>
#include <stdint.h>

#include "hash.h"
#include "live.h"
#include "rng.h"

enum wl_opt_kind {
    WL_OPT_INT,    /* int64_t */
    WL_OPT_DOUBLE, /* double */
    WL_OPT_SIZE,   /* int64_t bytes; accepts K, M and G (binary) suffixes */
};

/* How --scale changes an option's default (a value given on the command
 * line is used as is). */
enum wl_opt_scaling {
    WL_FIXED,  /* the default as written */
    WL_LINEAR, /* default x scale, never below 1: see wl_scaled */
    WL_TIME,   /* default x min(scale, 1): see wl_scaled_time */
    WL_SQRT,   /* default x sqrt(scale), rounded, never below 1 */
};

typedef struct {
    const char *name; /* the flag without its dashes */
    enum wl_opt_kind kind;
    void *dst;
    double def; /* the default before scaling; --help prints it */
    enum wl_opt_scaling scaling;
    const char *help; /* what it means; the default is added from def */
    /* An earlier spelling still accepted, with a note on stderr, so that
     * scripts and recorded argv keep working; NULL if none. */
    const char *old_name;
} wl_opt_t;

typedef struct {
    const char *name;
    const char *summary; /* what the workload models, for --help */
    const char *phases;  /* the phase names it writes, in order */
    const wl_opt_t *opts;
    int nopts;
} wl_spec_t;

struct wl_config {
    uint64_t seed;
    double scale;
    const char *trace_path;
};
extern struct wl_config wl_cfg;

/* Parses the flags (exits 0 after --help, 2 on a bad flag), stores each
 * option's scaled default where no flag gave it, opens the trace and, with
 * a trace, starts the sampler thread. Call first in main. */
void wl_init(const wl_spec_t *spec, int argc, char **argv);

/* Call in the main thread before starting the workload's first thread:
 * starts the sampler if no trace started it, so that peak_live covers the
 * threads' counts. */
void wl_threads_starting(void);

/* Time-only parameters (sleeps, holds) shrink with scales below 1 so that
 * tests run quickly, but do not grow above 1: a larger heap needs no longer
 * idle period to show compaction. */
double wl_scaled_time(double base_s);
/* Counts and byte budgets scale linearly, never below 1. */
int64_t wl_scaled(int64_t base);

/* Seconds since wl_init, from CLOCK_MONOTONIC. */
double wl_now(void);
void wl_sleep(double seconds);

/* Starts a phase and writes its boundary line. name must stay valid for the
 * rest of the run (a literal, or a static buffer). */
void wl_phase(const char *name);

/* Result figures, in the order added; keys and string values are plain
 * ASCII without quotes or backslashes. */
void wl_result_int(const char *key, int64_t value);
void wl_result_double(const char *key, double value);
void wl_result_string(const char *key, const char *value);

/* Stops the sampler, adds the common figures (workload, seed, scale,
 * elapsed_s, peak_live, final_live, checksum), writes the final trace line
 * and prints the result object as the last line of stdout. Returns the exit
 * status for main. peak_live is exact when only the main thread counted
 * bytes, else the largest value the sampler saw. */
int wl_finish(uint64_t checksum);

/* Reports a broken invariant or a failed system call and exits with 3,
 * without allocating. */
_Noreturn void wl_die(const char *msg);

#endif
