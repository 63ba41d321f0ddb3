"""Figure 6 on a real browser engine: WebKitGTK running the TodoMVC benchmark.

The paper ran Firefox on Speedometer 2.0. Here Debian's WebKitGTK (WebKit2
4.1, GTK 3) runs browser/runner, a Speedometer-style benchmark of TodoMVC
apps on real frameworks (browser/README.md), driven by browser/launcher.py
in an Xvfb display. Xvfb and the HTTP server that serves the pages run in
the harness, outside the measured cgroup; the launcher and every process
WebKit spawns (the network process and the web process, children of the
launcher) are inside it, so the footprint is the whole browser's.

WebKit's own allocator (bmalloc/libpas) takes most allocations away from
malloc; the environment variable Malloc=1 makes it fall back to the system
malloc, which is what the preloaded allocator then serves. So every row
but one runs with Malloc=1; "webkit-own" runs WebKit as shipped (no
Malloc, nothing preloaded), a reference for memory and speed. Malloc=1
slows pages down, so scores compare among the Malloc=1 rows only.

Every run checks, in the launcher's record of each web process, that the
allocator under test is the one mapped there and that Malloc is what the
row says; a run where it is not fails. For libmesh the web process writes
its own mesh log (MESH_EVENTS) and its MALLOCSTATS=2 report at exit, which
the launcher makes it reach by closing the view and waiting for it.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import select
import subprocess
import tempfile
import threading
import time
from dataclasses import replace
from typing import Iterator, Optional

from .. import results as R
from .. import runner
from ..allocators import MESH_EVENTS_ENV, MULTIARCH, REPO_ROOT, Allocator, builtin_allocators
from ..sampler import CgroupHierarchy

WORKLOAD = "webkit-todomvc"
BROWSER_DIR = os.path.join(REPO_ROOT, "browser")
LAUNCHER = os.path.join(BROWSER_DIR, "launcher.py")
PAGES_BUILT = os.path.join(BROWSER_DIR, "dist", ".built")
PYTHON = "/usr/bin/python3"
XVFB = "/usr/bin/Xvfb"
TYPELIB = f"/usr/lib/{MULTIARCH}/girepository-1.0/WebKit2-4.1.typelib"
WEB_COMM = "WebKitWebProces"
OWN = "webkit-own"

# The rows of the figure, in the order tables and plots use.
ALLOCATORS = ("jemalloc", "glibc", "mimalloc", "mesh", "mesh-nomesh", OWN)
# Debian packages the figure needs (harness/packages.py installs them).
PACKAGES = ("gir1.2-webkit2-4.1", "python3-gi", "xvfb", "xauth")


def webkit_allocators(mesh: Optional[dict] = None) -> dict[str, Allocator]:
    """What each row means: the harness's allocator with Malloc=1, or WebKit's own."""
    reg = {**builtin_allocators(), **(mesh or {})}
    out = {n: replace(a, env={**a.env, "Malloc": "1"},
                      description=a.description + "; WebKit with Malloc=1")
           for n, a in reg.items() if n in ALLOCATORS}
    out[OWN] = Allocator(OWN, None, description="WebKit's own allocator (bmalloc/libpas), "
                                                "as shipped: Malloc unset, nothing preloaded")
    return out


def missing() -> Optional[str]:
    """Why the figure cannot run here, or None."""
    for path, what in ((TYPELIB, "gir1.2-webkit2-4.1"), (XVFB, "xvfb")):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install -y {' '.join(PACKAGES)})"
    if not os.path.exists(PAGES_BUILT):
        return "the benchmark's pages are not built (make browser)"
    return None


def build_pages() -> None:
    """`make browser`: npm ci and the bundles, once (make skips it when current)."""
    subprocess.run(["make", "-s", "-C", REPO_ROOT, "browser"], check=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve(root: str = BROWSER_DIR) -> Iterator[int]:
    """A static HTTP server for root on 127.0.0.1 (a free port), in this process."""
    handler = functools.partial(_QuietHandler, directory=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="pages", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextlib.contextmanager
def xvfb() -> Iterator[str]:
    """An Xvfb display, outside any measured cgroup; yields DISPLAY."""
    r, w = os.pipe()
    proc = subprocess.Popen([XVFB, "-displayfd", str(w), "-screen", "0", "1280x1024x24",
                             "-nolisten", "tcp"], pass_fds=(w,), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(w)
    try:
        number = b""
        deadline = time.monotonic() + 20
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise RuntimeError("Xvfb did not start")
            chunk = os.read(r, 16)
            if not chunk:
                raise RuntimeError("Xvfb exited before it gave its display number")
            number += chunk
        yield f":{number.decode().strip()}"
    finally:
        os.close(r)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def parse_counters(text: str) -> Optional[dict]:
    """The counters of libmesh's MALLOCSTATS=2 report ("name (what): value")."""
    out = {}
    inside = False
    for line in text.splitlines():
        if line.strip() == "-- counters --":
            inside = True
            continue
        if inside:
            name, sep, value = line.rpartition(": ")
            if not sep or not value.strip().isdigit():
                break
            out[name.split(" (")[0]] = int(value)
    return out or None


def check_web_processes(processes: list, a: Allocator) -> Optional[str]:
    """Why the web processes did not run under allocator a, or None when they did."""
    web = [p for p in processes if p.get("comm") == WEB_COMM]
    if not web:
        return "no web process was seen"
    want_lib = os.path.realpath(a.library) if a.library else None
    want_malloc = a.env.get("Malloc")
    for p in web:
        mapped = [os.path.realpath(m) for m in p.get("mapped") or []]
        if p.get("error"):
            return f"web process {p['pid']}: {p['error']}"
        if want_lib and want_lib not in mapped:
            return (f"web process {p['pid']} does not map {a.library} "
                    f"(LD_PRELOAD={p.get('preload')!r}, malloc libraries mapped: {mapped})")
        if not want_lib and mapped:
            return f"web process {p['pid']} maps {mapped}, but {a.name} preloads nothing"
        if p.get("malloc_env") != want_malloc:
            return (f"web process {p['pid']} has Malloc={p.get('malloc_env')!r}, "
                    f"{a.name} wants {want_malloc!r}")
    return None


def pause_summary(events: list) -> Optional[dict]:
    """The write-protect pauses of one run's mesh passes (raw MESH_EVENTS
    lines): percentiles over passes of each pass's longest pause, and how
    many meshes paused 2 ms or more (the histogram's top two buckets)."""
    passes = sorted(int(e.get("max_pause_us") or 0) for e in events
                    if isinstance(e, dict) and "passes" not in e)
    if not passes:
        return None
    n = len(passes)
    slow = total = 0
    for e in events:
        hist = e.get("pause_us_hist") or {}
        slow += int(hist.get("<5000", 0)) + int(hist.get(">=5000", 0))
        total += sum(int(v) for v in hist.values())
    return {"passes": n, "p50_us": passes[n // 2], "p90_us": passes[int(n * 0.9)],
            "p99_us": passes[int(n * 0.99)], "max_us": passes[-1],
            "meshes": total, "meshes_over_2ms": slow}


def window_mean(t: list, v: list, start: float, end: float) -> Optional[float]:
    """Time-weighted mean of the step function (t, v) over [start, end]."""
    area = span = 0.0
    for i in range(len(t)):
        if v[i] is None or t[i] is None:
            continue
        a = max(t[i], start)
        b = min(t[i + 1] if i + 1 < len(t) else end, end)
        if b > a:
            area += v[i] * (b - a)
            span += b - a
    return area / span if span > 0 else None


def settled_parts(series: R.MemorySeries, result: dict) -> Optional[dict]:
    """The settled footprint split as the cgroup charges it: anonymous memory
    (outside libmesh's arena file), shmem (the arena file) and kernel memory
    (page tables and mappings, which meshing adds), in bytes; None when the
    run has no settle window."""
    close_s, res_s = result.get("closing_s"), result.get("result_s")
    if close_s is None or res_s is None:
        return None
    start = max(res_s, close_s - 1.0)
    return {col: window_mean(series.t, getattr(series, col), start, close_s)
            for col in ("anon", "shmem", "kernel")}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def summarize(m, page: dict, t0: float, settle_s: float) -> dict:
    """The figure's numbers from one run's series and the launcher's report."""
    info = page.get("launcher") or {}
    t, fp = m.series.t, m.series.footprint
    res_t = info.get("result_monotonic")
    close_t = info.get("closing_monotonic")
    out = {"score": page.get("score"), "iterations": page.get("iterations"),
           "todos": page.get("todos"), "elapsed_ms": page.get("elapsed_ms"),
           "iteration_scores": page.get("iteration_scores"),
           "user_agent": page.get("user_agent"), "webkit": info.get("webkit"),
           "processes": info.get("processes"), "helpers_exited": info.get("helpers_exited"),
           "suites": {n: {"framework": s.get("framework"), "times_ms": s.get("times")}
                      for n, s in (page.get("suites") or {}).items()}}
    if res_t is not None and close_t is not None:
        res_s, close_s = res_t - t0, close_t - t0
        out["result_s"], out["closing_s"] = round(res_s, 3), round(close_s, 3)
        out["mean_run"] = window_mean(t, fp, 0.0, res_s)
        # the last second of the idle page: memory once the run has settled
        out["settled"] = window_mean(t, fp, max(res_s, close_s - min(1.0, settle_s)), close_s)
        peak = [v for a, v in zip(t, fp) if a is not None and v is not None and a <= res_s]
        out["peak_run"] = max(peak) if peak else None
        out["settled_parts"] = settled_parts(m.series, out)
    return out


def verdict(m, page: dict, res: dict, a: Allocator) -> tuple[str, Optional[str]]:
    """(status, error) of a run, from what measure() saw and the launcher said.
    m: runner.Measurement."""
    launcher_error = (page.get("launcher") or {}).get("error")
    wrong = check_web_processes(res.get("processes") or [], a) if page else None
    if m.start_error:
        return "failed", m.start_error
    if m.timed_out:
        return "timeout", "the launcher did not finish"
    if not page:
        return "failed", f"the launcher printed no result (exit status {m.exit_code})"
    if launcher_error:
        return "failed", f"launcher: {launcher_error}"
    if wrong:
        return "failed", f"allocator check: {wrong}"
    if not res.get("helpers_exited"):
        return "failed", "WebKit's helper processes did not exit on their own"
    if m.exit_code != 0:
        return "failed", f"launcher exit status {m.exit_code}"
    if res.get("score") is None or res.get("mean_run") is None:
        return "failed", "no score or no samples during the run"
    if a.is_mesh and not (res.get("mallocstats") or {}).get("web"):
        return "failed", "the web process printed no MALLOCSTATS report at exit"
    return "ok", None


def run_webkit(name: str, hierarchy: Optional[CgroupHierarchy], scratch: str, *, trial: int,
               port: int, display: str, iterations: int, settle_s: float, hz: float = 100.0,
               pss_budget: float = 0.02, timeout: float = 900.0,
               allocators: Optional[dict] = None, suites: str = "") -> R.Run:
    """One run of the benchmark under row `name` (a key of webkit_allocators()).

    Never raises for a failing run: the Run says what went wrong. measure()
    kills whatever is left of the browser (its whole cgroup) in any case.
    """
    a = (allocators or webkit_allocators())[name]
    d = tempfile.mkdtemp(prefix=f"webkit-{name}-{trial}-", dir=scratch)
    logs = os.path.join(d, "logs")
    os.makedirs(logs)
    query = f"iterations={iterations}" + (f"&suites={suites}" if suites else "")
    url = f"http://127.0.0.1:{port}/runner/index.html?{query}"
    argv = [PYTHON, LAUNCHER, "--url", url, "--logs", logs, "--settle", repr(float(settle_s)),
            "--timeout", repr(float(timeout))]
    extra = {**a.child_env(), "DISPLAY": display, "NO_AT_BRIDGE": "1",
             "XDG_RUNTIME_DIR": d}
    if a.is_mesh:
        extra[MESH_EVENTS_ENV] = os.path.join(d, "events-ui.jsonl")
        extra["MALLOCSTATS"] = "2"
    run = R.Run(workload=WORKLOAD, allocator=name, trial=trial, seed=0, scale=float(iterations),
                argv=argv, status="failed", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    out, err = os.path.join(d, "stdout"), os.path.join(d, "stderr")
    holder = {}
    with runner.recording(run, d):
        with open(out, "wb") as fo, open(err, "wb") as fe:
            m = runner.measure(argv, runner.clean_env(extra, home=d), hierarchy, hz=hz,
                               pss_budget=pss_budget, timeout=timeout + settle_s + 60,
                               stdout=fo, stderr=fe, cwd=d, tag=f"webkit-{name}",
                               on_start=lambda pid, t0: holder.update(t0=t0))
        runner.take_measurement(run, m)
        run.stderr_tail = (_read(err)[-1500:] + _read(os.path.join(logs, "web.log"))[-1500:])
        page = runner.last_json_line(out) or {}
        res = summarize(m, page, holder.get("t0", 0.0), settle_s)
        if a.is_mesh:
            run.events = runner.read_events(os.path.join(logs, "events-web.jsonl"))
            res["pauses"] = pause_summary(run.events)
            res["mallocstats"] = {role: parse_counters(_read(path)) for role, path in
                                  (("web", os.path.join(logs, "web.log")),
                                   ("network", os.path.join(logs, "network.log")),
                                   ("ui", err))}
        run.result = res
        run.status, run.error = verdict(m, page, res, a)
    return run


def version() -> dict:
    """WebKitGTK's Debian package version, and the frameworks the pages were built with."""
    out = {"webkitgtk": None, "frameworks": {}}
    try:
        out["webkitgtk"] = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libwebkit2gtk-4.1-0"], capture_output=True,
            text=True, timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        pass
    try:
        with open(os.path.join(BROWSER_DIR, "package.json"), encoding="utf-8") as f:
            out["frameworks"] = json.load(f).get("dependencies", {})
    except (OSError, ValueError):
        pass
    return out
