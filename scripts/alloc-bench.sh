#!/usr/bin/env bash
# The allocation micro-benchmark: single-thread churn and two-thread
# cross-thread churn under glibc, jemalloc and libmesh, side by side and
# interleaved: RUNS rounds, each one hyperfine invocation that runs every
# allocator once, the order rotated a round (hyperfine given all the runs
# at once would run every run of one allocator before the next, and a
# change in the machine's speed would land on one allocator); prints the
# medians and their ratios.
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
names=(glibc jemalloc mesh)
for mode in churn xthread; do
    cmds=("$bin $mode $iters" "env LD_PRELOAD=$jemalloc $bin $mode $iters"
          "env LD_PRELOAD=$libmesh $bin $mode $iters")
    rm -f "$out/$mode".*.json
    : >"$out/$mode.txt"
    for ((r = 0; r < runs; r++)); do
        args=()
        for ((i = 0; i < 3; i++)); do
            k=$(((r + i) % 3))
            args+=(-n "${names[k]}" "${cmds[k]}")
        done
        hyperfine --shell=none --warmup $((r == 0 ? 1 : 0)) --runs 1 \
            --export-json "$out/$mode.$r.json" "${args[@]}" >>"$out/$mode.txt"
    done
done
/usr/bin/python3 - "$out" <<'PY'
import glob, json, statistics, sys
out = sys.argv[1]
print(f"{'workload':10} {'glibc s':>9} {'jemalloc s':>11} {'mesh s':>9} {'mesh/jemalloc':>14} {'mesh/glibc':>11}")
for mode in ("churn", "xthread"):
    times = {}
    for path in sorted(glob.glob(f"{out}/{mode}.*.json")):
        for x in json.load(open(path))["results"]:
            times.setdefault(x["command"], []).extend(x["times"])
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{mode:10} {med['glibc']:9.3f} {med['jemalloc']:11.3f} {med['mesh']:9.3f} "
          f"{med['mesh'] / med['jemalloc']:14.2f} {med['mesh'] / med['glibc']:11.2f}")
print(f"(median wall time of {len(times['mesh'])} interleaved runs each; raw data in {out})")
PY
