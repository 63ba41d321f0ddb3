"""The redis-latency figure: its numbers and its section of paper-figures.md.

Computed from the runs of redis_latency (workload "redis-latency") only.
Per allocator and test (SET, GET): requests/s, p50, p99, p99.9 and the
maximum latency, each a mean and sample standard deviation over trials;
requests/s and the percentiles as ratios to jemalloc (relative errors in
quadrature), the maximum as a difference from jemalloc's in ms, since a
maximum is one request and a ratio of two single requests says little.
For the libmesh rows, the longest mesh pass (and busy pass) and stalls
the server's log recorded during the test, the longest over all trials.
And the server's CPU time per request (its own INFO counters around each
test), and the mean footprint over the test, what the allocator holds
meanwhile.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Optional

from .. import results as R
from ..stats import MIB
from . import figures as F
from . import redis_fig
from . import redis_latency as L
from .tables import fmt, rel, verdict

WORKLOAD = L.WORKLOAD
ORDER = L.ALLOCATORS
BASE = "jemalloc"
SAME_BINARY = redis_fig.SAME_BINARY_JEMALLOC
KEYS = ("rps", "p50_ms", "p99_ms", "p999_ms", "max_ms")

# The targets this figure is measured against, for the mesh row.
MAX_SLACK_MS, P99_BOUND, SET_RPS_BOUND = 2.0, 1.10, 0.97


@dataclass
class TestRow:
    """One allocator, one redis-benchmark test, over its trials."""
    values: dict = field(default_factory=dict)     # KEYS -> Stat
    ratios: dict = field(default_factory=dict)     # KEYS but max_ms -> Stat, / jemalloc
    max_over_base_ms: Optional[R.Stat] = None      # max_ms - jemalloc's, spreads in quadrature
    worst_max_ms: Optional[float] = None           # the longest request of any trial
    stalls: dict = field(default_factory=dict)     # libmesh rows: longest of each, µs


@dataclass
class Row:
    allocator: str
    trials: int
    failed: int
    tests: dict = field(default_factory=dict)      # test -> TestRow


def _tests(run: R.Run) -> dict:
    return (run.result or {}).get("tests") or {}


def _hit_rate(run: R.Run) -> Optional[float]:
    """Share of GETs that found their key, from INFO around the tests."""
    before, after = (run.result or {}).get("info_before") or {}, (run.result or {}).get("info_after") or {}
    try:
        hits = after["keyspace_hits"] - before.get("keyspace_hits", 0)
        misses = after["keyspace_misses"] - before.get("keyspace_misses", 0)
    except (KeyError, TypeError):
        return None
    return hits / (hits + misses) if hits + misses else None


def _percent_range(rates: list[float]) -> str:
    lo, hi = round(100 * min(rates)), round(100 * max(rates))
    return f"{lo}%" if lo == hi else f"{lo}-{hi}%"


def _same_keys(run: R.Run) -> bool:
    """Whether the run's GET drew its keys with SET's modulus (runs made
    before each test had its own; older runs record none for either)."""
    t = _tests(run)
    return t.get("get", {}).get("keys") == t.get("set", {}).get("keys")


def _hit_notes(hits: list[tuple[R.Run, float]]) -> list[str]:
    """What GET found, over every run; runs that found most of their keys
    are named, with whether their GET may have replayed the SET test's keys
    (a seed drawn twice, possible while both tests had one key modulus)."""
    low = [h for _, h in hits if h <= 0.5]
    high = [(r, h) for r, h in hits if h > 0.5]
    notes = []
    if low:
        notes.append(f"GET finds {_percent_range(low)} of its keys in {len(low)} of {len(hits)} "
                     "runs: most random keys were evicted or never set, so GET measures the "
                     "lookup path and little allocation.")
    for replayed in (True, False):
        runs = [(r, h) for r, h in high if _same_keys(r) == replayed]
        if not runs:
            continue
        named = ", ".join(f"{r.allocator} trial {r.trial}" for r, _ in runs)
        why = ("redis-benchmark may have seeded its keys as in the SET test (time ^ pid) and "
               "asked for the keys SET had just written: these runs gave both tests one key "
               "modulus, as the harness did before each test had its own" if replayed else
               "not a seed drawn twice (each test had its own key modulus): look at the run")
        notes.append(f"GET found {_percent_range([h for _, h in runs])} of its keys in {named}: "
                     f"{why}.")
    return notes


def _test_row(runs: list[R.Run], test: str) -> Optional[TestRow]:
    got = [_tests(r)[test] for r in runs if test in _tests(r)]
    if not got:
        return None
    row = TestRow()
    for k in KEYS:
        row.values[k] = R.Stat.of(t.get(k) for t in got)
    row.values["cpu_us"] = R.Stat.of(1e6 * t["server_cpu_s"] / t["requests"] for t in got
                                     if t.get("server_cpu_s") and t.get("requests"))
    row.values["footprint_mib"] = R.Stat.of(t["footprint_mean"] / MIB for t in got
                                            if t.get("footprint_mean"))
    row.worst_max_ms = max(t["max_ms"] for t in got)
    meshes = [t["mesh"] for t in got if t.get("mesh")]
    if meshes:
        row.stalls = {k: max((m[k] for m in meshes if m.get(k) is not None), default=None)
                      for k in ("max_pass_us", "max_busy_pass_us") + L.STALL_FIELDS}
        row.stalls["passes"] = R.Stat.of(m.get("passes") for m in meshes)
        row.stalls["meshes"] = R.Stat.of(m.get("meshes") for m in meshes)
    return row


def rows(res: R.MatrixResult) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for al in F.allocators_of(res, WORKLOAD, ORDER):
        runs = F.ok_runs(res, WORKLOAD, al)
        row = Row(al, len(runs), len(F.all_runs(res, WORKLOAD, al)) - len(runs))
        for test in L.TESTS + tuple(t for r in runs for t in _tests(r) if t not in L.TESTS):
            tr = _test_row(runs, test)
            if tr is not None:
                row.tests[test] = tr
        out[al] = row
    base = out.get(BASE)
    for row in out.values():
        for test, tr in row.tests.items():
            bt = base.tests.get(test) if base else None
            if bt is None:
                continue
            for k in KEYS + ("cpu_us",):
                mine, theirs = tr.values.get(k), bt.values.get(k)
                if k != "max_ms":
                    tr.ratios[k] = mine.ratio(theirs) if mine and theirs else None
            tr.max_over_base_ms = _max_over(tr.values["max_ms"], bt.values["max_ms"])
    return out


@dataclass
class Target:
    what: str
    ours: str
    bound: str
    met: Optional[bool]
    within_spread: bool = False     # the bound lies within one sd of the mean


def _target(what: str, s: Optional[R.Stat], bound: float, at_most: bool = True) -> Target:
    if s is None:
        return Target(what, "-", "", None)
    met = s.mean <= bound if at_most else s.mean >= bound
    return Target(what, fmt(s), f"{'<=' if at_most else '>='} {bound:g}", met,
                  abs(s.mean - bound) <= s.stdev)


def _ratio(mine: Optional[R.Stat], theirs: Optional[R.Stat]) -> Optional[R.Stat]:
    return mine.ratio(theirs) if mine and theirs else None


def _max_over(mine: R.Stat, theirs: R.Stat) -> R.Stat:
    return R.Stat(mine.mean - theirs.mean, math.hypot(mine.stdev, theirs.stdev),
                  min(mine.n, theirs.n))


def targets(rs: dict[str, Row]) -> list[Target]:
    """The team's targets for the mesh row, each test's: against the
    jemalloc row, and then against jemalloc preloaded into the same
    binary as libmesh, when that row ran (same bounds: what the
    allocator's share of the gap is)."""
    mesh = rs.get("mesh")
    out = []
    for base_name in (BASE, SAME_BINARY):
        base = rs.get(base_name)
        if mesh is None or base is None:
            continue
        for test, tr in mesh.tests.items():
            bt = base.tests.get(test)
            if bt is None:
                continue
            name, v, b = test.upper(), tr.values, bt.values
            out.append(_target(f"{name}: max latency, mesh - {base_name} (ms; mean of each "
                               "trial's max)", _max_over(v["max_ms"], b["max_ms"]), MAX_SLACK_MS))
            out.append(_target(f"{name}: p99 latency, mesh / {base_name}",
                               _ratio(v.get("p99_ms"), b.get("p99_ms")), P99_BOUND))
            if test == "set":
                out.append(_target(f"SET: throughput, mesh / {base_name}",
                                   _ratio(v.get("rps"), b.get("rps")), SET_RPS_BOUND,
                                   at_most=False))
    return out


def _verdict(t: Target) -> str:
    text = verdict(t.met)
    return f"{text} (within one sd)" if t.met is not None and t.within_spread else text


def table(rs: dict[str, Row]) -> list[str]:
    out = ["| test | allocator | requests/s | / jemalloc | server CPU (µs/request) | / jemalloc "
           "| p50 (ms) | p99 (ms) | / jemalloc | p99.9 (ms) | max (ms) | max - jemalloc's (ms) "
           "| longest max (ms) | footprint (MiB) | ok runs |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for test in L.TESTS:
        for al, row in rs.items():
            tr = row.tests.get(test)
            if tr is None:
                continue
            v, r = tr.values, tr.ratios
            max_over = fmt(tr.max_over_base_ms, digits=1) if al != BASE else "-"
            out.append(f"| {test.upper()} | {al} | {fmt(v['rps'], digits=0)} | "
                       f"{fmt(r.get('rps'))} | {fmt(v.get('cpu_us'), digits=1)} | "
                       f"{fmt(r.get('cpu_us'))} | {fmt(v['p50_ms'], digits=3)} | "
                       f"{fmt(v['p99_ms'])} | {fmt(r.get('p99_ms'))} | {fmt(v['p999_ms'])} | "
                       f"{fmt(v['max_ms'], digits=1)} | {max_over} | {tr.worst_max_ms:.1f} | "
                       f"{fmt(v.get('footprint_mib'), digits=0)} | {row.trials}"
                       + (f" ({row.failed} failed)" if row.failed else "") + " |")
    return out


def _ms(us) -> str:
    """Microseconds as ms, or a dash where the log did not have the field
    (scavenges and arena lock waits were timed from 2026-12-03 on)."""
    return "–" if us is None else f"{us / 1e3:.2f}"


def stalls_table(rs: dict[str, Row]) -> list[str]:
    out = ["| test | allocator | mesh passes | meshes | longest pass (ms) | longest busy pass (ms) | "
           "longest write-protect pause (ms) | longest barrier wait (ms) | longest lock wait (ms) | "
           "longest scavenge (ms) | longest arena lock wait (ms) |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    n = len(out)
    for test in L.TESTS:
        for al, row in rs.items():
            tr = row.tests.get(test)
            if tr is None or not tr.stalls:
                continue
            s = tr.stalls
            out.append(f"| {test.upper()} | {al} | {fmt(s['passes'], digits=0)} | "
                       f"{fmt(s['meshes'], digits=0)} | "
                       + " | ".join(_ms(s.get(k)) for k in ("max_pass_us", "max_busy_pass_us")
                                    + L.STALL_FIELDS) + " |")
    return out if len(out) > n else []


def provenance(res: R.MatrixResult) -> str:
    fig = (res.config.get("figures") or {}).get(WORKLOAD) or {}
    lib = fig.get("libmesh") or res.config.get("libmesh") or {}
    load = fig.get("loadavg") or res.config.get("loadavg") or {}
    loads = " / ".join(", ".join(f"{x:.1f}" for x in load[k]) for k in ("start", "end")
                       if load.get(k))
    servers = fig.get("servers") or {}
    return (f"Measured {fig.get('created', res.created)} (harness commit "
            f"{fig.get('commit', res.commit)}; libmesh {lib.get('version')}); "
            f"{fig.get('redis_benchmark')}; "
            + ("redis-server built from Debian's source (Figure 7's builds); "
               if servers.get("source_build") else "Debian's redis-server for every row; ")
            + f"{fig.get('trials')} trials, the allocator order rotated per trial; "
            f"load average (1, 5, 15 min) at start / end: {loads} on "
            f"{res.machine.get('cpus')} cores shared with other work.")


def section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    head = ["## Redis latency on a fragmented heap (redis-benchmark)", ""]
    rs = rows(res)
    if not any(r.trials for r in rs.values()):
        return head + ["Not measured in this results file (`make redis-latency`, or "
                       "`/usr/bin/python3 -m harness paper run --figures redis-latency`)."]
    fig = (res.config.get("figures") or {}).get(WORKLOAD) or {}
    b = fig.get("bench") or {}
    img = rel(os.path.join(plot_dir, "redis-latency.png"), md_dir)
    out = head + [f"![Redis latency percentiles and throughput per allocator]({img})", "",
                  "Not in the paper: the cost of meshing to a server's requests. Each run starts "
                  "Figure 7's redis-server, fragments it with the paper's script (maxmemory "
                  f"{(b.get('script') or {}).get('maxmemory')}, "
                  f"{(b.get('script') or {}).get('policy')}, the two `debug populate`s), then runs "
                  f"`redis-benchmark -t set` and `-t get` with {b.get('requests')} requests each, "
                  f"{b.get('clients')} clients, {b.get('value_bytes')}-byte values over random "
                  f"keys from {b.get('keyspace')} (far more than fit: SET evicts, and frees, all "
                  "the time, so libmesh meshes during it). Latency is redis-benchmark's, send to "
                  "reply on 127.0.0.1 from an HDR histogram of 3 significant digits: the maximum "
                  "is exact to 0.1%, not rounded to a bucket; p99.9 is the first row of its "
                  "percentile table at or above 99.9% (an upper bound). The client is a closed "
                  "loop, so a server stall delays one request per client and appears in the "
                  "maximum and the top percentiles, not in the throughput. Server CPU is the "
                  "server's own CPU time over the test (INFO) per request: the allocator's cost, "
                  "less swayed by other jobs on the machine than requests/s. Footprint: the "
                  "server's memory cgroup, the mean of its samples (10 a second) over the test. "
                  "Spreads are one "
                  "standard deviation over trials.", ""]
    ts = targets(rs)
    if ts:
        out += ["| target (mesh) | measured | bound | met |", "|---|---|---|---|"]
        out += [f"| {t.what} | {t.ours} | {t.bound} | {_verdict(t)} |" for t in ts]
        out += [""]
    out += table(rs)
    st = stalls_table(rs)
    if st:
        out += ["", "The libmesh rows' own log (MESH_EVENTS) over each test: passes and meshes "
                "per run, and the longest of each stall over all runs. A pass runs on the thread "
                "that starts it, which in Redis is mostly the main thread. A busy pass (started "
                "from the allocation path) is a stall of the server for all its length; an idle "
                "pass runs where the server would have waited in epoll_wait and gives way within "
                "0.1 ms of a request's arrival:", ""] + st
    notes = _hit_notes([(r, h) for r in res.runs if r.workload == WORKLOAD and r.ok
                        for h in [_hit_rate(r)] if h is not None])
    failed = [r for r in res.runs if r.workload == WORKLOAD and not r.ok]
    notes += [f"Failed: {r.allocator} trial {r.trial}: {r.status}: {r.error}" for r in failed]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    out += ["", provenance(res)]
    return out
