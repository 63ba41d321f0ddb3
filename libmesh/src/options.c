/*
 * The options table: every tunable has a name, an environment variable, a
 * default and a range, and is parsed once at start-up.  A bad value is
 * warned about and ignored, never half-applied.
 */
#define _GNU_SOURCE
#include <stdlib.h>

#include "internal.h"

mesh_options_t mesh_opt = {
#define MESH_OPT_DEFAULT(name, env, def, lo, hi, doc) .name = (def),
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

static void parse_option(const char *env, uint64_t *field, uint64_t lo, uint64_t hi)
{
    const char *s = getenv(env);
    uint64_t v;
    if (!s)
        return;
    if (parse_u64(s, &v) && v >= lo && v <= hi) {
        *field = v;
        return;
    }
    char buf[256];
    mesh_buf_t b = {buf, 0, sizeof buf};
    mesh_buf_str(&b, "ignoring ");
    mesh_buf_str(&b, env);
    mesh_buf_str(&b, "=");
    mesh_buf_str(&b, s);
    mesh_buf_str(&b, " (expected an integer from ");
    mesh_buf_u64(&b, lo);
    mesh_buf_str(&b, " to ");
    mesh_buf_u64(&b, hi);
    mesh_buf_str(&b, ")");
    mesh_warn(buf);
}

void mesh_options_init(void)
{
#define MESH_OPT_PARSE(name, env, def, lo, hi, doc) parse_option(env, &mesh_opt.name, lo, hi);
    MESH_OPTIONS(MESH_OPT_PARSE)
#undef MESH_OPT_PARSE
}
