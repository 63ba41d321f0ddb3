#!/usr/bin/env bash
# A single-threaded workload runs single-threaded unless it writes a trace:
# the sampler thread starts with --trace, or when a workload starts threads
# of its own (larson's peak_live then still covers every thread's counts).
# Threads are read from /proc while fragmenter holds its survivors.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# max_threads ARGS...: the most threads /proc showed, read every 50 ms for
# a second, during a fragmenter run that holds its survivors for a second.
max_threads() {
    "$bin/fragmenter" --scale 0.02 --pause 0 --hold 1 "$@" >"$tmp/out" &
    local pid=$! most=0 n
    for _ in $(seq 20); do
        sleep 0.05
        n=$(awk '/^Threads:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
        [ "${n:-0}" -gt "$most" ] && most=$n
    done
    wait "$pid" || fail "fragmenter $* failed"
    echo "$most"
}

traced=$(max_threads --trace "$tmp/trace")
[ "$traced" -eq 2 ] || fail "with a trace: $traced threads, expected 2 (the sampler)"
untraced=$(max_threads)
[ "$untraced" -eq 1 ] || fail "without a trace: $untraced threads, expected 1"

# A threaded workload without a trace still samples: peak_live covers the
# threads' counts (larson's blocks are live all through its run).
"$bin/larson" --scale 0.02 >"$tmp/larson.out" || fail "larson failed"
"$python" - "$tmp/larson.out" <<'PY' || fail "larson without a trace: no sampled peak"
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
assert r["peak_live"] > 0 and r["peak_live"] >= r["final_live"], r
PY
echo "PASS: sampler thread only with a trace or the workload's threads"
