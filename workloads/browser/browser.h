/* What the pieces of browser-like share: the DOM and script-object types
 * (dom.c), the history cache (cache.c), the parser thread's tokens
 * (parser.c), pages (page.c) and the options and apps the driver
 * (browser_like.c) holds. */
#ifndef BROWSER_H
#define BROWSER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wl.h"

#define MAIN_SLOT 0 /* frees what the parser allocates: the lower slot */
#define PARSER_SLOT 1
#define MAX_IMAGES 16

/* Options (browser_like.c): page loads a cached object outlives its page,
 * and the fractions of strings, script objects and images cached. */
extern int64_t history;
extern double keep;
extern double keep_images;

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

/* dom.c */
void gen_text(wl_rng_t *rng, char *s, size_t len);
char *new_string(wl_rng_t *rng, size_t len);
void jsobj_push(struct jsobj *o, uint64_t key, uint64_t bits);
struct node *node_new(struct node *parent, enum tag tag);
void node_set_attr(struct node *n, uint32_t name, wl_rng_t *rng, size_t len);
struct node *text_new(struct node *parent, wl_rng_t *rng, size_t len);
void node_free(struct node *n, wl_rng_t *rng, int64_t now, bool cache_some);
void node_detach(struct node *n);
uint64_t node_hash(const struct node *n, uint64_t h);
int64_t node_bytes(const struct node *n);

/* cache.c: objects kept past their page, freed after --history more page
 * loads. now is the current page-load number. */
void cache_put(void *p, size_t size, size_t valid, int64_t now);
void cache_expire(int64_t now);
/* Adds a hash of each cached object's leading bytes to *checksum; returns
 * the bytes the cache holds, its ring included. */
int64_t cache_fold(uint64_t *checksum);
/* Frees the ring; call after cache_expire(INT64_MAX). */
void cache_release(void);
int64_t cache_total(void); /* objects ever cached */

/* parser.c: the parser thread's output, tokens in source order. */
enum tok_kind { TOK_IDENT, TOK_NUMBER, TOK_STRING, TOK_PUNCT };

struct token {
    struct token *next;
    char *text; /* identifiers and strings only */
    uint64_t value;
    uint32_t kind;
    uint32_t len;
};

void parser_start(void);
/* Hands src to the parser thread; src stays valid until parse_wait. */
void parse_submit(const char *src, size_t len);
/* The tokens of the last submitted source, once tokenised: the caller
 * frees them. */
struct token *parse_wait(size_t *count);
void parser_stop(void);

/* page.c */
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

struct page *page_open(const struct app *a, wl_rng_t *rng, int64_t now);
void page_close(struct page *pg, wl_rng_t *rng, int64_t now);
int64_t page_bytes(const struct page *pg);

#endif
