/* Hashing for checksums and hash tables. Checksums fold the contents a
 * workload holds, never addresses, so they are equal under every correct
 * allocator. Where threads contribute, results are combined by addition
 * (mod 2^64), which does not depend on the order the threads finish in. */
#ifndef WL_HASH_H
#define WL_HASH_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The murmur3 finaliser: every input bit flips about half the output bits. */
static inline uint64_t wl_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* Word-at-a-time hash of a byte string; about 1 ns per 8 bytes. */
static inline uint64_t wl_hash_bytes(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h = seed ^ (n * 0x9e3779b97f4a7c15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ wl_mix64(w)) * 0x100000001b3ull;
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    memcpy(&tail, p, n);
    h ^= wl_mix64(tail ^ ((uint64_t)n << 56));
    return wl_mix64(h);
}

#endif
