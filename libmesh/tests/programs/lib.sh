# Shared by the real-program tests: where libmesh is, a scratch folder that
# goes away, and a check that a program really ran on libmesh (with
# MALLOCSTATS=1 libmesh prints its summary at exit; no other allocator does).
set -euo pipefail
top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
LIBMESH=${LIBMESH:-$top/libmesh/libmesh.so}
[ -f "$LIBMESH" ] || { echo "missing $LIBMESH (run make)"; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# ran_on_mesh FILE: FILE holds a program's stderr, run with MALLOCSTATS=1.
ran_on_mesh() {
    grep -q '^MESH COUNT: ' "$1" || fail "no libmesh summary in $1: the program did not run on libmesh"
}

free_port() {
    /usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
