/* What the pieces of redis-like share: counted allocation, strings and
 * object headers (object.c), the dictionary (dict.c), used by the server
 * in redis_like.c. */
#ifndef REDIS_H
#define REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "wl.h"

#define LRU_BITS 24
#define DICT_MIN_SIZE 4

/* Allocation, counted as Redis's zmalloc would count it under jemalloc:
 * used_memory is the sum of the jemalloc size classes of live requests. */
extern uint64_t used_memory;
void *zmalloc(size_t n);
void *zcalloc(size_t n);
void zfree(void *p, size_t n);

/* Length-prefixed strings (Redis's sds): header, bytes, NUL. */

typedef char *sds;

enum { SDS_8 = 0, SDS_16 = 1, SDS_32 = 2 };

/* Header sizes of the three types: {len, alloc, flags} in 8, 16 or 32 bits,
 * the flags byte last, just before the string, as in Redis. */
static const size_t sds_hdr_len[] = { 3, 5, 9 };

static inline size_t sds_len(const sds s)
{
    const unsigned char *u = (const unsigned char *)s;
    switch (u[-1] & 3) {
    case SDS_8: return u[-3];
    case SDS_16: { uint16_t v; memcpy(&v, u - 5, 2); return v; }
    default: { uint32_t v; memcpy(&v, u - 9, 4); return v; }
    }
}

static inline size_t sds_alloc_size(const sds s)
{
    return sds_hdr_len[((const unsigned char *)s)[-1] & 3] + sds_len(s) + 1;
}

/* init == NULL gives a zeroed string, as sdsnewlen(NULL, len) does. */
sds sds_new(const void *init, size_t len);
void sds_free(sds s);

/* Objects: Redis's robj, 16 bytes with a 24-bit LRU clock. */

enum { ENC_RAW, ENC_EMBSTR };

typedef struct robj {
    unsigned type : 4;
    unsigned encoding : 4;
    unsigned lru : LRU_BITS;
    int refcount;
    void *ptr;
} robj;

/* The LRU clock new objects are stamped with; the server's cron sets it. */
extern uint32_t lruclock;

/* A string object holding a copy of init (zeroed if NULL). */
robj *string_object(const void *init, size_t len);
size_t object_size(const robj *o);
void object_free(robj *o);

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

static inline uint64_t dict_size(const dict *d)
{
    return d->ht[0].used + d->ht[1].used;
}

void dict_table_release(dict_table *t);
/* Resizes to the smallest power of two >= want, at least DICT_MIN_SIZE:
 * allocates the first table, or starts an incremental rehash into a second
 * one. Does nothing while a rehash runs or when the size would not change. */
void dict_resize_to(dict *d, uint64_t want);
void dict_rehash(dict *d, uint64_t n);
dict_entry *dict_find(dict *d, const char *key, size_t len);
void dict_add(dict *d, sds key, robj *val);
/* Frees the entry, its key and its value. */
void entry_free(dict_entry *e);
bool dict_delete(dict *d, const char *key, size_t len);
unsigned dict_sample(dict *d, dict_entry **out, unsigned count, wl_rng_t *rng);

#endif
