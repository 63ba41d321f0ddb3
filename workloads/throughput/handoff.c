#include "handoff.h"

void wl_mailbox_init(wl_mailbox_t *m)
{
    pthread_mutex_init(&m->lock, NULL);
    pthread_cond_init(&m->room, NULL);
    pthread_cond_init(&m->mail, NULL);
    m->head = m->tail = NULL;
    m->count = 0;
    m->closed = false;
}

static void append_locked(wl_mailbox_t *to, wl_batch_t *b)
{
    b->next = NULL;
    if (to->tail)
        to->tail->next = b;
    else
        to->head = b;
    to->tail = b;
    to->count++;
    /* No syscall unless the receiver sleeps in drain_until_closed. */
    pthread_cond_signal(&to->mail);
}

void wl_mailbox_close(wl_mailbox_t *to, wl_batch_t *b)
{
    pthread_mutex_lock(&to->lock);
    if (b)
        append_locked(to, b);
    to->closed = true;
    pthread_cond_signal(&to->mail);
    pthread_mutex_unlock(&to->lock);
}

void wl_mailbox_send(wl_mailbox_t *to, wl_batch_t *b, wl_mailbox_t *own,
                     wl_drain_fn *drain, void *arg)
{
    pthread_mutex_lock(&to->lock);
    append_locked(to, b);
    while (to->count > WL_MAILBOX_MAX) {
        /* Serve our own senders first: one of them may be the receiver we
         * wait for, itself waiting for room in our mailbox. */
        pthread_mutex_unlock(&to->lock);
        wl_batch_t *mine = wl_mailbox_take(own);
        if (mine)
            drain(mine, arg);
        pthread_mutex_lock(&to->lock);
        if (to->count > WL_MAILBOX_MAX)
            pthread_cond_wait(&to->room, &to->lock);
    }
    pthread_mutex_unlock(&to->lock);
}

static wl_batch_t *take_locked(wl_mailbox_t *m)
{
    wl_batch_t *list = m->head;
    if (list) {
        m->head = m->tail = NULL;
        m->count = 0;
        pthread_cond_broadcast(&m->room);
    }
    return list;
}

wl_batch_t *wl_mailbox_take(wl_mailbox_t *m)
{
    pthread_mutex_lock(&m->lock);
    wl_batch_t *list = take_locked(m);
    pthread_mutex_unlock(&m->lock);
    return list;
}

void wl_mailbox_drain_until_closed(wl_mailbox_t *m, wl_drain_fn *drain, void *arg)
{
    pthread_mutex_lock(&m->lock);
    for (;;) {
        wl_batch_t *list = take_locked(m);
        if (list) {
            pthread_mutex_unlock(&m->lock);
            drain(list, arg);
            pthread_mutex_lock(&m->lock);
        } else if (m->closed) {
            break;
        } else {
            pthread_cond_wait(&m->mail, &m->lock);
        }
    }
    pthread_mutex_unlock(&m->lock);
}
