/*
 * The options table: every tunable has a kind (an integer, or a string
 * such as MESH_EVENTS's path), a name, an environment variable, a default
 * and a range, and is parsed once at start-up.  A bad value is warned
 * about and ignored, never half-applied.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>

#include "internal.h"

mesh_options_t mesh_opt = {
#define MESH_OPT_DEFAULT(kind, name, env, def, lo, hi, doc) .name = def,
    MESH_OPTIONS(MESH_OPT_DEFAULT)
#undef MESH_OPT_DEFAULT
};

/* Parses a decimal integer without strtoull, which may touch locale data. */
static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    if (!*s)
        return false;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return false;
        if (v > (UINT64_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    *out = v;
    return true;
}

/* "ignoring ENV=VALUE (expected WHAT from LO to HI)", from stack buffers:
 * the heap is not up yet.  A value longer than 64 bytes is shown cut, so
 * that what was expected still fits. */
static void warn_ignored(const char *env, const char *value, const char *what, uint64_t lo, uint64_t hi)
{
    char shown[68];
    mesh_buf_t v = {shown, 0, 65};
    mesh_buf_str(&v, value);
    v.cap = sizeof shown;
    if (value[v.len])
        mesh_buf_str(&v, "...");
    char buf[256];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "ignoring ");
    mesh_buf_str(&b, env);
    mesh_buf_str(&b, "=");
    mesh_buf_str(&b, shown);
    mesh_buf_str(&b, " (expected ");
    mesh_buf_str(&b, what);
    mesh_buf_str(&b, " from ");
    mesh_buf_u64(&b, lo);
    mesh_buf_str(&b, " to ");
    mesh_buf_u64(&b, hi);
    mesh_buf_str(&b, ")");
    mesh_warn(buf);
}

static void option_u64(const char *env, uint64_t *field, uint64_t lo, uint64_t hi)
{
    const char *s = getenv(env);
    uint64_t v;
    if (!s)
        return;
    if (parse_u64(s, &v) && v >= lo && v <= hi) {
        *field = v;
        return;
    }
    warn_ignored(env, s, "an integer", lo, hi);
}

/* Copies the value, which the program may change or free later. */
static void option_str(const char *env, char (*field)[MESH_OPT_STR_MAX], uint64_t lo, uint64_t hi)
{
    const char *s = getenv(env);
    if (!s)
        return;
    size_t len = strlen(s);
    if (len >= lo && len <= hi && len < sizeof *field) {
        memcpy(*field, s, len + 1);
        return;
    }
    warn_ignored(env, s, "a length", lo, hi);
}

void mesh_options_init(void)
{
#define MESH_OPT_PARSE(kind, name, env, def, lo, hi, doc) option_##kind(env, &mesh_opt.name, lo, hi);
    MESH_OPTIONS(MESH_OPT_PARSE)
#undef MESH_OPT_PARSE
}
