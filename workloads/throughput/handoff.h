/* Handoff: objects one thread stops using and another thread frees, the
 * way a server's worker hands a finished request to the thread that
 * releases it. Objects travel in batches (each batch an allocation too)
 * through a mailbox per receiving thread: a list of batches under a
 * mutex, locked once per batch, not once per object.
 *
 * A mailbox holds at most WL_MAILBOX_MAX batches after a send returns; a
 * sender that finds it fuller frees what is in its own mailbox and then
 * waits for room. Because every sender drains its own mailbox before it
 * waits, and a drain wakes the senders waiting on that mailbox, a ring of
 * threads sending to each other cannot all wait at once. The bound keeps
 * the bytes in flight small when one thread is descheduled: without it a
 * running thread would pile up garbage for as long as the other sleeps. */
#ifndef WL_HANDOFF_H
#define WL_HANDOFF_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WL_MAILBOX_MAX 4

typedef struct {
    unsigned char *p;
    uint32_t size;
    uint64_t tag;
} wl_object_t;

typedef struct wl_batch {
    struct wl_batch *next;
    uint32_t n, cap;
    wl_object_t obj[];
} wl_batch_t;

/* One receiver, one or more senders. Closed once its last sender has
 * posted its last batch: then no more mail arrives. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t room; /* count fell to 0: for senders waiting to send more */
    pthread_cond_t mail; /* a batch arrived or the box closed: for the receiver */
    wl_batch_t *head, *tail;
    int count;
    bool closed;
} wl_mailbox_t;

/* Frees the objects of a list of batches and the batches themselves. */
typedef void wl_drain_fn(wl_batch_t *list, void *arg);

void wl_mailbox_init(wl_mailbox_t *m);

/* Appends b (if not NULL) to `to` without waiting and closes it: the
 * sender's last batch. */
void wl_mailbox_close(wl_mailbox_t *to, wl_batch_t *b);

/* Appends b to `to`, then waits while `to` holds more than WL_MAILBOX_MAX
 * batches, draining `own` through drain(list, arg) meanwhile. */
void wl_mailbox_send(wl_mailbox_t *to, wl_batch_t *b, wl_mailbox_t *own,
                     wl_drain_fn *drain, void *arg);

/* Takes every batch in m (NULL if none) and wakes the senders waiting for
 * room in it. */
wl_batch_t *wl_mailbox_take(wl_mailbox_t *m);

/* For a receiver that has nothing else to do: drains m until it is closed
 * and empty, sleeping while no mail is there. Senders waiting for room in
 * m keep being served, so they can finish. */
void wl_mailbox_drain_until_closed(wl_mailbox_t *m, wl_drain_fn *drain, void *arg);

static inline size_t wl_batch_bytes(uint32_t cap)
{
    return sizeof(wl_batch_t) + cap * sizeof(wl_object_t);
}

#endif
