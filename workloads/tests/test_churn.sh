#!/usr/bin/env bash
# churn at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=churn
phases='fill,churn,teardown,end'
result_keys=ops_per_sec,ops,reallocs
check_workload --scale 0.02
