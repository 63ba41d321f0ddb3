#!/usr/bin/env bash
# make install puts the libraries, mesh.h and mesh.pc under PREFIX, and a
# program builds against them with pkg-config, dynamically and statically.
. "$(dirname "$0")/lib.sh"
make -s -C "$top/libmesh" install PREFIX="$scratch/prefix" >/dev/null
for f in lib/libmesh.so lib/libmesh.a include/mesh.h lib/pkgconfig/mesh.pc; do
    [ -f "$scratch/prefix/$f" ] || fail "$f not installed"
done
export PKG_CONFIG_PATH=$scratch/prefix/lib/pkgconfig
cat >"$scratch/prog.c" <<'C'
#include <mesh.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
int main(void) {
    void *p = malloc(1000);
    uint64_t v = 0; size_t len = sizeof v;
    int rc = mesh_mallctl("stats.allocated", &v, &len, NULL, 0);
    printf("%d %d\n", rc, v >= 1000);
    free(p);
    return 0;
}
C
gcc "$scratch/prog.c" -o "$scratch/dyn" $(pkg-config --cflags --libs mesh)
[ "$(LD_LIBRARY_PATH=$scratch/prefix/lib "$scratch/dyn")" = "0 1" ] || fail "dynamic build"
gcc "$scratch/prog.c" -o "$scratch/static" $(pkg-config --cflags mesh) "$scratch/prefix/lib/libmesh.a" -pthread
[ "$("$scratch/static")" = "0 1" ] || fail "static build"
echo "ok: $(pkg-config --modversion mesh)"
