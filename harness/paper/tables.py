"""The pieces every section of paper-figures.md is made of: a number with
its spread, the paper-against-ours table of a figure, the mesh-log table,
the footprint-and-time table, and the sentences generated from them (a
target missed, what the mesh log says limited meshing).

Each takes numbers computed by figures.py and returns Markdown lines, so
a section reads as the order of its tables and notes.
"""

from __future__ import annotations

import os
from typing import Optional

from .. import results as R
from ..stats import MIB
from . import claims as C
from . import figures as F


def fmt(s: Optional[R.Stat], scale: float = 1.0, digits: int = 2) -> str:
    """mean ± sample sd over trials (just the mean for one trial); '-' for no data."""
    if s is None:
        return "-"
    if s.n > 1:
        return f"{s.mean * scale:.{digits}f} ± {s.stdev * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f}"


def fnum(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def rel(path: str, start: str) -> str:
    return os.path.relpath(path, start).replace(os.sep, "/")


def _unit(c: C.Claim, value: float) -> str:
    if c.unit == "ratio":
        return f"{value:.2f}"
    if c.unit == "ms":
        return f"{value:.1f} ms"
    return f"{value:.2f} {c.unit}"


def _ours(cmp: F.Comparison) -> str:
    c, s = cmp.claim, cmp.ours
    if s is None:
        return cmp.note or "not measured"
    if c.unit == "ms":
        return f"{s.mean:.1f} ms (max over {s.n})"
    text = fmt(s, 1.0, 2 if c.unit == "ratio" else 3)
    return text + ("" if c.unit == "ratio" else f" {c.unit}") + f" (n={s.n})"


def verdict(met: Optional[bool]) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def comparison_table(res: R.MatrixResult, figure: Optional[str] = None) -> list[str]:
    out = ["| claim | paper | ours (mean ± sd) | ours / paper | source in the paper |",
           "|---|---|---|---|---|"]
    for cmp in F.comparisons(res):
        if figure and cmp.claim.figure != figure:
            continue
        ratio = fnum(cmp.ratio) if cmp.ratio is not None else "-"
        out.append(f"| {cmp.claim.what} | {_unit(cmp.claim, cmp.claim.paper)} | {_ours(cmp)} | "
                   f"{ratio} | {cmp.claim.source} |")
    return out


def events_table(rows: dict, paper_total: Optional[str], paper_longest: Optional[str]) -> list[str]:
    out = ["| allocator | passes | meshing time (s) | longest pause (ms) | longest pass (ms) | "
           "meshes | released (MiB) | passes cut by the time budget |",
           "|---|---|---|---|---|---|---|---|"]
    any_row = False
    for al, row in rows.items():
        e = row.events
        if e is None:
            continue
        any_row = True
        out.append(f"| {al} | {fmt(e.passes, digits=0)} | {fmt(e.total_s, digits=3)} | "
                   f"{e.longest_pause_ms:.2f} | {e.longest_pass_ms:.2f} | {fmt(e.meshes, digits=0)} | "
                   f"{fmt(e.released_mib, digits=1)} | {fmt(e.stopped_time, digits=0)} |")
    if paper_total:
        out.append(f"| paper (Mesh) | - | {paper_total} | {paper_longest} | - | - | - | - |")
    return out if any_row else ["(no mesh events were recorded)"]


def missed(res: R.MatrixResult) -> dict[str, list[str]]:
    """Generated lines for targets we miss, by figure."""
    out: dict[str, list[str]] = {"7": [], "8": [], "6": []}
    for cmp in F.comparisons(res):
        c = cmp.claim
        if c.target is None or cmp.met is not False:
            continue
        over = cmp.ours.mean - c.target
        out[c.figure].append(
            f"**Missed:** {c.what} is {cmp.ours.mean:.2f} ± {cmp.ours.stdev:.2f}; the bound is "
            f"{c.target:.2f} (the paper: {c.paper:.2f}), so we are {over:+.2f} from it.")
    for t in F.targets(res):
        if t.met is False and "lower than every" in t.what and "end state" not in t.what:
            out["7"].append(f"**Missed:** Mesh's footprint at 7.5 s is {t.ours.mean:.2f} x the lowest "
                            f"other allocator's ({t.detail.replace('lowest other: ', '')}).")
        elif t.met is False and "end state" in t.what:
            out["7"].append(f"**Missed, by end state:** {t.what}: {fmt(t.ours)}, bound {t.bound}"
                            + (f" ({t.detail})" if t.detail else "") + ".")
    return out


def mesh_diagnosis(row: Optional[F.Row], metric: str, bases: list,
                   runs: list) -> list[str]:
    """What the mesh log says about how much meshing did and what limited it.

    bases: (row, the paper's ratio to it or None) for each allocator to set
    Mesh's saving against; runs: Mesh's runs, for passes that stopped."""
    if row is None or row.events is None:
        return []
    e = row.events
    lines = []
    passes = e.passes.mean if e.passes else 0
    cut = e.stopped_time.mean if e.stopped_time else 0
    meshes = e.meshes.mean if e.meshes else 0
    released = e.released_mib.mean if e.released_mib else 0
    lines.append(f"The mesh log (mean per run): passes {passes:.0f}, taking {e.total_s.mean:.3f} s "
                 f"in all, {meshes:.0f} meshes releasing {released:.1f} MiB; "
                 f"{cut:.0f} of the passes ({100 * cut / passes if passes else 0:.0f}%) ended at "
                 f"their time budget (MESH_PASS_MS) rather than running out of candidates.")
    short = False
    for base, ratio in bases:
        theirs = base.values.get(metric) if base is not None else None
        mine = row.values.get(metric)
        if theirs is None or mine is None:
            continue
        saved = (theirs.mean - mine.mean) / MIB
        text = (f"Against {base.allocator}, Mesh used {abs(saved):.1f} MiB "
                f"{'less' if saved >= 0 else 'more'}")
        r = mine.ratio(theirs)
        if r is not None and abs(1 - r.mean) <= max(r.stdev, 0.02):
            text += " (within the spread of the trials: no difference to speak of)"
        if ratio is not None:
            need = theirs.mean * (1 - ratio) / MIB
            text += f"; the paper's ratio ({ratio:.2f}) would mean {need:.1f} MiB less"
            short = short or saved < need
        lines.append(text + ".")
    if short and passes and cut / passes > 0.5:
        lines.append("Most passes stopped at their time budget, so meshing here was limited by "
                     "how much work a pass may do (and how often passes run), not by a lack of "
                     "meshable spans.")
    stalled = F.stalled_runs(runs)
    if stalled:
        which = "; ".join(f"trial {t}: last pass at {last:.1f} s, run ended at {end:.1f} s"
                          for t, last, end in stalled)
        lines.append(f"In {len(stalled)} of {len(runs)} runs no mesh pass ran during the last "
                     f"part of the run ({which}).")
    return lines


def comparison_table_block(res: R.MatrixResult, figure: str) -> str:
    return "\n".join(comparison_table(res, figure))


def footprint_table(rows: dict, extra_score: bool) -> list[str]:
    head = "| allocator | mean footprint (MiB) | / jemalloc | peak (MiB) | time (s) | / jemalloc |"
    sep = "|---|---|---|---|---|---|"
    if extra_score:
        head += " score | / jemalloc |"
        sep += "---|---|"
    head += " frag | ok runs |"
    sep += "---|---|"
    out = [head, sep]
    for al, row in rows.items():
        v, r = row.values, row.ratios
        line = (f"| {al} | {fmt(v['mean'], 1 / MIB, 1)} | {fmt(r.get('mean/jemalloc'))} | "
                f"{fmt(v['peak'], 1 / MIB, 1)} | {fmt(v['time'])} | {fmt(r.get('time/jemalloc'))} |")
        if extra_score:
            line += f" {fmt(v['score'], digits=1)} | {fmt(r.get('score/jemalloc'))} |"
        line += f" {fmt(v['frag'])} | {row.trials}" + (f" ({row.failed} failed)" if row.failed else "") + " |"
        out.append(line)
    return out
