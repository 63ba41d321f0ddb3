/*
 * Programs that misuse the heap, one per mode.  Each must end in SIGABRT
 * with libmesh's message naming the address.  Run by test_bad_input (linked
 * with libmesh.a) and, built against libc, under LD_PRELOAD by
 * programs/test_bad_input_preload.sh.
 *
 * Prints "expect <message> <address>" on stdout before misbehaving.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *victim;

static void expect(const char *what, const void *p)
{
    printf("expect %s %p\n", what, p);
    fflush(stdout);
}

static void *free_victim(void *arg)
{
    free(victim);
    return NULL;
}

static void *alloc_victim(void *arg)
{
    victim = malloc(48);
    return NULL;
}

static void in_thread(void *(*fn)(void *))
{
    pthread_t t;
    pthread_create(&t, NULL, fn, NULL);
    pthread_join(t, NULL);
}

int bad_input_run(const char *mode)
{
    /* No stdio buffer may be allocated mid-scenario: it could land on the
     * memory just freed and make the second free a valid one. */
    setvbuf(stdout, NULL, _IONBF, 0);
    if (strcmp(mode, "double-free-small") == 0) {
        char *p = malloc(32);
        free(p);
        expect("double free of", p);
        free(p);
    } else if (strcmp(mode, "double-free-large") == 0) {
        char *p = malloc(100000);
        free(p);
        expect("double free of", p);
        free(p);
    } else if (strcmp(mode, "double-free-remote-then-local") == 0) {
        victim = malloc(64);
        in_thread(free_victim);
        expect("double free of", victim);
        free(victim);
    } else if (strcmp(mode, "double-free-local-then-remote") == 0) {
        victim = malloc(64);
        void *keep = malloc(64); /* keeps the span attached and alive */
        free(victim);
        expect("double free of", victim);
        in_thread(free_victim);
        free(keep);
    } else if (strcmp(mode, "double-free-detached") == 0) {
        in_thread(alloc_victim); /* the span is detached when the thread exits */
        void *keep = malloc(8);
        free(victim);
        expect("double free of", victim);
        free(victim);
        free(keep);
    } else if (strcmp(mode, "double-free-cached-then-remote") == 0) {
        in_thread(alloc_victim);
        void *keep = malloc(8);
        free(victim); /* kept in this thread's free cache, its bit still set */
        expect("double free of", victim);
        in_thread(free_victim);
        free(keep);
    } else if (strcmp(mode, "double-free-after-flush") == 0) {
        /* another thread's objects, freed here past the free cache's
         * bound: the oldest go back to their spans together */
        static void *many[200];
        for (int i = 0; i < 200; i++) {
            in_thread(alloc_victim);
            many[i] = victim;
        }
        for (int i = 0; i < 200; i++)
            free(many[i]);
        expect("double free of", many[0]);
        free(many[0]);
    } else if (strcmp(mode, "invalid-stack") == 0) {
        volatile int local = 0;
        expect("free of invalid pointer", (void *)&local);
        free((void *)&local);
    } else if (strcmp(mode, "invalid-interior") == 0) {
        char *p = malloc(100);
        expect("free of invalid pointer", p + 8);
        free(p + 8);
    } else if (strcmp(mode, "invalid-interior-large") == 0) {
        char *p = malloc(1 << 20);
        expect("free of invalid pointer", p + 4096);
        free(p + 4096);
    } else if (strcmp(mode, "invalid-realloc") == 0) {
        static char not_heap[64];
        expect("free of invalid pointer", not_heap);
        victim = realloc(not_heap, 100);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0; /* not reached when the allocator does its job */
}

const char *bad_input_modes[] = {
    "double-free-small", "double-free-large", "double-free-remote-then-local",
    "double-free-local-then-remote", "double-free-detached", "double-free-cached-then-remote",
    "double-free-after-flush", "invalid-stack",
    "invalid-interior", "invalid-interior-large", "invalid-realloc", NULL,
};

#ifndef BAD_INPUT_NO_MAIN
int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; bad_input_modes[i]; i++)
            puts(bad_input_modes[i]);
        return 0;
    }
    if (argc != 2) {
        fprintf(stderr, "usage: bad_input MODE | --list\n");
        return 2;
    }
    return bad_input_run(argv[1]);
}
#endif
