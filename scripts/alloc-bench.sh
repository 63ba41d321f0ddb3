#!/usr/bin/env bash
# The allocation micro-benchmark: single-thread churn and two-thread
# cross-thread churn under glibc, jemalloc and libmesh, side by side and
# interleaved: RUNS rounds, each one hyperfine invocation that runs every
# allocator once, the order rotated a round (hyperfine given all the runs
# at once would run every run of one allocator before the next, and a
# change in the machine's speed would land on one allocator); prints the
# median times and, for the ratios, the median of the rounds' ratios (a
# round's allocators ran side by side, so a slow moment of the machine
# cancels out of its ratio; as the harness's time ratios).
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
import glob, json, math, statistics, sys
out = sys.argv[1]

def paired(rounds, a, b):
    """The median over rounds of time(a) / time(b), taken on the logs."""
    return math.exp(statistics.median(math.log(r[a] / r[b]) for r in rounds))

print(f"{'workload':10} {'glibc s':>9} {'jemalloc s':>11} {'mesh s':>9} {'mesh/jemalloc':>14} {'mesh/glibc':>11}")
for mode in ("churn", "xthread"):
    rounds = []
    for path in sorted(glob.glob(f"{out}/{mode}.*.json")):
        rounds.append({x["command"]: x["times"][0] for x in json.load(open(path))["results"]})
    med = {k: statistics.median(r[k] for r in rounds) for k in ("glibc", "jemalloc", "mesh")}
    print(f"{mode:10} {med['glibc']:9.3f} {med['jemalloc']:11.3f} {med['mesh']:9.3f} "
          f"{paired(rounds, 'mesh', 'jemalloc'):14.2f} {paired(rounds, 'mesh', 'glibc'):11.2f}")
print(f"(times: median wall time of {len(rounds)} interleaved rounds; ratios: median of the rounds' ratios;"
      f" raw data in {out})")
PY
