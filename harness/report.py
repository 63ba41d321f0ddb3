"""Tables of ratios, from results only: the terminal table and a Markdown report.

Every ratio is allocator / baseline for the same workload, of the mean over
successful trials (time: paired round by round, see results.Stat.ratio);
below 1.00 is better (less memory, less time). The last rows per allocator
are geometric means over the workloads both have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from . import results as R
from .stats import MIB, geomean

BASELINES = ("glibc", "jemalloc")


@dataclass
class Row:
    workload: str
    allocator: str
    trials: int
    failed: int
    mean_mib: Optional[float]
    peak_mib: Optional[float]
    time_s: Optional[float]
    time_source: str
    frag: Optional[float]
    ratios: dict      # (metric, baseline) -> Optional[float]


METRICS = ("mean", "peak", "time")


def _metric(a: R.Aggregate, metric: str) -> Optional[R.Stat]:
    return {"mean": a.mean_footprint, "peak": a.peak_footprint, "time": a.time}[metric]


def rows(result: R.MatrixResult, baselines: tuple = BASELINES) -> list[Row]:
    agg = R.aggregate(result)
    out = []
    for w in R.ordered_workloads(result):
        for al in R.ordered_allocators(result):
            a = agg.get((w, al))
            if a is None:
                continue
            ratios = {}
            for metric in METRICS:
                for b in baselines:
                    base = agg.get((w, b))
                    mine, theirs = _metric(a, metric), _metric(base, metric) if base else None
                    r = mine.ratio(theirs) if mine and theirs else None
                    ratios[(metric, b)] = r.mean if r else None
            out.append(Row(w, al, a.trials, a.failed,
                           a.mean_footprint.mean / MIB if a.mean_footprint else None,
                           a.peak_footprint.mean / MIB if a.peak_footprint else None,
                           a.time.mean if a.time else None, a.time_source,
                           a.frag_ratio.mean if a.frag_ratio else None, ratios))
    return out


def geomeans(rs: list[Row], baselines: tuple = BASELINES) -> dict:
    """allocator -> (metric, baseline) -> geometric mean of the ratios, over workloads having both."""
    out: dict = {}
    for r in rs:
        for key, v in r.ratios.items():
            if v:
                out.setdefault(r.allocator, {}).setdefault(key, []).append(v)
    return {al: {k: geomean(v) for k, v in d.items()} for al, d in out.items()}


def _f(x: Optional[float], fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def ratio_table(result: R.MatrixResult, baselines: tuple = BASELINES) -> str:
    rs = rows(result, baselines)
    head = ["workload", "allocator", "ok", "mean MiB"] + [f"x{b}" for b in baselines] + \
           ["peak MiB"] + [f"x{b}" for b in baselines] + \
           ["time s"] + [f"x{b}" for b in baselines] + ["frag"]
    lines = [head]
    for r in rs:
        ok = f"{r.trials}" + (f"/{r.trials + r.failed}" if r.failed else "")
        line = [r.workload, r.allocator, ok, _f(r.mean_mib, ".1f")]
        line += [_f(r.ratios[("mean", b)], ".2f") for b in baselines]
        line += [_f(r.peak_mib, ".1f")] + [_f(r.ratios[("peak", b)], ".2f") for b in baselines]
        t = _f(r.time_s, ".3f") + ("h" if r.time_source == "hyperfine" and r.time_s else "")
        line += [t] + [_f(r.ratios[("time", b)], ".2f") for b in baselines]
        line += [_f(r.frag, ".2f")]
        lines.append(line)
    gm = geomeans(rs, baselines)
    if gm:
        lines.append(None)
        for al in R.ordered_allocators(result):
            g = gm.get(al)
            if not g:
                continue
            line = ["geomean", al, "", ""] + [_f(g.get(("mean", b)), ".2f") for b in baselines]
            line += [""] + [_f(g.get(("peak", b)), ".2f") for b in baselines]
            line += [""] + [_f(g.get(("time", b)), ".2f") for b in baselines] + [""]
            lines.append(line)
    widths = [max(len(l[i]) for l in lines if l) for i in range(len(head))]
    out = []
    for l in lines:
        if l is None:
            out.append("-" * (sum(widths) + 2 * (len(widths) - 1)))
            continue
        cells = [l[0].ljust(widths[0]), l[1].ljust(widths[1])] + \
                [c.rjust(w) for c, w in zip(l[2:], widths[2:])]
        out.append("  ".join(cells).rstrip())
    out.insert(1, "-" * (sum(widths) + 2 * (len(widths) - 1)))
    legend = ("footprint = anonymous + shmem + kernel memory charged to the run's memory cgroup; "
              "mean is time-weighted over the run, averaged over ok trials.\n"
              "x<base> = this allocator / <base> for the same workload (below 1.00 is better). "
              "time: wall seconds of the memory runs, or hyperfine mean where marked 'h'; "
              "its ratios are medians of per-round (per-trial) ratios.\n"
              "frag = mean footprint / mean live bytes (1.00 is the physical limit).")
    return "\n".join(out) + "\n" + legend


def markdown(result: R.MatrixResult, baselines: tuple = BASELINES) -> str:
    """A Markdown report of the same figures with the run's provenance."""
    rs = rows(result, baselines)
    m = result.machine
    parts = ["# Benchmark results", "",
             f"Run {result.created} on {m.get('cpu_model')} x{m.get('cpus')}, "
             f"{m.get('os')}, kernel {m.get('kernel', '').split(' ')[1] if m.get('kernel') else '?'}; "
             f"commit {result.commit}; memory measured by {sorted({r.method for r in result.runs if r.method})}; "
             f"{result.config.get('trials')} trials"
             + ("" if result.complete else " (INCOMPLETE: interrupted)") + ".", "",
             "| allocator | version | build id |", "|---|---|---|"]
    for name, info in result.allocators.items():
        parts.append(f"| {name} | {info.get('version')} | {(info.get('build_id') or '')[:12]} |")
    skipped = result.config.get("skipped") or {}
    for name, why in skipped.items():
        parts.append(f"| {name} | skipped: {why} | |")
    head = ["workload", "allocator", "mean MiB"] + [f"mean x{b}" for b in baselines] + \
           ["peak MiB"] + [f"peak x{b}" for b in baselines] + ["time s"] + \
           [f"time x{b}" for b in baselines] + ["frag"]
    parts += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rs:
        cells = [r.workload, r.allocator, _f(r.mean_mib, ".1f")]
        cells += [_f(r.ratios[("mean", b)], ".2f") for b in baselines]
        cells += [_f(r.peak_mib, ".1f")] + [_f(r.ratios[("peak", b)], ".2f") for b in baselines]
        cells += [_f(r.time_s, ".3f")] + [_f(r.ratios[("time", b)], ".2f") for b in baselines]
        cells += [_f(r.frag, ".2f")]
        parts.append("| " + " | ".join(cells) + " |")
    parts += ["", "Time ratios are the median of per-round ratios: hyperfine's rounds, or trials for "
              "the memory runs' wall time (each runs every allocator once); the time column is the mean."]
    bad = R.checksum_mismatches(result)
    failed = [r for r in result.runs if r.status not in ("ok", "skipped")]
    if bad or failed:
        parts += ["", "## Problems", ""]
        parts += [f"- {b}" for b in bad]
        parts += [f"- {r.workload} / {r.allocator} trial {r.trial}: {r.status}: {r.error}" for r in failed]
    return "\n".join(parts) + "\n"
