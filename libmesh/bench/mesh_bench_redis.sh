#!/bin/sh
# Meshing cost on the paper's Redis script (Figure 7; harness/paper/redis_fig.py
# runs the full figure): redis-server under libmesh, maxmemory 100 MB with
# LRU eviction, two DEBUG POPULATEs of 700,000 keys of 240 bytes and 170,000
# of 492, SIGTERM 10 s after start.  Prints libmesh's counters of meshing
# (MALLOCSTATS=2 at exit): meshes, the time of every pass and their CPU time.
#   libmesh/bench/mesh_bench_redis.sh [libmesh.so] [redis-server]
# Needs redis-server and redis-cli (apt-get install redis-server).
set -eu
LIB=${1:-$(cd "$(dirname "$0")/.." && pwd)/libmesh.so}
SERVER=${2:-/usr/bin/redis-server}
for tool in "$SERVER" redis-cli; do
    command -v "$tool" >/dev/null || { echo "needs $tool: apt-get install redis-server" >&2; exit 2; }
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# a free port on 127.0.0.1
port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
MALLOCSTATS=2 LD_PRELOAD=$LIB "$SERVER" --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
    --enable-debug-command yes --daemonize no --dir "$dir" --logfile "" >"$dir/out" 2>"$dir/err" &
pid=$!
cli() { redis-cli -h 127.0.0.1 -p "$port" "$@" >/dev/null; }
tries=0
until cli ping 2>/dev/null; do
    tries=$((tries + 1))
    [ $tries -lt 100 ] || { echo "redis-server did not start" >&2; kill "$pid"; exit 1; }
    sleep 0.05
done
cli config set maxmemory 100mb
cli config set maxmemory-policy allkeys-lru
cli debug populate 700000 asdf 240
cli debug populate 170000 asdf 492
sleep 0.5
cli dbsize
cli info
sleep 5
cli info
sleep 3.5
kill -TERM "$pid"
wait "$pid" || true
grep -E "^(mesh_count|mesh_passes|mesh_pass_ns|mesh_pass_cpu_ns|mesh_pause_max_ns|mesh_pauses|mesh_unprotected|mesh_time_limited|punch_count|barrier_waits) " "$dir/err"
