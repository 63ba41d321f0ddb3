/*
 * Object patterns: every byte the soak writes into the heap is a function
 * of (object id, generation, offset), so a check needs no shadow copy.
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "soak.h"

static inline uint64_t word_at(uint64_t base, size_t j)
{
    return base + (uint64_t)j * SOAK_PATTERN_STEP;
}

unsigned char soak_pattern_byte(uint64_t id, uint64_t gen, size_t i)
{
    return (unsigned char)(word_at(soak_pattern_base(id, gen), i / 8) >> (8 * (i % 8)));
}

/* Writes pattern positions [pos, pos + n) of (id, gen) into dst[0, n). */
void soak_fill_at(unsigned char *dst, size_t pos, size_t n, uint64_t id, uint64_t gen)
{
    size_t i = 0;
    for (; i < n && (pos + i) % 8; i++)
        dst[i] = soak_pattern_byte(id, gen, pos + i);
    uint64_t w = word_at(soak_pattern_base(id, gen), (pos + i) / 8);
    for (; i + 8 <= n; i += 8, w += SOAK_PATTERN_STEP)
        memcpy(dst + i, &w, 8);
    for (; i < n; i++)
        dst[i] = soak_pattern_byte(id, gen, pos + i);
}

/* Index in src[0, n) of the first byte that is not pattern position
 * pos + index, or -1. */
ssize_t soak_check_at(const unsigned char *src, size_t pos, size_t n, uint64_t id, uint64_t gen)
{
    size_t i = 0;
    for (; i < n && (pos + i) % 8; i++)
        if (src[i] != soak_pattern_byte(id, gen, pos + i))
            return (ssize_t)i;
    uint64_t w = word_at(soak_pattern_base(id, gen), (pos + i) / 8), got;
    for (; i + 8 <= n; i += 8, w += SOAK_PATTERN_STEP) {
        memcpy(&got, src + i, 8);
        if (got != w)
            break;
    }
    for (; i < n; i++)
        if (src[i] != soak_pattern_byte(id, gen, pos + i))
            return (ssize_t)i;
    return -1;
}

void soak_stamp(unsigned char *p, size_t size, uint64_t id, uint64_t gen)
{
    soak_fill_at(p, 0, size, id, gen);
}

ssize_t soak_check(const unsigned char *p, size_t from, size_t size, uint64_t id, uint64_t gen)
{
    if (from >= size)
        return -1;
    ssize_t bad = soak_check_at(p + from, from, size - from, id, gen);
    return bad < 0 ? -1 : bad + (ssize_t)from;
}

bool soak_verify(soak_thread_t *t, const soak_obj_t *o, const char *what)
{
    ssize_t bad = soak_check(o->p, 0, o->size, o->id, o->gen);
    if (t)
        soak_count(&t->verified, o->size);
    else
        SOAK_ADD(sig_verified, o->size);
    if (bad < 0)
        return true;
    SOAK_ADD(corruptions, 1);
    size_t n = 0;
    while ((size_t)bad + n < o->size && o->p[bad + n] != soak_pattern_byte(o->id, o->gen, (size_t)bad + n))
        n++;
    soak_report("corruption in %s: %s object %p size %u id %#llx gen %llu: byte %zd is %#x, expected %#x "
                "(%zu bytes wrong from there)",
                t ? t->name : "a signal handler", what, (void *)o->p, o->size, (unsigned long long)o->id,
                (unsigned long long)o->gen, bad, o->p[bad], soak_pattern_byte(o->id, o->gen, (size_t)bad), n);
    /* Written again, so that one corruption is counted once. */
    soak_stamp(o->p, o->size, o->id, o->gen);
    return false;
}
