# shellcheck shell=bash disable=SC2154 # $workload and $phases come from the test
# Shared by the workload tests; sourced, not run. Each test sets $workload,
# $phases (see check_run.py) and calls check_workload with the workload's
# arguments for a tiny run.
#
# The allocator under test is libmesh/libmesh.so, or $LIBMESH if set. It
# must exist: a missing library fails the test rather than skipping it.

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$top/workloads/bin
libmesh=${LIBMESH:-$top/libmesh/libmesh.so}
jemalloc=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2
python=/usr/bin/python3
checker=$top/workloads/tests/check_run.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# run_checked LABEL PRELOAD ARGS...: runs $workload, checks its trace and
# result, and prints its checksum.
run_checked() {
    local label=$1 preload=$2
    shift 2
    local trace=$tmp/$label.trace out=$tmp/$label.out err=$tmp/$label.err
    local rc=0
    env LD_PRELOAD="$preload" "$bin/$workload" --trace "$trace" "$@" >"$out" 2>"$err" || rc=$?
    if [ $rc -ne 0 ]; then
        cat "$err" >&2
        fail "$workload $* under $label exited with $rc"
    fi
    local min_args=()
    for m in ${min_phase:-}; do min_args+=(--min-phase "$m"); done
    "$python" "$checker" --trace "$trace" --stdout "$out" --phases "$phases" \
        --keys "${result_keys:-}" "${min_args[@]+"${min_args[@]}"}" ||
        fail "$workload $* under $label: trace or result is wrong (trace kept in $trace)"
}

# check_workload ARGS...: the run is correct and identical (by checksum)
# under glibc, jemalloc and libmesh, and the checksum depends on the seed.
check_workload() {
    [ -x "$bin/$workload" ] || fail "$bin/$workload is not built (make -C workloads)"
    local glibc je mesh other
    glibc=$(run_checked glibc "" --seed 1 "$@")
    echo "glibc:    $glibc"
    if [ -f "$jemalloc" ]; then
        je=$(run_checked jemalloc "$jemalloc" --seed 1 "$@")
        echo "jemalloc: $je"
        [ "$je" = "$glibc" ] || fail "checksum under jemalloc $je != glibc $glibc"
    fi
    [ -f "$libmesh" ] || fail "$libmesh is missing: build libmesh first"
    mesh=$(run_checked libmesh "$libmesh" --seed 1 "$@")
    echo "libmesh:  $mesh"
    [ "$mesh" = "$glibc" ] || fail "checksum under libmesh $mesh != glibc $glibc"
    other=$(run_checked glibc-seed2 "" --seed 2 "$@")
    [ "$other" != "$glibc" ] || fail "checksum $glibc does not change with the seed"
    echo "PASS: $workload"
}

# check_remote_frees: $workload at a tiny scale on one thread and on two,
# under every allocator check_workload runs; on two every replaced object
# is freed by the other thread (remote_frees = ops), on one by its own
# (remote_frees = 0).
check_remote_frees() {
    local threads label remote ops want
    for threads in 1 2; do
        check_workload --scale 0.01 --threads $threads
        for label in glibc libmesh; do
            read -r remote ops < <("$python" -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().split("\n")[-1]); print(r["remote_frees"], r["ops"])' \
                "$tmp/$label.out")
            want=$([ $threads -eq 1 ] && echo 0 || echo "$ops")
            [ "$ops" -gt 0 ] && [ "$remote" = "$want" ] ||
                fail "$workload --threads $threads under $label: remote_frees $remote of $ops, want $want"
        done
    done
}
