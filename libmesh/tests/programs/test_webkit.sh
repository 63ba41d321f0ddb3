#!/usr/bin/env bash
# WebKitGTK on libmesh: browser/'s TodoMVC benchmark, the React suite for one
# iteration, in an Xvfb display, with WebKit's allocator told to use malloc
# (Malloc=1). Checks that a score came back, that the page loaded React
# (bundled from npm by `make browser`), that the web process had libmesh
# mapped and printed libmesh's summary when it exited, and that WebKit's
# helper processes exited on their own.
. "$(dirname "$0")/lib.sh"
packages="apt-get install -y gir1.2-webkit2-4.1 python3-gi xvfb xauth nodejs npm"
[ -x /usr/bin/Xvfb ] || fail "Xvfb is not installed ($packages)"
/usr/bin/python3 -c 'import gi; gi.require_version("WebKit2", "4.1")' 2>/dev/null \
    || fail "WebKit2 4.1 for Python is not installed ($packages)"
make -s -C "$top" browser >"$scratch/build" 2>&1 || fail "make browser failed: $(cat "$scratch/build")"

port=$(free_port)
/usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$top/browser" "$port" \
    >/dev/null 2>&1 &
server=$!
Xvfb -displayfd 3 -screen 0 1280x1024x24 -nolisten tcp 3>"$scratch/display" 2>/dev/null &
xvfb=$!
trap 'kill $server $xvfb 2>/dev/null || true; rm -rf "$scratch"' EXIT
for _ in $(seq 1 100); do
    [ -s "$scratch/display" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
[ -s "$scratch/display" ] || fail "Xvfb did not start"

mkdir "$scratch/logs"
url="http://127.0.0.1:$port/runner/index.html?iterations=1&suites=react"
Malloc=1 MALLOCSTATS=1 LD_PRELOAD=$LIBMESH DISPLAY=":$(cat "$scratch/display")" NO_AT_BRIDGE=1 \
    timeout -k 5 50 /usr/bin/python3 "$top/browser/launcher.py" --url "$url" \
    --logs "$scratch/logs" --timeout 40 >"$scratch/out" 2>"$scratch/err" \
    || fail "the launcher failed: $(tail -c 2000 "$scratch/out" "$scratch/err" "$scratch/logs/web.log")"
/usr/bin/python3 - "$scratch/out" "$LIBMESH" <<'PY' || fail "wrong result: $(tail -c 2000 "$scratch/out")"
import json, os, sys
r = json.loads(open(sys.argv[1]).read().splitlines()[-1])
lib = os.path.realpath(sys.argv[2])
assert r["score"] > 0, r.get("score")
fw = r["suites"]["react"]["framework"]
assert fw["name"] == "react" and fw["version"].startswith("19."), fw
assert len(r["suites"]["react"]["times"]) == 1
web = [p for p in r["launcher"]["processes"] if p["comm"] == "WebKitWebProces"]
assert web, r["launcher"]["processes"]
for p in web:
    assert lib in map(os.path.realpath, p["mapped"]), p
    assert p["malloc_env"] == "1", p
assert r["launcher"]["helpers_exited"] and r["launcher"]["error"] is None, r["launcher"]
print(f"score {r['score']:.1f}, React {fw['version']}, web process {web[0]['pid']} on libmesh")
PY
ran_on_mesh "$scratch/logs/web.log"
echo ok
