"""Figure 6 on WebKit: its numbers and its section of paper-figures.md.

Computed from the runs of webkit_fig (workload "webkit-todomvc") only.
Per run: the time-weighted mean footprint from the launcher's start to the
page's result ("mean"), the mean over the last second of the idle page
after it ("settled"), the peak during the run, the score, and for libmesh
the web process's own mesh log and MALLOCSTATS counters. Ratios are to
jemalloc, which runs with Malloc=1 like every row but webkit-own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

from .. import results as R
from ..stats import MIB, AllocatorRow
from . import figures as F
from . import webkit_fig
from .tables import fmt, rel, verdict

WORKLOAD = webkit_fig.WORKLOAD
ORDER = webkit_fig.ALLOCATORS
BASE = "jemalloc"

# The bounds this figure is measured by: (what, bound, the paper's value).
MEAN_BOUND, SETTLED_BOUND, SCORE_BOUND, PAUSE_BOUND_MS = 0.80, 0.85, 0.97, 2.0


# How the cgroup charges the settled footprint (webkit_fig.settled_parts).
PARTS = ("anon", "shmem", "kernel")


@dataclass
class Row(AllocatorRow):
    """One allocator in the WebKit figure (ratios: / jemalloc)."""
    meshing: dict = field(default_factory=dict)   # the web process's, libmesh only


def _stat(runs: list, key: str) -> Optional[R.Stat]:
    return R.Stat.of((r.result or {}).get(key) for r in runs)


def _web_counters(run: R.Run) -> dict:
    return (((run.result or {}).get("mallocstats") or {}).get("web")) or {}


def meshing(runs: list) -> dict:
    """The web process's meshing over a row's runs: means per run, maxima over them."""
    if not runs:
        return {}
    ev = [F.event_summary(r.events) for r in runs]
    ct = [_web_counters(r) for r in runs]
    pauses = [p for p in ((r.result or {}).get("pauses") for r in runs) if p]
    return {
        "meshes": R.Stat.of(c.get("mesh_count") for c in ct),
        "released_mib": R.Stat.of(c.get("meshed_pages_total", 0) * 4096 / MIB for c in ct),
        "total_s": R.Stat.of(c.get("mesh_pass_ns", 0) / 1e9 for c in ct),
        "passes": R.Stat.of(c.get("mesh_passes") for c in ct),
        # the longest write-protect pause: from the counters, which see every
        # pass, and from the log, whichever is longer
        "longest_pause_ms": max([c.get("mesh_pause_max_ns", 0) / 1e6 for c in ct]
                                + [e.longest_pause_ms for e in ev]),
        "longest_pass_ms": max([c.get("mesh_pass_max_ns", 0) / 1e6 for c in ct]
                               + [e.longest_pass_ms for e in ev]),
        "logged_passes": R.Stat.of(e.passes for e in ev),
        "barrier_waits": R.Stat.of(c.get("barrier_waits") for c in ct),
        # per pass, its longest pause: the median and 90th percentile over passes
        "pass_pause_p50_ms": R.Stat.of(p["p50_us"] / 1e3 for p in pauses),
        "pass_pause_p90_ms": R.Stat.of(p["p90_us"] / 1e3 for p in pauses),
        "meshes_over_2ms": (sum(p["meshes_over_2ms"] for p in pauses),
                            sum(p["meshes"] for p in pauses)) if pauses else None,
    }


def rows(res: R.MatrixResult) -> dict[str, Row]:
    out: dict[str, Row] = {}
    for al in F.allocators_of(res, WORKLOAD, ORDER):
        runs = F.ok_runs(res, WORKLOAD, al)
        row = Row(al, len(runs), len(F.all_runs(res, WORKLOAD, al)) - len(runs))
        for key in ("mean_run", "settled", "peak_run", "score", "result_s"):
            row.values[key] = _stat(runs, key)
        # CPU time of every browser process (the launcher's wait4 counts the
        # helpers it reaped): the same work, less swayed by other jobs than
        # the score's wall-clock times
        row.values["cpu_s"] = R.Stat.of(r.user_s + r.sys_s for r in runs
                                        if r.user_s is not None and r.sys_s is not None)
        for part in PARTS:
            row.values[f"settled_{part}"] = R.Stat.of(
                ((r.result or {}).get("settled_parts") or {}).get(part) for r in runs)
        if any(r.events or _web_counters(r) for r in runs):
            row.meshing = meshing(runs)
        out[al] = row
    base = out.get(BASE)
    for row in out.values():
        for key in ("mean_run", "settled", "peak_run", "score", "cpu_s"):
            mine, theirs = row.values.get(key), base.values.get(key) if base else None
            row.ratios[key] = mine.ratio(theirs) if mine and theirs else None
    return out


@dataclass
class Target:
    what: str
    paper: str
    ours: str
    bound: str
    met: Optional[bool]


def targets(rs: dict[str, Row]) -> list[Target]:
    mesh = rs.get("mesh")
    if mesh is None:
        return []
    out = []

    def ratio(key: str, paper: str, what: str, bound: float, at_most: bool = True) -> None:
        r = mesh.ratios.get(key)
        met = None if r is None else (r.mean <= bound if at_most else r.mean >= bound)
        out.append(Target(what, paper, fmt(r), f"{'<=' if at_most else '>='} {bound:.2f}", met))
    ratio("mean_run", f"{530 / 632:.2f} (530 / 632 MB)", "mean footprint over the run, mesh / jemalloc",
          MEAN_BOUND)
    ratio("settled", "-", "footprint after the run settles, mesh / jemalloc", SETTLED_BOUND)
    settled = mesh.values.get("settled")
    for other in ("glibc", webkit_fig.OWN):
        theirs = rs.get(other).values.get("settled") if rs.get(other) else None
        out.append(Target(f"footprint after the run settles, mesh below {other}", "-",
                          f"{fmt(settled, 1 / MIB, 1)} vs {fmt(theirs, 1 / MIB, 1)} MiB",
                          "lower", None if not (settled and theirs) else settled.mean < theirs.mean))
    ratio("score", "within 1%", "score, mesh / jemalloc", SCORE_BOUND, at_most=False)
    pause = mesh.meshing.get("longest_pause_ms") if mesh.meshing else None
    out.append(Target("longest meshing stall in the web process (write-protect pause)", "7.5 ms",
                      "-" if pause is None else f"{pause:.2f} ms (max over {mesh.trials} runs)",
                      f"<= {PAUSE_BOUND_MS:g} ms",
                      None if pause is None else pause <= PAUSE_BOUND_MS))
    return out


def table(rs: dict[str, Row]) -> list[str]:
    out = ["| allocator | Malloc=1 | mean footprint (MiB) | / jemalloc | settled (MiB) | / jemalloc "
           "| peak (MiB) | score | / jemalloc | run (s) | CPU (s) | / jemalloc | ok runs |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for al, row in rs.items():
        v, r = row.values, row.ratios
        out.append(f"| {al} | {'no' if al == webkit_fig.OWN else 'yes'} | "
                   f"{fmt(v['mean_run'], 1 / MIB, 1)} | {fmt(r['mean_run'])} | "
                   f"{fmt(v['settled'], 1 / MIB, 1)} | {fmt(r['settled'])} | "
                   f"{fmt(v['peak_run'], 1 / MIB, 1)} | {fmt(v['score'], digits=1)} | "
                   f"{fmt(r['score'])} | {fmt(v['result_s'], digits=1)} | "
                   f"{fmt(v['cpu_s'], digits=1)} | {fmt(r['cpu_s'])} | {row.trials}"
                   + (f" ({row.failed} failed)" if row.failed else "") + " |")
    out.append("| paper: Firefox, mozjemalloc / Mesh | - | 632 / 530 MB | 0.84 | - | - | - | "
               "- | ≈ 1.00 | - | - | - | - |")
    return out


def parts_table(rs: dict[str, Row]) -> list[str]:
    out = ["| allocator | settled (MiB) | anonymous | shmem (libmesh's arena file) | "
           "kernel (page tables, mappings) |", "|---|---|---|---|---|"]
    any_row = False
    for al, row in rs.items():
        v = row.values
        if v.get("settled_kernel") is None:
            continue
        any_row = True
        out.append(f"| {al} | {fmt(v['settled'], 1 / MIB, 1)} | "
                   + " | ".join(fmt(v[f"settled_{p}"], 1 / MIB, 1) for p in PARTS) + " |")
    return out if any_row else []


def meshing_table(rs: dict[str, Row]) -> list[str]:
    out = ["| allocator | meshes | released by meshing (MiB) | passes | meshing time (s) | "
           "longest pause (ms) | a pass's longest pause, median / p90 over passes (ms) | "
           "meshes that paused >= 2 ms | longest pass (ms) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for al, row in rs.items():
        m = row.meshing
        if not m:
            continue
        slow = m.get("meshes_over_2ms")
        slow_text = (f"{slow[0]} of {slow[1]} ({100 * slow[0] / slow[1]:.2f}%)"
                     if slow and slow[1] else "-")
        out.append(f"| {al} | {fmt(m['meshes'], digits=0)} | {fmt(m['released_mib'], digits=1)} | "
                   f"{fmt(m['passes'], digits=0)} | {fmt(m['total_s'], digits=3)} | "
                   f"{m['longest_pause_ms']:.2f} | {fmt(m.get('pass_pause_p50_ms'))} / "
                   f"{fmt(m.get('pass_pause_p90_ms'))} | {slow_text} | "
                   f"{m['longest_pass_ms']:.2f} |")
    out.append("| paper (Firefox) | - | - | - | 0.135 | 7.5 | - | - | - |")
    return out


def speed_note(rs: dict[str, Row]) -> Optional[str]:
    """The score's spread, and the CPU time beside it."""
    mesh, base = rs.get("mesh"), rs.get(BASE)
    if not (mesh and base and mesh.ratios.get("cpu_s") and base.values.get("score")):
        return None
    sc, cpu = base.values["score"], mesh.ratios["cpu_s"]
    return (f"jemalloc's own score spreads by ±{100 * sc.stdev / sc.mean:.0f}% over its trials "
            "(other jobs share the 2 cores), too much to hold the score ratio to a few percent. "
            "The CPU time of all browser processes for the same work is steadier: mesh / "
            f"jemalloc {cpu.mean:.2f} ± {cpu.stdev:.2f}"
            + (f", mesh-nomesh / jemalloc {fmt(rs['mesh-nomesh'].ratios.get('cpu_s'))}"
               if rs.get("mesh-nomesh") else "") + ".")


def meshing_notes(rs: dict[str, Row]) -> list[str]:
    """What meshing bought in this browser, and what it cost, from the rows."""
    mesh, nomesh = rs.get("mesh"), rs.get("mesh-nomesh")
    if mesh is None or not mesh.meshing:
        return []
    out = []
    m = mesh.meshing
    run_s = mesh.values.get("result_s")
    if m.get("total_s") and run_s:
        out.append(f"The web process spent {m['total_s'].mean:.2f} s a run in mesh passes, "
                   f"{100 * m['total_s'].mean / run_s.mean:.1f}% of the run's "
                   f"{run_s.mean:.0f} s (the paper: 0.135 s in Firefox), for "
                   f"{m['meshes'].mean:.0f} meshes that released "
                   f"{m['released_mib'].mean:.0f} MiB in all over the run.")
    if m.get("barrier_waits") is not None:
        out.append(f"Writes by other threads that had to wait for a mesh to finish (the write "
                   f"barrier): {m['barrier_waits'].mean:.1f} a run. A pass stalls the thread "
                   "that runs it (passes start from malloc, free and idle points of any thread, "
                   "the page's main thread too), and a write-protect pause also any thread that "
                   "writes into that span meanwhile.")
    if nomesh is not None:
        for key, words in (("mean_run", "mean footprint"), ("settled", "settled footprint")):
            a, b = mesh.values.get(key), nomesh.values.get(key)
            if a and b:
                r = a.ratio(b)
                out.append(f"Against libmesh without meshing (mesh-nomesh), the {words} is "
                           f"{r.mean:.2f} ± {r.stdev:.2f} ({(a.mean - b.mean) / MIB:+.1f} MiB)"
                           + (": no saving beyond the spread of the trials."
                              if abs(r.mean - 1) <= max(r.stdev, 0.02) else "."))
        diffs = [(p, mesh.values.get(f"settled_{p}"), nomesh.values.get(f"settled_{p}"))
                 for p in PARTS]
        if all(a and b for _, a, b in diffs):
            out.append("Settled, mesh minus mesh-nomesh: " + ", ".join(
                f"{p} {(a.mean - b.mean) / MIB:+.1f} MiB" for p, a, b in diffs)
                + " (the kernel's share is the mappings and page tables meshed spans need).")
    return out


def stand_in_note(main: Optional[R.MatrixResult], rs: dict[str, Row]) -> Optional[str]:
    """How the C stand-in compares, from the main document's browser-like runs."""
    if main is None:
        return None
    bro = F.browser_rows(main, F.BROWSER_ORDER)
    mesh = bro.get("mesh")
    wk = rs.get("mesh")
    if mesh is None or wk is None:
        return None
    sm, ss = mesh.ratios.get("mean/jemalloc"), mesh.ratios.get("score/jemalloc")
    wm, ws = wk.ratios.get("mean_run"), wk.ratios.get("score")
    return (f"The C stand-in `browser-like` (section above, `{F.BROWSER}` runs of the main "
            f"results file) measures mesh / jemalloc at {fmt(sm)} in mean footprint and "
            f"{fmt(ss)} in score; WebKit measures {fmt(wm)} and {fmt(ws)}. The stand-in "
            "allocates only through malloc and chases pointers through randomly placed objects "
            "for most of its time; WebKit with Malloc=1 runs JavaScript in a garbage-collected "
            "heap of its own (not malloc's) and sends the DOM, styles, layout and strings "
            "through malloc, with far more time spent outside the allocator.")


def provenance(res: R.MatrixResult) -> list[str]:
    figs = (res.config.get("figures") or {}).get("webkit") or {}
    lib = res.config.get("libmesh") or {}
    ver = figs.get("versions") or {}
    frameworks = ", ".join(f"{k} {v}" for k, v in sorted((ver.get("frameworks") or {}).items()))
    load = (res.config.get("loadavg") or {})
    loads = " / ".join(", ".join(f"{x:.1f}" for x in load[k]) for k in ("start", "end")
                       if load.get(k))
    return [f"Measured {res.created} (harness commit {res.commit}; libmesh "
            f"{lib.get('version')}, build id {(lib.get('build_id') or '')[:16]}); WebKitGTK "
            f"{ver.get('webkitgtk')}; pages built with {frameworks}; {figs.get('trials')} trials "
            f"per row, rows in a shuffled order within each trial, {figs.get('iterations')} "
            f"iterations of every suite a run, {figs.get('settle_s')} s of idle page after it; "
            f"load average (1, 5, 15 min) at start / end: {loads} on {res.machine.get('cpus')} "
            "cores shared with other work."]


def section(res: Optional[R.MatrixResult], path: Optional[str], md_dir: str, plot_dir: str,
            main: Optional[R.MatrixResult] = None) -> list[str]:
    head = ["## Figure 6 on a real browser engine: WebKitGTK", ""]
    rs = rows(res) if res is not None else {}
    if not rs:
        return head + ["Not measured in these results files (`make paper-run`, or "
                       "`/usr/bin/python3 -m harness paper run --figures webkit --name paper-webkit`)."]
    img = rel(os.path.join(plot_dir, "fig6-webkit.png"), md_dir)
    src = rel(path, md_dir) if path else "?"
    out = head + [f"![Figure 6 on WebKit: footprint over time]({img})", "",
                  "**The paper:** Firefox running Speedometer 2.0: mean 530 MB with Mesh vs "
                  "632 MB with mozjemalloc (-16%), score within 1%; meshing 135 ms in all, "
                  "longest pause 7.5 ms.", "",
                  "**Ours:** Debian's WebKitGTK (WebKit2 4.1 under GTK 3, in Xvfb) running "
                  "`browser/`: a Speedometer-style benchmark of TodoMVC apps written here on "
                  "real frameworks from npm (vanilla JS, React, Vue, Preact, jQuery, Backbone). "
                  "Each suite adds 100 todos through the page's own input and key events, "
                  "completes them and deletes them, in a fresh frame each iteration; the score is "
                  "the mean over iterations of 60000 / geometric mean of the suite times (runs "
                  "per minute). WebKit's own allocator is told to use malloc (`Malloc=1`) in every "
                  "row but `webkit-own`, WebKit as shipped; Malloc=1 slows pages down, so scores "
                  "compare among the Malloc=1 rows. Footprint: the memory cgroup of the launcher, "
                  "the web process and the network process (Xvfb and the page server are outside "
                  "it). Mean: from start to the page's result; settled: the last second of 5 s of "
                  "idle page after it. Each run checks that the web process maps the allocator "
                  "under test. From `" + src + "`.", ""]
    out += ["| number | paper | ours | bound | met |", "|---|---|---|---|---|"]
    out += [f"| {t.what} | {t.paper} | {t.ours} | {t.bound} | {verdict(t.met)} |"
            for t in targets(rs)]
    out += [""] + table(rs)
    parts = parts_table(rs)
    if parts:
        out += ["", "Where the settled footprint is (the cgroup's own split, all browser "
                "processes):", ""] + parts
    out += ["", "Meshing in the web process (its MALLOCSTATS=2 counters at exit and its own "
            "MESH_EVENTS log; means per run, longest over all runs):", ""] + meshing_table(rs)
    failed = [r for r in res.runs if r.workload == WORKLOAD and not r.ok]
    notes = [n for n in (speed_note(rs),) if n] + meshing_notes(rs)
    notes += [n for n in (stand_in_note(main, rs),) if n]
    notes += [f"Failed: {r.allocator} trial {r.trial}: {r.status}: {r.error}" for r in failed]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    out += [""] + provenance(res)
    return out
