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
 * caches hold at the end.
 *
 * This file holds the options, the apps and the run; the page's model is in
 * dom.c, the history cache in cache.c, the parser thread in parser.c and
 * page loading in page.c. */
#include <stdio.h>

#include "browser.h"

#define MAX_TABS 64
#define DEFAULT_LOADS 40

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
int64_t history;
double keep;
double keep_images;

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
    parser_start();

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

    parser_stop();

    int64_t held = cache_fold(&checksum);
    for (int64_t t = 0; t < tabs; t++)
        if (open_tabs[t])
            held += page_bytes(open_tabs[t]);

    wl_phase("teardown");
    for (int64_t t = 0; t < tabs; t++)
        if (open_tabs[t])
            page_close(open_tabs[t], &rng, page);
    cache_expire(INT64_MAX);
    cache_release();

    wl_result_double("score", (double)page / run_s);
    wl_result_int("page_loads", page);
    for (int a = 0; a < NAPPS; a++) {
        snprintf(result_key[a], sizeof result_key[a], "%s_s", apps[a].name);
        wl_result_double(result_key[a], app_s[a]);
    }
    wl_result_int("cached_objects", cache_total());
    wl_result_int("held_bytes", held);
    return wl_finish(checksum);
}
