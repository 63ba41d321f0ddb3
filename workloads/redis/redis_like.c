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
 *   phase each epoll timeout is one tick.
 *
 * This file holds the server: eviction, the cron, the commands, the event
 * loop and the run; object.c holds the memory layer (zmalloc, sds, robj)
 * and dict.c the dictionary. */
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "redis.h"

#define MB (1024 * 1024)
#define LRU_CLOCK_MAX ((1u << LRU_BITS) - 1)
#define CRON_HZ 10
#define TICK_KEYS 40000
#define EVPOOL_SIZE 16
#define MAXMEMORY_SAMPLES 5
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
