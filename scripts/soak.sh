#!/usr/bin/env bash
# `make soak`: runs libmesh/tests/bin/soak for MINUTES (default 2) against
# ALLOC: libmesh (default; preloaded, with a mesh pass every MESH_PERIOD_MS,
# default 1), glibc, jemalloc, or the path of any malloc library to preload.
# SEED (default: from the clock), THREADS (workers, default 4) and WITHOUT
# (parts to leave out: fork,timer,alarm,guard,dgram,pipe,compact) are
# passed on; with libmesh, SEED seeds libmesh too (MESH_SEED).  The last line reads
# "...: PASS" or "...: FAIL"; the exit status is the soak's (0 pass, 1
# problems found, 3 hang, 4 crash).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
bin=$top/libmesh/tests/bin/soak
alloc=${ALLOC:-libmesh}
args=(--minutes "${MINUTES:-2}")
[ -n "${SEED:-}" ] && args+=(--seed "$SEED")
[ -n "${THREADS:-}" ] && args+=(--threads "$THREADS")
[ -n "${WITHOUT:-}" ] && args+=(--without "$WITHOUT")

preload=
case $alloc in
    libmesh)
        preload=$top/libmesh/libmesh.so
        export MESH_PERIOD_MS=${MESH_PERIOD_MS:-1}
        [ -n "${SEED:-}" ] && export MESH_SEED=$SEED ;;
    glibc) ;;
    jemalloc)
        preload=$(/sbin/ldconfig -p | awk '/libjemalloc\.so\.2 .*x86-64/ { print $NF; exit }')
        if [ -z "$preload" ]; then
            echo "soak: jemalloc is not installed: apt-get install -y libjemalloc2" >&2
            exit 2
        fi ;;
    */*) preload=$alloc ;;
    *)
        echo "soak: ALLOC must be libmesh, glibc, jemalloc or the path of a library" >&2
        exit 2 ;;
esac
[ -x "$bin" ] || { echo "soak: $bin is missing: make -C libmesh soak" >&2; exit 2; }
if [ -n "$preload" ]; then
    exec env LD_PRELOAD="$preload" "$bin" "${args[@]}"
fi
exec "$bin" "${args[@]}"
