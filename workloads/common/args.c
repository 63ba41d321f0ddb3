#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct wl_config wl_cfg = { .seed = 1, .scale = 1.0, .trace_path = NULL };

#define MAX_OPTS 32

static const char *arg_name(const wl_opt_t *o)
{
    switch (o->kind) {
    case WL_OPT_SIZE: return "SIZE";
    case WL_OPT_DOUBLE: return o->scaling == WL_TIME ? "SECONDS" : "X";
    default: return "N";
    }
}

/* The default as a flag would spell it: sizes in the largest binary unit
 * that divides them, so 128M rather than 134217728. */
static void format_default(const wl_opt_t *o, char *buf, size_t len)
{
    static const char *const scaled[] = {
        [WL_FIXED] = "", [WL_LINEAR] = " x scale",
        [WL_TIME] = " x min(scale,1)", [WL_SQRT] = " x sqrt(scale)",
    };
    char value[32];
    if (o->kind == WL_OPT_DOUBLE) {
        snprintf(value, sizeof value, "%g", o->def);
    } else {
        long long v = llround(o->def);
        const char *unit = "";
        static const char units[] = "KMG";
        for (int u = 0; o->kind == WL_OPT_SIZE && v != 0 && v % 1024 == 0 && u < 3; u++) {
            v /= 1024;
            unit = &units[u];
        }
        snprintf(value, sizeof value, "%lld%.1s", v, unit);
    }
    snprintf(buf, len, "%s%s", value, scaled[o->scaling]);
}

static void usage(const wl_spec_t *spec, FILE *out)
{
    fprintf(out, "usage: %s [options]\n\n%s\n\n", spec->name, spec->summary);
    fprintf(out, "options:\n"
                 "  --help             this text\n"
                 "  --seed N           seed of every random choice (default 1)\n"
                 "  --scale X          size of the run; 1 = the default run of a few\n"
                 "                     seconds (default 1)\n"
                 "  --trace FILE       write JSON lines of live bytes and phases to FILE\n");
    for (int i = 0; i < spec->nopts; i++) {
        const wl_opt_t *o = &spec->opts[i];
        char flag[48], def[64];
        snprintf(flag, sizeof flag, "--%s %s", o->name, arg_name(o));
        format_default(o, def, sizeof def);
        fprintf(out, "  %-18s %s (default %s)\n", flag, o->help, def);
        if (o->old_name) {
            snprintf(flag, sizeof flag, "--%s %s", o->old_name, arg_name(o));
            fprintf(out, "  %-18s old spelling of --%s, still accepted\n", flag, o->name);
        }
    }
    fprintf(out, "\nSIZE accepts K, M and G suffixes (powers of 1024).\n"
                 "phases: %s\n"
                 "The last line of stdout is the result as one JSON object.\n",
            spec->phases);
}

static _Noreturn void bad(const wl_spec_t *spec, const char *flag, const char *why)
{
    fprintf(stderr, "%s: %s: %s\n", spec->name, flag, why);
    usage(spec, stderr);
    exit(2);
}

static int64_t parse_int(const wl_spec_t *spec, const char *flag, const char *s)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end)
        bad(spec, flag, "expects an integer");
    return v;
}

static double parse_double(const wl_spec_t *spec, const char *flag, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        bad(spec, flag, "expects a number");
    return v;
}

/* The one parser of sizes: a whole number of bytes, optionally with a K, M
 * or G suffix (powers of 1024; "KiB" and "KB" read the same). 1.5K is 1536;
 * a fraction of a byte is refused. */
static int64_t parse_size(const wl_spec_t *spec, const char *flag, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        bad(spec, flag, "expects a size such as 4096, 64K or 128M");
    double unit = 1;
    switch (*end) {
    case 'k': case 'K': unit = 1024.0; end++; break;
    case 'm': case 'M': unit = 1024.0 * 1024; end++; break;
    case 'g': case 'G': unit = 1024.0 * 1024 * 1024; end++; break;
    }
    if (unit != 1 && *end == 'i')
        end++;
    if (*end == 'B')
        end++;
    double bytes = v * unit;
    if (*end || bytes != floor(bytes) || bytes > 0x1p62)
        bad(spec, flag, "expects a size such as 4096, 64K or 128M");
    return (int64_t)bytes;
}

/* The option a flag names, by its name or its old spelling. */
static int find_opt(const wl_spec_t *spec, const char *name, size_t len, bool *old)
{
    for (int k = 0; k < spec->nopts; k++) {
        const wl_opt_t *o = &spec->opts[k];
        *old = false;
        if (strlen(o->name) == len && strncmp(name, o->name, len) == 0)
            return k;
        *old = true;
        if (o->old_name && strlen(o->old_name) == len && strncmp(name, o->old_name, len) == 0)
            return k;
    }
    return -1;
}

static void set_opt(const wl_spec_t *spec, const wl_opt_t *o, const char *flag, const char *value)
{
    switch (o->kind) {
    case WL_OPT_INT: *(int64_t *)o->dst = parse_int(spec, flag, value); break;
    case WL_OPT_DOUBLE: *(double *)o->dst = parse_double(spec, flag, value); break;
    case WL_OPT_SIZE: *(int64_t *)o->dst = parse_size(spec, flag, value); break;
    }
}

static void set_default(const wl_opt_t *o)
{
    double v = o->def;
    switch (o->scaling) {
    case WL_FIXED: break;
    case WL_LINEAR: v = (double)wl_scaled(llround(o->def)); break;
    case WL_TIME: v = wl_scaled_time(o->def); break;
    case WL_SQRT: v = fmax(1, (double)llround(o->def * sqrt(wl_cfg.scale))); break;
    }
    if (o->kind == WL_OPT_DOUBLE)
        *(double *)o->dst = v;
    else
        *(int64_t *)o->dst = llround(v);
}

void wl_args_parse(const wl_spec_t *spec, int argc, char **argv)
{
    bool given[MAX_OPTS] = { false };
    if (spec->nopts > MAX_OPTS)
        wl_die("too many options in the table");
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(spec, stdout);
            exit(0);
        }
        if (strncmp(arg, "--", 2) != 0)
            bad(spec, arg, "unexpected argument");
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const char *value = eq ? eq + 1 : NULL;
        if (!value) {
            if (i + 1 >= argc)
                bad(spec, arg, "needs a value");
            value = argv[++i];
        }
#define IS(flag) (name_len == strlen(flag) && strncmp(name, flag, name_len) == 0)
        if (IS("seed")) {
            wl_cfg.seed = (uint64_t)parse_int(spec, arg, value);
        } else if (IS("scale")) {
            wl_cfg.scale = parse_double(spec, arg, value);
            if (!(wl_cfg.scale > 0))
                bad(spec, arg, "must be positive");
        } else if (IS("trace")) {
            wl_cfg.trace_path = value;
        } else {
            bool old;
            int k = find_opt(spec, name, name_len, &old);
            if (k < 0)
                bad(spec, arg, "unknown option");
            if (old)
                fprintf(stderr, "%s: --%s is an old spelling; use --%s\n", spec->name,
                        spec->opts[k].old_name, spec->opts[k].name);
            set_opt(spec, &spec->opts[k], arg, value);
            given[k] = true;
        }
#undef IS
    }
    /* After the loop: a scaled default needs --scale, wherever it came. */
    for (int k = 0; k < spec->nopts; k++)
        if (!given[k])
            set_default(&spec->opts[k]);
}

double wl_scaled_time(double base_s)
{
    return base_s * (wl_cfg.scale < 1 ? wl_cfg.scale : 1);
}

int64_t wl_scaled(int64_t base)
{
    double v = (double)base * wl_cfg.scale;
    return v < 1 ? 1 : (int64_t)llround(v);
}
