/* Bad input: each misuse in bad_input.c, run in a child, must be reported
 * on stderr with its address and end the child with SIGABRT. */
#define _GNU_SOURCE
#define BAD_INPUT_NO_MAIN
#include "bad_input.c"

#include <signal.h>
#include <sys/wait.h>

#include "test.h"

static void run_mode(const char *mode)
{
    int out[2], err[2];
    CHECK(pipe(out) == 0 && pipe(err) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        close(out[0]);
        close(err[0]);
        signal(SIGABRT, SIG_DFL);
        bad_input_run(mode);
        _exit(0);
    }
    close(out[1]);
    close(err[1]);
    char obuf[256] = {0}, ebuf[1024] = {0};
    ssize_t n = 0, k;
    while (n < (ssize_t)sizeof obuf - 1 && (k = read(out[0], obuf + n, sizeof obuf - 1 - (size_t)n)) > 0)
        n += k;
    n = 0;
    while (n < (ssize_t)sizeof ebuf - 1 && (k = read(err[0], ebuf + n, sizeof ebuf - 1 - (size_t)n)) > 0)
        n += k;
    close(out[0]);
    close(err[0]);
    int status;
    waitpid(pid, &status, 0);
    char what[64] = {0}, addr[64] = {0}, want[160];
    /* "expect double free of 0x..." or "expect free of invalid pointer 0x..." */
    char *a = strrchr(obuf, ' ');
    CHECK(strncmp(obuf, "expect ", 7) == 0 && a != NULL);
    if (!a)
        return;
    snprintf(addr, sizeof addr, "%s", a + 1);
    addr[strcspn(addr, "\n")] = 0;
    snprintf(what, sizeof what, "%.*s", (int)(a - obuf - 7), obuf + 7);
    snprintf(want, sizeof want, "mesh: %s %s\n", what, addr);
    int ok = WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT && strstr(ebuf, want) != NULL;
    CHECK(ok);
    if (!ok)
        fprintf(stderr, "  mode %s: wanted \"%.*s\" and SIGABRT; got status %#x, stderr: %s\n", mode,
                (int)strlen(want) - 1, want, status, ebuf);
}

static void test_all_modes(void)
{
    for (int i = 0; bad_input_modes[i]; i++)
        run_mode(bad_input_modes[i]);
}

int main(void)
{
    TEST_RUN(test_all_modes);
    TEST_DONE();
}
