#!/usr/bin/env bash
# The API conformance test, built against libc, run on libmesh.so.
. "$(dirname "$0")/lib.sh"
LD_PRELOAD=$LIBMESH "$top/libmesh/tests/bin/api_preload"
