/* The arena's page allocator: spans, splitting, coalescing, alignment,
 * dirty accounting and punching, in-place grow and shrink. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "internal.h"
#include "test.h"

static mesh_miniheap_t *alloc_span(uint32_t npages, uint32_t align, bool *clean)
{
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_miniheap_t *mh = mesh_arena_alloc_span_locked(npages, align, MESH_KIND_LARGE, clean);
    if (mh)
        mesh_arena_set_pages(mh, false);
    pthread_mutex_unlock(&mesh_arena.lock);
    return mh;
}

static void free_span(mesh_miniheap_t *mh)
{
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_arena_free_span_locked(mh);
    pthread_mutex_unlock(&mesh_arena.lock);
}

static void check_invariants(void)
{
    pthread_mutex_lock(&mesh_arena.lock);
    mesh_arena_check_locked(); /* aborts with a message if broken */
    pthread_mutex_unlock(&mesh_arena.lock);
}

static uint64_t file_bytes(void)
{
    uint64_t b = 0;
    mesh_os_file_blocks(mesh_arena.fd, &b);
    return b;
}

static void test_reserve(void)
{
    CHECK(mesh_arena.base != NULL);
    CHECK(mesh_arena.bytes >= (256UL << 20));
    CHECK(mesh_arena.fd >= 100); /* moved above the numbers programs dup2() onto */
    CHECK((uintptr_t)mesh_arena.base % MESH_PAGE_SIZE == 0);
}

static void test_alloc_free_coalesce(void)
{
    bool clean;
    mesh_miniheap_t *a = alloc_span(3, 1, &clean);
    mesh_miniheap_t *b = alloc_span(5, 1, &clean);
    mesh_miniheap_t *c = alloc_span(7, 1, &clean);
    CHECK(a && b && c);
    uint32_t pa = a->span_page, pb = b->span_page, pc = c->span_page;
    CHECK(mesh_arena_lookup(mesh_mh_start(b)) == b);
    memset(mesh_mh_start(a), 1, 3 * MESH_PAGE_SIZE);
    memset(mesh_mh_start(b), 2, 5 * MESH_PAGE_SIZE);
    check_invariants();
    uint64_t dirty0 = mesh_arena.dirty_pages;
    free_span(a);
    free_span(c);
    free_span(b); /* b merges with both neighbours */
    check_invariants();
    mesh_miniheap_t *m = mesh_arena_lookup(mesh_arena.base + ((size_t)pa << MESH_PAGE_SHIFT));
    if (pb == pa + 3 && pc == pb + 5) {
        CHECK(m->kind == MESH_KIND_FREE);
        CHECK(m->span_page <= pa && m->span_page + m->npages >= pc + 7);
    }
    CHECK(mesh_arena.dirty_pages >= dirty0 + 15 || mesh_opt.max_dirty_mb == 0);
    /* The freed pages are reused first: a 15-page span fits exactly. */
    mesh_miniheap_t *d = alloc_span(15, 1, &clean);
    CHECK(d && d->span_page <= pa + 15);
    free_span(d);
    check_invariants();
}

static void test_alignment(void)
{
    bool clean;
    for (uint32_t align = 1; align <= 512; align *= 2) {
        mesh_miniheap_t *odd = alloc_span(1, 1, &clean); /* knock the frontier off alignment */
        mesh_miniheap_t *mh = alloc_span(3, align, &clean);
        CHECK(mh && (uintptr_t)mesh_mh_start(mh) % (align * MESH_PAGE_SIZE) == 0);
        free_span(odd);
        free_span(mh);
    }
    check_invariants();
}

static void test_scavenge_punches(void)
{
    bool clean;
    mesh_miniheap_t *mh = alloc_span(256, 1, &clean); /* 1 MiB */
    memset(mesh_mh_start(mh), 7, 256 * MESH_PAGE_SIZE);
    uint64_t before = file_bytes();
    free_span(mh);
    pthread_mutex_lock(&mesh_arena.lock);
    uint64_t released = mesh_arena_scavenge_locked();
    uint64_t dirty = mesh_arena.dirty_pages;
    pthread_mutex_unlock(&mesh_arena.lock);
    uint64_t after = file_bytes();
    CHECK(released >= 256 * MESH_PAGE_SIZE);
    CHECK_EQ(dirty, 0);
    CHECK(before - after >= 256 * MESH_PAGE_SIZE);
    /* Punched pages come back clean and read as zeros. */
    mesh_miniheap_t *again = alloc_span(256, 1, &clean);
    CHECK(clean);
    const char *p = mesh_mh_start(again);
    int nonzero = 0;
    for (size_t i = 0; i < 256 * MESH_PAGE_SIZE; i += 512)
        nonzero += p[i] != 0;
    CHECK_EQ(nonzero, 0);
    free_span(again);
    check_invariants();
}

static uint64_t scavenge(void)
{
    pthread_mutex_lock(&mesh_arena.lock);
    uint64_t released = mesh_arena_scavenge_locked();
    pthread_mutex_unlock(&mesh_arena.lock);
    return released;
}

/* After a full scavenge, n spans of pages each, span i filled with
 * fill + i; false when they are not neighbours in order (the tests that
 * use them count punches across them, so they return without checking). */
static bool neighbours(mesh_miniheap_t **s, int n, uint32_t pages, int fill)
{
    bool clean;
    scavenge();
    for (int i = 0; i < n; i++) {
        s[i] = alloc_span(pages, 1, &clean);
        CHECK(s[i] != NULL);
        if (!s[i])
            return false;
        memset(mesh_mh_start(s[i]), fill + i, (size_t)pages * MESH_PAGE_SIZE);
    }
    for (int i = 1; i < n; i++)
        if (s[i]->span_page != s[0]->span_page + pages * (uint32_t)i)
            return false;
    return true;
}

/* Dirty spans with only holes between them are punched in one call, and
 * nothing else is: live neighbours keep their data, the holes and the
 * dirty spans become one clean span reading as zeros. */
static void test_punch_across_holes(void)
{
    mesh_miniheap_t *s[7];
    if (!neighbours(s, 7, 2, 0x40))
        return;
    uint32_t first = s[1]->span_page;
    /* s1 and s3 become holes; then s0, s2, s4 (between holes) and s6
     * (beyond the live s5) are dirty. */
    free_span(s[1]);
    free_span(s[3]);
    scavenge();
    uint64_t calls = mesh_stats.punch_count, bytes = mesh_stats.punched_bytes;
    free_span(s[0]);
    free_span(s[2]);
    free_span(s[4]);
    free_span(s[6]);
    CHECK_EQ(scavenge(), 8 * MESH_PAGE_SIZE);
    CHECK_EQ(mesh_stats.punch_count - calls, 2);
    CHECK_EQ(mesh_stats.punched_bytes - bytes, 8 * MESH_PAGE_SIZE);
    check_invariants();
    const unsigned char *live = (const unsigned char *)mesh_mh_start(s[5]);
    int wrong = 0;
    for (size_t i = 0; i < 2 * MESH_PAGE_SIZE; i++)
        wrong += live[i] != 0x45;
    CHECK_EQ(wrong, 0);
    mesh_miniheap_t *f = mesh_arena_lookup(mesh_arena.base + ((size_t)(first - 2) << MESH_PAGE_SHIFT));
    CHECK(f->kind == MESH_KIND_FREE && f->state == MESH_MH_FREE_CLEAN);
    CHECK(f->span_page <= first - 2 && f->span_page + f->npages >= first + 8);
    const unsigned char *p = (const unsigned char *)mesh_arena.base + ((size_t)(first - 2) << MESH_PAGE_SHIFT);
    int nonzero = 0;
    for (size_t i = 0; i < 10 * MESH_PAGE_SIZE; i += 64)
        nonzero += p[i] != 0;
    CHECK_EQ(nonzero, 0);
    free_span(s[5]);
    check_invariants();
}

/* 2n neighbouring single pages s[0..2n-1], page i filled with fill + i:
 * the even ones to be freed, the odd ones live between them. */
static bool singles(mesh_miniheap_t **s, int n, int fill)
{
    return neighbours(s, 2 * n, 1, fill);
}

/* Frees the even pages of singles(): n dirty spans, none touching. */
static void free_even_singles(mesh_miniheap_t **s, int n)
{
    for (int i = 0; i < n; i++)
        free_span(s[2 * i]);
}

/* Frees the live pages between singles(). */
static void free_live_singles(mesh_miniheap_t **s, int n)
{
    for (int i = 0; i < n; i++)
        free_span(s[2 * i + 1]);
    check_invariants();
}

static int yield_calls;
static bool yield_at_once(uint64_t now)
{
    (void)now;
    yield_calls++;
    return true;
}

/* The periodic scavenge stops after the punch under way when told to
 * (an event loop's wait would return), and what it left stays dirty and
 * due: the next one punches it.  Nothing is punched twice, and pages it
 * did not reach keep their data until then. */
static void test_aged_scavenge_yields(void)
{
    mesh_miniheap_t *s[6];
    if (!singles(s, 3, 0x50))
        return;
    /* s0, s2, s4 freed, s1, s3, s5 live between them: three punches. */
    free_even_singles(s, 3);
    pthread_mutex_lock(&mesh_arena.lock);
    uint64_t dirty = mesh_arena.dirty_pages;
    /* Not due yet: they became dirty in this period. */
    CHECK_EQ(mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + 1000000000ULL, yield_at_once), 0);
    uint64_t calls = mesh_stats.punch_count, stopped = mesh_stats.scavenge_stopped;
    yield_calls = 0;
    uint64_t first = mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + 1000000000ULL, yield_at_once);
    uint64_t left = mesh_arena.dirty_pages;
    pthread_mutex_unlock(&mesh_arena.lock);
    CHECK_EQ(mesh_stats.punch_count - calls, 1);
    CHECK_EQ(yield_calls, 1);
    CHECK_EQ(mesh_stats.scavenge_stopped - stopped, 1);
    CHECK_EQ(first, MESH_PAGE_SIZE);
    CHECK_EQ(left, dirty - 1);
    check_invariants();
    /* The two it did not reach still hold their bytes. */
    int kept = 0;
    for (int i = 0; i < 6; i += 2)
        kept += *(const unsigned char *)mesh_mh_start(s[i]) == 0x50 + i;
    CHECK_EQ(kept, 2);
    pthread_mutex_lock(&mesh_arena.lock);
    calls = mesh_stats.punch_count;
    uint64_t rest = mesh_arena_scavenge_aged_locked(0, NULL);
    pthread_mutex_unlock(&mesh_arena.lock);
    CHECK_EQ(rest, 2 * MESH_PAGE_SIZE);
    CHECK_EQ(mesh_stats.punch_count - calls, 2);
    CHECK_EQ(mesh_arena.dirty_pages, dirty - 3);
    for (int i = 1; i < 6; i += 2) {
        CHECK_EQ(*(const unsigned char *)mesh_mh_start(s[i]), 0x50 + i);
        free_span(s[i]);
    }
    check_invariants();
}

/* The options the dirty bound's tests set, and set back. */
typedef struct bound_opts {
    uint64_t max_dirty_mb, pass_ms;
} bound_opts_t;

static bound_opts_t set_bound_opts(uint64_t max_dirty_mb, uint64_t pass_ms)
{
    bound_opts_t old = {mesh_opt.max_dirty_mb, mesh_opt.pass_ms};
    mesh_opt.max_dirty_mb = max_dirty_mb;
    mesh_opt.pass_ms = pass_ms;
    return old;
}

static void restore_bound_opts(bound_opts_t o)
{
    set_bound_opts(o.max_dirty_mb, o.pass_ms);
}

static void test_dirty_threshold(void)
{
    /* More than MESH_MAX_DIRTY_MB freed at once is punched right away,
     * down to half the bound, given the time (here: all it needs; the
     * budget's own test is test_dirty_bound_budget). */
    bound_opts_t saved = set_bound_opts(mesh_opt.max_dirty_mb, 100000);
    bool clean;
    uint32_t pages = (uint32_t)(mesh_opt.max_dirty_mb * 256 + 512);
    mesh_miniheap_t *mh = alloc_span(pages, 1, &clean);
    memset(mesh_mh_start(mh), 3, (size_t)pages * MESH_PAGE_SIZE);
    free_span(mh);
    CHECK(mesh_arena.dirty_pages <= mesh_opt.max_dirty_mb * 256 / 2);
    check_invariants();
    restore_bound_opts(saved);
}

static _Atomic bool go;

static void *take_arena_lock(void *arg)
{
    (void)arg;
    while (!atomic_load(&go))
        sched_yield();
    mesh_arena_lock();
    pthread_mutex_unlock(&mesh_arena.lock);
    return NULL;
}

/* A scavenge with a deadline stops after the punch under way when another
 * thread waits for the arena lock, and the wait is timed. */
static void test_scavenge_stops_for_waiter(void)
{
    mesh_miniheap_t *s[6];
    if (!singles(s, 3, 0x58))
        return;
    free_even_singles(s, 3);
    /* The thread starts (and allocates what it needs) before the lock is
     * held; then it waits for the lock. */
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, take_arena_lock, NULL), 0);
    mesh_arena_lock();
    mesh_arena_scavenge_aged_locked(0, NULL); /* a period begins: the three are due at the next */
    atomic_store(&go, true);
    while (!atomic_load(&mesh_arena.waiters))
        sched_yield();
    uint64_t calls = mesh_stats.punch_count, stopped = mesh_stats.scavenge_stopped;
    uint64_t bytes = mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + 1000000000ULL, NULL);
    CHECK_EQ(bytes, MESH_PAGE_SIZE);
    CHECK_EQ(mesh_stats.punch_count - calls, 1);
    CHECK_EQ(mesh_stats.scavenge_stopped - stopped, 1);
    pthread_mutex_unlock(&mesh_arena.lock);
    pthread_join(t, NULL);
    CHECK(mesh_stats.arena_wait_max_ns > 0);
    CHECK_EQ(mesh_arena.waiters, 0);
    free_live_singles(s, 3);
}



/* A thread that frees past MESH_MAX_DIRTY_MB punches down to half the
 * bound, not to nothing, and the spans that were dirty before the last
 * period began go first. */
static void test_dirty_bound_halves(void)
{
    bound_opts_t saved = set_bound_opts(1, 100000); /* 256 pages; time enough for every punch */
    enum { N = 300, OLDER = 100 };
    static mesh_miniheap_t *s[2 * N];
    if (singles(s, N, 0x60)) {
        for (int i = 0; i < OLDER; i++)
            free_span(s[2 * i]);
        pthread_mutex_lock(&mesh_arena.lock);
        CHECK_EQ(mesh_arena_scavenge_aged_locked(0, NULL), 0); /* a period begins: none due yet */
        pthread_mutex_unlock(&mesh_arena.lock);
        uint64_t scavenges = mesh_stats.scavenge_bound_count;
        for (int i = OLDER; i < 256; i++)
            free_span(s[2 * i]);
        CHECK_EQ(mesh_arena.dirty_pages, 256);
        CHECK_EQ(mesh_stats.scavenge_bound_count, scavenges);
        free_span(s[2 * 256]);
        CHECK_EQ(mesh_stats.scavenge_bound_count - scavenges, 1);
        CHECK_EQ(mesh_arena.dirty_pages, 128);
        int older_left = 0;
        for (int i = 0; i < OLDER; i++)
            older_left += *(const unsigned char *)mesh_mh_start(s[2 * i]) != 0;
        CHECK_EQ(older_left, 0);
        check_invariants();
        for (int i = 257; i < N; i++)
            free_span(s[2 * i]);
        CHECK_EQ(mesh_arena.dirty_pages, 128 + N - 257);
        free_live_singles(s, N);
    }
    restore_bound_opts(saved);
}

/* The bound's scavenge stops at a busy pass's budget, after the punch
 * under way; what it leaves, the next free past the bound takes on.  A
 * budget of nothing makes that one punch per free. */
static void test_dirty_bound_budget(void)
{
    bound_opts_t saved = set_bound_opts(1, 0);
    enum { N = 270 };
    static mesh_miniheap_t *s[2 * N];
    if (singles(s, N, 0x60)) {
        for (int i = 0; i < 256; i++)
            free_span(s[2 * i]);
        for (int i = 256; i < N; i++) {
            uint64_t calls = mesh_stats.punch_count;
            free_span(s[2 * i]);
            CHECK_EQ(mesh_stats.punch_count - calls, 1);
            CHECK_EQ(mesh_arena.dirty_pages, 256);
        }
        check_invariants();
        free_live_singles(s, N);
    }
    restore_bound_opts(saved);
}

/* With a deadline, a long dirty span is punched a chunk at a time: a
 * scavenge that stops part way leaves the head clean and the tail dirty,
 * holding its data, as old as it was. */
static void test_punch_in_chunks(void)
{
    bound_opts_t saved = set_bound_opts(1, 0);
    mesh_miniheap_t *s[2];
    if (neighbours(s, 2, 1000, 0x70)) {
        uint64_t calls = mesh_stats.punch_count;
        free_span(s[0]);
        CHECK_EQ(mesh_stats.punch_count - calls, 1);
        CHECK_EQ(mesh_arena.dirty_pages, 1000 - 256);
        const unsigned char *p = (const unsigned char *)mesh_mh_start(s[0]);
        CHECK_EQ(p[0], 0);
        CHECK_EQ(p[255 * MESH_PAGE_SIZE], 0);
        CHECK_EQ(p[256 * MESH_PAGE_SIZE], 0x70);
        CHECK_EQ(p[999 * MESH_PAGE_SIZE], 0x70);
        mesh_miniheap_t *tail = mesh_arena_lookup(p + 256 * MESH_PAGE_SIZE);
        CHECK(tail->kind == MESH_KIND_FREE && tail->state == MESH_MH_FREE_DIRTY && tail->npages == 1000 - 256);
        check_invariants();
        /* The tail is due at the next periodic scavenge, as the span was. */
        mesh_opt.pass_ms = 100000;
        pthread_mutex_lock(&mesh_arena.lock);
        uint64_t bytes = mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + 1000000000ULL, NULL);
        bytes += mesh_arena_scavenge_aged_locked(mesh_os_now_ns() + 1000000000ULL, NULL);
        pthread_mutex_unlock(&mesh_arena.lock);
        CHECK_EQ(bytes, (uint64_t)(1000 - 256) * MESH_PAGE_SIZE);
        CHECK_EQ(mesh_arena.dirty_pages, 0);
        CHECK_EQ(p[999 * MESH_PAGE_SIZE], 0);
        CHECK_EQ(((const unsigned char *)mesh_mh_start(s[1]))[0], 0x71);
        free_span(s[1]);
        check_invariants();
    }
    restore_bound_opts(saved);
}

static void test_grow_shrink(void)
{
    bool clean;
    mesh_miniheap_t *a = alloc_span(4, 1, &clean);
    mesh_miniheap_t *b = alloc_span(8, 1, &clean);
    mesh_miniheap_t *c = alloc_span(2, 1, &clean);
    uint32_t pa = a->span_page;
    free_span(b);
    pthread_mutex_lock(&mesh_arena.lock);
    bool grew = mesh_arena_grow_span_locked(a, 10);
    bool too_far = mesh_arena_grow_span_locked(a, 100);
    bool shrunk = mesh_arena_shrink_span_locked(a, 2);
    pthread_mutex_unlock(&mesh_arena.lock);
    CHECK(grew);
    CHECK(!too_far);
    CHECK(shrunk);
    CHECK_EQ(a->span_page, pa);
    CHECK_EQ(a->npages, 2);
    check_invariants();
    free_span(a);
    free_span(c);
    check_invariants();
}

static void test_exhaustion(void)
{
    bool clean;
    CHECK(alloc_span(mesh_arena.npages + 1, 1, &clean) == NULL);
    check_invariants();
}

int main(void)
{
    free(malloc(1)); /* start the allocator */
    TEST_RUN(test_reserve);
    TEST_RUN(test_alloc_free_coalesce);
    TEST_RUN(test_alignment);
    TEST_RUN(test_scavenge_punches);
    TEST_RUN(test_punch_across_holes);
    TEST_RUN(test_aged_scavenge_yields);
    TEST_RUN(test_scavenge_stops_for_waiter);
    TEST_RUN(test_dirty_threshold);
    TEST_RUN(test_dirty_bound_halves);
    TEST_RUN(test_dirty_bound_budget);
    TEST_RUN(test_punch_in_chunks);
    TEST_RUN(test_grow_shrink);
    TEST_RUN(test_exhaustion);
    TEST_DONE();
}
