#!/usr/bin/env bash
# regular at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=regular
phases='alloc,halve-1,halve-2,halve-3,hold,teardown,end'
result_keys=objects_kept
min_phase="hold=0.1"
check_workload --scale 0.02 --hold 0.1
