/* glibc-shim.so: runs a program on glibc's allocator even when it links
 * another one. Debian's redis-server links jemalloc; with this library in
 * LD_PRELOAD, its malloc family resolves here first and forwards to the
 * __libc_* entry points glibc exports for exactly this use, so the harness
 * can measure Redis on glibc's allocator.
 *
 * Only the allocation entry points move. Redis still calls jemalloc's
 * mallctl, nallocx and malloc_stats_print for statistics; those run against
 * jemalloc's own (then empty) heap and allocate nothing that the program
 * uses. */
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHIM_EXPORT __attribute__((visibility("default")))

extern void *__libc_malloc(size_t size);
extern void __libc_free(void *ptr);
extern void *__libc_calloc(size_t count, size_t size);
extern void *__libc_realloc(void *ptr, size_t size);
extern void *__libc_memalign(size_t alignment, size_t size);
extern void *__libc_valloc(size_t size);
extern void *__libc_pvalloc(size_t size);

SHIM_EXPORT void *malloc(size_t size)
{
    return __libc_malloc(size);
}

SHIM_EXPORT void free(void *ptr)
{
    __libc_free(ptr);
}

SHIM_EXPORT void *calloc(size_t count, size_t size)
{
    return __libc_calloc(count, size);
}

SHIM_EXPORT void *realloc(void *ptr, size_t size)
{
    return __libc_realloc(ptr, size);
}

SHIM_EXPORT void *memalign(size_t alignment, size_t size)
{
    return __libc_memalign(alignment, size);
}

SHIM_EXPORT void *valloc(size_t size)
{
    return __libc_valloc(size);
}

SHIM_EXPORT void *pvalloc(size_t size)
{
    return __libc_pvalloc(size);
}

static int is_power_of_two(size_t x)
{
    return x != 0 && (x & (x - 1)) == 0;
}

/* POSIX: EINVAL unless the alignment is a power of two and a multiple of
 * sizeof(void *); ENOMEM without touching *out or errno otherwise. */
SHIM_EXPORT int posix_memalign(void **out, size_t alignment, size_t size)
{
    if (!is_power_of_two(alignment) || alignment % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = __libc_memalign(alignment, size);
    if (!p) {
        errno = saved;
        return ENOMEM;
    }
    *out = p;
    return 0;
}

/* C11 leaves other alignments undefined; like glibc, reject them with
 * EINVAL rather than guess. */
SHIM_EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
    if (!is_power_of_two(alignment)) {
        errno = EINVAL;
        return NULL;
    }
    return __libc_memalign(alignment, size);
}

/* glibc exports no __libc_ name for this one, so take libc's own
 * definition from libc's handle: RTLD_NEXT could find jemalloc's. It is
 * looked up on first use, never from inside malloc, so dlopen's own
 * allocations are safe. */
typedef size_t (*usable_fn)(void *);
static _Atomic(usable_fn) libc_usable;

SHIM_EXPORT size_t malloc_usable_size(void *ptr)
{
    usable_fn fn = atomic_load_explicit(&libc_usable, memory_order_acquire);
    if (!fn) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        if (libc)
            fn = (usable_fn)dlsym(libc, "malloc_usable_size");
        if (!fn || fn == malloc_usable_size)
            return 0;
        atomic_store_explicit(&libc_usable, fn, memory_order_release);
    }
    return fn(ptr);
}
