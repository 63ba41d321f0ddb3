#!/usr/bin/env bash
# glibc-shim.so: the API checks of tests/shim_check.c, then Debian's
# redis-server (linked with jemalloc) under the shim: it must start, answer
# PING, and keep its data in glibc's heap rather than jemalloc's. The same
# check without the shim must see the data in jemalloc, which shows the
# check can tell the two apart.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
shim=$bin/glibc-shim.so
check=$top/workloads/build/tests/shim_check
[ -f "$shim" ] || fail "$shim is not built (make -C workloads)"
[ -x "$check" ] || fail "$check is not built (make -C workloads tests)"
LD_PRELOAD=$shim "$check" || fail "shim_check failed"

redis=$(command -v redis-server) || fail "redis-server is not installed"
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        wait "$pid" || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# run_redis LABEL PRELOAD: starts redis-server on its own unix socket, fills
# it with 50,000 keys, stops it, and sets $used (Redis's used_memory) and
# $alloc (bytes jemalloc says it has allocated).
run_redis() {
    local sock=$tmp/$1.sock
    env LD_PRELOAD="$2" "$redis" --port 0 --unixsocket "$sock" --save '' --appendonly no \
        --enable-debug-command yes --dir "$tmp" >"$tmp/$1.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
    [ -S "$sock" ] || { cat "$tmp/$1.log" >&2; fail "redis-server ($1) did not start"; }
    [ "$(redis-cli -s "$sock" ping)" = PONG ] || fail "redis-server ($1) did not answer PING"
    if [ -n "$2" ]; then
        grep -q glibc-shim.so "/proc/$pid/maps" || fail "the shim is not mapped into redis-server"
    fi
    [ "$(redis-cli -s "$sock" debug populate 50000 key 240)" = OK ] || fail "DEBUG POPULATE failed"
    sleep 0.3 # Redis refreshes its allocator statistics in its 10 Hz cron
    redis-cli -s "$sock" info memory | tr -d '\r' >"$tmp/$1.info"
    redis-cli -s "$sock" shutdown nosave >/dev/null 2>&1 || true
    wait "$pid" || true
    pid=
    used=$(awk -F: '$1 == "used_memory" { print $2 }' "$tmp/$1.info")
    alloc=$(awk -F: '$1 == "allocator_allocated" { print $2 }' "$tmp/$1.info")
}

run_redis shim "$shim"
echo "under the shim: used_memory=$used jemalloc allocated=$alloc"
[ "$used" -gt 10000000 ] || fail "used_memory $used: the keys are missing"
[ "$alloc" -lt 1000000 ] || fail "jemalloc holds $alloc bytes: the shim did not take over"

run_redis plain ""
echo "without it:     used_memory=$used jemalloc allocated=$alloc"
[ "$alloc" -gt 10000000 ] || fail "without the shim jemalloc should hold the keys ($alloc bytes)"

# A workload gives the same result through the shim as on plain glibc.
workload=churn
phases='fill,churn,teardown,end'
a=$(run_checked plain "" --scale 0.01)
b=$(run_checked shim "$shim" --scale 0.01)
[ "$a" = "$b" ] || fail "churn's checksum differs through the shim"
echo "PASS: glibc-shim"
