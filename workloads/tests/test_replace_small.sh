#!/usr/bin/env bash
# replace-small at a tiny scale under glibc, jemalloc and libmesh, on one
# thread and on two; on two, every replaced object is freed by the other
# thread (remote_frees = ops), on one by its own (remote_frees = 0).
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=replace-small
phases='fill,run,teardown,end'
result_keys=ops_per_sec,ops,run_s,threads,objects,remote_frees
check_remote_frees
