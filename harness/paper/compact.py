"""Shrinking a results document for the repository without changing its numbers.

A paper run samples each process 100 times a second and libmesh logs every
mesh pass: tens of MB in all. The committed file keeps, per run:

- the memory series at a few hundred points (fewer for the matrix), each
  point the time-weighted mean of the samples it replaces, so that the
  time-weighted mean of the series is unchanged (it is a sum of areas);
  the sample with the highest footprint is kept as its own point, so the
  peak is unchanged too; and the columns the report does not use dropped;
- the workload's live-bytes trace the same way, every phase boundary kept;
- mesh passes merged into windows: counts, sums and maxima, from which the
  total meshing time, the pass count and the longest pause and pass are
  exactly what they were;
- a shorter stderr tail, and the per-run scratch paths in argv (after
  --trace and --dir; gone once the run ends) cut to their last component.

Figures that need more than this (Redis's footprint at 7.5 s) are computed
by the driver from the full series and stored in the run's result.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import asdict, dataclass, replace
from typing import Optional

from .. import results as R
from . import webkit_fig

# Keys of a merged event window (a raw MESH_EVENTS line has none of
# "passes"; figures.event_summary reads both).
WINDOW_KEYS = ("t", "t_end", "passes", "duration_us", "max_duration_us", "meshes",
               "bytes_released", "max_pause_us", "stopped_time", "stopped_maps")


def _kept_indices(t: list, points: int, alone: tuple = (), bounds: tuple = ()) -> list[int]:
    """Indices of t to keep: the first, the last, one near each of `points`
    evenly spaced times, `bounds`, and `alone` with its successor (so that
    sample stands alone in its interval and keeps its value)."""
    n = len(t)
    if n <= 2 or points <= 0 or n <= points + 2:
        return list(range(n))
    keep = {0, n - 1}
    t0, t1 = t[0], t[-1]
    for i in range(1, points):
        keep.add(min(n - 1, bisect.bisect_left(t, t0 + (t1 - t0) * i / points)))
    keep.update(i for i in bounds if 0 <= i < n)
    for i in alone:
        if 0 <= i < n:
            keep.add(i)
            if i + 1 < n:
                keep.add(i + 1)
    return sorted(keep)


def _interval_means(t: list, v: list, keep: list[int]) -> list:
    """For each kept index a, the time-weighted mean of v over [t[a], t[b])
    (b the next kept index): the step function's area is preserved. Samples
    with no value are skipped; the last point keeps its own value."""
    out = []
    for a, b in zip(keep, keep[1:]):
        area = span = 0.0
        for k in range(a, b):
            if v[k] is None:
                continue
            # the value holds until the next sample that has one, bounded by t[b]
            nxt = k + 1
            while nxt < b and v[nxt] is None:
                nxt += 1
            dt = t[nxt] - t[k]
            area += v[k] * dt
            span += dt
        if span > 0:
            out.append(round(area / span))
        else:
            vals = [x for x in v[a:b] if x is not None]
            out.append(vals[0] if vals else None)
    last = v[keep[-1]] if keep else None
    out.append(last)
    return out


def compact_series(m: R.MemorySeries, points: int, columns: tuple) -> R.MemorySeries:
    """The series at about `points` points; only t and `columns` are kept."""
    t = m.t
    if not t:
        return R.MemorySeries()
    if len(t) != len(m.footprint) or any(x is None for x in t):
        return m
    fp = [x if x is not None else -1 for x in m.footprint]
    peak = max(range(len(fp)), key=fp.__getitem__)
    keep = _kept_indices(t, points, alone=(peak,))
    out = R.MemorySeries()
    out.t = [round(t[i], 3) for i in keep]
    for c in columns:
        setattr(out, c, _interval_means(t, getattr(m, c), keep))
    return out


def compact_live(lv: R.LiveTrace, points: int, phases: bool = True) -> R.LiveTrace:
    """The live-bytes trace at about `points` points, keeping phase
    boundaries (unless phases is False: only the mean is wanted)."""
    t = lv.t
    if not t or any(x is None for x in t):
        return lv
    bounds = tuple(i for i in range(len(t))
                   if phases and (i == 0 or lv.phase[i] != lv.phase[i - 1]))
    peak = max(range(len(t)), key=lambda i: lv.live[i] if lv.live[i] is not None else -1)
    keep = _kept_indices(t, points, alone=(peak,), bounds=bounds)
    out = R.LiveTrace()
    out.t = [round(t[i], 3) for i in keep]
    out.live = _interval_means(t, lv.live, keep)
    out.phase = [lv.phase[i] for i in keep]
    return out


def merge_events(events: list, window_s: float) -> list[dict]:
    """Mesh passes merged into windows of window_s seconds (already merged
    windows pass through)."""
    out: list[dict] = []
    cur: Optional[dict] = None
    for e in events:
        if not isinstance(e, dict) or "t" not in e:
            continue
        if "passes" in e:
            out.append(e)
            cur = None
            continue
        t = float(e["t"])
        if cur is None or t >= cur["t"] + window_s:
            cur = {"t": round(t, 4), "t_end": round(t, 4), "passes": 0, "duration_us": 0,
                   "max_duration_us": 0, "meshes": 0, "bytes_released": 0,
                   "max_pause_us": 0, "stopped_time": 0, "stopped_maps": 0}
            out.append(cur)
        d = int(e.get("duration_us") or 0)
        cur["t_end"] = round(t, 4)
        cur["passes"] += 1
        cur["duration_us"] += d
        cur["max_duration_us"] = max(cur["max_duration_us"], d)
        cur["meshes"] += int(e.get("meshes") or 0)
        cur["bytes_released"] += int(e.get("bytes_released") or 0)
        cur["max_pause_us"] = max(cur["max_pause_us"], int(e.get("max_pause_us") or 0))
        cur["stopped_time"] += e.get("stopped") == "time"
        cur["stopped_maps"] += e.get("stopped") == "mappings"
    return out


def _short_argv(argv: list) -> list:
    out = list(argv)
    for i in range(1, len(out)):
        if out[i - 1] in ("--trace", "--dir") and isinstance(out[i], str):
            out[i] = os.path.basename(out[i].rstrip("/"))
    return out


def compact_run(run: R.Run, plan: "Plan") -> R.Run:
    tail = run.stderr_tail or ""
    if run.workload == webkit_fig.WORKLOAD and run.result and "settled_parts" not in run.result:
        # documents measured before the driver stored it: from the full series
        run = replace(run, result={**run.result,
                                   "settled_parts": webkit_fig.settled_parts(run.memory, run.result)})
    span = run.memory.t[-1] if run.memory.t and run.memory.t[-1] else 0.0
    return replace(run, argv=_short_argv(run.argv),
                   memory=compact_series(run.memory, plan.points, plan.columns),
                   live=compact_live(run.live, plan.live_points, plan.phases),
                   events=merge_events(run.events, max(0.25, span / plan.event_windows)),
                   # a failed run keeps more of what it said
                   stderr_tail=tail[-(100 if run.ok else 1000):])


@dataclass(frozen=True)
class Plan:
    """How far one run is compacted."""
    points: int            # memory series points (plus the peak)
    columns: tuple         # memory columns kept besides t
    live_points: int       # live-bytes trace points (plus phase boundaries)
    phases: bool           # keep every phase boundary of the live trace
    event_windows: int     # mesh passes merged into about this many windows


# The figures' runs keep enough points to draw; mesh's Redis runs keep RSS
# and PSS too (the report sets them beside the footprint). The matrix's
# series are not drawn, only averaged, and a handful of exact-area points
# give the same means and peak.
FIGURE_WORKLOADS = ("redis-server", "ruby-fragment", "browser-like-paper", "webkit-todomvc",
                    "redis-latency")


def plan_for(workload: str, allocator: str = "") -> Plan:
    if workload == "redis-server" and allocator == "mesh":
        return Plan(60, ("footprint", "rss", "pss"), 60, True, 20)
    if workload in FIGURE_WORKLOADS:
        return Plan(60, ("footprint",), 60, True, 20)
    return Plan(8, ("footprint",), 2, False, 2)


def compact(result: R.MatrixResult) -> R.MatrixResult:
    runs = [compact_run(r, plan_for(r.workload, r.allocator)) for r in result.runs]
    timings = [replace(t, times=[round(x, 5) for x in t.times]) for t in result.timings]
    config = dict(result.config)
    config["compacted"] = {
        "how": "harness/paper/compact.py: time-weighted interval means (means and peak "
               "footprint preserved), mesh passes merged into windows",
        "plans": {f"{r.workload}/{r.allocator}": asdict(plan_for(r.workload, r.allocator))
                  for r in result.runs},
    }
    return replace(result, runs=runs, timings=timings, config=config)
