"""Redis's request latency under each allocator, on a fragmented heap.

Each run starts the redis-server of Figure 7 (redis_fig: same binaries,
same allocator rows, 127.0.0.1, no persistence) in its own memory cgroup,
plays the paper's script on it (redis_fig.ScriptDriver.play_script:
maxmemory 100mb, allkeys-lru, the two DEBUG POPULATEs), and then drives it
with Debian's redis-benchmark, once per test (SET, then GET):

  redis-benchmark -t set -n REQUESTS -c 20 -d 240 -r 2000000

(GET with -r 1999999: see LatencyBench.keys.)

Random keys from a keyspace far larger than maxmemory holds (2,000,000
keys of 240 bytes against room for a few hundred thousand) keep Redis
evicting, and so freeing, through the whole SET test, which is when
libmesh meshes; GET mostly misses and frees little. redis-benchmark
times each request from send to reply (a closed loop: a stalled request
holds its client back, so one stall shows up once, in the maximum and the
top percentiles) into an HDR histogram of 3 significant digits (a value
is exact to 0.1%; the maximum is the histogram's largest value, exact to
the same 0.1%; anything over 3 s is recorded as 3 s). Its text report is
parsed here (parse_benchmark): the summary line gives requests/s, avg,
min, p50, p95, p99 and max; p99.9 is the first row of its percentile
table at or above 99.9% (an upper bound: that table's rows are spaced
more finely the closer they get to 100%).

For the libmesh rows the server also writes MESH_EVENTS, from which each
test's longest stalls are taken while the full log is at hand (the
committed document keeps only merged windows): the longest write-protect
pause of a mesh, the longest wait of a program thread for the write
barrier, for a class lock or for the arena lock, and the longest
scavenge of freed pages, over the passes that began during the test.
Each test also records the server's CPU time (INFO used_cpu_user and
used_cpu_sys before and after it): per request, a cost that other jobs on
the machine sway less than requests/s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional

from .. import results as R
from .. import runner
from ..allocators import MESH_EVENTS_ENV
from ..sampler import CgroupHierarchy
from . import redis_fig

WORKLOAD = "redis-latency"
REDIS_BENCHMARK = "/usr/bin/redis-benchmark"
ALLOCATORS = ("jemalloc", redis_fig.SAME_BINARY_JEMALLOC, "glibc", "mimalloc", "mesh",
              "mesh-nomesh")
TESTS = ("set", "get")

# INFO fields kept before and after the tests: Figure 7's, and whether
# GET found its keys.
INFO_FIELDS = redis_fig.INFO_FIELDS + ("keyspace_hits", "keyspace_misses",
                                       "total_commands_processed")

# The mesh log's stall fields, in microseconds (max_scavenge_us: the
# longest scavenge, which holds the arena lock, and max_arena_wait_us:
# the longest wait for that lock; logs from before they were timed lack
# them).
STALL_FIELDS = ("max_pause_us", "max_barrier_wait_us", "max_lock_wait_us", "max_scavenge_us",
                "max_arena_wait_us")


@dataclass(frozen=True)
class LatencyBench:
    """What each run does after the paper's script; the tests shrink it."""
    script: redis_fig.RedisScript = redis_fig.PAPER_SCRIPT
    tests: tuple = TESTS
    requests: int = 300000        # per test: 10-20 s here at 15-30k requests/s
    clients: int = 20
    keyspace: int = 2000000
    value_bytes: int = 240
    settle_s: float = 0.5         # after the script, before the first test
    test_timeout_s: float = 300.0
    # Footprint samples a second, and the share of time spent reading PSS:
    # little, as the sampler shares the two cores with the server and client.
    hz: float = 10.0
    pss_budget: float = 0.002

    def keys(self, test: str) -> int:
        """The -r of a test: the keyspace, one key fewer for every test after
        the first.  redis-benchmark seeds random() with time(NULL) ^ getpid(),
        and two runs a few seconds and a few process ids apart draw the same
        seed often enough (2 of 18 GET runs in one measurement) that GET then
        asks for exactly the keys SET has just written: 93% of them found
        against 13%, another test.  Another modulus maps the same draws to
        other keys, so a shared seed no longer matters."""
        return self.keyspace - self.tests.index(test) if test in self.tests else self.keyspace

    def argv(self, port: int, test: str) -> list[str]:
        return [REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(port), "-t", test,
                "-n", str(self.requests), "-c", str(self.clients), "-d", str(self.value_bytes),
                "-r", str(self.keys(test)), "--precision", "3"]

    def timeout_s(self) -> float:
        """The longest a whole run may take before the server is killed."""
        s = self.script
        return (s.ready_timeout_s + s.cli_timeout_s * len(s.populates) + self.settle_s
                + self.test_timeout_s * len(self.tests) + 60)

    def describe(self) -> dict:
        return {"script": {k: v for k, v in self.script.describe().items()
                           if k in ("maxmemory", "policy", "populates")},
                "tests": list(self.tests), "requests": self.requests, "clients": self.clients,
                "keyspace": self.keyspace, "value_bytes": self.value_bytes,
                "settle_s": self.settle_s, "hz": self.hz,
                "argv_example": self.argv(0, self.tests[0])[1:]}


PAPER_BENCH = LatencyBench()


class BenchmarkError(RuntimeError):
    pass


_PERCENTILE_ROW = re.compile(r"^\s*([\d.]+)% <= ([\d.]+) milliseconds \(cumulative count (\d+)\)")
_COMPLETED = re.compile(r"(\d+) requests completed in ([\d.]+) seconds")
_THROUGHPUT = re.compile(r"throughput summary: ([\d.]+) requests per second")
# Summary column names -> our keys (milliseconds).
_SUMMARY_KEYS = {"avg": "avg_ms", "min": "min_ms", "p50": "p50_ms", "p95": "p95_ms",
                 "p99": "p99_ms", "max": "max_ms"}


def parse_benchmark(text: str) -> dict:
    """One test's report from redis-benchmark (7.x, without -q or --csv):
    requests/s, the summary's latencies in ms, p99.9, and the percentile
    table as [percent, ms, cumulative count] rows. Raises BenchmarkError
    when the report is not there."""
    lines = re.split(r"[\r\n]+", text)
    out: dict = {}
    table: list = []
    in_table = False
    for i, line in enumerate(lines):
        if line.startswith("Latency by percentile distribution"):
            in_table = True
            continue
        row = _PERCENTILE_ROW.match(line) if in_table else None
        if row:
            table.append([float(row.group(1)), float(row.group(2)), int(row.group(3))])
        elif in_table and line.strip():
            in_table = False
        m = _COMPLETED.search(line)
        if m:
            out["requests"], out["seconds"] = int(m.group(1)), float(m.group(2))
        m = _THROUGHPUT.search(line)
        if m:
            out["rps"] = float(m.group(1))
        if line.strip().startswith("latency summary") and i + 2 < len(lines):
            names, values = lines[i + 1].split(), lines[i + 2].split()
            if len(names) != len(values):
                raise BenchmarkError(f"latency summary: {lines[i + 1]!r} / {lines[i + 2]!r}")
            for n, v in zip(names, values):
                if n in _SUMMARY_KEYS:
                    out[_SUMMARY_KEYS[n]] = float(v)
    missing = [k for k in ("rps", "requests", "p99_ms", "max_ms") if k not in out]
    if missing or not table:
        raise BenchmarkError(f"no {', '.join(missing) or 'percentile table'} in redis-benchmark's "
                             f"output: {text.strip()[-300:]!r}")
    out["p999_ms"] = next(ms for pct, ms, _ in table if pct >= 99.9) \
        if table[-1][0] >= 99.9 else None
    out["percentiles"] = table
    return out


BUSY_KINDS = ("busy", "resumed")


def stalls(events: list, start_s: float, end_s: float, offset_s: float = 0.0) -> dict:
    """Mesh passes that began in [start_s, end_s] (seconds since spawn;
    an event's t counts from libmesh's start, offset_s after spawn): how
    many, their meshes, the longest pass, the longest busy one (started
    from the allocation path: the request being served waits for all of
    it, where an idle pass gives way to one), and the longest of each
    stall field, in µs."""
    inside = [e for e in events if isinstance(e, dict) and "t" in e
              and start_s <= float(e["t"]) + offset_s <= end_s]
    out = {"passes": len(inside), "meshes": sum(int(e.get("meshes") or 0) for e in inside),
           "max_pass_us": max((int(e.get("duration_us") or 0) for e in inside), default=0),
           "max_busy_pass_us": max((int(e.get("duration_us") or 0) for e in inside
                                    if e.get("kind") in BUSY_KINDS), default=0)}
    for f in STALL_FIELDS:
        # None: passes ran, but the log does not have the field.
        got = [int(e.get(f) or 0) for e in inside if f in e]
        out[f] = max(got) if got else None if inside else 0
    return out


def _server_cpu_s(info: dict) -> float:
    """CPU time the server has used (user + system; all its threads)."""
    return float(info.get("used_cpu_user", 0)) + float(info.get("used_cpu_sys", 0))


@dataclass
class LatencyDriver(redis_fig.ScriptDriver):
    """The paper's script, then each redis-benchmark test, then SIGTERM."""
    bench: LatencyBench = PAPER_BENCH
    outputs: dict = field(default_factory=dict)   # test -> redis-benchmark's text

    def after_script(self) -> None:
        res, b = self.result, self.bench
        self._sleep(b.settle_s)
        res["dbsize"] = int(redis_fig.cli(self.port, "dbsize"))
        res["info_before"] = redis_fig.parse_info(redis_fig.cli(self.port, "info"), INFO_FIELDS)
        res["tests"] = {}
        cpu = _server_cpu_s(res["info_before"])
        for test in b.tests:
            start = self.since()
            try:
                p = subprocess.run(b.argv(self.port, test), env=runner.clean_env(),
                                   capture_output=True, text=True, timeout=b.test_timeout_s,
                                   stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                raise BenchmarkError(f"redis-benchmark -t {test}: not done in "
                                     f"{b.test_timeout_s:g} s") from None
            end = self.since()
            self.outputs[test] = p.stdout + p.stderr
            if p.returncode != 0:
                raise BenchmarkError(f"redis-benchmark -t {test} exit status {p.returncode}: "
                                     f"{self.outputs[test].strip()[-300:]}")
            res["tests"][test] = {**parse_benchmark(p.stdout), "start_s": start, "end_s": end,
                                  "keys": b.keys(test)}
            res["info_after"] = redis_fig.parse_info(redis_fig.cli(self.port, "info"), INFO_FIELDS)
            now = _server_cpu_s(res["info_after"])
            res["tests"][test]["server_cpu_s"] = round(now - cpu, 6)
            cpu = now
        res["stopped_at_s"] = self.since()
        self._signal(signal.SIGTERM)


def _window_footprint(m: R.MemorySeries, start: float, end: float) -> dict:
    """The footprint's peak and sample mean over [start, end] (bytes).
    A window shorter than the sampling interval may hold no sample; then
    the samples on either side of it stand for it (the last before, the
    first after), rather than no footprint at all."""
    pts = [(t, v) for t, v in zip(m.t, m.footprint) if t is not None and v is not None]
    vals = [v for t, v in pts if start <= t <= end]
    if not vals:
        before = [v for t, v in pts if t < start][-1:]
        after = [v for t, v in pts if t > end][:1]
        vals = before + after
    return {"footprint_peak": max(vals) if vals else None,
            "footprint_mean": round(sum(vals) / len(vals)) if vals else None}


def _result(driven: dict, port: int, m: runner.Measurement, events: Optional[list]) -> dict:
    """The driver's record, each test with the footprint over it and, for
    the libmesh rows (events not None), the mesh log's stalls during it."""
    res = dict(driven)
    res["port"] = port
    for t in (res.get("tests") or {}).values():
        t.update(_window_footprint(m.series, t["start_s"], t["end_s"]))
        if events is not None:
            t["mesh"] = stalls(events, t["start_s"], t["end_s"], m.exec_s or 0.0)
    return res


def run_latency(name: str, hierarchy: Optional[CgroupHierarchy], scratch: str, *, trial: int,
                bench: LatencyBench = PAPER_BENCH, allocators: Optional[dict] = None,
                servers: redis_fig.Servers = redis_fig.DEBIAN_SERVERS) -> R.Run:
    """One run under allocator `name` (a key of redis_fig.redis_allocators()).
    Never raises for a failing run; the server is killed whatever happens."""
    a = (allocators or redis_fig.redis_allocators(servers))[name]
    d = tempfile.mkdtemp(prefix=f"redis-latency-{name}-{trial}-", dir=scratch)
    out, events = os.path.join(d, "server.log"), os.path.join(d, "events.jsonl")
    port = redis_fig.free_port()
    argv = redis_fig.server_argv(port, d, servers.of(name))
    extra = a.child_env()
    if a.is_mesh:
        extra[MESH_EVENTS_ENV] = events
    run = R.Run(workload=WORKLOAD, allocator=name, trial=trial, seed=0, scale=1.0, argv=argv,
                status="failed", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    drv = LatencyDriver(port, bench.script, activedefrag=False, bench=bench)
    with runner.recording(run, d):
        try:
            missing = a.missing() or (None if os.access(REDIS_BENCHMARK, os.X_OK) else
                                      f"{REDIS_BENCHMARK} is missing (apt-get install redis-tools)")
            if missing:
                run.error = missing
                return run
            m = redis_fig.measure_server(run, runner.clean_env(extra, home=d), drv, hierarchy, d,
                                         out, events if a.is_mesh else None, hz=bench.hz,
                                         pss_budget=bench.pss_budget, timeout=bench.timeout_s(),
                                         tag=f"redis-latency-{name}")
            run.result = _result(drv.result, port, m, run.events if a.is_mesh else None)
            if not redis_fig.server_failed(run, m, drv):
                run.status = "ok"
        finally:
            # measure() has killed the server by now; the driver may still
            # be waiting on redis-cli or redis-benchmark.
            drv.close()
    return run


def rotation(names: list, trial: int) -> list:
    """Trial k (from 1) starts at the (k-1)th name, so that every allocator
    takes every place in the order over len(names) trials."""
    k = (trial - 1) % len(names) if names else 0
    return list(names[k:]) + list(names[:k])


def progress_words(res: dict) -> str:
    """What an ok run measured, for its progress line."""
    return "ok: " + "; ".join(f"{t} {v['rps']:.0f}/s p99 {v['p99_ms']:.2f} max {v['max_ms']:.2f} ms"
                              for t, v in res["tests"].items())


def figure_config(names: tuple, trials: int, bench: LatencyBench = PAPER_BENCH) -> dict:
    """What the figure ran, for the results document's config."""
    return {"bench": bench.describe(), "allocators": list(names), "trials": trials,
            "order": "rotated: trial k starts at the k-th allocator",
            "redis_benchmark": redis_fig.version_line(REDIS_BENCHMARK)}
