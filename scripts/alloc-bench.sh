#!/usr/bin/env bash
# The allocation micro-benchmark: single-thread churn and two-thread
# cross-thread churn under glibc, jemalloc and libmesh, side by side in one
# hyperfine run per workload, several runs each; prints time ratios.
# Usage: scripts/alloc-bench.sh [RUNS] [ITERATIONS]
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
runs=${1:-7}
iters=${2:-10000000}
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
libmesh=$top/libmesh/libmesh.so
bin=$top/libmesh/bench/bin/alloc_bench
out=$top/build/alloc-bench
mkdir -p "$out"
for need in hyperfine "$jemalloc"; do
    if ! command -v "$need" >/dev/null 2>&1 && [ ! -e "$need" ]; then
        echo "missing: $need; install with: apt-get install -y hyperfine libjemalloc2" >&2
        exit 1
    fi
done
for mode in churn xthread; do
    hyperfine --shell=none --warmup 1 --runs "$runs" --export-json "$out/$mode.json" \
        -n glibc "$bin $mode $iters" \
        -n jemalloc "env LD_PRELOAD=$jemalloc $bin $mode $iters" \
        -n mesh "env LD_PRELOAD=$libmesh $bin $mode $iters" >"$out/$mode.txt"
done
/usr/bin/python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
print(f"{'workload':10} {'glibc s':>9} {'jemalloc s':>11} {'mesh s':>9} {'mesh/jemalloc':>14} {'mesh/glibc':>11}")
for mode in ("churn", "xthread"):
    r = {x["command"]: x for x in json.load(open(f"{out}/{mode}.json"))["results"]}
    med = {k: statistics.median(v["times"]) for k, v in r.items()}
    print(f"{mode:10} {med['glibc']:9.3f} {med['jemalloc']:11.3f} {med['mesh']:9.3f} "
          f"{med['mesh'] / med['jemalloc']:14.2f} {med['mesh'] / med['glibc']:11.2f}")
print(f"(median wall time of {len(r['mesh']['times'])} runs each; raw data in {out})")
PY
