#!/usr/bin/env bash
# The workloads' own flags: an old spelling still runs the same workload as
# the new name and says so on stderr; size flags take K/M/G suffixes and
# refuse fractions of a byte; --help prints each default from the option
# table, and that default is the one the run uses.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# checksum WORKLOAD ARGS...: runs it quickly and prints its checksum; its
# stderr is left in $tmp/err.
checksum() {
    local w=$1
    shift
    "$bin/$w" --seed 3 "$@" >"$tmp/out" 2>"$tmp/err" || fail "$w $* failed: $(cat "$tmp/err")"
    "$python" -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().strip().split("\n")[-1])["checksum"])' \
        "$tmp/out"
}

# same_run WORKLOAD "OLD ARGS" "NEW ARGS" OLD_FLAG NEW_FLAG
same_run() {
    local w=$1 old_args=$2 new_args=$3 old=$4 new=$5 a b
    # shellcheck disable=SC2086 # split the arguments on purpose
    a=$(checksum "$w" $old_args)
    grep -qx -- "$w: --$old is an old spelling; use --$new" "$tmp/err" ||
        fail "$w --$old: no deprecation note on stderr (got: $(cat "$tmp/err"))"
    # shellcheck disable=SC2086
    b=$(checksum "$w" $new_args)
    [ ! -s "$tmp/err" ] || fail "$w $new_args wrote to stderr: $(cat "$tmp/err")"
    [ "$a" = "$b" ] || fail "$w: --$old gives checksum $a, --$new gives $b"
}

same_run fragmenter "--budget 2M --sleep 0 --hold 0" "--bytes 2M --pause 0 --hold 0" budget bytes
same_run fragmenter "--bytes 2M --sleep 0 --hold 0" "--bytes 2M --pause 0 --hold 0" sleep pause
same_run sizeshift "--fill 2M --hold 0" "--bytes 2M --hold 0" fill bytes
same_run regular "--bytes 2M --step 0 --hold 0" "--bytes 2M --pause 0 --hold 0" step pause
same_run redis-like "--scale 0.01 --idle 0" "--scale 0.01 --hold 0" idle hold

# Sizes: the suffix is a power of 1024, on every size flag, not only budgets.
a=$(checksum regular --bytes 1M --size 4K --pause 0 --hold 0)
b=$(checksum regular --bytes 1048576 --size 4096 --pause 0 --hold 0)
[ "$a" = "$b" ] || fail "regular --size 4K gives $a, --size 4096 gives $b"
a=$(checksum larson --scale 0.005 --min 1K --max 1.5K)
b=$(checksum larson --scale 0.005 --min 1024 --max 1536)
[ "$a" = "$b" ] || fail "larson --max 1.5K gives $a, --max 1536 gives $b"
for bad in "--size 0.5" "--size 4X" "--size -1K" "--size K"; do
    rc=0
    # shellcheck disable=SC2086
    "$bin/regular" $bad --hold 0 >/dev/null 2>&1 || rc=$?
    [ $rc -eq 2 ] || fail "regular $bad exited with $rc, want 2"
done

# The default --help states is the one the run uses: fragmenter at scale
# 0.01 runs as with its budget given as 128M x 0.01, rounded.
help=$("$bin/fragmenter" --help)
grep -Eq -- '^  --bytes SIZE +bytes of the budget \(default 128M x scale\)$' <<<"$help" ||
    fail "fragmenter --help does not give --bytes's default: $help"
grep -Eq -- '^  --budget SIZE +old spelling of --bytes' <<<"$help" ||
    fail "fragmenter --help does not list --budget as the old spelling of --bytes"
a=$(checksum fragmenter --scale 0.01 --hold 0 --pause 0)
b=$(checksum fragmenter --scale 0.01 --hold 0 --pause 0 --bytes 1342177)
[ "$a" = "$b" ] || fail "fragmenter's budget at --scale 0.01 is not 128M x 0.01"
for w in fragmenter sizeshift regular redis-like browser-like larson prodcons churn \
    replace-small replace-large; do
    # Every own flag's line ends with its default.
    "$bin/$w" --help | grep -Ev '^  --(seed|scale|trace) ' >"$tmp/help"
    n=$(grep -Ec '^  --[a-z0-9-]+ [A-Z]+ ' "$tmp/help" || true)
    d=$(grep -Ec '^  --[a-z0-9-]+ [A-Z]+ .*(\(default .+\)|still accepted)$' "$tmp/help" || true)
    [ "$n" -ge 3 ] && [ "$n" = "$d" ] || fail "$w --help: $d of $n flag lines give a default"
done
echo "PASS: workload flags"
