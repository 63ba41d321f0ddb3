/* Redis's memory layer: allocation counted as zmalloc counts it under
 * jemalloc, length-prefixed strings (sds) and object headers (robj), each
 * laid out and sized as in Redis. */
#include "redis.h"

#define EMBSTR_LIMIT 44

uint64_t used_memory;

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

void *zmalloc(size_t n)
{
    used_memory += jemalloc_class(n);
    return wl_malloc(n);
}

void *zcalloc(size_t n)
{
    used_memory += jemalloc_class(n);
    return wl_calloc(1, n);
}

void zfree(void *p, size_t n)
{
    used_memory -= jemalloc_class(n);
    wl_free(p, n);
}

static int sds_type(size_t len)
{
    return len < 256 ? SDS_8 : len < 65536 ? SDS_16 : SDS_32;
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

sds sds_new(const void *init, size_t len)
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

void sds_free(sds s)
{
    zfree(s - sds_hdr_len[((unsigned char *)s)[-1] & 3], sds_alloc_size(s));
}

uint32_t lruclock;

/* Short strings live in one allocation with their header (EMBSTR), longer
 * ones in two (RAW), with the same 44-byte cut-off as Redis. */
robj *string_object(const void *init, size_t len)
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

size_t object_size(const robj *o)
{
    return o->encoding == ENC_EMBSTR ? sizeof *o + sds_alloc_size(o->ptr) : sizeof *o;
}

void object_free(robj *o)
{
    if (o->encoding == ENC_RAW)
        sds_free(o->ptr);
    zfree(o, object_size(o));
}
