"""The results model: a versioned JSON document per run of the matrix.

One file holds everything needed to redraw every plot and recompute every
number without rerunning anything: the machine, the commit, each
allocator's identity, the configuration, and every run with its full time
series. A file whose schema version is not one this harness reads
(READABLE_VERSIONS) is refused with a SchemaError naming both, rather than
misread; there is one version so far, so nothing is upgraded on load.

Layout of a results directory:
  <stamp>.json   one matrix run
  <stamp>.csv    one row per run, no time series (for spreadsheets)
  latest.json -> <stamp>.json, latest.csv -> <stamp>.csv (relative symlinks)

latest.json is a symlink, not a copy: replacing it is one atomic rename,
it never disagrees with the file it names, it costs no space (a default
run is several MB), and `ls -l results/` shows which run it is.
"""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Callable, Iterable, Optional

SCHEMA = "mesh-harness-results"
SCHEMA_VERSION = 1
# The versions from_dict can read; a new version that changes a field adds
# the upgrade of the older ones to from_dict when it joins this tuple.
READABLE_VERSIONS = (1,)

# Columns of a memory time series, in bytes (t in seconds since spawn).
MEMORY_COLUMNS = ("t", "footprint", "usage", "anon", "shmem", "kernel", "file", "rss", "pss")


class SchemaError(ValueError):
    """A results file this harness cannot read."""


@dataclass
class MemorySeries:
    """Samples of one run, stored by column. None where a value was not read."""
    t: list = field(default_factory=list)
    footprint: list = field(default_factory=list)
    usage: list = field(default_factory=list)
    anon: list = field(default_factory=list)
    shmem: list = field(default_factory=list)
    kernel: list = field(default_factory=list)
    file: list = field(default_factory=list)
    rss: list = field(default_factory=list)
    pss: list = field(default_factory=list)

    def append(self, **values: Any) -> None:
        for c in MEMORY_COLUMNS:
            getattr(self, c).append(values.get(c))

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class LiveTrace:
    """The workload's own record of live bytes (its ground truth), t in its own seconds."""
    t: list = field(default_factory=list)
    live: list = field(default_factory=list)
    phase: list = field(default_factory=list)


@dataclass
class Run:
    workload: str
    allocator: str
    trial: int
    seed: int
    scale: float
    argv: list
    status: str                    # ok | failed | timeout | interrupted | skipped
    method: Optional[str] = None   # cgroup-v1 | cgroup-v2 | pss
    exit_code: Optional[int] = None   # exit status, or -signal
    error: Optional[str] = None       # why it is not ok, in words
    warnings: list = field(default_factory=list)   # e.g. a missing or malformed trace
    stderr_tail: str = ""
    wall_s: Optional[float] = None
    user_s: Optional[float] = None
    sys_s: Optional[float] = None
    maxrss_bytes: Optional[int] = None
    started: Optional[str] = None
    result: Optional[dict] = None     # the workload's own result object
    memory: MemorySeries = field(default_factory=MemorySeries)
    live: LiveTrace = field(default_factory=LiveTrace)
    live_offset_s: Optional[float] = None   # add to live.t to get the memory series' clock
    events: list = field(default_factory=list)   # MESH_EVENTS lines (mesh allocators)
    pss_reads: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Timing:
    """hyperfine's measurement of one workload under one allocator."""
    workload: str
    allocator: str
    scale: float
    seed: int
    command: str
    runs: int
    mean_s: float
    stddev_s: Optional[float]
    median_s: float
    min_s: float
    max_s: float
    user_s: float
    system_s: float
    times: list
    exit_codes: list


@dataclass
class MatrixResult:
    created: str
    machine: dict
    commit: Optional[str]
    config: dict
    allocators: dict               # name -> AllocatorInfo as a dict
    runs: list = field(default_factory=list)
    timings: list = field(default_factory=list)
    complete: bool = False
    duration_s: Optional[float] = None
    harness_argv: list = field(default_factory=list)
    schema: str = SCHEMA
    schema_version: int = SCHEMA_VERSION


def to_dict(result: MatrixResult) -> dict:
    return asdict(result)


def _build(cls: type, d: dict) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in d.items() if k in names})


def from_dict(d: dict) -> MatrixResult:
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise SchemaError("not a mesh harness results document")
    v = d.get("schema_version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise SchemaError("results document has no schema_version")
    if v not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        hint = "; update the harness" if v > SCHEMA_VERSION else ""
        raise SchemaError(f"results schema version {v} cannot be read: this harness reads "
                          f"version {readable}{hint}")
    runs = []
    for r in d.get("runs", []):
        r = dict(r)
        r["memory"] = _build(MemorySeries, r.get("memory") or {})
        r["live"] = _build(LiveTrace, r.get("live") or {})
        runs.append(_build(Run, r))
    d = dict(d)
    d["runs"] = runs
    d["timings"] = [_build(Timing, t) for t in d.get("timings", [])]
    d["schema_version"] = SCHEMA_VERSION
    return _build(MatrixResult, d)


def load(path: str) -> MatrixResult:
    with open(path, "r", encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: not JSON: {e}") from e
    try:
        return from_dict(d)
    except SchemaError as e:
        raise SchemaError(f"{path}: {e}") from None


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _atomic_symlink(target: str, link: str) -> None:
    tmp = f"{link}.tmp{os.getpid()}"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def stamp(t: Optional[float] = None) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime(t))


def save(result: MatrixResult, results_dir: str, name: Optional[str] = None,
         update_latest: bool = True) -> str:
    """Write <name>.json and <name>.csv into results_dir; point latest.* at them."""
    os.makedirs(results_dir, exist_ok=True)
    base = name or stamp()
    path = os.path.join(results_dir, base + ".json")
    n = 1
    while name is None and os.path.exists(path):
        n += 1
        base = f"{stamp()}-{n}"
        path = os.path.join(results_dir, base + ".json")
    _atomic_write(path, json.dumps(to_dict(result), separators=(",", ":")) + "\n")
    csv_path = os.path.join(results_dir, base + ".csv")
    write_csv(result, csv_path)
    if update_latest:
        _atomic_symlink(os.path.basename(path), os.path.join(results_dir, "latest.json"))
        _atomic_symlink(os.path.basename(csv_path), os.path.join(results_dir, "latest.csv"))
    return path


# ---- derived figures -------------------------------------------------------

@dataclass
class RunSummary:
    """Figures of one run, all derived from its series (bytes, seconds)."""
    samples: int
    mean_footprint: Optional[float]
    peak_footprint: Optional[int]
    final_footprint: Optional[int]
    peak_usage: Optional[int]
    peak_pss: Optional[int]
    peak_rss: Optional[int]
    mean_pss: Optional[float]
    mean_rss: Optional[float]
    mean_live: Optional[float]
    peak_live: Optional[int]
    frag_ratio: Optional[float]    # mean footprint / mean live bytes
    # mean footprint up to the workload's teardown phase (None without one):
    # an allocator that gives pages back as a program frees its whole heap
    # at exit makes that teardown longer, and its low tail pulls the
    # whole-run mean down; this mean leaves the tail out
    mean_footprint_pre_teardown: Optional[float] = None


def time_weighted_mean(t: list, v: list) -> Optional[float]:
    """Mean of a step function: each value holds until the next sample.

    Samples are nearly evenly spaced, but PSS is read at a stretched
    interval and a process may stall the sampler, so weighting by time
    keeps the mean honest. Points with a None value are skipped.
    """
    pts = [(a, b) for a, b in zip(t, v) if a is not None and b is not None]
    if not pts:
        return None
    if len(pts) == 1:
        return float(pts[0][1])
    total = span = 0.0
    for (t0, v0), (t1, _) in zip(pts, pts[1:]):
        total += v0 * (t1 - t0)
        span += t1 - t0
    if span <= 0:
        return float(statistics.fmean(b for _, b in pts))
    return total / span


def time_weighted_mean_until(t: list, v: list, end: float) -> Optional[float]:
    """time_weighted_mean of the samples up to end, the last of them
    holding until end."""
    pts = [(a, b) for a, b in zip(t, v) if a is not None and b is not None and a <= end]
    if not pts:
        return None
    # a closing point at end: only its time counts
    return time_weighted_mean([a for a, _ in pts] + [end], [b for _, b in pts] + [pts[-1][1]])


def _max(v: Iterable) -> Optional[int]:
    vals = [x for x in v if x is not None]
    return max(vals) if vals else None


def teardown_start(run: Run) -> Optional[float]:
    """When the workload's teardown phase began, on the memory series'
    clock, or None if its trace has no such phase."""
    lv = run.live
    for t, phase in zip(lv.t, lv.phase):
        if phase == "teardown" and t is not None:
            return t + (run.live_offset_s or 0.0)
    return None


def summarize(run: Run) -> RunSummary:
    m, lv = run.memory, run.live
    foot = [x for x in m.footprint if x is not None]
    mean_fp = time_weighted_mean(m.t, m.footprint)
    end = teardown_start(run)
    pre = time_weighted_mean_until(m.t, m.footprint, end) if end is not None else None
    mean_live = time_weighted_mean(lv.t, lv.live)
    frag = (mean_fp / mean_live) if mean_fp and mean_live else None
    return RunSummary(
        samples=len(m), mean_footprint=mean_fp, peak_footprint=_max(m.footprint),
        final_footprint=foot[-1] if foot else None, peak_usage=_max(m.usage),
        peak_pss=_max(m.pss), peak_rss=_max(m.rss),
        mean_pss=time_weighted_mean(m.t, m.pss), mean_rss=time_weighted_mean(m.t, m.rss),
        mean_live=mean_live, peak_live=_max(lv.live), frag_ratio=frag,
        mean_footprint_pre_teardown=pre)


@dataclass
class Stat:
    """Mean and sample standard deviation over trials.

    samples, when set, keeps each value under the round (or trial) that
    measured it, so that a ratio can pair the values of two allocators
    measured side by side (see ratio)."""
    mean: float
    stdev: float
    n: int
    samples: Optional[dict] = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, values: Iterable[Optional[float]]) -> Optional["Stat"]:
        vals = [float(v) for v in values if v is not None]
        if not vals:
            return None
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return cls(statistics.fmean(vals), sd, len(vals))

    @classmethod
    def of_rounds(cls, by_round: dict) -> Optional["Stat"]:
        """Like of, keeping each value under its round for paired ratios."""
        vals = {k: float(v) for k, v in by_round.items() if v is not None}
        s = cls.of(vals.values())
        return None if s is None else cls(s.mean, s.stdev, s.n, vals)

    def ratio(self, base: "Stat") -> Optional["Stat"]:
        """self / base.  When both were measured in the same rounds (every
        round holding a positive value of each), the median of the
        per-round ratios (of two, their geometric mean), with the spread
        of those ratios: a round runs the allocators one after the other,
        so a machine that slows down for a while slows both sides of a
        round's ratio, and one run that happened to fall into a slow
        moment moves one round's ratio, not the result.  Otherwise the
        ratio of the means, with the relative errors added in
        quadrature."""
        paired = self._paired_ratio(base)
        if paired is not None:
            return paired
        if not base.mean:
            return None
        r = self.mean / base.mean
        rel = math.hypot(self.stdev / self.mean if self.mean else 0.0, base.stdev / base.mean)
        return Stat(r, abs(r) * rel, min(self.n, base.n))

    def _paired_ratio(self, base: "Stat") -> Optional["Stat"]:
        a, b = self.samples, base.samples
        if not a or not b or set(a) != set(b) or len(a) < 2:
            return None
        if any(a[k] <= 0 or b[k] <= 0 for k in a):
            return None
        logs = [math.log(a[k] / b[k]) for k in a]
        r = math.exp(statistics.median(logs))
        return Stat(r, r * statistics.stdev(logs), len(logs))


@dataclass
class Aggregate:
    """One workload under one allocator, over its successful trials."""
    workload: str
    allocator: str
    trials: int
    failed: int
    mean_footprint: Optional[Stat]
    peak_footprint: Optional[Stat]
    peak_pss: Optional[Stat]
    peak_rss: Optional[Stat]
    frag_ratio: Optional[Stat]
    wall: Optional[Stat]            # memory runs (sampled) wall time
    time: Optional[Stat]            # best time figure: hyperfine mean if timed, else wall
    time_source: str
    user: Optional[Stat]
    sys: Optional[Stat]


def aggregate(result: MatrixResult) -> dict[tuple[str, str], Aggregate]:
    groups: dict[tuple[str, str], list[Run]] = {}
    for r in result.runs:
        groups.setdefault((r.workload, r.allocator), []).append(r)
    timings = {(t.workload, t.allocator): t for t in result.timings}
    out = {}
    for key, runs in groups.items():
        ok = [r for r in runs if r.ok]
        sums = [summarize(r) for r in ok]
        # Time keeps each value under its round (hyperfine's k-th round
        # runs every allocator once) or its trial (a trial runs every
        # allocator's memory run), so that ratios pair them.
        wall = Stat.of_rounds({r.trial: r.wall_s for r in ok})
        t = timings.get(key)
        if t and t.times and all(c == 0 for c in t.exit_codes):
            time_stat, src = Stat.of_rounds(dict(enumerate(t.times))), "hyperfine"
        else:
            time_stat, src = wall, "wall"
        out[key] = Aggregate(
            workload=key[0], allocator=key[1], trials=len(ok),
            failed=sum(1 for r in runs if r.status not in ("ok", "skipped")),
            mean_footprint=Stat.of(s.mean_footprint for s in sums),
            peak_footprint=Stat.of(s.peak_footprint for s in sums),
            peak_pss=Stat.of(s.peak_pss for s in sums),
            peak_rss=Stat.of(s.peak_rss for s in sums),
            frag_ratio=Stat.of(s.frag_ratio for s in sums),
            wall=wall, time=time_stat, time_source=src,
            user=Stat.of(r.user_s for r in ok), sys=Stat.of(r.sys_s for r in ok))
    return out


def checksum_mismatches(result: MatrixResult) -> list[str]:
    """Runs whose checksum differs from the others' for the same workload, seed and scale.

    Every correct allocator must make a workload compute the same data, so
    a differing checksum means a broken allocator (or workload).
    """
    groups: dict[tuple, dict[str, list[str]]] = {}
    for r in result.runs:
        if not r.ok or not r.result or "checksum" not in r.result:
            continue
        groups.setdefault((r.workload, r.seed, r.scale), {}).setdefault(
            str(r.result["checksum"]), []).append(r.allocator)
    out = []
    for (w, seed, scale), by_sum in groups.items():
        if len(by_sum) > 1:
            parts = "; ".join(f"{c}: {', '.join(sorted(a))}" for c, a in sorted(by_sum.items()))
            out.append(f"{w} (seed {seed}, scale {scale}): checksums differ: {parts}")
    return out


def _configured_then_run(result: MatrixResult, key: str, of_run: Callable[[Run], str]) -> list[str]:
    """The names the config lists under key, in its order, then any other
    name a run has, in the order the runs came."""
    names = list(result.config.get(key) or [])
    for r in result.runs:
        if of_run(r) not in names:
            names.append(of_run(r))
    return names


def ordered_allocators(result: MatrixResult) -> list[str]:
    """Allocators in the configured order (the order of the registry)."""
    return _configured_then_run(result, "allocators", lambda r: r.allocator)


def ordered_workloads(result: MatrixResult) -> list[str]:
    return _configured_then_run(result, "workloads", lambda r: r.workload)


CSV_FIELDS = ("workload", "allocator", "trial", "seed", "scale", "status", "method",
              "exit_code", "wall_s", "user_s", "sys_s", "mean_footprint_bytes",
              "peak_footprint_bytes", "final_footprint_bytes", "peak_usage_bytes",
              "peak_pss_bytes", "peak_rss_bytes", "mean_live_bytes", "peak_live_bytes",
              "frag_ratio", "samples", "checksum", "ops_per_sec", "score",
              "mean_footprint_pre_teardown_bytes")


def _num(x: Any) -> Any:
    if isinstance(x, float):
        return f"{x:.6g}" if abs(x) < 1e6 else f"{x:.0f}"
    return "" if x is None else x


def write_csv(result: MatrixResult, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(CSV_FIELDS)
        for r in result.runs:
            s = summarize(r)
            res = r.result or {}
            w.writerow([_num(x) for x in (
                r.workload, r.allocator, r.trial, r.seed, r.scale, r.status, r.method,
                r.exit_code, r.wall_s, r.user_s, r.sys_s, s.mean_footprint,
                s.peak_footprint, s.final_footprint, s.peak_usage, s.peak_pss, s.peak_rss,
                s.mean_live, s.peak_live, s.frag_ratio, s.samples, res.get("checksum"),
                res.get("ops_per_sec"), res.get("score"), s.mean_footprint_pre_teardown)])
    os.replace(tmp, path)
