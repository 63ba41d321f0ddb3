/*
 * deny_memfd ERRNO PROGRAM [ARGS...]: runs PROGRAM with memfd_create(2)
 * failing with ERRNO (a number), as a seccomp sandbox would make it fail.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "deny_memfd.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: deny_memfd ERRNO PROGRAM [ARGS...]\n");
        return 2;
    }
    if (deny_memfd((unsigned)atoi(argv[1])) != 0) {
        perror("deny_memfd: seccomp");
        return 2;
    }
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    return 127;
}
