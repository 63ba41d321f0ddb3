#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct wl_config wl_cfg = { .seed = 1, .scale = 1.0, .trace_path = NULL };

static void usage(const wl_spec_t *spec, FILE *out)
{
    fprintf(out, "usage: %s [options]\n\n%s\n\n", spec->name, spec->summary);
    fprintf(out, "options:\n"
                 "  --help            this text\n"
                 "  --seed N          seed of every random choice (default 1)\n"
                 "  --scale X         size of the run; 1 = the default run of a few\n"
                 "                    seconds (default 1)\n"
                 "  --trace FILE      write JSON lines of live bytes and phases to FILE\n");
    for (int i = 0; i < spec->nopts; i++) {
        const wl_opt_t *o = &spec->opts[i];
        const char *arg = o->kind == WL_OPT_BYTES ? "BYTES" : o->kind == WL_OPT_DOUBLE ? "X" : "N";
        char flag[48];
        snprintf(flag, sizeof flag, "--%s %s", o->name, arg);
        fprintf(out, "  %-17s %s\n", flag, o->help);
    }
    fprintf(out, "\nBYTES accept K, M and G suffixes (powers of 1024).\n"
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

static int64_t parse_bytes(const wl_spec_t *spec, const char *flag, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || !isfinite(v) || v < 0)
        bad(spec, flag, "expects a byte count");
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
    if (*end)
        bad(spec, flag, "expects a byte count such as 4096, 64K or 128M");
    return (int64_t)llround(v * unit);
}

void wl_args_parse(const wl_spec_t *spec, int argc, char **argv)
{
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
            const wl_opt_t *o = NULL;
            for (int k = 0; k < spec->nopts; k++)
                if (IS(spec->opts[k].name))
                    o = &spec->opts[k];
            if (!o)
                bad(spec, arg, "unknown option");
            switch (o->kind) {
            case WL_OPT_INT: *(int64_t *)o->dst = parse_int(spec, arg, value); break;
            case WL_OPT_DOUBLE: *(double *)o->dst = parse_double(spec, arg, value); break;
            case WL_OPT_BYTES: *(int64_t *)o->dst = parse_bytes(spec, arg, value); break;
            }
        }
#undef IS
    }
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
