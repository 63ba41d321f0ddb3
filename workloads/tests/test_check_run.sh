#!/usr/bin/env bash
# check_run.py itself: a real trace passes; the same trace with a hole of
# half a second (a busy machine) still passes; one of a second and a half
# (a stuck sampler) fails for the gap.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
"$bin/fragmenter" --scale 0.02 --hold 0.5 --trace "$tmp/trace" >"$tmp/out" || fail "fragmenter failed"
phases='(round-[0-9]+,)+hold,teardown,end'
check() { "$python" "$checker" --trace "$1" --stdout "$tmp/out" --phases "$phases" >/dev/null 2>"$tmp/err"; }

# with_gap SECONDS FILE: the trace, every line after the middle one later by SECONDS.
with_gap() {
    "$python" - "$tmp/trace" "$1" >"$2" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
for x in lines[len(lines) // 2:]:
    x["t"] += float(sys.argv[2])
print("\n".join(json.dumps(x) for x in lines))
PY
}

check "$tmp/trace" || fail "the real trace: $(cat "$tmp/err")"
with_gap 0.5 "$tmp/busy"
check "$tmp/busy" || fail "a 0.5 s gap failed: $(cat "$tmp/err")"
with_gap 1.5 "$tmp/stuck"
if check "$tmp/stuck"; then fail "a 1.5 s gap passed"; fi
grep -q "s without a trace line" "$tmp/err" || fail "a 1.5 s gap failed for another reason: $(cat "$tmp/err")"
echo "PASS: check_run gaps"
