/*
 * Pinned buffers: ranges of the arena that a system call is writing into
 * right now.  Meshing must not make such a range read-only, nor may fork's
 * write protection cover it (barrier.c): the kernel would fail the call
 * with EFAULT, and for some calls it has by then consumed what it was about
 * to deliver (a datagram, the messages of recvmmsg, the signal of
 * sigtimedwait), so that no retry can bring it back.
 *
 * A thread pins its buffers before such a call (receive.c, idle.c) and unpins
 * them after.  The handshake with meshing is Dekker's: the pinner publishes
 * its range, then looks whether a mesh under way protects it or a fork is
 * under way; a mesh announces itself and its ranges (mesh_barrier_begin),
 * then looks for pins over the spans it is about to protect.  Both sides use sequentially consistent
 * operations, so at least one sees the other: either the mesh leaves the
 * pair alone, or the pinner takes its pin back and waits for the mesh to
 * end before it tries again.
 *
 * The table is a fixed array of slots (a pin is two words); claiming one is
 * a compare-and-swap from where this thread last found one free.  When
 * every slot is taken, the call goes ahead unpinned and is retried after
 * EFAULT, which is safe for the calls that consume nothing on failure.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>

#include "internal.h"

#define MESH_PIN_SLOTS 1024
#define CLAIMED ((uintptr_t)1)  /* a slot taken, its range not yet published */

typedef struct pin {
    _Atomic uintptr_t start;     /* 0: free; CLAIMED; else the first byte */
    _Atomic uintptr_t end;       /* one past the last byte */
} pin_t;

static pin_t pins[MESH_PIN_SLOTS];
static _Atomic uint32_t pins_hwm;   /* slots [0, pins_hwm) may be in use */
static __thread uint32_t tls_hint __attribute__((tls_model("initial-exec")));

/* Claims a slot and publishes [s, e) in it; returns the slot + 1, or 0
 * when the table is full. */
static int pin_publish(uintptr_t s, uintptr_t e)
{
    for (uint32_t k = 0; k < MESH_PIN_SLOTS; k++) {
        uint32_t i = (tls_hint + k) % MESH_PIN_SLOTS;
        uintptr_t expected = 0;
        if (atomic_load_explicit(&pins[i].start, memory_order_relaxed) != 0 ||
            !atomic_compare_exchange_strong(&pins[i].start, &expected, CLAIMED))
            continue;
        uint32_t hwm = atomic_load(&pins_hwm);
        while (hwm < i + 1 && !atomic_compare_exchange_weak(&pins_hwm, &hwm, i + 1))
            ;
        atomic_store(&pins[i].end, e);
        atomic_store(&pins[i].start, s); /* seq_cst: before the pinner's look at the barrier */
        tls_hint = i;
        return (int)i + 1;
    }
    return 0;
}

static void pin_withdraw(int slot)
{
    atomic_store_explicit(&pins[slot - 1].start, 0, memory_order_release);
}

/* Whether a published pin overlaps [s, e).  seq_cst loads: after the
 * caller announced its mesh or fork. */
bool mesh_pins_overlap(uintptr_t s, uintptr_t e)
{
    uint32_t n = atomic_load(&pins_hwm);
    for (uint32_t i = 0; i < n; i++) {
        uintptr_t ps = atomic_load(&pins[i].start);
        if (ps > CLAIMED && ps < e && atomic_load(&pins[i].end) > s)
            return true;
    }
    return false;
}

/* Copies the published pins into out (at most max of them); returns how
 * many.  For fork, which announces itself first. */
size_t mesh_pins_collect(uintptr_t out[][2], size_t max)
{
    uint32_t n = atomic_load(&pins_hwm);
    size_t k = 0;
    for (uint32_t i = 0; i < n && k < max; i++) {
        uintptr_t ps = atomic_load(&pins[i].start);
        if (ps > CLAIMED) {
            out[k][0] = ps;
            out[k][1] = atomic_load(&pins[i].end);
            k++;
        }
    }
    return k;
}

/* ---- sets of buffers, for one system call ---- */

/* Adds [a, a + len) to the set if it lies in the arena.  A set that is
 * full takes the new range into the one it widens least: pinning a little
 * more only keeps those pages out of meshing for the call. */
void mesh_pinset_add_range(mesh_pinset_t *ps, uintptr_t a, size_t len)
{
    uintptr_t base = (uintptr_t)mesh_arena.base;
    if (!len || a >= base + mesh_arena.bytes || a + len <= base || a + len < a)
        return;
    if (ps->n < MESH_PINSET_MAX) {
        ps->range[ps->n][0] = a;
        ps->range[ps->n][1] = a + len;
        ps->n++;
        return;
    }
    unsigned best = 0;
    uintptr_t best_width = UINTPTR_MAX;
    for (unsigned i = 0; i < ps->n; i++) {
        uintptr_t s = ps->range[i][0] < a ? ps->range[i][0] : a;
        uintptr_t e = ps->range[i][1] > a + len ? ps->range[i][1] : a + len;
        if (e - s < best_width) {
            best_width = e - s;
            best = i;
        }
    }
    if (a < ps->range[best][0])
        ps->range[best][0] = a;
    if (a + len > ps->range[best][1])
        ps->range[best][1] = a + len;
}

void mesh_pinset_release(mesh_pinset_t *ps)
{
    for (unsigned i = 0; i < ps->held; i++)
        pin_withdraw(ps->slot[i]);
    ps->held = 0;
}

/* Pins every range of the set, waiting out a mesh or a fork under way.
 * Returns false, holding nothing, if the table is full: the caller then
 * falls back to retrying after EFAULT. */
bool mesh_pinset_hold(mesh_pinset_t *ps)
{
    if (!ps->n)
        return true;
    for (;;) {
        for (ps->held = 0; ps->held < ps->n; ps->held++) {
            int slot = pin_publish(ps->range[ps->held][0], ps->range[ps->held][1]);
            if (!slot) {
                mesh_pinset_release(ps);
                return false;
            }
            ps->slot[ps->held] = slot;
        }
        uint32_t seq = mesh_barrier_seq();
        bool blocked = false;
        for (unsigned i = 0; i < ps->n && !blocked; i++)
            blocked = mesh_barrier_blocks(ps->range[i][0], ps->range[i][1]);
        if (!blocked)
            return true;
        mesh_pinset_release(ps);
        MESH_STAT_ADD(pin_waits, 1);
        mesh_barrier_wait(seq);
    }
}

/* After EFAULT on an unpinned call: worth another try if a mesh or a fork
 * was in progress or ended during the call. */
bool mesh_pin_retry_after_efault(uint32_t seq_before, int tries)
{
    if (errno != EFAULT || tries >= 64)
        return false;
    uint32_t seq = mesh_barrier_seq();
    if (!mesh_barrier_active() && seq == seq_before)
        return false;
    MESH_STAT_ADD(efault_retries, 1);
    mesh_barrier_wait(seq);
    return true;
}
