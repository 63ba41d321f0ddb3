"""Figure 7's active-defragmentation rows: what compaction bought and cost.

The paper compares Mesh with jemalloc running Redis's active
defragmentation (equal heaps at 7.5 s; 1.49 s of defrag against 0.23 s of
meshing). Here every row runs Redis built from one source: the jemalloc
rows on Redis's bundled jemalloc, the rest on the system malloc with
libmesh (or another allocator) preloaded; the *-activedefrag rows turn
the defragmenter on, which under libmesh moves objects through
mesh_defrag_hint and mesh_defrag_malloc. Compaction CPU is the
defragmenter's own CPU time (INFO active_defrag_cpu_us, counted by our
patch around each defrag cycle) plus the time of libmesh's mesh passes
(MESH_EVENTS), over the whole run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .. import results as R
from ..stats import MIB
from . import figures as F
from . import redis_fig
from .tables import fmt

ROWS = tuple(redis_fig.DEFRAG_ROWS)
BOUND_VS_NOMESH = 0.50


def _final(r: R.Run) -> dict:
    res = r.result or {}
    return res.get("info_final") or res.get("info_steady") or {}


def _defrag_cpu_s(r: R.Run) -> Optional[float]:
    us = _final(r).get("active_defrag_cpu_us")
    return us / 1e6 if isinstance(us, (int, float)) else None


def _at_end(r: R.Run) -> Optional[float]:
    t = (r.result or {}).get("info_final_at_s")
    return redis_fig.value_at(r.memory.t, r.memory.footprint, t) if t else None


def _mesh_s(r: R.Run) -> float:
    return F.event_summary(r.events).total_s if r.events else 0.0


@dataclass
class Cost:
    """One Redis row's compaction, over its trials."""
    allocator: str
    trials: int
    at_mark: Optional[R.Stat]
    defrag_cpu_s: Optional[R.Stat]     # the defragmenter's CPU time
    moved: Optional[R.Stat]            # INFO active_defrag_hits
    misses: Optional[R.Stat]           # objects the hint said to leave
    mesh_s: Optional[R.Stat]           # time in mesh passes
    compact_s: Optional[R.Stat]        # the two together
    cpu_s: Optional[R.Stat]            # the server's user + system time (wait4)
    script_end_s: Optional[R.Stat] = None  # when the populates were done
    at_end: Optional[R.Stat] = None    # footprint when the last INFO was read


def costs(res: R.MatrixResult) -> dict[str, Cost]:
    out = {}
    for al in F.allocators_of(res, F.REDIS, F.REDIS_ORDER):
        runs = F.ok_runs(res, F.REDIS, al)
        if not runs:
            continue
        defrag = [_defrag_cpu_s(r) for r in runs]
        compact = [None if d is None else d + _mesh_s(r) for d, r in zip(defrag, runs)]
        out[al] = Cost(
            al, len(runs), R.Stat.of(r.result.get("footprint_at_mark") for r in runs),
            R.Stat.of(defrag), R.Stat.of(_final(r).get("active_defrag_hits") for r in runs),
            R.Stat.of(_final(r).get("active_defrag_misses") for r in runs),
            R.Stat.of(_mesh_s(r) for r in runs), R.Stat.of(compact),
            R.Stat.of((r.user_s or 0) + (r.sys_s or 0) for r in runs),
            R.Stat.of(r.result.get("script_end_s") for r in runs),
            R.Stat.of(_at_end(r) for r in runs))
    return out


def _ratio(a: Optional[Cost], b: Optional[Cost], what: str) -> Optional[R.Stat]:
    x = getattr(a, what) if a else None
    y = getattr(b, what) if b else None
    return x.ratio(y) if x is not None and y is not None and y.mean else None


def targets(res: R.MatrixResult) -> list[F.Target]:
    """The bounds the defrag rows are measured by (benchmarks, not tests)."""
    c = costs(res)
    md, jd, nm = c.get("mesh-activedefrag"), c.get("jemalloc-activedefrag"), c.get("mesh-nomesh")
    if md is None:
        return []
    out = []
    r = _ratio(md, nm, "at_mark")
    out.append(F.Target("Redis footprint at 7.5 s, Mesh + active defrag / Mesh without meshing", r,
                        f"<= {BOUND_VS_NOMESH:.2f}", None if r is None else r.mean <= BOUND_VS_NOMESH))
    r = _ratio(md, jd, "at_mark")
    out.append(F.Target("Redis footprint at 7.5 s, Mesh + active defrag / jemalloc + active defrag",
                        r, "< 1.00", None if r is None else r.mean < 1.0))
    mc, jc = (md.compact_s if md else None), (jd.defrag_cpu_s if jd else None)
    r = mc.ratio(jc) if mc is not None and jc is not None and jc.mean else None
    out.append(F.Target("Redis CPU spent compacting, Mesh + active defrag (defrag + meshing) / "
                        "jemalloc's active defrag", r, "< 1.00", None if r is None else r.mean < 1.0,
                        f"{mc.mean:.2f} s against {jc.mean:.2f} s" if r is not None else ""))
    return out


def _settings(figs: dict) -> str:
    cfg = figs.get("defrag_config") or {}
    if not cfg:
        return ""
    sent = ", ".join(f"`{k} {v}`" for k, v in cfg.items())
    return (f"The *-activedefrag rows send {sent} and then `config set activedefrag yes` where "
            "the paper's harness sent its first `info` (0.5 s after the script), and "
            "`activedefrag no` after the second `info`. Changed from Redis 7's defaults and why: "
            "cycle-min/max 25/75 instead of 1/25 are the defaults of Redis 4.0.2, which the "
            "paper ran, and let a scan of the whole keyspace finish within the script; "
            "ignore-bytes 10 MiB instead of 100 MiB lets the defragmenter start on a heap that "
            "meshing has already brought below 100 MiB of fragmentation (jemalloc's rows get the "
            "same settings); threshold-lower (10%) and threshold-upper (100%) are Redis's defaults.")


def section(res: R.MatrixResult, mark: float) -> tuple[list[str], list[str]]:
    """The compaction table and its paragraph, and the notes it supports."""
    c = costs(res)
    if not any(al in c for al in ROWS):
        return [], []
    figs = (res.config.get("figures") or {}).get("redis") or {}
    nomesh = c.get("mesh-nomesh")
    out = ["", "Compaction: what active defragmentation and meshing bought at "
           f"{mark:g} s and what they cost in CPU over the whole run (mean ± sd per run). "
           "Defrag CPU is the defragmenter's own (INFO active_defrag_cpu_us: CPU time of each "
           "defrag cycle, counted by our patch, including the allocator statistics it reads); "
           "meshing is the time of libmesh's mesh passes (MESH_EVENTS); process CPU is the "
           "server's user + system time. Compaction has until the mark from the end of the "
           "script (the populates take longer on a busy machine), so that column is given "
           "too; the last is the footprint when the final INFO was read, just before SIGTERM.",
           "",
           f"| allocator | script ended at (s) | footprint at {mark:g} s (MiB) | / mesh-nomesh | "
           "/ same without defrag | defrag CPU (s) | objects moved | hint said stay | "
           "meshing (s) | compaction CPU (s) | process CPU (s) | footprint at the end (MiB) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for al, k in c.items():
        base = c.get(redis_fig.DEFRAG_ROWS.get(al, ""))
        defrag = al in redis_fig.DEFRAG_ROWS
        out.append(f"| {al} | {fmt(k.script_end_s, digits=2)} | {fmt(k.at_mark, 1 / MIB, 1)} | "
                   f"{fmt(_ratio(k, nomesh, 'at_mark'))} | "
                   f"{fmt(_ratio(k, base, 'at_mark')) if base else ''} | "
                   f"{fmt(k.defrag_cpu_s, digits=3) if defrag else '-'} | "
                   f"{fmt(k.moved, digits=0) if defrag else '-'} | "
                   f"{fmt(k.misses, digits=0) if defrag else '-'} | "
                   f"{fmt(k.mesh_s, digits=3) if k.mesh_s and k.mesh_s.mean else '-'} | "
                   f"{fmt(k.compact_s, digits=3) if k.compact_s and k.compact_s.mean else '-'} | "
                   f"{fmt(k.cpu_s, digits=2)} | {fmt(k.at_end, 1 / MIB, 1)} |")
    settings = _settings(figs)
    if settings:
        out += ["", settings]
    notes = []
    md, jd = c.get("mesh-activedefrag"), c.get("jemalloc-activedefrag")
    for t in targets(res):
        if t.met is False:
            notes.append(f"**Missed:** {t.what}: {fmt(t.ours)}, bound {t.bound}"
                         + (f" ({t.detail})" if t.detail else "") + ".")
    if md and jd and md.compact_s and jd.defrag_cpu_s:
        notes.append(f"Compaction CPU: jemalloc's active defrag took {jd.defrag_cpu_s.mean:.2f} s "
                     f"(the paper: 1.49 s); Mesh + active defrag {md.compact_s.mean:.2f} s, of which "
                     f"defrag {md.defrag_cpu_s.mean:.2f} s and meshing {md.mesh_s.mean:.2f} s (the "
                     f"paper's meshing alone: 0.23 s); moved objects: {md.moved.mean:.0f} against "
                     f"jemalloc's {jd.moved.mean:.0f}. Defrag CPU is thread CPU time; meshing is "
                     "the wall time of the mesh passes, which on a busy machine includes time the "
                     "thread waited for a core.")
    jo = c.get("jemalloc-activedefrag")
    if jo and jo.at_end and jo.at_mark and jo.at_end.mean < jo.at_mark.mean - 5 * MIB:
        notes.append(f"jemalloc gives back what its defragmenter frees late: its footprint was "
                     f"{jo.at_mark.mean / MIB:.1f} MiB at {mark:g} s and {jo.at_end.mean / MIB:.1f} MiB "
                     "at the end. jemalloc 5 returns freed pages by decay (dirty_decay_ms, 10 s by "
                     "default, as Redis 7.0 leaves it), where Redis 4.0's jemalloc 4 purged at once.")
    load = (figs.get("loadavg") or {}).get("start")
    if load and load[0] > 2.0:
        notes.append(f"The machine was busy while this figure was measured (load average "
                     f"{load[0]:.1f} at the start on 2 cores, other jobs running): the populates "
                     "ended later and compaction got less of a core before the mark, so the numbers "
                     "at 7.5 s spread widely with when each run's script ended (the table above).")
    return out, notes


def servers_words(figs: dict) -> str:
    if (figs.get("servers") or {}).get("source_build"):
        v = figs.get("versions") or {}
        return (f"`redis-server` built from Debian's source of the installed version "
                f"({v.get('built_from')}) with `{v.get('patch')}`: with Redis's bundled jemalloc "
                "for the jemalloc rows, on the system malloc for the rest (glibc's own, or the "
                "allocator preloaded),")
    return "Debian's `redis-server`"


def refusals(figs: dict) -> list[str]:
    """Active-defrag rows the server refused (older results: one reply)."""
    sup, reply = figs.get("activedefrag_supported"), figs.get("activedefrag_reply")
    if sup is False:
        return ["jemalloc with active defragmentation could not be run: Debian's redis-server "
                f"answers `config set activedefrag yes` with \"{reply}\". The paper's comparison "
                "with active defrag is therefore missing, not matched."]
    if isinstance(sup, dict):
        return [f"{name} could not be run: the server answers `config set activedefrag yes` with "
                f"\"{(reply or {}).get(name)}\"." for name, ok in sup.items() if ok is False]
    return []


def redis_differs(figs: dict) -> str:
    v = figs.get("versions") or {}
    if v.get("built_jemalloc"):
        jem = v["built_jemalloc"].split("malloc=")[-1].split(" ")[0]
        return (f"Redis differs: {v['built_jemalloc'].split(' sha')[0]} (the paper: 4.0.2); the "
                f"jemalloc rows use the jemalloc Redis 7.0 ships ({jem}), as the paper's used "
                "Redis 4.0's. Redis 7 evicts in time-bounded steps "
                "(maxmemory-eviction-tenacity) and goes on evicting between commands, where 4.0 "
                "evicted all at once before the next command.")
    return (f"Redis differs: {(v.get('redis_server') or '?').split(' sha')[0]} "
            "(the paper: 4.0.2 built with its bundled jemalloc); its jemalloc is Debian's "
            "libjemalloc2, linked, not the patched copy Redis ships. Redis 7 evicts in "
            "time-bounded steps (maxmemory-eviction-tenacity) and goes on evicting between "
            "commands, where 4.0 evicted all at once before the next command.")


def provenance(figs: dict, res: R.MatrixResult) -> str:
    """When this figure was measured, if apart from the rest of the document."""
    if not figs.get("created") or figs.get("created") == res.created:
        return ""
    lib = (figs.get("libmesh") or {}).get("version") or "?"
    load = (figs.get("loadavg") or {}).get("start")
    return (f" This figure was measured on its own, {figs['created']} ({figs.get('trials')} trials, "
            f"allocators interleaved; harness commit {figs.get('commit')}, libmesh {lib}"
            + (f"; load average {load[0]:.1f} at the start" if load else "")
            + ") and merged into this document (`/usr/bin/python3 -m harness paper merge`).")
