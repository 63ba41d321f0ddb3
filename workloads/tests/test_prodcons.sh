#!/usr/bin/env bash
# prodcons at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=prodcons
phases='run,teardown,end'
result_keys=ops_per_sec,messages
check_workload --scale 0.02
