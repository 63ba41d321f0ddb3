#!/usr/bin/env bash
# gcc and g++ on libmesh (the driver, cc1, as and ld all inherit the
# preload), and the programs they build, C++ new/delete included.
. "$(dirname "$0")/lib.sh"
cat >"$scratch/hello.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static int cmp(const void *a, const void *b) { return strcmp(*(char **)a, *(char **)b); }
int main(void) {
    char *v[1000];
    for (int i = 0; i < 1000; i++) { v[i] = malloc(16); snprintf(v[i], 16, "%d", (i * 7919) % 1000); }
    qsort(v, 1000, sizeof *v, cmp);
    printf("%s %s\n", v[0], v[999]);
    for (int i = 0; i < 1000; i++) free(v[i]);
    return 0;
}
C
cat >"$scratch/hello.cc" <<'CC'
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <vector>
struct alignas(64) Aligned { char c[64]; };
int main() {
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 20000; i++) m[std::to_string(i % 997)].push_back(i);
    std::vector<std::unique_ptr<Aligned>> a;
    for (int i = 0; i < 1000; i++) a.emplace_back(new Aligned());
    long sum = 0;
    for (auto &kv : m) sum += kv.second.size();
    bool aligned = true;
    for (auto &p : a) aligned &= reinterpret_cast<uintptr_t>(p.get()) % 64 == 0;
    std::cout << m.size() << " " << sum << " " << aligned << std::endl;
}
CC
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH gcc -O2 -Wall "$scratch/hello.c" -o "$scratch/hello" 2>"$scratch/err"
ran_on_mesh "$scratch/err"
LD_PRELOAD=$LIBMESH g++ -O2 -std=c++17 "$scratch/hello.cc" -o "$scratch/hellocc"
out=$(LD_PRELOAD=$LIBMESH "$scratch/hello")
[ "$out" = "0 999" ] || fail "hello printed '$out'"
out=$(LD_PRELOAD=$LIBMESH "$scratch/hellocc")
[ "$out" = "997 20000 1" ] || fail "hellocc printed '$out'"
echo ok
