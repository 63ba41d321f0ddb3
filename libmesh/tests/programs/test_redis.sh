#!/usr/bin/env bash
# Debian's redis-server on libmesh, driven by redis-benchmark on 127.0.0.1;
# then the data is checked and the server shut down cleanly.
. "$(dirname "$0")/lib.sh"
command -v redis-server >/dev/null || fail "redis-server is not installed (apt-get install redis-server)"
port=$(free_port)
MALLOCSTATS=1 LD_PRELOAD=$LIBMESH redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
    --enable-debug-command yes --daemonize no --logfile "$scratch/redis.log" >"$scratch/out" 2>"$scratch/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$scratch"' EXIT
for _ in $(seq 1 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
[ "$(redis-cli -p "$port" ping)" = PONG ] || fail "server did not start: $(cat "$scratch/err" "$scratch/redis.log")"
redis-benchmark -p "$port" -q -n 20000 -c 20 -d 100 -r 10000 -t set,get,incr,lpush,lpop,sadd,hset,zadd,lrange_100 \
    >"$scratch/bench" 2>&1 || fail "redis-benchmark failed: $(cat "$scratch/bench")"
cat "$scratch/bench" | tr '\r' '\n' | grep 'requests per second' | tee "$scratch/rps"
[ "$(wc -l <"$scratch/rps")" -ge 9 ] || fail "not every benchmark ran"
redis-cli -p "$port" set check "$(seq 1 1000 | tr '\n' ,)" >/dev/null
[ "$(redis-cli -p "$port" get check | cut -d, -f500)" = 500 ] || fail "value"
[ "$(redis-cli -p "$port" dbsize)" -gt 1000 ] || fail "dbsize"
before=$(redis-cli -p "$port" dbsize)
redis-cli -p "$port" debug populate 100000 pop 200 >/dev/null
[ "$(redis-cli -p "$port" dbsize)" -eq $((before + 100000)) ] || fail "debug populate"
[ "$(redis-cli -p "$port" strlen pop:4242)" -eq 200 ] || fail "populated value"
redis-cli -p "$port" flushall >/dev/null
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait $pid || fail "redis-server exited with $?"
ran_on_mesh "$scratch/err"
echo ok
