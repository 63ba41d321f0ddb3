#include <string.h>
#include <unistd.h>

#include "internal.h"

wl_live_slot_t wl_live_slots[WL_LIVE_SLOTS];
_Thread_local unsigned wl_live_self;
static _Atomic uint64_t slots_bound = 1;

void wl_live_bind(unsigned slot)
{
    if (slot >= WL_LIVE_SLOTS)
        wl_die("live-bytes slot out of range");
    wl_live_self = slot;
    atomic_fetch_or(&slots_bound, (uint64_t)1 << slot);
}

int64_t wl_live_exact_peak(void)
{
    return atomic_load(&slots_bound) == 1 ? wl_live_slots[0].peak : -1;
}

int64_t wl_live_sum(void)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < WL_LIVE_SLOTS; i++)
        sum += atomic_load_explicit(&wl_live_slots[i].bytes, memory_order_acquire);
    return sum;
}

/* A workload that cannot get memory has no meaningful result; stop with a
 * message built without malloc. */
void wl_oom(size_t n)
{
    static const char msg[] = "workload: out of memory (request of ";
    char num[24];
    int len = 0;
    do {
        num[sizeof num - 1 - len++] = (char)('0' + n % 10);
        n /= 10;
    } while (n && len < (int)sizeof num);
    ssize_t ignored = write(2, msg, sizeof msg - 1);
    ignored = write(2, num + sizeof num - len, (size_t)len);
    ignored = write(2, " bytes)\n", 8);
    (void)ignored;
    _exit(3);
}

void wl_die(const char *msg)
{
    ssize_t ignored = write(2, "workload: ", 10);
    ignored = write(2, msg, strlen(msg));
    ignored = write(2, "\n", 1);
    (void)ignored;
    _exit(3);
}
