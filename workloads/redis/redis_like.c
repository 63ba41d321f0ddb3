/* redis-like: an in-process key-value store built the way Redis builds
 * its keyspace, replaying the script of the Mesh paper's Redis experiment
 * (after Redis's own active-defragmentation test):
 *
 *   CONFIG SET maxmemory 100mb; CONFIG SET maxmemory-policy allkeys-lru
 *   DEBUG POPULATE 700000 key 240
 *   DEBUG POPULATE 170000 key 492
 *   PING, then idle in the event loop
 *
 * Every key costs what it costs in Redis: a dictionary entry, a copy of the
 * key string, an object header with a 24-bit LRU clock, and a
 * length-prefixed value string, each its own allocation. The first populate
 * overshoots maxmemory; the evictions that follow pick keys by sampled LRU,
 * which for keys of equal age is close to random, so they leave holes
 * scattered over every page of 240-byte values that the 492-byte values of
 * the second populate cannot use. That is the fragmentation the paper
 * measures.
 *
 * Like Redis, eviction runs before each command, so a whole DEBUG POPULATE
 * runs over the limit and the next command pays for it (--batch splits the
 * populates into smaller commands, as a client issuing SETs would).
 *
 * Two departures keep runs identical under every allocator:
 * - Redis counts used_memory with the allocator's usable sizes. Here each
 *   request is counted at jemalloc's size class (Debian's Redis links
 *   jemalloc), computed from the request, so eviction is the same whatever
 *   allocator runs underneath.
 * - Redis's LRU clock is wall time in seconds. Here it is a logical clock
 *   ticking as Redis's 10 Hz cron would if the server inserted TICK_KEYS
 *   keys per tick (400,000 keys/s, the paper's insert rate); during the idle
 *   phase each epoll timeout is one tick. */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "wl.h"

#define MB (1024 * 1024)
#define LRU_BITS 24
#define LRU_CLOCK_MAX ((1u << LRU_BITS) - 1)
#define CRON_HZ 10
#define TICK_KEYS 40000
#define EVPOOL_SIZE 16
#define MAXMEMORY_SAMPLES 5
#define EMBSTR_LIMIT 44
#define DICT_MIN_SIZE 4
#define DICT_MIN_FILL_PCT 10
#define REHASH_BUCKETS_PER_TICK 10000

static int64_t keys1, keys2;
static int64_t size1, size2;
static int64_t maxmemory;
static int64_t batch;
static double hold_s;

static const wl_opt_t opts[] = {
    { "keys1", WL_OPT_INT, &keys1, 700000, WL_LINEAR, "keys of the first populate", NULL },
    { "size1", WL_OPT_SIZE, &size1, 240, WL_FIXED, "value bytes of the first populate", NULL },
    { "keys2", WL_OPT_INT, &keys2, 170000, WL_LINEAR, "keys of the second populate", NULL },
    { "size2", WL_OPT_SIZE, &size2, 492, WL_FIXED, "value bytes of the second populate", NULL },
    { "maxmemory", WL_OPT_SIZE, &maxmemory, 100 * MB, WL_LINEAR, "Redis's maxmemory: used_memory above it evicts, 0 = none", NULL },
    { "batch", WL_OPT_INT, &batch, 0, WL_FIXED, "keys per command, 0 = one command per populate", NULL },
    { "hold", WL_OPT_DOUBLE, &hold_s, 2.0, WL_TIME, "seconds in the idle event loop at the end", "idle" },
};

static const wl_spec_t spec = {
    .name = "redis-like",
    .summary = "A Redis-shaped key-value store (dictionary with incremental rehash,\n"
               "object headers, LRU clock, sampled-LRU eviction under maxmemory) running\n"
               "the Mesh paper's Redis script, then idling in an epoll loop.",
    .phases = "populate1, populate2, idle, teardown (eviction before a command belongs to\n"
              "        that command's phase; the idle phase starts with a PING)",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

/* Allocation, counted as Redis's zmalloc would count it under jemalloc. */

static uint64_t used_memory;

/* jemalloc's size classes: 8, then multiples of 16 up to 128, then four
 * classes per doubling (160, 192, 224, 256, 320, ...). */
static uint64_t jemalloc_class(uint64_t n)
{
    if (n <= 8)
        return 8;
    if (n <= 128)
        return (n + 15) & ~(uint64_t)15;
    uint64_t pow = (uint64_t)1 << (63 - __builtin_clzll(n - 1));
    uint64_t delta = pow / 4;
    return (n + delta - 1) & ~(delta - 1);
}

static void *zmalloc(size_t n)
{
    used_memory += jemalloc_class(n);
    return wl_malloc(n);
}

static void *zcalloc(size_t n)
{
    used_memory += jemalloc_class(n);
    return wl_calloc(1, n);
}

static void zfree(void *p, size_t n)
{
    used_memory -= jemalloc_class(n);
    wl_free(p, n);
}

/* Length-prefixed strings (Redis's sds): header, bytes, NUL. */

typedef char *sds;

enum { SDS_8 = 0, SDS_16 = 1, SDS_32 = 2 };

/* Header sizes of the three types: {len, alloc, flags} in 8, 16 or 32 bits,
 * the flags byte last, just before the string, as in Redis. */
static const size_t sds_hdr_len[] = { 3, 5, 9 };

static int sds_type(size_t len)
{
    return len < 256 ? SDS_8 : len < 65536 ? SDS_16 : SDS_32;
}

static size_t sds_len(const sds s)
{
    const unsigned char *u = (const unsigned char *)s;
    switch (u[-1] & 3) {
    case SDS_8: return u[-3];
    case SDS_16: { uint16_t v; memcpy(&v, u - 5, 2); return v; }
    default: { uint32_t v; memcpy(&v, u - 9, 4); return v; }
    }
}

static size_t sds_alloc_size(const sds s)
{
    return sds_hdr_len[((const unsigned char *)s)[-1] & 3] + sds_len(s) + 1;
}

static void sds_write_hdr(unsigned char *h, int type, size_t len)
{
    switch (type) {
    case SDS_8: h[0] = (unsigned char)len; h[1] = (unsigned char)len; break;
    case SDS_16: { uint16_t v = (uint16_t)len; memcpy(h, &v, 2); memcpy(h + 2, &v, 2); break; }
    default: { uint32_t v = (uint32_t)len; memcpy(h, &v, 4); memcpy(h + 4, &v, 4); break; }
    }
    h[sds_hdr_len[type] - 1] = (unsigned char)type;
}

/* init == NULL gives a zeroed string, as sdsnewlen(NULL, len) does. */
static sds sds_new(const void *init, size_t len)
{
    int type = sds_type(len);
    size_t hdr = sds_hdr_len[type];
    unsigned char *h = zmalloc(hdr + len + 1);
    sds_write_hdr(h, type, len);
    sds s = (sds)h + hdr;
    if (init)
        memcpy(s, init, len);
    else
        memset(s, 0, len);
    s[len] = '\0';
    return s;
}

static void sds_free(sds s)
{
    zfree(s - sds_hdr_len[((unsigned char *)s)[-1] & 3], sds_alloc_size(s));
}

/* Objects: Redis's robj, 16 bytes with a 24-bit LRU clock. */

enum { ENC_RAW, ENC_EMBSTR };

typedef struct robj {
    unsigned type : 4;
    unsigned encoding : 4;
    unsigned lru : LRU_BITS;
    int refcount;
    void *ptr;
} robj;

static uint32_t lruclock;

/* Short strings live in one allocation with their header (EMBSTR), longer
 * ones in two (RAW), with the same 44-byte cut-off as Redis. */
static robj *string_object(const void *init, size_t len)
{
    robj *o;
    if (len <= EMBSTR_LIMIT) {
        size_t n = sizeof *o + sds_hdr_len[SDS_8] + len + 1;
        o = zmalloc(n);
        unsigned char *h = (unsigned char *)(o + 1);
        sds_write_hdr(h, SDS_8, len);
        sds s = (sds)h + sds_hdr_len[SDS_8];
        if (init)
            memcpy(s, init, len);
        else
            memset(s, 0, len);
        s[len] = '\0';
        o->encoding = ENC_EMBSTR;
        o->ptr = s;
    } else {
        o = zmalloc(sizeof *o);
        o->encoding = ENC_RAW;
        o->ptr = sds_new(init, len);
    }
    o->type = 0;
    o->lru = lruclock;
    o->refcount = 1;
    return o;
}

static size_t object_size(const robj *o)
{
    return o->encoding == ENC_EMBSTR ? sizeof *o + sds_alloc_size(o->ptr) : sizeof *o;
}

static void object_free(robj *o)
{
    if (o->encoding == ENC_RAW)
        sds_free(o->ptr);
    zfree(o, object_size(o));
}

/* The dictionary: chained hashing, two tables, incremental rehash. */

typedef struct dict_entry {
    sds key;
    robj *val;
    struct dict_entry *next;
} dict_entry;

typedef struct {
    dict_entry **table;
    uint64_t size;
    uint64_t mask;
    uint64_t used;
} dict_table;

/* Invariant: rehashidx < 0 <=> ht[1] is empty; while rehashing, buckets
 * [0, rehashidx) of ht[0] are empty and new keys go to ht[1]. */
typedef struct {
    dict_table ht[2];
    int64_t rehashidx;
    uint64_t hash_seed;
} dict;

static uint64_t dict_hash(const dict *d, const char *key, size_t len)
{
    return wl_hash_bytes(key, len, d->hash_seed);
}

static uint64_t dict_size(const dict *d)
{
    return d->ht[0].used + d->ht[1].used;
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

static void dict_table_release(dict_table *t)
{
    if (t->table)
        zfree(t->table, t->size * sizeof *t->table);
    dict_table_reset(t);
}

static void dict_resize_to(dict *d, uint64_t want)
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
static void dict_rehash(dict *d, uint64_t n)
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

static dict_entry *dict_find(dict *d, const char *key, size_t len)
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
static void dict_add(dict *d, sds key, robj *val)
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

static void entry_free(dict_entry *e)
{
    sds_free(e->key);
    object_free(e->val);
    zfree(e, sizeof *e);
}

static bool dict_delete(dict *d, const char *key, size_t len)
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
static unsigned dict_sample(dict *d, dict_entry **out, unsigned count, wl_rng_t *rng)
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

/* The eviction pool keeps the best candidates seen so far across samples,
 * sorted by ascending idle time. Keys are copied, since the entry they came
 * from may be gone when the pool is consulted. */
typedef struct {
    uint64_t idle;
    size_t key_len; /* 0 = empty slot */
    char key[40];
} evpool_entry;

static dict db;
static evpool_entry *pool;
static wl_rng_t rng;
static uint64_t cron_ticks;
static uint64_t keys_since_tick;
static int64_t evicted_keys;
static double evict_s;

static void update_lruclock(void)
{
    lruclock = (uint32_t)(cron_ticks / CRON_HZ) & LRU_CLOCK_MAX;
}

static uint64_t idle_time(const robj *o)
{
    if (lruclock >= o->lru)
        return lruclock - o->lru;
    return lruclock + (LRU_CLOCK_MAX - o->lru);
}

static void evpool_populate(void)
{
    dict_entry *samples[MAXMEMORY_SAMPLES];
    unsigned n = dict_sample(&db, samples, MAXMEMORY_SAMPLES, &rng);
    for (unsigned j = 0; j < n; j++) {
        dict_entry *e = samples[j];
        uint64_t idle = idle_time(e->val);
        size_t len = sds_len(e->key);
        if (len >= sizeof pool[0].key)
            continue;
        int k = 0;
        while (k < EVPOOL_SIZE && pool[k].key_len && pool[k].idle < idle)
            k++;
        if (k == 0 && pool[EVPOOL_SIZE - 1].key_len) {
            continue; /* younger than everything in a full pool */
        } else if (k < EVPOOL_SIZE && !pool[k].key_len) {
            /* an empty slot at the insertion point */
        } else if (!pool[EVPOOL_SIZE - 1].key_len) {
            memmove(&pool[k + 1], &pool[k], sizeof pool[0] * (size_t)(EVPOOL_SIZE - k - 1));
        } else {
            /* Full: drop the youngest, at the left. */
            k--;
            memmove(&pool[0], &pool[1], sizeof pool[0] * (size_t)k);
        }
        pool[k].idle = idle;
        pool[k].key_len = len;
        memcpy(pool[k].key, e->key, len);
    }
}

/* Redis's performEvictions under allkeys-lru: runs before every command. */
static void evict_if_needed(void)
{
    if (maxmemory <= 0 || used_memory <= (uint64_t)maxmemory)
        return;
    double t0 = wl_now();
    while (used_memory > (uint64_t)maxmemory && dict_size(&db) > 0) {
        bool evicted = false;
        while (!evicted) {
            evpool_populate();
            for (int k = EVPOOL_SIZE - 1; k >= 0; k--) {
                if (!pool[k].key_len)
                    continue;
                size_t len = pool[k].key_len;
                pool[k].key_len = 0;
                if (dict_delete(&db, pool[k].key, len)) {
                    evicted = true;
                    evicted_keys++;
                    break;
                }
            }
        }
    }
    evict_s += wl_now() - t0;
}

/* Redis's databasesCron: shrink a table that fell below 10% fill, then
 * spend a bounded amount of work on incremental rehashing. */
static void cron(void)
{
    cron_ticks++;
    update_lruclock();
    if (db.rehashidx < 0 && db.ht[0].size > DICT_MIN_SIZE &&
        db.ht[0].used * 100 / db.ht[0].size < DICT_MIN_FILL_PCT)
        dict_resize_to(&db, db.ht[0].used);
    dict_rehash(&db, REHASH_BUCKETS_PER_TICK);
}

/* Keys processed stand in for wall time while the server is busy: one cron
 * tick per TICK_KEYS keys, run between commands as the event loop would. */
static void between_commands(void)
{
    while (keys_since_tick >= TICK_KEYS) {
        keys_since_tick -= TICK_KEYS;
        cron();
    }
}

/* DEBUG POPULATE count key size, for keys [first, first + count). */
static void debug_populate(uint64_t first, uint64_t count, size_t value_size)
{
    char key[32], val[32];
    for (uint64_t j = first; j < first + count; j++) {
        int klen = snprintf(key, sizeof key, "key:%llu", (unsigned long long)j);
        robj *keyobj = string_object(key, (size_t)klen);
        dict_entry *e = dict_find(&db, keyobj->ptr, (size_t)klen);
        if (e) {
            e->val->lru = lruclock; /* the lookup touches the key */
        } else {
            int vlen = snprintf(val, sizeof val, "value:%llu", (unsigned long long)j);
            robj *v = string_object(NULL, value_size);
            memcpy(v->ptr, val, (size_t)vlen < value_size ? (size_t)vlen : value_size);
            dict_add(&db, sds_new(keyobj->ptr, (size_t)klen), v);
        }
        object_free(keyobj);
    }
    keys_since_tick += count;
}

static void run_populate(const char *phase, uint64_t keys, size_t value_size)
{
    wl_phase(phase);
    uint64_t per = batch > 0 ? (uint64_t)batch : keys;
    for (uint64_t first = 0; first < keys; first += per) {
        evict_if_needed();
        debug_populate(first, keys - first < per ? keys - first : per, value_size);
        between_commands();
    }
}

static void idle_loop(double seconds)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    /* Stands in for the listening socket: registered, never ready. */
    int ev = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (ep < 0 || ev < 0)
        wl_die("cannot create the event loop");
    struct epoll_event want = { .events = EPOLLIN, .data.fd = ev };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ev, &want) != 0)
        wl_die("epoll_ctl failed");
    double end = wl_now() + seconds;
    while (wl_now() < end) {
        struct epoll_event got[8];
        int ms = 1000 / CRON_HZ;
        double left = end - wl_now();
        if (left * 1000 < ms)
            ms = left > 0 ? (int)(left * 1000) + 1 : 0;
        epoll_wait(ep, got, 8, ms);
        cron();
    }
    close(ev);
    close(ep);
}

static uint64_t keyspace_checksum(int64_t *held)
{
    uint64_t sum = 0;
    int64_t bytes = (int64_t)(EVPOOL_SIZE * sizeof *pool);
    for (int t = 0; t <= 1; t++) {
        if (!db.ht[t].table)
            continue;
        bytes += (int64_t)(db.ht[t].size * sizeof *db.ht[t].table);
        for (uint64_t b = 0; b < db.ht[t].size; b++) {
            for (dict_entry *e = db.ht[t].table[b]; e; e = e->next) {
                sds v = e->val->ptr;
                sum += wl_hash_bytes(e->key, sds_len(e->key), 1) ^
                       wl_hash_bytes(v, sds_len(v), 2);
                bytes += (int64_t)(sizeof *e + sds_alloc_size(e->key) + object_size(e->val));
                if (e->val->encoding == ENC_RAW)
                    bytes += (int64_t)sds_alloc_size(v);
            }
        }
    }
    *held = bytes;
    return sum;
}

static void keyspace_free(void)
{
    for (int t = 0; t <= 1; t++) {
        for (uint64_t b = 0; b < db.ht[t].size; b++) {
            dict_entry *e = db.ht[t].table[b];
            while (e) {
                dict_entry *next = e->next;
                entry_free(e);
                e = next;
            }
        }
        dict_table_release(&db.ht[t]);
    }
    zfree(pool, EVPOOL_SIZE * sizeof *pool);
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (size1 < 0 || size2 < 0 || batch < 0) {
        fprintf(stderr, "redis-like: sizes and --batch must not be negative\n");
        return 2;
    }

    wl_rng_seed(&rng, wl_cfg.seed, 0);
    db.hash_seed = wl_mix64(wl_cfg.seed ^ 0x5eed);
    db.rehashidx = -1;
    pool = zcalloc(EVPOOL_SIZE * sizeof *pool);

    double t0 = wl_now();
    run_populate("populate1", (uint64_t)keys1, (size_t)size1);
    double t1 = wl_now();
    run_populate("populate2", (uint64_t)keys2, (size_t)size2);
    double t2 = wl_now();

    wl_phase("idle");
    evict_if_needed(); /* the PING that follows the script */
    uint64_t used_after = used_memory;
    idle_loop(hold_s);

    int64_t held;
    uint64_t keys = dict_size(&db);
    uint64_t checksum = keyspace_checksum(&held);

    wl_phase("teardown");
    keyspace_free();
    if (used_memory != 0)
        wl_die("used_memory is not 0 after freeing the keyspace");

    wl_result_double("populate1_s", t1 - t0);
    wl_result_double("populate2_s", t2 - t1);
    wl_result_double("evict_s", evict_s);
    wl_result_double("ops_per_sec", (double)(keys1 + keys2) / (t2 - t0));
    wl_result_int("keys", (int64_t)keys);
    wl_result_int("evicted_keys", evicted_keys);
    wl_result_int("used_memory", (int64_t)used_after);
    wl_result_int("maxmemory", maxmemory);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
