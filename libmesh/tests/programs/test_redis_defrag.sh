#!/usr/bin/env bash
# Redis's active defragmentation on libmesh: redis-server built from
# Debian's source on the system malloc with harness/paper/redis-defrag.patch
# (build/redis/, made by `make redis-build` or `make paper-run`), preloaded
# with libmesh.  A fragmented dataset of every type must come out of a
# defrag cycle byte for byte the same (DEBUG DIGEST), objects must really
# have moved, and without libmesh the same server must refuse activedefrag.
# Skipped (exit 77) when the build is not there: the tests never fetch or
# build Redis themselves.
. "$(dirname "$0")/lib.sh"
server=$(ls "$top"/build/redis/*/redis-server-libc 2>/dev/null | head -n 1 || true)
if [ -z "$server" ]; then
    echo "SKIP: no build/redis/*/redis-server-libc (make redis-build fetches and builds it)"
    exit 77
fi
command -v redis-cli >/dev/null || fail "redis-cli is not installed (apt-get install redis-tools)"

start() { # start PORT [preload]: a server in the background; pid in $pid
    local port=$1 preload=${2:-}
    env ${preload:+LD_PRELOAD=$preload} MALLOCSTATS=1 "$server" --port "$port" --bind 127.0.0.1 \
        --save '' --appendonly no --enable-debug-command yes --daemonize no \
        --logfile "$scratch/redis-$port.log" >"$scratch/out-$port" 2>"$scratch/err-$port" &
    pid=$!
    for _ in $(seq 1 100); do
        redis-cli -p "$port" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "server did not start: $(cat "$scratch/err-$port" "$scratch/redis-$port.log")"
}
info() { redis-cli -p "$port" info "$1" | tr -d '\r' | sed -n "s/^$2://p"; }

# Without libmesh: refused, as in any build without defrag support.
port=$(free_port)
start "$port"
reply=$(redis-cli -p "$port" config set activedefrag yes 2>&1)
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait $pid || true
case "$reply" in
    *"defragmentation API"*) ;;
    *) fail "without libmesh, activedefrag yes answered: $reply" ;;
esac

port=$(free_port)
start "$port" "$LIBMESH"
trap 'kill $pid 2>/dev/null || true; rm -rf "$scratch"' EXIT
# Strings (keys, headers and values in the 16- to 64-byte classes) and every
# other type, large enough to be real hash tables, quicklists and skiplists.
redis-cli -p "$port" debug populate 200000 k 20 >/dev/null
/usr/bin/python3 - "$scratch/cmds" <<'EOF'
import random, sys
r = random.Random(7)
def cmd(*a):
    return "*%d\r\n" % len(a) + "".join("$%d\r\n%s\r\n" % (len(x.encode()), x) for x in a)
with open(sys.argv[1], "w", newline="") as f:
    for i in range(200000):
        if r.random() < 0.6:
            f.write(cmd("DEL", "k:%d" % i))
    for i in range(3000):
        f.write(cmd("HSET", "hash", "field%d" % i, "v%d" % (i * 7)))
        f.write(cmd("SADD", "set", "member%d" % i))
        f.write(cmd("ZADD", "zset", str(i % 97), "z%d" % i))
        f.write(cmd("RPUSH", "list", "item%d" % i))
    for i in range(0, 3000, 2):
        f.write(cmd("HDEL", "hash", "field%d" % i))
        f.write(cmd("SREM", "set", "member%d" % i))
        f.write(cmd("ZREM", "zset", "z%d" % i))
EOF
redis-cli -p "$port" --pipe <"$scratch/cmds" >"$scratch/pipe" 2>&1 || fail "pipe: $(tail -3 "$scratch/pipe")"
digest=$(redis-cli -p "$port" debug digest)
keys=$(redis-cli -p "$port" dbsize)
frag_before=$(info memory allocator_frag_ratio)
echo "before: $keys keys, allocator_frag_ratio $frag_before"

for kv in active-defrag-ignore-bytes:1mb active-defrag-threshold-lower:5 \
          active-defrag-cycle-min:50 active-defrag-cycle-max:90 activedefrag:yes; do
    [ "$(redis-cli -p "$port" config set "${kv%%:*}" "${kv#*:}")" = OK ] || fail "config set $kv"
done
# Until it has moved objects and either stopped or found nothing more to
# move for a second (it starts a new scan while fragmentation stays above
# threshold-lower); 20 s at most.
last=0; still=0
for _ in $(seq 1 80); do
    sleep 0.25
    hits=$(info stats active_defrag_hits)
    if [ "${hits:-0}" -gt 0 ]; then
        [ "$(info memory active_defrag_running)" = 0 ] && break
        if [ "$hits" = "$last" ]; then still=$((still + 1)); else still=0; fi
        [ $still -ge 4 ] && break
    fi
    last=$hits
done
redis-cli -p "$port" config set activedefrag no >/dev/null
hits=$(info stats active_defrag_hits)
frag_after=$(info memory allocator_frag_ratio)
echo "after: $hits objects moved, allocator_frag_ratio $frag_after, defrag CPU $(info stats active_defrag_cpu_us) us"
[ "${hits:-0}" -gt 1000 ] || fail "active defrag moved $hits objects"
[ "$(redis-cli -p "$port" debug digest)" = "$digest" ] || fail "the dataset changed in the defrag cycle"
[ "$(redis-cli -p "$port" dbsize)" = "$keys" ] || fail "dbsize"
[ "$(redis-cli -p "$port" hget hash field2999)" = v20993 ] || fail "hash value"
awk -v a="$frag_after" -v b="$frag_before" 'BEGIN { exit !(a < b) }' ||
    fail "fragmentation did not drop: $frag_before -> $frag_after"
redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
wait $pid || fail "redis-server exited with $?"
ran_on_mesh "$scratch/err-$port"
echo ok
