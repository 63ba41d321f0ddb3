#!/usr/bin/env bash
# The flags every workload shares: --help succeeds and documents the common
# flags; bad flags and values are refused with exit status 2; without
# --trace the result still ends stdout as one JSON object.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
for w in fragmenter sizeshift regular redis-like browser-like larson prodcons churn \
    replace-small replace-large; do
    [ -x "$bin/$w" ] || fail "$bin/$w is not built (make -C workloads)"
    help=$("$bin/$w" --help) || fail "$w --help failed"
    for flag in --seed --scale --trace --help 'phases:'; do
        grep -q -- "$flag" <<<"$help" || fail "$w --help does not mention $flag"
    done
    for bad in "--no-such-flag 1" "--scale 0" "--scale -1" "--scale x" "--seed" "--seed 1x" "stray"; do
        rc=0
        # shellcheck disable=SC2086 # split the bad arguments on purpose
        "$bin/$w" $bad >/dev/null 2>&1 || rc=$?
        [ $rc -eq 2 ] || fail "$w $bad exited with $rc, want 2"
    done
    "$bin/$w" --scale 0.005 >"$tmp/out" || fail "$w --scale 0.005 failed"
    "$python" -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().split("\n")[-1]); assert r["workload"] == sys.argv[2], r' \
        "$tmp/out" "$w" || fail "$w: the last line of stdout is not its result"
done
echo "PASS: common flags"
