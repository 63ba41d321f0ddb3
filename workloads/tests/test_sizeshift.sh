#!/usr/bin/env bash
# sizeshift at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=sizeshift
phases='fill,free,refill,hold,teardown,end'
result_keys=first_objects,kept_objects,second_objects
min_phase="hold=0.1"
check_workload --scale 0.02 --hold 0.1
