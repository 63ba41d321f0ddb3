/* browser-like: a Speedometer-shaped run standing in for Firefox in the
 * Mesh paper. Each of six apps loads a page many times over: the page's
 * script source goes to a parser thread while the main thread builds a
 * DOM-like tree (nodes, child and attribute arrays grown with realloc,
 * attribute and text strings) and decodes images (64 KiB - 1 MiB buffers);
 * the main thread then compiles the parser's tokens (freeing objects the
 * parser thread allocated), creates script objects bound to the elements,
 * and mutates the page (edits text, sets attributes, adds and removes
 * items). The page stays open in one of --tabs tabs until a newer page
 * takes the tab; then it is torn down, except that history and caches keep
 * a random fraction of its strings, property arrays and images for another
 * --history page loads. Long-lived objects thus end up scattered among
 * short-lived ones, which is where a browser's fragmentation comes from.
 *
 * The score is page loads per second; the checksum folds a hash of every
 * page's DOM, scripts and bytecode after its mutations, and of what the
 * caches hold at the end. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "wl.h"

#define MAIN_SLOT 0 /* frees what the parser allocates: the lower slot */
#define PARSER_SLOT 1
#define MAX_IMAGES 16
#define MAX_TABS 64
#define DEFAULT_LOADS 40

struct app {
    const char *name;
    int items;                   /* list items per page */
    int text_min, text_max;      /* bytes of an item's text */
    int attrs_min, attrs_max;    /* attributes per element */
    int images;                  /* images per page */
    int image_min_k, image_max_k;
    int source_k;                /* KiB of script source per page */
    double mutations;            /* mutations per item */
};

static const struct app apps[] = {
    { "todo-vanilla", 1000, 10, 60, 1, 3, 0, 0, 0, 32, 1.0 },
    { "todo-framework", 2000, 10, 80, 2, 5, 2, 64, 128, 192, 1.5 },
    { "news-feed", 1200, 80, 600, 1, 4, 8, 64, 256, 96, 0.5 },
    { "gallery", 400, 10, 40, 2, 4, 16, 128, 1024, 48, 0.3 },
    { "editor", 600, 200, 2000, 1, 2, 0, 0, 0, 256, 3.0 },
    { "dashboard", 2500, 5, 30, 3, 6, 4, 64, 512, 128, 1.0 },
};
#define NAPPS ((int)(sizeof apps / sizeof apps[0]))

static int64_t loads;
static int64_t tabs;
static int64_t history;
static double keep;
static double keep_images;

static const wl_opt_t opts[] = {
    { "loads", WL_OPT_INT, &loads, DEFAULT_LOADS, WL_LINEAR, "page loads per app", NULL },
    /* A longer session keeps more open and more history, but not in
     * proportion: scale 10 runs ten times as long with about three times
     * the heap, near the size of Firefox's in the paper. */
    { "tabs", WL_OPT_INT, &tabs, 4, WL_SQRT, "pages kept open; the oldest closes as a new one loads", NULL },
    { "history", WL_OPT_INT, &history, 30, WL_SQRT, "page loads a cached object outlives its page", NULL },
    { "keep", WL_OPT_DOUBLE, &keep, 0.10, WL_FIXED, "fraction of strings and script objects cached", NULL },
    { "keep-images", WL_OPT_DOUBLE, &keep_images, 0.30, WL_FIXED, "fraction of images cached", NULL },
};

static const wl_spec_t spec = {
    .name = "browser-like",
    .summary = "A Speedometer-style browser run: per app, repeated page loads that\n"
               "build, script, mutate and tear down a DOM-like tree while a parser\n"
               "thread tokenises script source and caches keep a fraction alive.",
    .phases = "todo-vanilla, todo-framework, news-feed, gallery, editor, dashboard, teardown",
    .opts = opts,
    .nopts = sizeof opts / sizeof opts[0],
};

/* Strings are generated from lowercase words so that they look like text
 * and their contents depend only on the seed. */
static void gen_text(wl_rng_t *rng, char *s, size_t len)
{
    uint64_t bits = 0;
    int left = 0;
    for (size_t i = 0; i < len; i++) {
        if (left == 0) {
            bits = wl_rng_next(rng);
            left = 12;
        }
        unsigned c = (unsigned)(bits & 31);
        bits >>= 5;
        left--;
        s[i] = c < 26 ? (char)('a' + c) : ' ';
    }
}

static char *new_string(wl_rng_t *rng, size_t len)
{
    char *s = wl_malloc(len + 1);
    gen_text(rng, s, len);
    s[len] = '\0';
    return s;
}

/* The cache of history: objects that outlive their page by --history page
 * loads. A FIFO ring, since objects expire in the order they were cached. */
struct cached {
    void *p;
    size_t size;
    size_t valid;    /* leading bytes with defined contents, for the checksum */
    int64_t expires; /* page-load number after which it is freed */
};

static struct cached *cache;
static size_t cache_cap, cache_head, cache_len;
static int64_t cached_total;

static void cache_put(void *p, size_t size, size_t valid, int64_t now)
{
    if (cache_len == cache_cap) {
        size_t cap = cache_cap ? cache_cap * 2 : 1024;
        struct cached *c = wl_malloc(cap * sizeof *c);
        for (size_t i = 0; i < cache_len; i++)
            c[i] = cache[(cache_head + i) % cache_cap];
        if (cache)
            wl_free(cache, cache_cap * sizeof *cache);
        cache = c;
        cache_cap = cap;
        cache_head = 0;
    }
    cache[(cache_head + cache_len) % cache_cap] = (struct cached){ p, size, valid, now + history };
    cache_len++;
    cached_total++;
}

static void cache_expire(int64_t now)
{
    while (cache_len > 0 && cache[cache_head].expires <= now) {
        wl_free(cache[cache_head].p, cache[cache_head].size);
        cache_head = (cache_head + 1) % cache_cap;
        cache_len--;
    }
}

/* Script objects: a property array grown with realloc, plus a small
 * closure for an event listener. Each is bound to an element and dies with
 * it. */
struct jsval {
    uint64_t key;
    uint64_t bits;
};

struct closure {
    uint32_t code_offset;
    uint32_t arity;
    struct jsobj *env;
};

struct jsobj {
    struct jsobj *next; /* the next script object bound to the same element */
    struct jsval *props;
    struct closure *listener;
    uint32_t nprops, cap;
};

static void jsobj_push(struct jsobj *o, uint64_t key, uint64_t bits)
{
    if (o->nprops == o->cap) {
        uint32_t cap = o->cap ? o->cap * 2 : 2;
        o->props = wl_realloc(o->props, o->cap * sizeof *o->props, cap * sizeof *o->props);
        o->cap = cap;
    }
    o->props[o->nprops++] = (struct jsval){ key, bits };
}

static void jsobj_free(struct jsobj *o, wl_rng_t *rng, int64_t now, bool cache_some)
{
    if (cache_some && wl_rng_chance(rng, keep))
        cache_put(o->props, o->cap * sizeof *o->props, o->nprops * sizeof *o->props, now);
    else
        wl_free(o->props, o->cap * sizeof *o->props);
    wl_free(o->listener, sizeof *o->listener);
    wl_free(o, sizeof *o);
}

/* The DOM. Element attributes hold interned names (an index, as browsers
 * use atoms) and allocated values; text lives in text nodes. */
enum tag { T_DIV, T_UL, T_LI, T_SPAN, T_A, T_INPUT, T_LABEL, T_BUTTON, T_IMG, T_P, T_TEXT, NTAGS };

struct attr {
    uint32_t name;
    uint32_t len;
    char *value;
};

struct node {
    struct node *parent;
    struct node **children;
    struct attr *attrs;
    char *text;
    struct jsobj *scripts;
    uint32_t nchildren, child_cap;
    uint32_t text_len;
    uint16_t nattrs, attr_cap;
    uint16_t tag;
};

static struct node *node_new(struct node *parent, enum tag tag)
{
    struct node *n = wl_calloc(1, sizeof *n);
    n->tag = (uint16_t)tag;
    n->parent = parent;
    if (parent) {
        if (parent->nchildren == parent->child_cap) {
            uint32_t cap = parent->child_cap ? parent->child_cap * 2 : 2;
            parent->children = wl_realloc(parent->children,
                                          parent->child_cap * sizeof *parent->children,
                                          cap * sizeof *parent->children);
            parent->child_cap = cap;
        }
        parent->children[parent->nchildren++] = n;
    }
    return n;
}

static void node_set_attr(struct node *n, uint32_t name, wl_rng_t *rng, size_t len)
{
    for (uint16_t i = 0; i < n->nattrs; i++) {
        if (n->attrs[i].name == name) {
            wl_free(n->attrs[i].value, n->attrs[i].len + 1);
            n->attrs[i].value = new_string(rng, len);
            n->attrs[i].len = (uint32_t)len;
            return;
        }
    }
    if (n->nattrs == n->attr_cap) {
        uint16_t cap = n->attr_cap ? (uint16_t)(n->attr_cap * 2) : 1;
        n->attrs = wl_realloc(n->attrs, n->attr_cap * sizeof *n->attrs, cap * sizeof *n->attrs);
        n->attr_cap = cap;
    }
    n->attrs[n->nattrs++] = (struct attr){ name, (uint32_t)len, new_string(rng, len) };
}

static struct node *text_new(struct node *parent, wl_rng_t *rng, size_t len)
{
    struct node *t = node_new(parent, T_TEXT);
    t->text = new_string(rng, len);
    t->text_len = (uint32_t)len;
    return t;
}

/* Frees a subtree; with probability --keep a node's text or first
 * attribute value goes to the history cache instead. */
static void node_free(struct node *n, wl_rng_t *rng, int64_t now, bool cache_some)
{
    while (n->scripts) {
        struct jsobj *o = n->scripts;
        n->scripts = o->next;
        jsobj_free(o, rng, now, cache_some);
    }
    for (uint32_t i = 0; i < n->nchildren; i++)
        node_free(n->children[i], rng, now, cache_some);
    if (n->children)
        wl_free(n->children, n->child_cap * sizeof *n->children);
    /* At most one string per node survives: its first attribute value, or
     * its text. */
    bool spare = cache_some && wl_rng_chance(rng, keep);
    for (uint16_t i = 0; i < n->nattrs; i++) {
        if (spare) {
            cache_put(n->attrs[i].value, n->attrs[i].len + 1, n->attrs[i].len + 1, now);
            spare = false;
        } else {
            wl_free(n->attrs[i].value, n->attrs[i].len + 1);
        }
    }
    if (n->attrs)
        wl_free(n->attrs, n->attr_cap * sizeof *n->attrs);
    if (n->text) {
        if (spare)
            cache_put(n->text, n->text_len + 1, n->text_len + 1, now);
        else
            wl_free(n->text, n->text_len + 1);
    }
    wl_free(n, sizeof *n);
}

static void node_detach(struct node *n)
{
    struct node *p = n->parent;
    for (uint32_t i = 0; i < p->nchildren; i++) {
        if (p->children[i] == n) {
            memmove(&p->children[i], &p->children[i + 1],
                    (p->nchildren - i - 1) * sizeof *p->children);
            p->nchildren--;
            return;
        }
    }
}

static uint64_t node_hash(const struct node *n, uint64_t h)
{
    h = wl_mix64(h ^ n->tag ^ ((uint64_t)n->nchildren << 16));
    for (uint16_t i = 0; i < n->nattrs; i++)
        h = wl_mix64(h ^ n->attrs[i].name) + wl_hash_bytes(n->attrs[i].value, n->attrs[i].len, h);
    if (n->text)
        h += wl_hash_bytes(n->text, n->text_len, h);
    for (const struct jsobj *o = n->scripts; o; o = o->next)
        h = wl_mix64(h ^ o->listener->code_offset) +
            wl_hash_bytes(o->props, o->nprops * sizeof *o->props, h);
    for (uint32_t i = 0; i < n->nchildren; i++)
        h = node_hash(n->children[i], h);
    return h;
}

/* The parser thread's output: tokens in source order. */
enum tok_kind { TOK_IDENT, TOK_NUMBER, TOK_STRING, TOK_PUNCT };

struct token {
    struct token *next;
    char *text; /* identifiers and strings only */
    uint64_t value;
    uint32_t kind;
    uint32_t len;
};

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

static void parse_submit(const char *src, size_t len)
{
    pthread_mutex_lock(&job_lock);
    job.src = src;
    job.len = len;
    job.done = false;
    job.ready = true;
    pthread_cond_broadcast(&job_cond);
    pthread_mutex_unlock(&job_lock);
}

static struct token *parse_wait(size_t *count)
{
    pthread_mutex_lock(&job_lock);
    while (!job.done)
        pthread_cond_wait(&job_cond, &job_lock);
    struct token *t = job.tokens;
    *count = job.ntokens;
    pthread_mutex_unlock(&job_lock);
    return t;
}

/* Script source: identifiers, numbers, string literals and punctuation,
 * roughly in the proportions of minified JavaScript. */
static char *gen_source(wl_rng_t *rng, size_t len)
{
    static const char punct[] = "(){};,.=+-*<>[]!";
    char *s = wl_malloc(len + 1);
    size_t i = 0;
    while (i < len) {
        uint64_t r = wl_rng_below(rng, 100);
        size_t n;
        if (r < 45) {
            n = (size_t)wl_rng_range(rng, 1, 12);
            if (i + n > len)
                n = len - i;
            gen_text(rng, s + i, n);
            for (size_t k = i; k < i + n; k++)
                if (s[k] == ' ')
                    s[k] = '_';
        } else if (r < 60) {
            n = (size_t)wl_rng_range(rng, 1, 6);
            if (i + n > len)
                n = len - i;
            for (size_t k = i; k < i + n; k++)
                s[k] = (char)('0' + wl_rng_below(rng, 10));
        } else if (r < 70 && len - i >= 4) {
            n = (size_t)wl_rng_range(rng, 2, 40);
            if (i + n > len)
                n = len - i;
            s[i] = '"';
            gen_text(rng, s + i + 1, n - 2);
            s[i + n - 1] = '"';
        } else {
            n = 1;
            s[i] = punct[wl_rng_below(rng, sizeof punct - 1)];
        }
        i += n;
        if (i < len)
            s[i++] = wl_rng_chance(rng, 0.05) ? '\n' : ' ';
    }
    s[len] = '\0';
    return s;
}

struct page {
    struct node *root;
    struct node *list;
    unsigned char *images[MAX_IMAGES];
    size_t image_size[MAX_IMAGES];
    int nimages;
    uint32_t *bytecode;
    size_t code_len, code_cap;
    uint64_t hash;
};

static void build_item(const struct app *a, struct node *list, wl_rng_t *rng)
{
    struct node *li = node_new(list, T_LI);
    int nattrs = (int)wl_rng_range(rng, (uint64_t)a->attrs_min, (uint64_t)a->attrs_max);
    for (int k = 0; k < nattrs; k++)
        node_set_attr(li, (uint32_t)k, rng, wl_rng_range(rng, 4, 24));
    struct node *input = node_new(li, T_INPUT);
    node_set_attr(input, 0, rng, 6);
    struct node *label = node_new(li, T_LABEL);
    text_new(label, rng, wl_rng_range(rng, (uint64_t)a->text_min, (uint64_t)a->text_max));
    struct node *button = node_new(li, T_BUTTON);
    node_set_attr(button, 0, rng, 7);
    if (wl_rng_chance(rng, 0.3)) {
        struct node *link = node_new(li, T_A);
        node_set_attr(link, 2, rng, wl_rng_range(rng, 16, 80));
        text_new(link, rng, wl_rng_range(rng, 4, 20));
    }
}

static void code_emit(struct page *pg, uint32_t op)
{
    if (pg->code_len == pg->code_cap) {
        size_t cap = pg->code_cap ? pg->code_cap * 2 : 64;
        pg->bytecode = wl_realloc(pg->bytecode, pg->code_cap * sizeof *pg->bytecode,
                                  cap * sizeof *pg->bytecode);
        pg->code_cap = cap;
    }
    pg->bytecode[pg->code_len++] = op;
}

/* Compiles tokens into bytecode and frees them (objects the parser thread
 * allocated); some identifier strings stay as interned atoms in the cache. */
static void compile(struct page *pg, struct token *t, wl_rng_t *rng, int64_t now)
{
    while (t) {
        struct token *next = t->next;
        uint32_t operand = t->kind == TOK_IDENT || t->kind == TOK_STRING
                               ? (uint32_t)wl_hash_bytes(t->text, t->len, 7)
                               : (uint32_t)t->value;
        code_emit(pg, t->kind << 28 | (operand & 0x0fffffff));
        if (t->text) {
            if (t->kind == TOK_IDENT && wl_rng_chance(rng, keep))
                cache_put(t->text, t->len + 1, t->len + 1, now);
            else
                wl_free(t->text, t->len + 1);
        }
        wl_free(t, sizeof *t);
        t = next;
    }
}

static void create_scripts(struct page *pg, wl_rng_t *rng)
{
    for (uint32_t i = 0; i < pg->list->nchildren; i++) {
        struct node *li = pg->list->children[i];
        int n = (int)wl_rng_range(rng, 1, 3);
        for (int k = 0; k < n; k++) {
            struct jsobj *o = wl_calloc(1, sizeof *o);
            int nprops = (int)wl_rng_range(rng, 1, 8);
            for (int p = 0; p < nprops; p++)
                jsobj_push(o, wl_rng_below(rng, 64), wl_rng_next(rng));
            o->listener = wl_malloc(sizeof *o->listener);
            *o->listener = (struct closure){ (uint32_t)wl_rng_below(rng, 1u << 20), 1, o };
            o->next = li->scripts;
            li->scripts = o;
        }
    }
}

static void mutate(const struct app *a, struct page *pg, wl_rng_t *rng, int64_t now)
{
    int count = (int)(a->items * a->mutations);
    for (int m = 0; m < count; m++) {
        uint64_t op = wl_rng_below(rng, 100);
        struct node *list = pg->list;
        if (list->nchildren == 0 || op < 20) {
            build_item(a, list, rng);
            continue;
        }
        struct node *li = list->children[wl_rng_below(rng, list->nchildren)];
        if (op < 50) {
            /* Edit the label's text in place: a realloc to the new length. */
            struct node *text = li->children[1]->children[0];
            size_t len = (size_t)wl_rng_range(rng, (uint64_t)a->text_min, (uint64_t)a->text_max);
            text->text = wl_realloc(text->text, text->text_len + 1, len + 1);
            gen_text(rng, text->text, len);
            text->text[len] = '\0';
            text->text_len = (uint32_t)len;
        } else if (op < 70) {
            node_set_attr(li, (uint32_t)wl_rng_below(rng, 6), rng, wl_rng_range(rng, 4, 24));
        } else if (op < 85) {
            node_detach(li);
            node_free(li, rng, now, false);
        } else if (li->scripts) {
            jsobj_push(li->scripts, wl_rng_below(rng, 64), wl_rng_next(rng));
        }
    }
}

/* Loads a page and runs its script: the part the score times. */
static struct page *page_open(const struct app *a, wl_rng_t *rng, int64_t now)
{
    struct page *pg = wl_calloc(1, sizeof *pg);
    size_t src_len = (size_t)a->source_k * 1024;
    char *src = gen_source(rng, src_len);
    parse_submit(src, src_len);

    pg->root = node_new(NULL, T_DIV);
    node_set_attr(pg->root, 0, rng, 12);
    struct node *header = node_new(pg->root, T_P);
    text_new(header, rng, 40);
    pg->list = node_new(pg->root, T_UL);
    for (int i = 0; i < a->items; i++)
        build_item(a, pg->list, rng);

    pg->nimages = a->images < MAX_IMAGES ? a->images : MAX_IMAGES;
    for (int i = 0; i < pg->nimages; i++) {
        size_t size = (size_t)wl_rng_range(rng, (uint64_t)a->image_min_k, (uint64_t)a->image_max_k) * 1024;
        pg->images[i] = wl_malloc(size);
        pg->image_size[i] = size;
        /* Decoding writes every pixel. */
        memset(pg->images[i], (int)wl_rng_below(rng, 256), size);
        uint64_t tag = wl_rng_next(rng);
        memcpy(pg->images[i], &tag, 8);
        struct node *img = node_new(pg->root, T_IMG);
        node_set_attr(img, 7, rng, wl_rng_range(rng, 20, 60));
    }

    size_t ntokens;
    struct token *tokens = parse_wait(&ntokens);
    compile(pg, tokens, rng, now);
    wl_free(src, src_len + 1);
    create_scripts(pg, rng);
    mutate(a, pg, rng, now);

    uint64_t h = node_hash(pg->root, ntokens);
    h = wl_hash_bytes(pg->bytecode, pg->code_len * sizeof *pg->bytecode, h);
    for (int i = 0; i < pg->nimages; i++)
        h = wl_mix64(h ^ wl_hash_bytes(pg->images[i], 64, pg->image_size[i]));
    pg->hash = h;
    return pg;
}

/* Closes a page that has left the open tabs; caches keep part of it. */
static void page_close(struct page *pg, wl_rng_t *rng, int64_t now)
{
    node_free(pg->root, rng, now, true);
    for (int i = 0; i < pg->nimages; i++) {
        if (wl_rng_chance(rng, keep_images))
            cache_put(pg->images[i], pg->image_size[i], pg->image_size[i], now);
        else
            wl_free(pg->images[i], pg->image_size[i]);
    }
    wl_free(pg->bytecode, pg->code_cap * sizeof *pg->bytecode);
    wl_free(pg, sizeof *pg);
}

/* Bytes a page holds, by walking it: the cross-check of live bytes. */
static int64_t node_bytes(const struct node *n)
{
    int64_t b = (int64_t)(sizeof *n + n->child_cap * sizeof *n->children +
                          n->attr_cap * sizeof *n->attrs);
    for (uint16_t i = 0; i < n->nattrs; i++)
        b += n->attrs[i].len + 1;
    if (n->text)
        b += n->text_len + 1;
    for (const struct jsobj *o = n->scripts; o; o = o->next)
        b += (int64_t)(sizeof *o + o->cap * sizeof *o->props + sizeof *o->listener);
    for (uint32_t i = 0; i < n->nchildren; i++)
        b += node_bytes(n->children[i]);
    return b;
}

static int64_t page_bytes(const struct page *pg)
{
    int64_t b = (int64_t)(sizeof *pg + pg->code_cap * sizeof *pg->bytecode) + node_bytes(pg->root);
    for (int i = 0; i < pg->nimages; i++)
        b += (int64_t)pg->image_size[i];
    return b;
}

int main(int argc, char **argv)
{
    wl_init(&spec, argc, argv);
    if (tabs < 1 || tabs > MAX_TABS || history < 0 || keep < 0 || keep > 1 ||
        keep_images < 0 || keep_images > 1) {
        fprintf(stderr, "browser-like: --tabs within [1, %d], --history not negative, "
                        "--keep* within [0, 1]\n", MAX_TABS);
        return 2;
    }
    wl_live_bind(MAIN_SLOT);
    pthread_t parser;
    if (pthread_create(&parser, NULL, parser_main, NULL) != 0)
        wl_die("cannot start the parser thread");

    wl_rng_t rng;
    wl_rng_seed(&rng, wl_cfg.seed, 0);
    struct page *open_tabs[MAX_TABS] = { 0 };
    uint64_t checksum = 0;
    int64_t page = 0;
    static char result_key[NAPPS][40];
    double app_s[NAPPS];
    double t0 = wl_now();
    for (int a = 0; a < NAPPS; a++) {
        wl_phase(apps[a].name);
        double start = wl_now();
        for (int64_t i = 0; i < loads; i++) {
            struct page **tab = &open_tabs[page % tabs];
            if (*tab)
                page_close(*tab, &rng, page);
            *tab = page_open(&apps[a], &rng, page);
            checksum = wl_mix64(checksum ^ (*tab)->hash);
            page++;
            cache_expire(page);
        }
        app_s[a] = wl_now() - start;
    }
    double run_s = wl_now() - t0;

    pthread_mutex_lock(&job_lock);
    job.quit = true;
    pthread_cond_broadcast(&job_cond);
    pthread_mutex_unlock(&job_lock);
    pthread_join(parser, NULL);

    int64_t held = (int64_t)(cache_cap * sizeof *cache);
    for (size_t i = 0; i < cache_len; i++) {
        struct cached *c = &cache[(cache_head + i) % cache_cap];
        checksum += wl_hash_bytes(c->p, c->valid < 64 ? c->valid : 64, c->size);
        held += (int64_t)c->size;
    }
    for (int64_t t = 0; t < tabs; t++)
        if (open_tabs[t])
            held += page_bytes(open_tabs[t]);

    wl_phase("teardown");
    for (int64_t t = 0; t < tabs; t++)
        if (open_tabs[t])
            page_close(open_tabs[t], &rng, page);
    cache_expire(INT64_MAX);
    if (cache)
        wl_free(cache, cache_cap * sizeof *cache);

    wl_result_double("score", (double)page / run_s);
    wl_result_int("page_loads", page);
    for (int a = 0; a < NAPPS; a++) {
        snprintf(result_key[a], sizeof result_key[a], "%s_s", apps[a].name);
        wl_result_double(result_key[a], app_s[a]);
    }
    wl_result_int("cached_objects", cached_total);
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
