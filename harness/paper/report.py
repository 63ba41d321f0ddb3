"""paper-figures.md: the paper's numbers, ours, and the difference, from a results file.

Everything here is computed from the document (figures.py) and drawn from
it (plots.py), so the same file always gives the same report. Sentences
that judge a number (met, missed, by how much, what the mesh log shows)
are generated from the numbers, never written in by hand.
"""

from __future__ import annotations

import os
from typing import Optional

from .. import results as R
from ..stats import MIB, geomean
from ..allocators import REPO_ROOT
from . import claims as C
from . import figures as F
from . import redis_defrag, redis_fig
from . import redis_latency_report, webkit_report



def fmt(s: Optional[R.Stat], scale: float = 1.0, digits: int = 2) -> str:
    """mean ± sample sd over trials (just the mean for one trial); '-' for no data."""
    if s is None:
        return "-"
    if s.n > 1:
        return f"{s.mean * scale:.{digits}f} ± {s.stdev * scale:.{digits}f}"
    return f"{s.mean * scale:.{digits}f}"


def fnum(x: Optional[float], digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _rel(path: str, start: str) -> str:
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


def _verdict(met: Optional[bool]) -> str:
    return {True: "yes", False: "**no**", None: "n/a"}[met]


def headline(res: R.MatrixResult) -> list[str]:
    out = ["| target | bound | ours | met |", "|---|---|---|---|"]
    for t in F.targets(res) + redis_defrag.targets(res):
        detail = f" ({t.detail})" if t.detail else ""
        out.append(f"| {t.what}{detail} | {t.bound} | {fmt(t.ours)} | {_verdict(t.met)} |")
    return out


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


def _missed(res: R.MatrixResult) -> dict[str, list[str]]:
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


def machine_section(res: R.MatrixResult) -> list[str]:
    m = res.machine
    kernel = (m.get("kernel") or "").split(" ")
    mem = m.get("mem_total_bytes")
    out = ["| | |", "|---|---|",
           f"| CPU | {m.get('cpu_model')} x {m.get('cpus')} ({m.get('cpus_usable')} usable) |",
           f"| memory | {mem / 2**30:.1f} GiB |" if mem else "| memory | ? |",
           f"| OS, kernel | {m.get('os')}, {kernel[1] if len(kernel) > 1 else '?'} |",
           f"| THP, vm.max_map_count | {m.get('thp')}, {m.get('max_map_count')} |",
           f"| memory measured by | {', '.join(sorted({r.method for r in res.runs if r.method}))} |",
           f"| harness commit | {res.commit} |",
           f"| results created | {res.created} ({(res.duration_s or 0) / 60:.0f} min of runs) |"]
    load = res.config.get("loadavg") or {}
    if load.get("start"):
        fmt_load = lambda v: ", ".join(f"{x:.2f}" for x in v) if v else "?"
        out.append(f"| load average (1, 5, 15 min) at start / end | {fmt_load(load.get('start'))} / "
                   f"{fmt_load(load.get('end'))} (the runs themselves keep one or two cores "
                   f"busy; more means other work ran beside them) |")
    figs = res.config.get("figures") or {}
    red = figs.get("redis") or {}
    if red.get("versions"):
        out.append(f"| redis-server | {red['versions'].get('redis_server')} |")
        for k in ("built_jemalloc", "built_libc"):
            if red["versions"].get(k):
                out.append(f"| redis-server built from source ({k.split('_')[1]}) | "
                           f"{red['versions'][k]} |")
    if (figs.get("ruby") or {}).get("ruby"):
        out.append(f"| ruby | {figs['ruby']['ruby']} |")
    out += ["", "| allocator | library | version | build id |", "|---|---|---|---|"]
    for name, info in res.allocators.items():
        lib = info.get("preload") or "(nothing preloaded: glibc)"
        out.append(f"| {name} | {_short(lib)} | {info.get('version')} | "
                   f"{(info.get('build_id') or '')[:16]} |")
    red_allocs = red.get("allocators") or {}
    if red_allocs:
        out += ["", "For redis-server the names mean:", "",
                "| allocator | what was run | version |", "|---|---|---|"]
        for name, info in red_allocs.items():
            what = info.get("description") or ""
            out.append(f"| {name} | {what} | {info.get('version')} |")
    return out


def _short(path: str) -> str:
    return path.replace(REPO_ROOT + "/", "") if path else path


def redis_section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    rows = F.redis_rows(res, F.REDIS_ORDER)
    if not rows:
        return ["## Figure 7: Redis", "", "Not run in this results file."]
    figs = (res.config.get("figures") or {}).get("redis") or {}
    script = figs.get("script") or {}
    mark = script.get("mark_s", 7.5)
    pops = "; ".join(f"`debug populate {k} {p} {s}`" for k, p, s in script.get("populates", []))
    out = ["## Figure 7: Redis", "",
           f"![Figure 7: redis-server footprint over time]({_rel(os.path.join(plot_dir, 'fig7-redis.png'), md_dir)})",
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
           comparison_table_block(res, "7"), "",
           f"| allocator | footprint at {mark:g} s (MiB) | / mesh-nomesh | / jemalloc | "
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
    out += state_table(res, mark)
    compaction, compaction_notes = redis_defrag.section(res, mark)
    out += compaction
    where, where_notes = breakdown_section(res, mark)
    out += where
    out += ["", "Meshing, from the MESH_EVENTS log (mean ± sd per run; the longest pause and "
            "pass are the maxima over all runs):", ""]
    out += events_table({a: r for a, r in rows.items() if a.startswith("mesh")}, "0.23", "22")
    out += ["", f"![RSS, PSS and footprint of redis-server under mesh]"
            f"({_rel(os.path.join(plot_dir, 'redis-measures.png'), md_dir)})", "",
            measures_line(res, mark), "", "Where we fall short or differ:", ""]
    notes = _missed(res)["7"]
    notes += mesh_diagnosis(rows.get("mesh"), "at_mark", [(rows.get("mesh-nomesh"), 0.61),
                                                         (rows.get("jemalloc"), None)],
                            F.ok_runs(res, F.REDIS, "mesh"))
    notes += compaction_notes
    notes += where_notes
    notes += norand_note(res)
    mesh, nomesh = rows.get("mesh"), rows.get("mesh-nomesh")
    p_mesh = mesh.ratios.get("populate/jemalloc") if mesh else None
    p_nomesh = nomesh.ratios.get("populate/jemalloc") if nomesh else None
    if p_mesh is not None and p_nomesh is not None and p_mesh.mean > 1.05:
        same = p_nomesh.mean >= p_mesh.mean - max(p_mesh.stdev, 0.05)
        notes.append(f"Inserts took {p_mesh.mean:.2f} x jemalloc's time with mesh and "
                     f"{p_nomesh.mean:.2f} x with mesh-nomesh"
                     + ("; the extra time is libmesh's allocation path, not meshing" if same
                        else "; part of the extra time goes with meshing")
                     + ". Populate times vary from run to run here (see the spreads).")
    split = []
    for al in ("mesh", "mesh-norand"):
        vals = sorted(v for v in ((r.result or {}).get("footprint_at_mark")
                                  for r in F.ok_runs(res, F.REDIS, al)) if v)
        if len(vals) > 1 and vals[-1] > vals[0] * 1.05:
            split.append(f"{al} " + ", ".join(f"{v / MIB:.1f}" for v in vals))
    if split:
        notes.append(f"The trials disagree ({'; '.join(split)} MiB at {mark:g} s). Runs of this "
                     "script end in one of two states, under every allocator: the second populate "
                     "looks up keys asdf:0 to asdf:169999, which the first created, and a lookup "
                     "renews a key's LRU time, whose clock ticks once a second. If it ticked since "
                     "the first populate, those keys are newer than the rest and all survive "
                     "eviction, so the spans they fill stay full (about half of the 256-byte spans "
                     "and a quarter of the 16- and 32-byte ones); if not, eviction picks among all "
                     "keys alike and the survivors are spread evenly (about 42% of every span), "
                     "which meshing packs less tightly. Found by counting the surviving keys by "
                     "number (redis-cli --scan), under jemalloc and mesh." + state_counts(res))
    notes += redis_defrag.refusals(figs)
    notes.append(redis_defrag.redis_differs(figs))
    steady = [((r.result or {}).get("info_steady") or {}).get("total_eviction_exceeded_time")
              for r in F.ok_runs(res, F.REDIS, "jemalloc")]
    steady = [x for x in steady if x is not None]
    if steady:
        notes.append(f"Eviction ran past its per-command time limit for {min(steady)}-"
                     f"{max(steady)} ms in total (INFO total_eviction_exceeded_time, jemalloc runs).")
    out += [f"- {n}" for n in notes]
    return out


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
    from .redis_fig import value_at
    vals = {c: value_at(r.memory.t, getattr(r.memory, c), mark) for c in ("footprint", "rss")}
    if None in vals.values():
        return ""
    return (f"The footprint (the cgroup's charge: each physical page once) beside RSS and PSS for "
            f"the trial drawn above: at {mark:g} s RSS was {vals['rss'] / MIB:.1f} MiB, the "
            f"footprint {vals['footprint'] / MIB:.1f} MiB. RSS counts a page once per mapping "
            "that has touched it, so a meshed page read through both of its virtual spans counts "
            "twice; a span just remapped counts nothing until it is touched (harness/README.md).")


def comparison_table_block(res: R.MatrixResult, figure: str) -> str:
    return "\n".join(comparison_table(res, figure))


def _matrix_like_table(rows: dict, extra_score: bool) -> list[str]:
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


def ruby_section(res: R.MatrixResult, md_dir: str, plot_dir: str) -> list[str]:
    rows = F.ruby_rows(res, F.RUBY_ORDER)
    if not rows:
        return ["## Figure 8: Ruby", "", "Not run in this results file."]
    figs = (res.config.get("figures") or {}).get("ruby") or {}
    out = ["## Figure 8: Ruby", "",
           f"![Figure 8: ruby footprint over time]({_rel(os.path.join(plot_dir, 'fig8-ruby.png'), md_dir)})",
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
    out += _matrix_like_table(rows, extra_score=False)
    out += ["", "Meshing, from the MESH_EVENTS log:", ""]
    out += events_table({a: r for a, r in rows.items() if a.startswith("mesh")}, None, None)
    out += ["", "Where we fall short or differ:", ""]
    notes = _missed(res)["8"]
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
           f"![Figure 6 stand-in: browser-like footprint over time]({_rel(os.path.join(plot_dir, 'fig6-browser.png'), md_dir)})",
           "",
           "**The paper:** Firefox running Speedometer 2.0: mean 530 MB with Mesh vs 632 MB with "
           "mozjemalloc (-16%), score within 1%; meshing 135 ms in all, longest pause 7.5 ms.", "",
           f"**Ours: not Firefox.** `workloads/bin/browser-like` at "
           f"scale {figs.get('scale', '?')} stands in for a browser in the default matrix (the "
           "next section runs a real browser engine) (page loads that build, script and "
           "tear down DOM-like trees with caches, a parser thread; workloads/README.md). Its score "
           "is page loads per second. The numbers below say how Mesh does on that program, not on "
           "Firefox.", "", comparison_table_block(res, "6"), ""]
    out += _matrix_like_table(rows, extra_score=True)
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
           f"![fragmentation]({_rel(os.path.join(plot_dir, 'fragmentation.png'), md_dir)})", "",
           "| workload | " + " | ".join(allocs) + " |", "|---|" + "---|" * len(allocs)]
    for w in ws:
        out.append(f"| {w} | " + " | ".join(fmt(frag.get((w, a))) for a in allocs) + " |")
    out += ["", "Time / jemalloc:", "",
            f"![time]({_rel(os.path.join(plot_dir, 'summary-time.png'), md_dir)})", "",
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


def webkit_source(res: R.MatrixResult, results_path: str, webkit: Optional[R.MatrixResult],
                  webkit_path: Optional[str]) -> tuple[Optional[R.MatrixResult], Optional[str]]:
    """The document whose WebKit runs the report shows: the main one when it
    has any (a full `run`), else the separate WebKit results file."""
    if any(r.workload == webkit_report.WORKLOAD for r in res.runs):
        return res, results_path
    return webkit, webkit_path


def markdown(res: R.MatrixResult, results_path: str, md_dir: str, plot_dir: str,
             webkit: Optional[R.MatrixResult] = None, webkit_path: Optional[str] = None) -> str:
    trials = res.config.get("trials")
    parts = ["# The paper's figures, reproduced", "",
             f"Generated by `make paper` from `{_rel(results_path, md_dir)}` "
             f"(created {res.created}, {trials} trials per allocator"
             + ("" if res.complete else "; INCOMPLETE: the run was interrupted") + "). "
             "Do not edit by hand: `make paper` rewrites it, and "
             "`/usr/bin/python3 -m harness paper run` measures everything again (as root; these "
             f"results took {(res.duration_s or 0) / 60:.0f} min).",
             "", f"Paper: {C.PAPER}; its numbers as the paper gives them. Footprint "
             "everywhere is the physical memory charged to the process's own memory cgroup "
             "(anonymous + shmem + kernel), sampled at 100 Hz: what the paper's tool measured. "
             "Spreads are one sample standard deviation over trials; ratios carry both spreads.", "",
             "## The targets and how they are met", ""]
    parts += headline(res)
    for section in (redis_section, ruby_section, browser_section):
        parts += [""] + section(res, md_dir, plot_dir)
    wk, wk_path = webkit_source(res, results_path, webkit, webkit_path)
    parts += [""] + webkit_report.section(wk, wk_path, md_dir, plot_dir, main=res)
    parts += [""] + redis_latency_report.section(res, md_dir, plot_dir)
    parts += [""] + matrix_section(res, md_dir, plot_dir)
    parts += ["", "## Machine and versions", ""] + machine_section(res)
    parts += ["", "Not reproduced: SPECint2006 (not available here)."]
    return "\n".join(parts) + "\n"


def write(res: R.MatrixResult, results_path: str, out_md: str, plot_dir: str,
          webkit: Optional[R.MatrixResult] = None, webkit_path: Optional[str] = None) -> list[str]:
    """Draw the plots and write the report; returns the paths written.
    webkit: a separate document with the WebKit figure's runs (used when
    res has none)."""
    from . import plots   # matplotlib only when drawing
    results_path = os.path.abspath(results_path)
    webkit_path = os.path.abspath(webkit_path) if webkit_path else None
    wk, wk_path = webkit_source(res, results_path, webkit, webkit_path)
    paths = plots.plot_paper(res, plot_dir, webkit=wk)
    md_dir = os.path.dirname(os.path.abspath(out_md))
    text = markdown(res, results_path, md_dir, os.path.abspath(plot_dir), wk, wk_path)
    tmp = f"{out_md}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out_md)
    return paths + [out_md]
