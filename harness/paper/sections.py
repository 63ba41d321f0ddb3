"""The sections of paper-figures.md built from the shared tables alone:
Figure 8 (Ruby), Figure 6's stand-in (workloads/bin/browser-like) and the
default matrix of synthetic and throughput workloads.
"""

from __future__ import annotations

import os

from .. import results as R
from ..stats import geomean
from . import figures as F
from .tables import (comparison_table_block, events_table, fmt, fnum, footprint_table,
                     mesh_diagnosis, missed, rel)


def ruby_section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    rows = F.ruby_rows(res, F.RUBY_ORDER)
    if not rows:
        return ["## Figure 8: Ruby", "", "Not run in this results file."]
    figs = (res.config.get("figures") or {}).get("ruby") or {}
    out = ["## Figure 8: Ruby", "",
           f"![Figure 8: ruby footprint over time]({rel(os.path.join(plot_dir, 'fig8-ruby.png'), md_dir)})",
           "",
           "**The paper:** Ruby running a fragmentation script: Mesh's mean heap is 19% below "
           "jemalloc's at 10.7% more time; without randomization, 3% below at 4% more time.", "",
           f"**Ours:** Debian's `ruby` ({figs.get('ruby', '?')}) running `{figs.get('script')}`, "
           "written here from the paper's description: for n = 512, 1024, ... within a 128 MiB "
           "budget, allocate strings of n - 16 bytes filling what is left of the budget, keep every "
           "fourth, sleep 0.2 s, run a full GC, double n. Mean footprint is time-weighted over the "
           "whole run; time is the wall time of the same (sampled) runs. Debian's ruby uses glibc's "
           "malloc; the others are preloaded. The dashed line is the bytes of strings the script "
           "can still reach.", "",
           comparison_table_block(res, "8"), ""]
    out += footprint_table(rows, extra_score=False)
    out += ["", "Meshing, from the MESH_EVENTS log:", ""]
    out += events_table({a: r for a, r in rows.items() if a.startswith("mesh")}, None, None)
    out += ["", "Where we fall short or differ:", ""]
    notes = missed(res)["8"]
    notes += mesh_diagnosis(rows.get("mesh"), "mean", [(rows.get("jemalloc"), 0.81),
                                                      (rows.get("mesh-nomesh"), None)],
                            F.ok_runs(res, F.RUBY_WORKLOAD, "mesh"))
    notes.append("The script is ours, not the paper's file, and Ruby is 3.1 (the paper's "
                 "artifact ran Ubuntu 18.04's Ruby 2.5), whose heap pages and string buffers "
                 "differ in size.")
    out += [f"- {n}" for n in notes]
    return out


def browser_section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    rows = F.browser_rows(res, F.BROWSER_ORDER)
    if not rows:
        return ["## Figure 6: browser stand-in", "", "Not run in this results file."]
    figs = (res.config.get("figures") or {}).get("browser") or {}
    out = ["## Figure 6: browser (a stand-in, not Firefox)", "",
           f"![Figure 6 stand-in: browser-like footprint over time]({rel(os.path.join(plot_dir, 'fig6-browser.png'), md_dir)})",
           "",
           "**The paper:** Firefox running Speedometer 2.0: mean 530 MB with Mesh vs 632 MB with "
           "mozjemalloc (-16%), score within 1%; meshing 135 ms in all, longest pause 7.5 ms.", "",
           f"**Ours: not Firefox.** `workloads/bin/browser-like` at "
           f"scale {figs.get('scale', '?')} stands in for a browser in the default matrix (the "
           "next section runs a real browser engine) (page loads that build, script and "
           "tear down DOM-like trees with caches, a parser thread; workloads/README.md). Its score "
           "is page loads per second. The numbers below say how Mesh does on that program, not on "
           "Firefox.", "", comparison_table_block(res, "6"), ""]
    out += footprint_table(rows, extra_score=True)
    out += ["", "Meshing, from the MESH_EVENTS log:", ""]
    out += events_table({a: r for a, r in rows.items() if a.startswith("mesh")}, "0.135", "7.5")
    notes = mesh_diagnosis(rows.get("mesh"), "mean", [(rows.get("jemalloc"), 530 / 632),
                                                     (rows.get("mesh-nomesh"), None)],
                           F.ok_runs(res, F.BROWSER, "mesh"))
    mesh, jem = rows.get("mesh"), rows.get("jemalloc")
    t = mesh.ratios.get("time/jemalloc") if mesh else None
    if t is not None and abs(t.mean - 1) > 0.05:
        notes.append(f"Mesh's runs took {t.mean:.2f} x jemalloc's time (the paper: the same "
                     "score within 1%), so each mean footprint is taken over a run of a different "
                     "length: the same page loads, at a different pace.")
    if mesh and jem and "mesh-nomesh" not in rows:
        notes.append("No mesh-nomesh runs at this scale: how much of the difference is meshing "
                     "and how much libmesh's allocator without it is not separated here (the "
                     "matrix below has both at scale 1).")
    if notes:
        out += ["", "Where we fall short or differ:", ""] + [f"- {n}" for n in notes]
    return out


def matrix_section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    ws, allocs = F.matrix_workloads(res), F.matrix_allocators(res)
    if not ws:
        return ["## Synthetic and throughput workloads", "", "Not run in this results file."]
    frag = F.matrix_table(res, "frag", None)
    times = F.matrix_table(res, "time", "jemalloc")
    agg = R.aggregate(res)
    cfg = (res.config.get("figures") or {}).get("matrix") or {}
    out = ["## Synthetic and throughput workloads", "",
           f"The harness's matrix (`/usr/bin/python3 -m harness run`): every workload at scale "
           f"{cfg.get('scale', '?')}, {cfg.get('trials', '?')} trials. Fragmentation = mean "
           "footprint / mean live bytes (1.00 is the physical limit; the throughput workloads hold "
           "little, so theirs mostly shows fixed overhead). Time / jemalloc uses hyperfine's mean "
           "for the throughput workloads (marked h) and the memory runs' wall time elsewhere.", "",
           f"![fragmentation]({rel(os.path.join(plot_dir, 'fragmentation.png'), md_dir)})", "",
           "| workload | " + " | ".join(allocs) + " |", "|---|" + "---|" * len(allocs)]
    for w in ws:
        out.append(f"| {w} | " + " | ".join(fmt(frag.get((w, a))) for a in allocs) + " |")
    out += ["", "Time / jemalloc:", "",
            f"![time]({rel(os.path.join(plot_dir, 'summary-time.png'), md_dir)})", "",
            "| workload | " + " | ".join(allocs) + " |", "|---|" + "---|" * len(allocs)]
    for w in ws:
        cells = []
        for a in allocs:
            g = agg.get((w, a))
            mark = "h" if g and g.time_source == "hyperfine" else ""
            cells.append(fmt(times.get((w, a))) + (f" {mark}" if mark and times.get((w, a)) else ""))
        out.append(f"| {w} | " + " | ".join(cells) + " |")
    gm = [geomean([times[(w, a)].mean for w in ws if times.get((w, a))]) for a in allocs]
    out.append("| geomean | " + " | ".join(fnum(g) for g in gm) + " |")
    failed = [r for r in res.runs if r.workload in ws and r.status not in ("ok", "skipped")]
    bad = R.checksum_mismatches(res)
    if failed or bad:
        out += ["", "Problems:", ""]
        out += [f"- {r.workload} / {r.allocator} trial {r.trial}: {r.status}: {r.error}" for r in failed]
        out += [f"- {b}" for b in bad]
    return out

