#!/usr/bin/env bash
# Every misuse in bad_input.c, under LD_PRELOAD: message with the address on
# stderr, then SIGABRT (exit status 134).
. "$(dirname "$0")/lib.sh"
bin=$top/libmesh/tests/bin/bad_input
for mode in $("$bin" --list); do
    set +e
    LD_PRELOAD=$LIBMESH "$bin" "$mode" >"$scratch/out" 2>"$scratch/err"
    rc=$?
    set -e
    expect=$(sed -n 's/^expect //p' "$scratch/out")
    [ $rc -eq 134 ] || fail "$mode: exit status $rc, wanted 134 (SIGABRT); stderr: $(cat "$scratch/err")"
    grep -qF "mesh: $expect" "$scratch/err" || fail "$mode: wanted 'mesh: $expect' on stderr, got: $(cat "$scratch/err")"
    echo "ok $mode: $(head -1 "$scratch/err")"
done
