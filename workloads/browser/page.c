/* Pages: generating a page's script source, building its DOM and images,
 * compiling the parser's tokens, binding script objects, mutating the
 * page, and closing it. */
#include <string.h>

#include "browser.h"

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
struct page *page_open(const struct app *a, wl_rng_t *rng, int64_t now)
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
void page_close(struct page *pg, wl_rng_t *rng, int64_t now)
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
int64_t page_bytes(const struct page *pg)
{
    int64_t b = (int64_t)(sizeof *pg + pg->code_cap * sizeof *pg->bytecode) + node_bytes(pg->root);
    for (int i = 0; i < pg->nimages; i++)
        b += (int64_t)pg->image_size[i];
    return b;
}
