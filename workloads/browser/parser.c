/* The parser thread: tokenises a page's script source while the main
 * thread builds the page, one job at a time. */
#include <pthread.h>
#include <string.h>

#include "browser.h"

struct parse_job {
    const char *src;
    size_t len;
    struct token *tokens;
    size_t ntokens;
    bool ready, done, quit;
};

static pthread_mutex_t job_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_cond = PTHREAD_COND_INITIALIZER;
static struct parse_job job;
static pthread_t parser;

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static struct token *tokenize(const char *s, size_t n, size_t *count)
{
    struct token *head = NULL, **tail = &head;
    size_t i = 0;
    *count = 0;
    while (i < n) {
        char c = s[i];
        if (c == ' ' || c == '\n') {
            i++;
            continue;
        }
        struct token *t = wl_malloc(sizeof *t);
        size_t start = i;
        t->text = NULL;
        t->value = 0;
        if (is_alpha(c)) {
            while (i < n && (is_alpha(s[i]) || is_digit(s[i])))
                i++;
            t->kind = TOK_IDENT;
        } else if (is_digit(c)) {
            while (i < n && is_digit(s[i]))
                t->value = t->value * 10 + (uint64_t)(s[i++] - '0');
            t->kind = TOK_NUMBER;
        } else if (c == '"') {
            i++;
            while (i < n && s[i] != '"')
                i++;
            i += i < n;
            t->kind = TOK_STRING;
        } else {
            i++;
            t->kind = TOK_PUNCT;
            t->value = (uint64_t)(unsigned char)c;
        }
        t->len = (uint32_t)(i - start);
        if (t->kind == TOK_IDENT || t->kind == TOK_STRING) {
            t->text = wl_malloc(t->len + 1);
            memcpy(t->text, s + start, t->len);
            t->text[t->len] = '\0';
        }
        t->next = NULL;
        *tail = t;
        tail = &t->next;
        (*count)++;
    }
    return head;
}

static void *parser_main(void *arg)
{
    (void)arg;
    wl_live_bind(PARSER_SLOT);
    pthread_mutex_lock(&job_lock);
    for (;;) {
        while (!job.ready && !job.quit)
            pthread_cond_wait(&job_cond, &job_lock);
        if (job.quit)
            break;
        job.ready = false;
        const char *src = job.src;
        size_t len = job.len;
        pthread_mutex_unlock(&job_lock);
        size_t count;
        struct token *tokens = tokenize(src, len, &count);
        pthread_mutex_lock(&job_lock);
        job.tokens = tokens;
        job.ntokens = count;
        job.done = true;
        pthread_cond_broadcast(&job_cond);
    }
    pthread_mutex_unlock(&job_lock);
    return NULL;
}

void parse_submit(const char *src, size_t len)
{
    pthread_mutex_lock(&job_lock);
    job.src = src;
    job.len = len;
    job.done = false;
    job.ready = true;
    pthread_cond_broadcast(&job_cond);
    pthread_mutex_unlock(&job_lock);
}

struct token *parse_wait(size_t *count)
{
    pthread_mutex_lock(&job_lock);
    while (!job.done)
        pthread_cond_wait(&job_cond, &job_lock);
    struct token *t = job.tokens;
    *count = job.ntokens;
    pthread_mutex_unlock(&job_lock);
    return t;
}

void parser_start(void)
{
    wl_threads_starting();
    if (pthread_create(&parser, NULL, parser_main, NULL) != 0)
        wl_die("cannot start the parser thread");
}

void parser_stop(void)
{
    pthread_mutex_lock(&job_lock);
    job.quit = true;
    pthread_cond_broadcast(&job_cond);
    pthread_mutex_unlock(&job_lock);
    pthread_join(parser, NULL);
}
