/* The page's model: generated text, the DOM tree (elements, attributes,
 * text nodes) and the script objects bound to its elements; how each is
 * built, freed (sparing a fraction to the history cache), hashed and
 * sized. */
#include <string.h>

#include "browser.h"

/* Strings are generated from lowercase words so that they look like text
 * and their contents depend only on the seed. */
void gen_text(wl_rng_t *rng, char *s, size_t len)
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

char *new_string(wl_rng_t *rng, size_t len)
{
    char *s = wl_malloc(len + 1);
    gen_text(rng, s, len);
    s[len] = '\0';
    return s;
}

void jsobj_push(struct jsobj *o, uint64_t key, uint64_t bits)
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

struct node *node_new(struct node *parent, enum tag tag)
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

void node_set_attr(struct node *n, uint32_t name, wl_rng_t *rng, size_t len)
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

struct node *text_new(struct node *parent, wl_rng_t *rng, size_t len)
{
    struct node *t = node_new(parent, T_TEXT);
    t->text = new_string(rng, len);
    t->text_len = (uint32_t)len;
    return t;
}

/* Frees a subtree; with probability --keep a node's text or first
 * attribute value goes to the history cache instead. */
void node_free(struct node *n, wl_rng_t *rng, int64_t now, bool cache_some)
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

void node_detach(struct node *n)
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

uint64_t node_hash(const struct node *n, uint64_t h)
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

/* Bytes a subtree holds, by walking it (page_bytes adds the rest of its
 * page). */
int64_t node_bytes(const struct node *n)
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
