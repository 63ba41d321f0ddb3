"""Plots, drawn from a results document only (never from a live run).

The only module that imports matplotlib. Files, each as PNG and SVG:

  memory-<workload>   footprint over time, one line per allocator, the
                      workload's live bytes dashed (the shape of the
                      paper's Figures 6-8); the trial drawn is the one whose
                      mean footprint is the median of its trials
  measures            per workload, one allocator's footprint beside its
                      cgroup usage, PSS and RSS: how far RSS is from the truth
  summary-memory      mean and peak footprint per workload, normalised to
                      the baseline (glibc), error bars over trials
  summary-time        time per workload normalised to the baseline
  fragmentation       mean footprint / mean live bytes; 1.0 is the limit
"""

from __future__ import annotations

import os
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from . import results as R  # noqa: E402
from .stats import MIB, representative  # noqa: E402,F401  (representative: for callers)

# Fixed colours so an allocator looks the same in every figure.
COLOURS = {"glibc": "#7f7f7f", "jemalloc": "#1f77b4", "mimalloc": "#2ca02c",
           "tcmalloc": "#9467bd", "mesh": "#d62728", "mesh-nomesh": "#ff7f0e",
           "mesh-norand": "#e377c2"}
_EXTRA = ["#8c564b", "#bcbd22", "#17becf", "#000080", "#808000"]


def colour(name: str, order: list[str]) -> str:
    if name in COLOURS:
        return COLOURS[name]
    extras = [n for n in order if n not in COLOURS]
    return _EXTRA[extras.index(name) % len(_EXTRA)] if name in extras else "#333333"


def save(fig, out_dir: str, name: str) -> list[str]:
    paths = []
    for ext in ("png", "svg"):
        p = os.path.join(out_dir, f"{name}.{ext}")
        # No date in the metadata: the same results draw the same files.
        fig.savefig(p, dpi=120, bbox_inches="tight",
                    metadata={"Date": None} if ext == "svg" else None)
        paths.append(p)
    plt.close(fig)
    return paths


def mib_points(t: list, v: list) -> tuple[list, list]:
    pts = [(a, b / MIB) for a, b in zip(t, v) if a is not None and b is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def live_t(run: R.Run) -> list:
    """The workload's trace times on the memory series' clock (both start at spawn)."""
    off = run.live_offset_s or 0.0
    return [None if t is None else t + off for t in run.live.t]


def _phase_marks(ax, run: R.Run) -> None:
    last = None
    for t, ph in zip(live_t(run), run.live.phase):
        if ph and ph != last and ph != "end" and t is not None:
            ax.axvline(t, color="#bbbbbb", lw=0.6, ls=":", zorder=0)
            ax.text(t, 1.0, f" {ph}", transform=ax.get_xaxis_transform(), fontsize=7,
                    color="#666666", va="top", ha="left", rotation=90)
        last = ph


def memory_over_time(result: R.MatrixResult, workload: str, out_dir: str,
                     baseline: str = "glibc") -> list[str]:
    allocs = R.ordered_allocators(result)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    live_run = None
    drew = False
    for al in allocs:
        run = representative([r for r in result.runs if r.workload == workload and r.allocator == al])
        if run is None:
            continue
        x, y = mib_points(run.memory.t, run.memory.footprint)
        # Each sample (or a compacted series' interval mean) holds until the next.
        ax.plot(x, y, color=colour(al, allocs), lw=1.3, label=al, drawstyle="steps-post")
        drew = True
        if live_run is None or al == baseline:
            live_run = run
    if not drew:
        plt.close(fig)
        return []
    if live_run is not None and live_run.live.t:
        x, y = mib_points(live_t(live_run), live_run.live.live)
        ax.plot(x, y, color="black", lw=1.2, ls="--", label="live bytes", drawstyle="steps-post")
        _phase_marks(ax, live_run)
    methods = sorted({r.method for r in result.runs if r.workload == workload and r.method})
    ax.set_title(f"{workload}: memory over time")
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel("footprint (MiB)" + ("" if methods == ["cgroup-v1"] or methods == ["cgroup-v2"]
                                        else f" [{', '.join(methods)}]"))
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, out_dir, f"memory-{workload}")


def measures(result: R.MatrixResult, out_dir: str, prefer: tuple = ("mesh", "jemalloc", "glibc")) -> list[str]:
    workloads = R.ordered_workloads(result)
    allocs = R.ordered_allocators(result)
    choice = next((a for a in prefer if a in allocs), allocs[0] if allocs else None)
    if choice is None or not workloads:
        return []
    # A compacted document keeps the footprint alone: nothing to set it beside.
    if not any(r.memory.rss or r.memory.pss or r.memory.usage
               for r in result.runs if r.allocator == choice):
        return []
    cols = min(4, len(workloads))
    rows = (len(workloads) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False)
    drew = False
    for i, w in enumerate(workloads):
        ax = axes[i // cols][i % cols]
        run = representative([r for r in result.runs if r.workload == w and r.allocator == choice])
        ax.set_title(w, fontsize=9)
        if run is None:
            ax.text(0.5, 0.5, "no ok run", ha="center", transform=ax.transAxes)
            continue
        m = run.memory
        for col, style, label in (("rss", dict(color="#d62728", lw=1), "RSS"),
                                  ("pss", dict(color="#ff7f0e", lw=1, marker=".", ms=2), "PSS"),
                                  ("usage", dict(color="#1f77b4", lw=1, ls="-."), "cgroup usage"),
                                  ("footprint", dict(color="black", lw=1.4), "footprint")):
            x, y = mib_points(m.t, getattr(m, col))
            if x:
                ax.plot(x, y, label=label, drawstyle="steps-post", **style)
                drew = True
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        if i % cols == 0:
            ax.set_ylabel("MiB", fontsize=8)
    for j in range(len(workloads), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if not drew:
        plt.close(fig)
        return []
    axes[0][0].legend(fontsize=7, loc="lower center")
    fig.suptitle(f"{choice}: footprint vs cgroup usage, PSS and RSS (RSS counts a meshed page twice)",
                 fontsize=10)
    fig.tight_layout()
    return save(fig, out_dir, "measures")


def _grouped_bars(ax, result: R.MatrixResult, agg: dict, metric, baseline: str,
                  ylabel: str, limit_line: Optional[float] = None, normalise: bool = True) -> bool:
    workloads = R.ordered_workloads(result)
    allocs = R.ordered_allocators(result)
    n = len(allocs)
    width = 0.8 / max(1, n)
    drew = False
    for j, al in enumerate(allocs):
        xs, ys, es = [], [], []
        for i, w in enumerate(workloads):
            a, b = agg.get((w, al)), agg.get((w, baseline))
            s = metric(a) if a else None
            if s is None:
                continue
            if normalise:
                base = metric(b) if b else None
                s = s.ratio(base) if base else None
                if s is None:
                    continue
            xs.append(i - 0.4 + width * (j + 0.5))
            ys.append(s.mean)
            es.append(s.stdev)
        if xs:
            ax.bar(xs, ys, width * 0.92, yerr=es, capsize=2, color=colour(al, allocs),
                   label=al, error_kw={"lw": 0.8})
            drew = True
    if limit_line is not None:
        ax.axhline(limit_line, color="black", lw=1, ls="--")
    ax.set_xticks(range(len(workloads)))
    ax.set_xticklabels(workloads, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    return drew


def summary_memory(result: R.MatrixResult, out_dir: str, baseline: str = "glibc") -> list[str]:
    agg = R.aggregate(result)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    d1 = _grouped_bars(axes[0], result, agg, lambda a: a.mean_footprint, baseline,
                       f"mean footprint / {baseline}", limit_line=1.0)
    d2 = _grouped_bars(axes[1], result, agg, lambda a: a.peak_footprint, baseline,
                       f"peak footprint / {baseline}", limit_line=1.0)
    if not (d1 or d2):
        plt.close(fig)
        return []
    axes[0].set_title("mean footprint (time-weighted), normalised")
    axes[1].set_title("peak footprint, normalised")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, out_dir, "summary-memory")


def summary_time(result: R.MatrixResult, out_dir: str, baseline: str = "glibc") -> list[str]:
    agg = R.aggregate(result)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if not _grouped_bars(ax, result, agg, lambda a: a.time, baseline,
                         f"time / {baseline}", limit_line=1.0):
        plt.close(fig)
        return []
    srcs = sorted({a.time_source for a in agg.values()})
    ax.set_title("time, normalised, paired by round (" + " / ".join(
        {"hyperfine": "hyperfine runs where timed", "wall": "wall time of the memory runs"}[s]
        for s in srcs) + ")", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, out_dir, "summary-time")


def fragmentation(result: R.MatrixResult, out_dir: str) -> list[str]:
    agg = R.aggregate(result)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if not _grouped_bars(ax, result, agg, lambda a: a.frag_ratio, "", "footprint / live bytes",
                         limit_line=1.0, normalise=False):
        plt.close(fig)
        return []
    ax.text(1.0, 1.0, " 1.0 = physical limit", transform=ax.get_yaxis_transform(),
            fontsize=8, va="bottom", ha="right")
    ax.set_ylim(bottom=0)
    ax.set_title("fragmentation: mean footprint / mean live bytes", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return save(fig, out_dir, "fragmentation")


def plot_all(result: R.MatrixResult, out_dir: str, baseline: str = "glibc") -> list[str]:
    """Draw every figure into out_dir; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "mesh-harness"
    plt.rcParams["svg.fonttype"] = "none"   # text stays text: smaller, searchable, editable
    if baseline not in R.ordered_allocators(result):
        allocs = R.ordered_allocators(result)
        baseline = allocs[0] if allocs else baseline
    paths = []
    for w in R.ordered_workloads(result):
        paths += memory_over_time(result, w, out_dir, baseline)
    paths += measures(result, out_dir)
    paths += summary_memory(result, out_dir, baseline)
    paths += summary_time(result, out_dir, baseline)
    paths += fragmentation(result, out_dir)
    return paths
