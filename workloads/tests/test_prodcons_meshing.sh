#!/usr/bin/env bash
# prodcons under libmesh with a mesh pass every millisecond: every free is a
# remote free, so chains empty (and their meshed-away spans get their own
# pages back) while passes run. Eight runs must all deliver every message
# intact, with glibc's checksum. (Before the punches of a slice were made
# under its class lock, six runs in ten failed here: a late punch zeroed a
# new span that had just taken a meshed-away span's pages.)
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=prodcons
phases='run,teardown,end'
result_keys=ops_per_sec,messages
[ -x "$bin/$workload" ] || fail "$bin/$workload is not built (make -C workloads)"
[ -f "$libmesh" ] || fail "$libmesh is missing: build libmesh first"
glibc=$(run_checked glibc "" --seed 1 --scale 0.5)
for i in 1 2 3 4 5 6 7 8; do
    mesh=$(MESH_PERIOD_MS=1 run_checked "libmesh-$i" "$libmesh" --seed 1 --scale 0.5)
    [ "$mesh" = "$glibc" ] || fail "run $i: checksum under libmesh $mesh != glibc $glibc"
done
echo "PASS: prodcons, 8 runs meshing every millisecond"
