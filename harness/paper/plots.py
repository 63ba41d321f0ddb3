"""The paper figures' plots, drawn from a results document only.

The paper's figures plot memory over time, one line per allocator; these
do the same (the trial drawn is the median one), with a panel of the
figure's headline number per allocator beside it (mean and one standard
deviation over trials). The synthetic/throughput matrix reuses the
harness's own fragmentation and time plots. Colours, file formats and the
reproducible SVG settings are those of harness/plots.py.
"""

from __future__ import annotations

import os
from typing import Optional

from .. import plots as P
from .. import results as R
from ..stats import MIB, median_run, representative
from . import figures as F

plt = P.plt


def _series(ax, run: R.Run, colour: str, label: str, lw: float = 1.4, ls: str = "-") -> None:
    x, y = P.mib_points(run.memory.t, run.memory.footprint)
    ax.plot(x, y, color=colour, lw=lw, label=label, ls=ls)


def _live(ax, run: Optional[R.Run]) -> None:
    if run is not None and run.live.t:
        x, y = P.mib_points(P.live_t(run), run.live.live)
        ax.plot(x, y, color="black", lw=1.1, ls="--", label="live bytes", drawstyle="steps-post")


def _bars(ax, names: list[str], stats: list[Optional[R.Stat]], order: list[str], ylabel: str,
          ref: Optional[float] = None, ref_label: str = "") -> None:
    xs = list(range(len(names)))
    ax.bar(xs, [s.mean if s else 0 for s in stats], 0.7,
           yerr=[s.stdev if s else 0 for s in stats], capsize=3,
           color=[P.colour(n, order) for n in names], error_kw={"lw": 0.8})
    for x, s in zip(xs, stats):
        if s is None:
            ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7)
    if ref is not None:
        ax.axhline(ref, color="black", lw=1, ls="--")
        if ref_label:
            ax.text(len(names) - 0.5, ref, ref_label, fontsize=7, ha="right", va="bottom")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def fig7_redis(res: R.MatrixResult, out_dir: str) -> list[str]:
    rows = F.redis_rows(res, F.REDIS_ORDER)
    names = [n for n, r in rows.items() if r.trials]
    if not names:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    mark = None
    for al in names:
        runs = F.ok_runs(res, F.REDIS, al)
        run = median_run(runs, lambda r: r.result.get("footprint_at_mark"))
        if run is None:
            continue
        mark = run.result.get("mark_s", mark)
        _series(ax, run, P.colour(al, names), al, lw=2.0 if al.startswith("mesh-activedefrag")
                or al == "mesh" else 1.2, ls="--" if al.endswith("activedefrag") else "-")
    if mark is not None:
        ax.axvline(mark, color="#666666", lw=0.8, ls=":")
        ax.text(mark, 1.0, f" {mark:g} s", transform=ax.get_xaxis_transform(), fontsize=8,
                va="top", color="#444444")
    _over_time_axes(ax, "Figure 7: redis-server, the paper's script (median trial)",
                    "time since the server started (s)", "footprint (MiB)", "lower right")
    stats = [_mib(rows[n].values.get("at_mark")) for n in names]
    nomesh = rows.get("mesh-nomesh")
    ref = None
    if nomesh and nomesh.values.get("at_mark"):
        ref = nomesh.values["at_mark"].mean / MIB * 0.61
    _bars(bx, names, stats, names, f"footprint at {mark or 7.5:g} s (MiB)", ref,
          "paper: Mesh = 0.61 x no-meshing")
    bx.set_title("mean and sd over trials", fontsize=10)
    fig.tight_layout()
    return P.save(fig, out_dir, "fig7-redis")


def _over_time_axes(ax, title: str, xlabel: str, ylabel: str, legend_at: str) -> None:
    """Labels of a footprint-over-time panel, both axes from zero."""
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc=legend_at)


def _mib(s: Optional[R.Stat]) -> Optional[R.Stat]:
    return R.Stat(s.mean / MIB, s.stdev / MIB, s.n) if s is not None else None


def _over_time_with_ratios(res: R.MatrixResult, workload: str, rows: dict, title: str,
                           name: str, out_dir: str, paper_ref: dict) -> list[str]:
    names = [n for n, r in rows.items() if r.trials]
    if not names:
        return []
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    live_run = None
    for al in names:
        run = representative(F.ok_runs(res, workload, al))
        if run is None:
            continue
        _series(ax, run, P.colour(al, names), al, lw=2.0 if al.startswith("mesh-activedefrag")
                or al == "mesh" else 1.2, ls="--" if al.endswith("activedefrag") else "-")
        if live_run is None or al == "jemalloc":
            live_run = run
    _live(ax, live_run)
    _over_time_axes(ax, title, "time since start (s)", "footprint (MiB)", "upper left")
    mean = [rows[n].ratios.get("mean/jemalloc") for n in names]
    time_ = [rows[n].ratios.get("time/jemalloc") for n in names]
    xs = list(range(len(names)))
    w = 0.38
    bx.bar([x - w / 2 for x in xs], [s.mean if s else 0 for s in mean], w,
           yerr=[s.stdev if s else 0 for s in mean], capsize=2, label="mean footprint",
           color=[P.colour(n, names) for n in names], error_kw={"lw": 0.8})
    bx.bar([x + w / 2 for x in xs], [s.mean if s else 0 for s in time_], w,
           yerr=[s.stdev if s else 0 for s in time_], capsize=2, label="time",
           color=[P.colour(n, names) for n in names], alpha=0.45, hatch="//",
           error_kw={"lw": 0.8})
    for al, (m, t) in paper_ref.items():
        if al in names:
            x = names.index(al)
            bx.plot([x - w, x], [m, m], color="black", lw=1.5)
            if t is not None:
                bx.plot([x, x + w], [t, t], color="black", lw=1.5)
    bx.axhline(1.0, color="black", lw=0.8, ls="--")
    bx.set_xticks(xs)
    bx.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    bx.set_ylabel("/ jemalloc", fontsize=9)
    bx.set_title("solid: mean footprint; hatched: time\nblack ticks: the paper's values",
                 fontsize=9)
    bx.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return P.save(fig, out_dir, name)


def fig8_ruby(res: R.MatrixResult, out_dir: str) -> list[str]:
    rows = F.ruby_rows(res, F.RUBY_ORDER)
    return _over_time_with_ratios(res, F.RUBY_WORKLOAD, rows,
                                  "Figure 8: ruby, the fragmentation script (median trial)",
                                  "fig8-ruby", out_dir,
                                  {"mesh": (0.81, 1.107), "mesh-norand": (0.97, 1.04)})


def fig6_browser(res: R.MatrixResult, out_dir: str) -> list[str]:
    rows = F.browser_rows(res, F.BROWSER_ORDER)
    return _over_time_with_ratios(res, F.BROWSER, rows,
                                  "Figure 6 stand-in: browser-like at scale 10 (median trial)",
                                  "fig6-browser", out_dir, {"mesh": (530 / 632, 1.0)})


def fig6_webkit(res: Optional[R.MatrixResult], out_dir: str) -> list[str]:
    """Footprint over time of WebKit under each allocator (median trial by
    mean footprint; a dot where the page reported its result), and the mean
    footprint and score of each row over its trials."""
    from . import webkit_report as W
    rows = W.rows(res) if res is not None else {}
    names = [n for n, r in rows.items() if r.trials]
    if not names:
        return []
    fig, (ax, bx, cx) = plt.subplots(1, 3, figsize=(14, 4.5),
                                     gridspec_kw={"width_ratios": [3, 1.3, 1.3]})
    for al in names:
        run = median_run(F.ok_runs(res, W.WORKLOAD, al), lambda r: r.result.get("mean_run"))
        if run is None:
            continue
        colour = P.colour(al, names)
        _series(ax, run, colour, al, lw=2.0 if al == "mesh" else 1.2)
        at = run.result.get("result_s")
        if at is not None:
            y = [v for t, v in zip(run.memory.t, run.memory.footprint) if t is not None and t <= at]
            if y and y[-1] is not None:
                ax.plot([at], [y[-1] / MIB], "o", color=colour, ms=5)
    _over_time_axes(ax, "Figure 6 on WebKitGTK: TodoMVC suites (median trial; dot: result)",
                    "time since the launcher started (s)",
                    "footprint of all browser processes (MiB)", "lower right")
    _bars(bx, names, [_mib(rows[n].values.get("mean_run")) for n in names], names,
          "mean footprint over the run (MiB)")
    jem = rows.get("jemalloc")
    if jem and jem.values.get("mean_run"):
        bx.axhline(jem.values["mean_run"].mean / MIB * 530 / 632, color="black", lw=1, ls="--")
    bx.set_title("dashed: jemalloc x 530/632 (paper)", fontsize=9)
    _bars(cx, names, [rows[n].values.get("score") for n in names], names, "score (runs/min)")
    cx.set_title("webkit-own runs without Malloc=1", fontsize=9)
    fig.tight_layout()
    return P.save(fig, out_dir, "fig6-webkit")


def redis_measures(res: R.MatrixResult, out_dir: str, allocator: str = "mesh") -> list[str]:
    run = median_run(F.ok_runs(res, F.REDIS, allocator),
                      lambda r: r.result.get("footprint_at_mark"))
    if run is None:
        return []
    fig, ax = plt.subplots(figsize=(8, 4))
    m = run.memory
    for col, style, label in (("rss", dict(color="#d62728", lw=1), "RSS"),
                              ("pss", dict(color="#ff7f0e", lw=1, marker=".", ms=3), "PSS"),
                              ("footprint", dict(color="black", lw=1.5), "footprint (cgroup)")):
        x, y = P.mib_points(m.t, getattr(m, col))
        if x:
            ax.plot(x, y, label=label, **style)
    ax.set_title(f"redis-server under {allocator}: footprint, PSS and RSS (median trial)",
                 fontsize=10)
    ax.set_xlabel("time since the server started (s)")
    ax.set_ylabel("MiB")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return P.save(fig, out_dir, "redis-measures")


# The latency figure's bars, left to right: (TestRow value, label).
LATENCY_MARKS = (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9"), ("max_ms", "max"))


def _grouped(ax, groups: int, names: list[str], stats_of, scale: float = 1.0) -> None:
    """Bars of `groups` groups, one bar per allocator in each; stats_of(name)
    gives that allocator's Stat per group (None: no bar)."""
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        stats = stats_of(n)
        xs = [g + (i - (len(names) - 1) / 2) * w for g, s in enumerate(stats) if s]
        got = [s for s in stats if s]
        ax.bar(xs, [s.mean * scale for s in got], w, yerr=[s.stdev * scale for s in got],
               capsize=2, color=P.colour(n, names), label=n, error_kw={"lw": 0.8})


def redis_latency(res: R.MatrixResult, out_dir: str) -> list[str]:
    """Per test, each allocator's latency percentiles and maximum; beside
    them its requests/s (means and one sd over trials)."""
    from . import redis_latency_report as RL
    rs = RL.rows(res)
    names = [n for n, r in rs.items() if r.trials]
    tests = [t for t in RL.L.TESTS if any(t in rs[n].tests for n in names)]
    if not names or not tests:
        return []
    fig, axes = plt.subplots(1, len(tests) + 1, figsize=(5 * len(tests) + 4, 4.5),
                             gridspec_kw={"width_ratios": [3] * len(tests) + [2]})
    for ax, test in zip(axes, tests):
        _grouped(ax, len(LATENCY_MARKS), names,
                 lambda n: [rs[n].tests[test].values.get(k) if test in rs[n].tests else None
                            for k, _ in LATENCY_MARKS])
        ax.set_yscale("log")
        ax.set_xticks(range(len(LATENCY_MARKS)))
        ax.set_xticklabels([label for _, label in LATENCY_MARKS])
        ax.set_ylabel("latency (ms, log scale)", fontsize=9)
        ax.set_title(f"{test.upper()}: latency percentiles", fontsize=10)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="upper left")
    bx = axes[-1]
    _grouped(bx, len(tests), names,
             lambda n: [rs[n].tests[t].values.get("rps") if t in rs[n].tests else None
                        for t in tests], scale=1e-3)
    bx.set_xticks(range(len(tests)))
    bx.set_xticklabels([t.upper() for t in tests])
    bx.set_ylabel("thousand requests/s", fontsize=9)
    bx.set_title("throughput", fontsize=10)
    bx.grid(axis="y", alpha=0.3)
    fig.suptitle("redis-benchmark against the fragmented redis-server (mean and sd over trials)",
                 fontsize=10)
    fig.tight_layout()
    return P.save(fig, out_dir, "redis-latency")


def matrix_plots(res: R.MatrixResult, out_dir: str) -> list[str]:
    ws = set(F.matrix_workloads(res))
    if not ws:
        return []
    sub = R.MatrixResult(created=res.created, machine=res.machine, commit=res.commit,
                         config={"workloads": F.matrix_workloads(res),
                                 "allocators": F.matrix_allocators(res)},
                         allocators=res.allocators,
                         runs=[r for r in res.runs if r.workload in ws],
                         timings=[t for t in res.timings if t.workload in ws],
                         complete=res.complete)
    return P.fragmentation(sub, out_dir) + P.summary_time(sub, out_dir, baseline="jemalloc")


def plot_paper(res: R.MatrixResult, out_dir: str,
               webkit: Optional[R.MatrixResult] = None) -> list[str]:
    """Every figure's plot; webkit: the document holding the WebKit runs."""
    os.makedirs(out_dir, exist_ok=True)
    plt.rcParams["svg.hashsalt"] = "mesh-harness"
    plt.rcParams["svg.fonttype"] = "none"
    return (fig7_redis(res, out_dir) + redis_measures(res, out_dir) + fig8_ruby(res, out_dir)
            + fig6_browser(res, out_dir) + fig6_webkit(webkit, out_dir)
            + redis_latency(res, out_dir) + matrix_plots(res, out_dir))
