/* The dictionary, as Redis's dict.c builds it: chained hashing over two
 * power-of-two tables, an incremental rehash spread over lookups and the
 * cron, and the bucket sampling eviction draws its candidates from. */
#include "redis.h"

static uint64_t dict_hash(const dict *d, const char *key, size_t len)
{
    return wl_hash_bytes(key, len, d->hash_seed);
}

static void dict_table_reset(dict_table *t)
{
    *t = (dict_table){ 0 };
}

static void dict_table_alloc(dict_table *t, uint64_t size)
{
    t->table = zcalloc(size * sizeof *t->table);
    t->size = size;
    t->mask = size - 1;
    t->used = 0;
}

void dict_table_release(dict_table *t)
{
    if (t->table)
        zfree(t->table, t->size * sizeof *t->table);
    dict_table_reset(t);
}

void dict_resize_to(dict *d, uint64_t want)
{
    uint64_t size = DICT_MIN_SIZE;
    while (size < want)
        size *= 2;
    if (d->rehashidx >= 0 || size == d->ht[0].size)
        return;
    if (!d->ht[0].table) {
        dict_table_alloc(&d->ht[0], size);
        return;
    }
    dict_table_alloc(&d->ht[1], size);
    d->rehashidx = 0;
}

/* Moves up to n buckets from ht[0] to ht[1]; visits at most 10n empty
 * buckets so that one step has a bounded cost. */
void dict_rehash(dict *d, uint64_t n)
{
    uint64_t empty_visits = n * 10;
    if (d->rehashidx < 0)
        return;
    while (n-- && d->ht[0].used != 0) {
        while (d->ht[0].table[d->rehashidx] == NULL) {
            d->rehashidx++;
            if (--empty_visits == 0)
                return;
        }
        dict_entry *e = d->ht[0].table[d->rehashidx];
        while (e) {
            dict_entry *next = e->next;
            uint64_t b = dict_hash(d, e->key, sds_len(e->key)) & d->ht[1].mask;
            e->next = d->ht[1].table[b];
            d->ht[1].table[b] = e;
            d->ht[0].used--;
            d->ht[1].used++;
            e = next;
        }
        d->ht[0].table[d->rehashidx] = NULL;
        d->rehashidx++;
    }
    if (d->ht[0].used == 0) {
        dict_table_release(&d->ht[0]);
        d->ht[0] = d->ht[1];
        dict_table_reset(&d->ht[1]);
        d->rehashidx = -1;
    }
}

static void dict_rehash_step(dict *d)
{
    if (d->rehashidx >= 0)
        dict_rehash(d, 1);
}

dict_entry *dict_find(dict *d, const char *key, size_t len)
{
    if (dict_size(d) == 0)
        return NULL;
    dict_rehash_step(d);
    uint64_t h = dict_hash(d, key, len);
    for (int t = 0; t <= 1; t++) {
        if (!d->ht[t].table)
            continue;
        for (dict_entry *e = d->ht[t].table[h & d->ht[t].mask]; e; e = e->next)
            if (sds_len(e->key) == len && memcmp(e->key, key, len) == 0)
                return e;
        if (d->rehashidx < 0)
            break;
    }
    return NULL;
}

/* The caller has checked the key is absent. Grows the table 2x once it is
 * as full as it is large (Redis's load factor of 1). */
void dict_add(dict *d, sds key, robj *val)
{
    dict_rehash_step(d);
    if (d->rehashidx < 0 && d->ht[0].used >= d->ht[0].size)
        dict_resize_to(d, d->ht[0].used * 2);
    dict_table *t = &d->ht[d->rehashidx >= 0 ? 1 : 0];
    uint64_t b = dict_hash(d, key, sds_len(key)) & t->mask;
    dict_entry *e = zmalloc(sizeof *e);
    e->key = key;
    e->val = val;
    e->next = t->table[b];
    t->table[b] = e;
    t->used++;
}

void entry_free(dict_entry *e)
{
    sds_free(e->key);
    object_free(e->val);
    zfree(e, sizeof *e);
}

bool dict_delete(dict *d, const char *key, size_t len)
{
    if (dict_size(d) == 0)
        return false;
    dict_rehash_step(d);
    uint64_t h = dict_hash(d, key, len);
    for (int t = 0; t <= 1; t++) {
        if (!d->ht[t].table)
            continue;
        dict_entry **link = &d->ht[t].table[h & d->ht[t].mask];
        for (dict_entry *e = *link; e; link = &e->next, e = e->next) {
            if (sds_len(e->key) == len && memcmp(e->key, key, len) == 0) {
                *link = e->next;
                entry_free(e);
                d->ht[t].used--;
                return true;
            }
        }
        if (d->rehashidx < 0)
            break;
    }
    return false;
}

/* Samples up to count entries from a random run of buckets, as Redis's
 * dictGetSomeKeys does: cheap, and random enough for eviction. */
unsigned dict_sample(dict *d, dict_entry **out, unsigned count, wl_rng_t *rng)
{
    if (dict_size(d) < count)
        count = (unsigned)dict_size(d);
    if (count == 0)
        return 0;
    for (unsigned j = 0; j < count && d->rehashidx >= 0; j++)
        dict_rehash_step(d);
    int tables = d->rehashidx >= 0 ? 2 : 1;
    uint64_t mask = d->ht[0].mask;
    if (tables == 2 && d->ht[1].mask > mask)
        mask = d->ht[1].mask;
    uint64_t i = wl_rng_next(rng) & mask;
    unsigned stored = 0, empty_run = 0;
    for (uint64_t steps = count * 10; stored < count && steps > 0; steps--) {
        for (int t = 0; t < tables; t++) {
            /* Buckets of ht[0] below rehashidx are empty by the invariant. */
            if (tables == 2 && t == 0 && i < (uint64_t)d->rehashidx) {
                if (i >= d->ht[1].size)
                    i = (uint64_t)d->rehashidx;
                else
                    continue;
            }
            if (i >= d->ht[t].size)
                continue;
            dict_entry *e = d->ht[t].table[i];
            if (!e) {
                if (++empty_run >= 5 && empty_run > count) {
                    i = wl_rng_next(rng) & mask;
                    empty_run = 0;
                }
                continue;
            }
            empty_run = 0;
            for (; e; e = e->next) {
                out[stored++] = e;
                if (stored == count)
                    return stored;
            }
        }
        i = (i + 1) & mask;
    }
    return stored;
}
