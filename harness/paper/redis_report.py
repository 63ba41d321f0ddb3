"""Figure 7's section of paper-figures.md: redis-server running the paper's
script, under every allocator.

The footprint at the mark (7.5 s) by allocator and by the end state a run
reached, where the memory is in each state, what compaction cost
(redis_defrag), the mesh log, and the notes those numbers support.
"""

from __future__ import annotations

import os
from typing import Optional

from .. import results as R
from ..stats import MIB
from . import figures as F
from . import redis_defrag, redis_fig
from .tables import (comparison_table_block, events_table, fmt, mesh_diagnosis, missed,
                     rel)

TITLE = "## Figure 7: Redis"


def section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    rows = F.redis_rows(res, F.REDIS_ORDER)
    if not rows:
        return [TITLE, "", "Not run in this results file."]
    figs = (res.config.get("figures") or {}).get("redis") or {}
    mark = (figs.get("script") or {}).get("mark_s", 7.5)
    out = _intro(res, figs, md_dir, plot_dir) + [""]
    out += _footprint_table(rows, mark)
    out += state_table(res, mark)
    compaction, compaction_notes = redis_defrag.section(res, mark)
    out += compaction
    where, where_notes = breakdown_section(res, mark)
    out += where
    out += ["", "Meshing, from the MESH_EVENTS log (mean ± sd per run; the longest pause and "
            "pass are the maxima over all runs):", ""]
    out += events_table({a: r for a, r in rows.items() if a.startswith("mesh")}, "0.23", "22")
    out += ["", f"![RSS, PSS and footprint of redis-server under mesh]"
            f"({rel(os.path.join(plot_dir, 'redis-measures.png'), md_dir)})", "",
            measures_line(res, mark), "", "Where we fall short or differ:", ""]
    notes = missed(res)["7"]
    notes += mesh_diagnosis(rows.get("mesh"), "at_mark", [(rows.get("mesh-nomesh"), 0.61),
                                                         (rows.get("jemalloc"), None)],
                            F.ok_runs(res, F.REDIS, "mesh"))
    notes += compaction_notes + where_notes + norand_note(res)
    notes += [n for n in (_populate_note(rows), _split_note(res, mark)) if n]
    notes += redis_defrag.refusals(figs)
    notes.append(redis_defrag.redis_differs(figs))
    notes += [n for n in (_eviction_note(res),) if n]
    return out + [f"- {n}" for n in notes]


def _intro(res: R.MatrixResult, figs: dict, md_dir: str, plot_dir: str) -> list[str]:
    """The plot, what the paper measured, what we ran, and the claims table."""
    script = figs.get("script") or {}
    mark = script.get("mark_s", 7.5)
    pops = "; ".join(f"`debug populate {k} {p} {s}`" for k, p, s in script.get("populates", []))
    return [TITLE, "",
            f"![Figure 7: redis-server footprint over time]({rel(os.path.join(plot_dir, 'fig7-redis.png'), md_dir)})",
            "",
            "**The paper:** with Redis 4.0.2 running this script, Mesh's heap at 7.5 s is 39% below "
            "Mesh without meshing and equal to jemalloc with active defragmentation; inserts take "
            "1.76 s with Mesh and 1.72 s with jemalloc; meshing takes 0.23 s in all, its longest "
            "pause 22 ms (active defrag: 1.49 s).", "",
            f"**Ours:** {redis_defrag.servers_words(figs)} on 127.0.0.1 (no persistence, DEBUG enabled) in its "
            f"own memory cgroup, sampled at 100 Hz from the moment it is spawned. `redis-cli`, "
            f"outside the cgroup, sends `config set maxmemory {script.get('maxmemory')}`, "
            f"`config set maxmemory-policy {script.get('policy')}`, {pops}; then, as the paper's "
            f"harness did, `dbsize` and `info` {script.get('settle_s')} s later and `info` again "
            f"{script.get('steady_s')} s after that; SIGTERM at {script.get('duration_s')} s. "
            f"Footprint = anonymous + shmem + kernel memory of the cgroup, read at {mark:g} s. "
            f"Populate = the two DEBUG POPULATE round trips. Keys = DBSIZE "
            f"{script.get('settle_s')} s after the script, while Redis may still be evicting "
            f"(it evicts in time-bounded steps): an allocator whose runs evict more slowly shows "
            f"more keys there, not a different live set at {mark:g} s."
            + redis_defrag.provenance(figs, res), "",
            comparison_table_block(res, "7")]


def _footprint_table(rows: dict, mark: float) -> list[str]:
    """Footprint at the mark, mean footprint, populate time and keys, by allocator."""
    out = [f"| allocator | footprint at {mark:g} s (MiB) | / mesh-nomesh | / jemalloc | "
           "mean footprint (MiB) | populate (s) | / jemalloc | keys (DBSIZE) | ok runs |",
           "|---|---|---|---|---|---|---|---|---|"]
    for al, row in rows.items():
        if not row.trials:
            why = "not run: unsupported (see below)" if row.note else "no successful run"
            out.append(f"| {al} | {why} | | | | | | | 0 |")
            continue
        v, r = row.values, row.ratios
        out.append(f"| {al} | {fmt(v['at_mark'], 1 / MIB, 1)} | {fmt(r.get('at_mark/mesh-nomesh'))} | "
                   f"{fmt(r.get('at_mark/jemalloc'))} | {fmt(v['mean'], 1 / MIB, 1)} | "
                   f"{fmt(v['populate'], digits=3)} | {fmt(r.get('populate/jemalloc'))} | "
                   f"{fmt(v['dbsize'], digits=0)} | {row.trials}"
                   + (f" ({row.failed} failed)" if row.failed else "") + " |")
    return out


def _populate_note(rows: dict) -> Optional[str]:
    """Whether slower inserts under mesh come with meshing or with the allocation path."""
    mesh, nomesh = rows.get("mesh"), rows.get("mesh-nomesh")
    p_mesh = mesh.ratios.get("populate/jemalloc") if mesh else None
    p_nomesh = nomesh.ratios.get("populate/jemalloc") if nomesh else None
    if p_mesh is None or p_nomesh is None or p_mesh.mean <= 1.05:
        return None
    same = p_nomesh.mean >= p_mesh.mean - max(p_mesh.stdev, 0.05)
    return (f"Inserts took {p_mesh.mean:.2f} x jemalloc's time with mesh and "
            f"{p_nomesh.mean:.2f} x with mesh-nomesh"
            + ("; the extra time is libmesh's allocation path, not meshing" if same
               else "; part of the extra time goes with meshing")
            + ". Populate times vary from run to run here (see the spreads).")


def _split_note(res: R.MatrixResult, mark: float) -> Optional[str]:
    """When the trials of mesh or mesh-norand disagree: the two end states, explained."""
    split = []
    for al in ("mesh", "mesh-norand"):
        vals = sorted(v for v in ((r.result or {}).get("footprint_at_mark")
                                  for r in F.ok_runs(res, F.REDIS, al)) if v)
        if len(vals) > 1 and vals[-1] > vals[0] * 1.05:
            split.append(f"{al} " + ", ".join(f"{v / MIB:.1f}" for v in vals))
    if not split:
        return None
    return (f"The trials disagree ({'; '.join(split)} MiB at {mark:g} s). Runs of this "
            "script end in one of two states, under every allocator: the second populate "
            "looks up keys asdf:0 to asdf:169999, which the first created, and a lookup "
            "renews a key's LRU time, whose clock ticks once a second. If it ticked since "
            "the first populate, those keys are newer than the rest and all survive "
            "eviction, so the spans they fill stay full (about half of the 256-byte spans "
            "and a quarter of the 16- and 32-byte ones); if not, eviction picks among all "
            "keys alike and the survivors are spread evenly (about 42% of every span), "
            "which meshing packs less tightly. Found by counting the surviving keys by "
            "number (redis-cli --scan), under jemalloc and mesh." + state_counts(res))


def _eviction_note(res: R.MatrixResult) -> Optional[str]:
    steady = [((r.result or {}).get("info_steady") or {}).get("total_eviction_exceeded_time")
              for r in F.ok_runs(res, F.REDIS, "jemalloc")]
    steady = [x for x in steady if x is not None]
    if not steady:
        return None
    return (f"Eviction ran past its per-command time limit for {min(steady)}-"
            f"{max(steady)} ms in total (INFO total_eviction_exceeded_time, jemalloc runs).")


def norand_note(res: R.MatrixResult) -> list[str]:
    """Why mesh-norand can end below mesh here, when it does: by the
    trials of each end state."""
    lowest = [t for t in F.targets(res) if "lower than every" in t.what and t.met is False
              and "mesh-norand" in t.detail]
    if not lowest:
        return []
    by_state = F.redis_state_rows(res)
    parts = []
    for state, rows in by_state.items():
        mesh, norand = rows.get("mesh"), rows.get("mesh-norand")
        if mesh and norand and mesh.at_mark and norand.at_mark:
            r = mesh.at_mark.ratio(norand.at_mark)
            parts.append(f"{F.STATE_WORDS[state]} {fmt(r)} ({mesh.at_mark.n} and "
                         f"{norand.at_mark.n} trials)")
    rows = F.redis_rows(res)
    ev = {al: rows[al].events for al in ("mesh", "mesh-norand") if al in rows and rows[al].events}
    line = ("mesh-norand is libmesh with randomized placement off. In this script eviction, not "
            "placement, scatters the surviving objects (a span holds keys made one after another "
            "either way), so both variants mesh about as much")
    if len(ev) == 2 and ev["mesh"].meshes and ev["mesh-norand"].meshes:
        line += (f" ({ev['mesh'].meshes.mean:.0f} and {ev['mesh-norand'].meshes.mean:.0f} "
                 "meshes a run)")
    if parts:
        line += "; mesh / mesh-norand by end state: " + ", ".join(parts)
    return [line + "."]


def state_counts(res: R.MatrixResult) -> str:
    """' Trials renewed / even: mesh 3/2, ...' from the probe, or ''."""
    parts = []
    for al in F.allocators_of(res, F.REDIS, F.REDIS_ORDER):
        states = [F.run_state(r) for r in F.ok_runs(res, F.REDIS, al)]
        if any(states):
            parts.append(f"{al} {states.count(redis_fig.RENEWED)}/{states.count(redis_fig.EVEN)}")
    return (f" Each run's end state is probed after 7.5 s (the table by end state above); "
            f"trials renewed/even: {', '.join(parts)}." if parts else "")


def state_table(res: R.MatrixResult, mark: float) -> list[str]:
    """Footprint at the mark by end state (from the EXISTS probe after it)."""
    by_state = F.redis_state_rows(res, F.REDIS_ORDER)
    if not by_state:
        return []
    states = list(by_state)
    head = " | ".join(f"{F.STATE_WORDS[st]}: trials | at {mark:g} s (MiB) | / mesh-nomesh"
                      for st in states)
    out = ["", f"By end state (told apart after {mark:g} s by EXISTS on {redis_fig.PROBE_KEYS} "
           "evenly spaced keys of each group, which leaves LRU times alone; see the note on the "
           "trials below):", "", f"| allocator | {head} |", "|---|" + "---|---|---|" * len(states)]
    names = [a for a in F.allocators_of(res, F.REDIS, F.REDIS_ORDER)
             if any(a in rows for rows in by_state.values())]
    for al in names:
        cells = []
        for st in states:
            row = by_state[st].get(al)
            if row is None:
                cells.append("0 | | ")
                continue
            star = "" if row.nomesh_same_state else " (*)"
            cells.append(f"{row.at_mark.n} | {fmt(row.at_mark, 1 / MIB, 1)} | "
                         f"{fmt(row.vs_nomesh)}{star}")
        out.append(f"| {al} | " + " | ".join(cells) + " |")
    if any(not r.nomesh_same_state for rows in by_state.values() for r in rows.values()):
        out += ["", "(*) no mesh-nomesh trial ended in this state: the ratio is to all of "
                "mesh-nomesh's trials."]
    return out


def breakdown_section(res: R.MatrixResult, mark: float) -> tuple[list[str], list[str]]:
    """The table of where mesh's and mesh-nomesh's memory is, by end state,
    and the notes it supports."""
    bd = F.redis_breakdown(res, ("mesh", "mesh-activedefrag", "mesh-nomesh",
                                 "mesh-nomesh-activedefrag"))
    if not bd:
        return [], []
    out = ["", f"Where the memory is, by end state: kernel and anonymous memory from the cgroup at "
           f"{mark:g} s; the size classes (at least 1 MiB of spans) and large objects from "
           "libmesh's MALLOCSTATS=2 report at exit (10 s; Redis is idle after the script). "
           "Spans are physical (meshed-away spans, counted apart, cost none).", "",
           "| end state | allocator | what | objects per span | MiB | live MiB | occupancy | "
           "spans meshed away |", "|---|---|---|---|---|---|---|---|"]
    notes = []
    for state, rows in bd.items():
        words = F.STATE_WORDS[state]
        for al, b in rows.items():
            lead = f"| {words} | {al} (n={b.trials})"
            out.append(f"{lead} | footprint at {mark:g} s | | {fmt(b.at_mark, 1 / MIB, 1)} | | | |")
            out.append(f"{lead} | kernel memory | | {fmt(b.kernel, 1 / MIB, 1)} | | | |")
            out.append(f"{lead} | anonymous (outside the arena) | | {fmt(b.anon, 1 / MIB, 1)} | | | |")
            for c in b.classes:
                out.append(f"{lead} | {c.size}-byte class | {c.objects} | "
                           f"{fmt(c.span_bytes, 1 / MIB, 1)} | {fmt(c.live_bytes, 1 / MIB, 1)} | "
                           f"{100 * c.occupancy:.0f}% | {fmt(c.aliases, digits=0)} |")
            out.append(f"{lead} | large objects | | {fmt(b.large, 1 / MIB, 1)} | | | |")
        mesh, nomesh = rows.get("mesh"), rows.get("mesh-nomesh")
        if mesh is None or nomesh is None or not (mesh.at_mark and nomesh.at_mark):
            continue
        ratio = mesh.at_mark.mean / nomesh.at_mark.mean
        line = f"In the {words} state mesh's footprint is {ratio:.2f} of mesh-nomesh's"
        if mesh.kernel and nomesh.kernel:
            extra = mesh.kernel.mean - nomesh.kernel.mean
            line += (f"; meshing's mappings cost {extra / MIB:.1f} MiB of kernel memory, without "
                     f"which it would be {(mesh.at_mark.mean - extra) / nomesh.at_mark.mean:.2f}")
        # How full each class is without meshing says whether its spans can mesh.
        before = {c.size: c for c in nomesh.classes}
        stuck = [(c, before[c.size]) for c in mesh.classes if c.size in before
                 and F.disjoint_chance(c.objects, before[c.size].occupancy) < 1e-3]
        if stuck:
            span = sum(c.span_bytes.mean for c, _ in stuck)
            live = sum(c.live_bytes.mean for c, _ in stuck)
            which = ", ".join(f"{c.size} B ({c.objects} objects per span, "
                              f"{100 * b.occupancy:.0f}% full without meshing: "
                              f"{F.disjoint_chance(c.objects, b.occupancy):.0e}"
                              + (f"; {c.aliases.mean:.0f} spans meshed away"
                                 if c.aliases.mean >= 1 else "") + ")" for c, b in stuck)
            line += (f". The classes {which} hold {span / MIB:.1f} MiB of spans for "
                     f"{live / MIB:.1f} MiB of objects under mesh; the chance that two of their "
                     "spans, filled at random, have no slot in common (and so can mesh) is given "
                     "in brackets: meshing can do next to nothing there (where spans did mesh, "
                     "their objects were not spread at random), nor for the kernel's memory or "
                     "the large objects")
        stuck_sizes = {c.size for c, _ in stuck}
        best = max((c for c in mesh.classes if c.size not in stuck_sizes),
                   key=lambda c: c.aliases.mean, default=None)
        if best is not None and best.aliases.mean:
            was = before.get(best.size)
            line += (f". Meshing works on the {best.size}-byte class: {best.aliases.mean:.0f} spans "
                     f"meshed away, the rest {100 * best.occupancy:.0f}% full"
                     + (f" ({100 * was.occupancy:.0f}% without meshing; two spans that full "
                        f"mesh with chance {F.disjoint_chance(best.objects, was.occupancy):.2f})"
                        if was else ""))
        notes.append(line + ".")
    return out, notes


def measures_line(res: R.MatrixResult, mark: float) -> str:
    runs = F.ok_runs(res, F.REDIS, "mesh")
    pick = sorted(runs, key=lambda r: (r.result.get("footprint_at_mark") or 0, r.trial))
    if not pick:
        return ""
    r = pick[(len(pick) - 1) // 2]
    vals = {c: redis_fig.value_at(r.memory.t, getattr(r.memory, c), mark) for c in ("footprint", "rss")}
    if None in vals.values():
        return ""
    return (f"The footprint (the cgroup's charge: each physical page once) beside RSS and PSS for "
            f"the trial drawn above: at {mark:g} s RSS was {vals['rss'] / MIB:.1f} MiB, the "
            f"footprint {vals['footprint'] / MIB:.1f} MiB. RSS counts a page once per mapping "
            "that has touched it, so a meshed page read through both of its virtual spans counts "
            "twice; a span just remapped counts nothing until it is touched (harness/README.md).")

