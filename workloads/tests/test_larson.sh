#!/usr/bin/env bash
# larson at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=larson
phases='warmup,run,teardown,end'
result_keys=ops_per_sec,ops,threads
check_workload --scale 0.02
