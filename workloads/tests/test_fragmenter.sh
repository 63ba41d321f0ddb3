#!/usr/bin/env bash
# fragmenter at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=fragmenter
phases='(round-[0-9]+,)+hold,teardown,end'
result_keys=rounds,allocated_bytes
min_phase="hold=0.1"
check_workload --scale 0.02 --hold 0.1
