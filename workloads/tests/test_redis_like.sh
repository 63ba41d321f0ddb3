#!/usr/bin/env bash
# redis-like at a tiny scale under glibc, jemalloc and libmesh: the script
# must evict (maxmemory scales with the key counts) and the idle phase must
# last as long as asked.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=redis-like
phases='populate1,populate2,idle,teardown,end'
result_keys=populate1_s,populate2_s,ops_per_sec,keys,evicted_keys,used_memory
min_phase="idle=0.3"
check_workload --scale 0.02 --hold 0.3
evicted=$("$python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().split("\n")[-2])["evicted_keys"])' "$tmp/glibc.out")
[ "$evicted" -gt 0 ] || fail "no key was evicted"
# SET-per-command mode keeps used memory under maxmemory throughout.
check_workload --scale 0.02 --hold 0.3 --batch 1
