"""The numbers of each figure, computed from a results document only.

Statistics over trials are harness.results.Stat (mean, sample standard
deviation, n); ratios propagate the relative errors in quadrature, as the
harness's plots do.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .. import results as R
from ..stats import MIB, AllocatorRow
from . import claims as C
from . import redis_fig, redis_latency, ruby_fig

# Workload names of the figures' runs, and the order of their allocators.
REDIS = redis_fig.WORKLOAD
REDIS_ORDER = redis_fig.ALLOCATORS
RUBY_WORKLOAD = ruby_fig.RUBY.name
RUBY_ORDER = ruby_fig.ALLOCATORS
BROWSER = "browser-like-paper"
BROWSER_ORDER = ("jemalloc", "mesh", "mesh-nomesh")
FIGURE_WORKLOADS = (REDIS, RUBY_WORKLOAD, BROWSER, redis_latency.WORKLOAD)


def ok_runs(res: R.MatrixResult, workload: str, allocator: str) -> list[R.Run]:
    return [r for r in res.runs if r.workload == workload and r.allocator == allocator and r.ok]


def all_runs(res: R.MatrixResult, workload: str, allocator: str) -> list[R.Run]:
    return [r for r in res.runs if r.workload == workload and r.allocator == allocator]


def allocators_of(res: R.MatrixResult, workload: str, order: tuple = ()) -> list[str]:
    seen = [a for a in order if any(r.workload == workload and r.allocator == a for r in res.runs)]
    for r in res.runs:
        if r.workload == workload and r.allocator not in seen:
            seen.append(r.allocator)
    return seen


@dataclass
class EventSummary:
    """Meshing over one run, from its MESH_EVENTS (raw lines or merged windows)."""
    passes: int = 0
    total_s: float = 0.0
    longest_pause_ms: float = 0.0
    longest_pass_ms: float = 0.0
    meshes: int = 0
    released_bytes: int = 0
    stopped_time: int = 0
    stopped_maps: int = 0


def event_summary(events: list) -> EventSummary:
    s = EventSummary()
    for e in events:
        if not isinstance(e, dict):
            continue
        merged = "passes" in e
        d = int(e.get("duration_us") or 0)
        s.passes += int(e["passes"]) if merged else 1
        s.total_s += d / 1e6
        s.longest_pause_ms = max(s.longest_pause_ms, int(e.get("max_pause_us") or 0) / 1e3)
        s.longest_pass_ms = max(s.longest_pass_ms,
                                int(e.get("max_duration_us") or 0 if merged else d) / 1e3)
        s.meshes += int(e.get("meshes") or 0)
        s.released_bytes += int(e.get("bytes_released") or 0)
        if merged:
            s.stopped_time += int(e.get("stopped_time") or 0)
            s.stopped_maps += int(e.get("stopped_maps") or 0)
        else:
            s.stopped_time += e.get("stopped") == "time"
            s.stopped_maps += e.get("stopped") == "mappings"
    return s


@dataclass
class EventStats:
    """EventSummary over trials: means, and the maximum of the longest pause."""
    trials: int
    passes: Optional[R.Stat]
    total_s: Optional[R.Stat]
    longest_pause_ms: float
    longest_pass_ms: float
    meshes: Optional[R.Stat]
    released_mib: Optional[R.Stat]
    stopped_time: Optional[R.Stat]


def event_stats(runs: list[R.Run]) -> Optional[EventStats]:
    sums = [event_summary(r.events) for r in runs if r.events]
    if not sums:
        return None
    return EventStats(
        trials=len(sums), passes=R.Stat.of(s.passes for s in sums),
        total_s=R.Stat.of(s.total_s for s in sums),
        longest_pause_ms=max(s.longest_pause_ms for s in sums),
        longest_pass_ms=max(s.longest_pass_ms for s in sums),
        meshes=R.Stat.of(s.meshes for s in sums),
        released_mib=R.Stat.of(s.released_bytes / MIB for s in sums),
        stopped_time=R.Stat.of(s.stopped_time for s in sums))


def last_pass_s(events: list) -> Optional[float]:
    """When the last mesh pass of a run began (raw lines or merged windows)."""
    ts = [float(e.get("t_end", e.get("t"))) for e in events if isinstance(e, dict) and "t" in e]
    return max(ts) if ts else None


def stalled_runs(runs: list[R.Run], quiet_s: float = 1.0) -> list[tuple[int, float, float]]:
    """(trial, last pass, end of run) for runs whose mesh log stops more
    than quiet_s before the run does."""
    out = []
    for r in runs:
        last = last_pass_s(r.events)
        end = r.memory.t[-1] if r.memory.t else None
        if last is not None and end is not None and end - last > quiet_s:
            out.append((r.trial, last, end))
    return out


@dataclass
class Row(AllocatorRow):
    """One allocator in one figure, with its runs' mesh passes."""
    events: Optional[EventStats] = None
    note: str = ""


def _ratio(a: Optional[R.Stat], b: Optional[R.Stat]) -> Optional[R.Stat]:
    return a.ratio(b) if a is not None and b is not None else None


def _failed(res: R.MatrixResult, workload: str, allocator: str) -> int:
    return sum(1 for r in all_runs(res, workload, allocator) if r.status not in ("ok", "skipped"))


def _skip_note(res: R.MatrixResult, workload: str, allocator: str) -> str:
    skipped = [r for r in all_runs(res, workload, allocator) if r.status == "skipped"]
    return skipped[0].error or "skipped" if skipped else ""


def redis_rows(res: R.MatrixResult, order: tuple = ()) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for al in allocators_of(res, REDIS, order):
        runs = ok_runs(res, REDIS, al)
        sums = [R.summarize(r) for r in runs]
        row = Row(al, len(runs), _failed(res, REDIS, al), note=_skip_note(res, REDIS, al))
        row.values = {
            "at_mark": R.Stat.of(r.result.get("footprint_at_mark") for r in runs),
            "mean": R.Stat.of(s.mean_footprint for s in sums),
            "peak": R.Stat.of(s.peak_footprint for s in sums),
            "populate": R.Stat.of(r.result.get("populate_total_s") for r in runs),
            "populate1": R.Stat.of((r.result.get("populate_s") or [None])[0] for r in runs),
            "populate2": R.Stat.of((r.result.get("populate_s") or [None, None])[-1] for r in runs),
            "script": R.Stat.of(r.result.get("script_s") for r in runs),
            "dbsize": R.Stat.of(r.result.get("dbsize") for r in runs),
            "used_memory": R.Stat.of((r.result.get("info_steady") or {}).get("used_memory")
                                     for r in runs),
        }
        row.events = event_stats(runs)
        rows[al] = row
    for row in rows.values():
        for base in ("mesh-nomesh", "jemalloc"):
            b = rows.get(base)
            for k in ("at_mark", "populate", "mean"):
                row.ratios[f"{k}/{base}"] = _ratio(row.values.get(k), b.values.get(k) if b else None)
    return rows


@dataclass
class StateRow:
    """One allocator's Redis trials that ended in one end state."""
    allocator: str
    state: str
    at_mark: Optional[R.Stat]
    vs_nomesh: Optional[R.Stat] = None
    nomesh_same_state: bool = True   # False: the baseline is all of mesh-nomesh's trials


def run_state(r: R.Run) -> Optional[str]:
    return ((r.result or {}).get("end_state") or {}).get("state")


def redis_state_rows(res: R.MatrixResult, order: tuple = ()) -> dict[str, dict[str, StateRow]]:
    """state -> allocator -> its trials in that state, beside mesh-nomesh's
    trials in the same state (all of them when none ended there). Empty when
    the results predate the end-state probe."""
    out: dict[str, dict[str, StateRow]] = {}
    for state in (redis_fig.RENEWED, redis_fig.EVEN):
        rows = {}
        for al in allocators_of(res, REDIS, order):
            runs = [r for r in ok_runs(res, REDIS, al) if run_state(r) == state]
            if runs:
                rows[al] = StateRow(al, state, R.Stat.of(r.result.get("footprint_at_mark")
                                                         for r in runs))
        if not rows:
            continue
        base = rows.get("mesh-nomesh")
        if base is None:
            base = StateRow("mesh-nomesh", state, R.Stat.of(
                r.result.get("footprint_at_mark") for r in ok_runs(res, REDIS, "mesh-nomesh")),
                nomesh_same_state=False)
        for row in rows.values():
            row.vs_nomesh = _ratio(row.at_mark, base.at_mark)
            row.nomesh_same_state = base.nomesh_same_state
        out[state] = rows
    return out


@dataclass
class ClassUse:
    """One size class of libmesh at the end of the Redis runs (MALLOCSTATS=2
    at exit), averaged over trials."""
    size: int
    objects: int                 # per span
    span_bytes: R.Stat           # physical spans
    live_bytes: R.Stat
    occupancy: float             # live / slots of the physical spans
    aliases: R.Stat              # spans meshed away


@dataclass
class Breakdown:
    """Where one allocator's memory is in the trials of one end state."""
    allocator: str
    state: str
    trials: int
    at_mark: Optional[R.Stat]
    kernel: Optional[R.Stat]     # kernel memory charged at the mark
    anon: Optional[R.Stat]       # anonymous memory (outside libmesh's arena file)
    classes: list = field(default_factory=list)   # ClassUse, most bytes first
    large: Optional[R.Stat] = None


def redis_breakdown(res: R.MatrixResult, allocators: tuple = ("mesh", "mesh-nomesh"),
                    min_bytes: int = MIB) -> dict[str, dict[str, Breakdown]]:
    """state -> allocator -> Breakdown, for the allocators whose runs carry
    the probe and libmesh's class report; classes under min_bytes of spans
    are left out."""
    out: dict[str, dict[str, Breakdown]] = {}
    for state in (redis_fig.RENEWED, redis_fig.EVEN):
        for al in allocators:
            runs = [r for r in ok_runs(res, REDIS, al)
                    if run_state(r) == state and (r.result or {}).get("mallocstats")]
            if not runs:
                continue
            stats = [r.result["mallocstats"] for r in runs]
            sizes = sorted({int(k) for st in stats for k in st["classes"]})
            classes = []
            for size in sizes:
                cl = [st["classes"].get(str(size)) for st in stats]
                cl = [c for c in cl if c]
                if len(cl) != len(stats):
                    cl += [{"pages": cl[0]["pages"], "objects": cl[0]["objects"], "spans": 0,
                            "live": 0, "aliases": 0}] * (len(stats) - len(cl))
                span_bytes = R.Stat.of(c["spans"] * c["pages"] * 4096 for c in cl)
                if span_bytes.mean < min_bytes:
                    continue
                slots = sum(c["spans"] * c["objects"] for c in cl)
                classes.append(ClassUse(
                    size, cl[0]["objects"], span_bytes, R.Stat.of(c["live"] * size for c in cl),
                    sum(c["live"] for c in cl) / slots if slots else 0.0,
                    R.Stat.of(c["aliases"] for c in cl)))
            classes.sort(key=lambda c: -c.span_bytes.mean)
            out.setdefault(state, {})[al] = Breakdown(
                al, state, len(runs), R.Stat.of(r.result.get("footprint_at_mark") for r in runs),
                R.Stat.of(r.result.get("kernel_at_mark") for r in runs),
                R.Stat.of(r.result.get("anon_at_mark") for r in runs), classes,
                R.Stat.of(st.get("large_bytes") for st in stats))
    return out


def disjoint_chance(objects: int, occupancy: float) -> float:
    """The chance that two spans of `objects` slots, each slot used with
    probability `occupancy` independently, use no slot in common: whether
    two randomly filled spans can mesh."""
    return (1.0 - occupancy * occupancy) ** objects


def matrix_like_rows(res: R.MatrixResult, workload: str, baseline: str,
                     order: tuple = ()) -> dict[str, Row]:
    """Ruby and browser: mean and peak footprint, time, frag, score; ratios to baseline."""
    agg = R.aggregate(res)
    rows: dict[str, Row] = {}
    for al in allocators_of(res, workload, order):
        a = agg.get((workload, al))
        runs = ok_runs(res, workload, al)
        row = Row(al, len(runs), _failed(res, workload, al))
        row.values = {
            "mean": a.mean_footprint if a else None,
            "peak": a.peak_footprint if a else None,
            "time": a.wall if a else None,
            "frag": a.frag_ratio if a else None,
            "score": R.Stat.of((r.result or {}).get("score") for r in runs),
        }
        row.events = event_stats(runs)
        rows[al] = row
    b = rows.get(baseline)
    for row in rows.values():
        for k in ("mean", "peak", "time", "score"):
            row.ratios[f"{k}/{baseline}"] = _ratio(row.values.get(k), b.values.get(k) if b else None)
    return rows


def ruby_rows(res: R.MatrixResult, order: tuple = ()) -> dict[str, Row]:
    return matrix_like_rows(res, RUBY_WORKLOAD, "jemalloc", order)


def browser_rows(res: R.MatrixResult, order: tuple = ()) -> dict[str, Row]:
    return matrix_like_rows(res, BROWSER, "jemalloc", order)


def matrix_workloads(res: R.MatrixResult) -> list[str]:
    return [w for w in R.ordered_workloads(res) if w not in FIGURE_WORKLOADS]


def matrix_allocators(res: R.MatrixResult) -> list[str]:
    ws = set(matrix_workloads(res))
    out = []
    for a in R.ordered_allocators(res):
        if any(r.allocator == a and r.workload in ws for r in res.runs) and a not in out:
            out.append(a)
    return out


def matrix_table(res: R.MatrixResult, metric: str, baseline: Optional[str]) -> dict:
    """(workload, allocator) -> Stat of frag ratio ("frag") or time ratio ("time")."""
    agg = R.aggregate(res)
    out = {}
    for w in matrix_workloads(res):
        for al in matrix_allocators(res):
            a = agg.get((w, al))
            if a is None:
                continue
            if metric == "frag":
                out[(w, al)] = a.frag_ratio
            else:
                s, b = getattr(a, metric), agg.get((w, baseline))
                out[(w, al)] = _ratio(s, getattr(b, metric) if b else None)
    return out


@dataclass
class Comparison:
    """One of the paper's claims beside our figure."""
    claim: C.Claim
    ours: Optional[R.Stat]
    note: str = ""

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or not self.claim.paper:
            return None
        return self.ours.mean / self.claim.paper

    @property
    def met(self) -> Optional[bool]:
        if self.claim.target is None or self.ours is None:
            return None
        return (self.ours.mean <= self.claim.target if self.claim.target_is_max
                else self.ours.mean >= self.claim.target)


def defrag_cpu(res: R.MatrixResult, allocator: str) -> Optional[R.Stat]:
    """CPU time of Redis's defragmenter over a run (INFO active_defrag_cpu_us)."""
    vals = []
    for r in ok_runs(res, REDIS, allocator):
        info = (r.result or {}).get("info_final") or {}
        if isinstance(info.get("active_defrag_cpu_us"), (int, float)):
            vals.append(info["active_defrag_cpu_us"] / 1e6)
    return R.Stat.of(vals) if vals else None


def comparisons(res: R.MatrixResult) -> list[Comparison]:
    red, rub, bro = redis_rows(res), ruby_rows(res), browser_rows(res)

    def rv(rows, al, key, ratio=False):
        row = rows.get(al)
        if row is None:
            return None
        return (row.ratios if ratio else row.values).get(key)

    def ev(rows, al, what):
        row = rows.get(al)
        e = row.events if row else None
        if e is None:
            return None
        if what == "total":
            return e.total_s
        return R.Stat(e.longest_pause_ms, 0.0, e.trials)

    defrag = red.get("jemalloc-activedefrag")
    defrag_note = ""
    mesh_vs_defrag = None
    if defrag is not None and defrag.trials:
        mesh_vs_defrag = _ratio(rv(red, "mesh", "at_mark"), defrag.values.get("at_mark"))
    elif defrag is not None:
        defrag_note = ("not run: the redis-server run does not support active defrag "
                       "(see below)" if defrag.note else "no successful run")
    out = [
        Comparison(C.BY_KEY["redis.mesh_vs_nomesh"], rv(red, "mesh", "at_mark/mesh-nomesh", True)),
        Comparison(C.BY_KEY["redis.mesh_vs_defrag"], mesh_vs_defrag, defrag_note),
        Comparison(C.BY_KEY["redis.populate_ratio"], rv(red, "mesh", "populate/jemalloc", True)),
        Comparison(C.BY_KEY["redis.populate_mesh"], rv(red, "mesh", "populate")),
        Comparison(C.BY_KEY["redis.populate_jemalloc"], rv(red, "jemalloc", "populate")),
        Comparison(C.BY_KEY["redis.mesh_total"], ev(red, "mesh", "total")),
        Comparison(C.BY_KEY["redis.mesh_longest"], ev(red, "mesh", "longest")),
        Comparison(C.BY_KEY["redis.defrag_total"], defrag_cpu(res, "jemalloc-activedefrag"),
                   "" if defrag is not None and defrag.trials else defrag_note or "not run"),
        Comparison(C.BY_KEY["ruby.mesh_vs_jemalloc"], rv(rub, "mesh", "mean/jemalloc", True)),
        Comparison(C.BY_KEY["ruby.mesh_time"], rv(rub, "mesh", "time/jemalloc", True)),
        Comparison(C.BY_KEY["ruby.norand_vs_jemalloc"], rv(rub, "mesh-norand", "mean/jemalloc", True)),
        Comparison(C.BY_KEY["ruby.norand_time"], rv(rub, "mesh-norand", "time/jemalloc", True)),
        Comparison(C.BY_KEY["browser.mesh_vs_jemalloc"], rv(bro, "mesh", "mean/jemalloc", True)),
        Comparison(C.BY_KEY["browser.score_ratio"], rv(bro, "mesh", "score/jemalloc", True)),
        Comparison(C.BY_KEY["browser.mesh_total"], ev(bro, "mesh", "total")),
        Comparison(C.BY_KEY["browser.mesh_longest"], ev(bro, "mesh", "longest")),
    ]
    return out


@dataclass
class Target:
    """One number a target is measured by."""
    what: str
    ours: Optional[R.Stat]
    bound: str
    met: Optional[bool]
    detail: str = ""


# Mesh itself, with Redis's defragmenter moving objects on top of it or
# not: not "another allocator" for the targets below.
SELF = ("mesh", "mesh-activedefrag", "mesh-nomesh-activedefrag")

def targets(res: R.MatrixResult) -> list[Target]:
    red = redis_rows(res)
    out = []
    for cmp in comparisons(res):
        if cmp.claim.target is None:
            continue
        out.append(Target(cmp.claim.what, cmp.ours, f"<= {cmp.claim.target:.2f}", cmp.met))
    what = "Redis footprint at 7.5 s, Mesh lower than every other allocator"
    mesh = red.get("mesh")
    at = mesh.values.get("at_mark") if mesh else None
    others = {al: r.values.get("at_mark") for al, r in red.items()
              if al not in SELF and r.values.get("at_mark") is not None}
    if at is not None and others:
        lowest = min(others, key=lambda k: others[k].mean)
        ratio = at.ratio(others[lowest])
        detail = f"lowest other: {lowest}"
        if at.mean < others[lowest].mean and ratio.mean + ratio.stdev >= 1.0:
            detail += "; lower by less than the spread of the trials"
        out.append(Target(what, ratio, "< 1.00 (Mesh / lowest other)",
                          at.mean < others[lowest].mean, detail))
    else:
        out.append(Target(what, None, "< 1.00", None))
    out += state_targets(res)
    return out


STATE_WORDS = {redis_fig.RENEWED: "looked-up keys renewed", redis_fig.EVEN: "even eviction"}


def state_targets(res: R.MatrixResult) -> list[Target]:
    """The two Redis numbers again over the trials of each end state alone:
    the mean over all trials depends on how many fell in each."""
    out = []
    bound = C.BY_KEY["redis.mesh_vs_nomesh"].target
    for state, rows in redis_state_rows(res).items():
        mesh = rows.get("mesh")
        if mesh is None or mesh.vs_nomesh is None:
            continue
        words = STATE_WORDS[state]
        base = "" if mesh.nomesh_same_state else "; mesh-nomesh: all its trials, none ended so"
        out.append(Target(f"Redis at 7.5 s, Mesh / Mesh without meshing, end state {words} "
                          f"(n={mesh.at_mark.n})", mesh.vs_nomesh, f"<= {bound:.2f}",
                          mesh.vs_nomesh.mean <= bound, base.lstrip("; ")))
        others = {al: r.at_mark for al, r in rows.items() if al not in SELF and r.at_mark}
        if others:
            lowest = min(others, key=lambda k: others[k].mean)
            out.append(Target(f"Redis at 7.5 s, Mesh lower than every other allocator, "
                              f"end state {words}", mesh.at_mark.ratio(others[lowest]),
                              "< 1.00 (Mesh / lowest other)",
                              mesh.at_mark.mean < others[lowest].mean,
                              f"lowest other: {lowest} (n={others[lowest].n})"))
    return out
