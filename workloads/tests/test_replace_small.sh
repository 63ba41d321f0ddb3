#!/usr/bin/env bash
# replace-small at a tiny scale under glibc, jemalloc and libmesh, on one
# thread and on two; on two, every replaced object is freed by the other
# thread (remote_frees = ops), on one by its own (remote_frees = 0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=replace-small
phases='fill,run,teardown,end'
result_keys=ops_per_sec,ops,run_s,threads,objects,remote_frees

# remote_frees_of LABEL: the remote_frees/ops of the run check_workload left.
remote_frees_of() {
    "$python" -c 'import json,sys; r=json.loads(open(sys.argv[1]).read().strip().split("\n")[-1]); print(r["remote_frees"], r["ops"])' \
        "$tmp/$1.out"
}

for threads in 1 2; do
    check_workload --scale 0.01 --threads $threads
    for label in glibc libmesh; do
        read -r remote ops < <(remote_frees_of $label)
        want=$([ $threads -eq 1 ] && echo 0 || echo "$ops")
        [ "$ops" -gt 0 ] && [ "$remote" = "$want" ] ||
            fail "$workload --threads $threads under $label: remote_frees $remote of $ops, want $want"
    done
done
