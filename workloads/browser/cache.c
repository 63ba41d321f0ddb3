/* The cache of history: objects that outlive their page by --history page
 * loads. A FIFO ring, since objects expire in the order they were cached. */
#include "browser.h"

struct cached {
    void *p;
    size_t size;
    size_t valid;    /* leading bytes with defined contents, for the checksum */
    int64_t expires; /* page-load number after which it is freed */
};

static struct cached *cache;
static size_t cache_cap, cache_head, cache_len;
static int64_t cached_total;

void cache_put(void *p, size_t size, size_t valid, int64_t now)
{
    if (cache_len == cache_cap) {
        size_t cap = cache_cap ? cache_cap * 2 : 1024;
        struct cached *c = wl_malloc(cap * sizeof *c);
        for (size_t i = 0; i < cache_len; i++)
            c[i] = cache[(cache_head + i) % cache_cap];
        if (cache)
            wl_free(cache, cache_cap * sizeof *cache);
        cache = c;
        cache_cap = cap;
        cache_head = 0;
    }
    cache[(cache_head + cache_len) % cache_cap] = (struct cached){ p, size, valid, now + history };
    cache_len++;
    cached_total++;
}

void cache_expire(int64_t now)
{
    while (cache_len > 0 && cache[cache_head].expires <= now) {
        wl_free(cache[cache_head].p, cache[cache_head].size);
        cache_head = (cache_head + 1) % cache_cap;
        cache_len--;
    }
}

int64_t cache_fold(uint64_t *checksum)
{
    int64_t held = (int64_t)(cache_cap * sizeof *cache);
    for (size_t i = 0; i < cache_len; i++) {
        struct cached *c = &cache[(cache_head + i) % cache_cap];
        *checksum += wl_hash_bytes(c->p, c->valid < 64 ? c->valid : 64, c->size);
        held += (int64_t)c->size;
    }
    return held;
}

void cache_release(void)
{
    if (cache)
        wl_free(cache, cache_cap * sizeof *cache);
}

int64_t cache_total(void)
{
    return cached_total;
}
