#!/usr/bin/env bash
# browser-like at a tiny scale under glibc, jemalloc and libmesh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
workload=browser-like
phases='todo-vanilla,todo-framework,news-feed,gallery,editor,dashboard,teardown,end'
result_keys=score,page_loads,cached_objects
check_workload --scale 0.1
