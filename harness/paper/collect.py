"""Running every figure into one results document.

  redis    Figure 7: redis_fig.run_redis for each allocator, trial by trial,
           the order shuffled within each trial (seeded)
  ruby     Figure 8: the harness's matrix runner on ruby_fig.RUBY
  browser  Figure 6: browser-like at its paper scale (10), jemalloc and mesh;
           its runs are named "browser-like-paper" to keep them apart from
           the matrix's scale-1 runs
  matrix   the synthetic and throughput workloads: the harness's default
           matrix (every workload, every allocator, scale 1, hyperfine for
           the throughput workloads)
  webkit   Figure 6 on a real browser engine: webkit_fig.run_webkit for each
           allocator, trial by trial, the order shuffled within each trial
  redis-latency
           redis-benchmark against Figure 7's fragmented redis-server
           (redis_latency.run_latency), the allocator order rotated per trial

The document is the harness's schema (harness/results.py); its config says
what each figure ran ("figures"), including what each allocator name meant
for redis-server, whose jemalloc is linked rather than preloaded.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Iterator, Optional, TextIO

from .. import allocators as A
from .. import results as R
from .. import runner
from .. import workloads as W
from ..sampler import CgroupHierarchy, machine_info
from . import redis_build, redis_fig, redis_latency, ruby_fig, webkit_fig

FIGURES = ("redis", "ruby", "browser", "matrix", "webkit", "redis-latency")
BROWSER_RUN_NAME = "browser-like-paper"


@dataclass
class PaperConfig:
    trials: int = 3
    figures: tuple = FIGURES
    redis_script: redis_fig.RedisScript = redis_fig.PAPER_SCRIPT
    redis_allocators: tuple = redis_fig.ALLOCATORS
    ruby_allocators: tuple = ruby_fig.ALLOCATORS
    ruby_scale: float = 1.0
    ruby_args: tuple = ()
    # mesh-nomesh too: it separates meshing from the rest of libmesh
    browser_allocators: tuple = ("jemalloc", "mesh", "mesh-nomesh")
    browser_scale: float = W.CATALOG["browser-like"].paper_scale
    browser_args: tuple = ()
    webkit_allocators: tuple = webkit_fig.ALLOCATORS
    webkit_iterations: int = 12        # every suite this many times in a run
    webkit_settle_s: float = 5.0       # the idle page kept open after the run
    webkit_suites: str = ""            # all of them
    latency_allocators: tuple = redis_latency.ALLOCATORS
    latency_bench: redis_latency.LatencyBench = redis_latency.PAPER_BENCH
    matrix_workloads: tuple = tuple(W.CATALOG)
    matrix_allocators: tuple = tuple(A.builtin_allocators())
    matrix_scale: float = 1.0
    timing_runs: int = 3
    seed: int = 1
    order_seed: int = 1
    hz: float = 100.0
    pss_budget: float = 0.02
    timeout: float = 600.0
    extra: dict = field(default_factory=dict)


def snapshot_mesh(scratch: str) -> tuple[dict, dict]:
    """Copy libmesh.so aside so that every run uses one build even if the
    library is rebuilt meanwhile; returns (name -> Allocator using the copy,
    what the copy is)."""
    snap = os.path.join(scratch, "libmesh.so")
    shutil.copy2(A.MESH_LIBRARY, snap)
    info = {"source": A.MESH_LIBRARY, "snapshot": snap, "build_id": A.gnu_build_id(snap),
            "version": A.git_describe(A.MESH_LIBRARY)}
    reg = A.registry()
    return {n: replace(a, library=snap) for n, a in reg.items() if a.is_mesh}, info


def _describe(a: A.Allocator, mesh_info: dict) -> dict:
    d = asdict(A.describe(a))
    if a.is_mesh:
        # The copy is gone by now: name the library it was taken from.
        d.update(version=mesh_info["version"], version_source="git", exists=True,
                 build_id=mesh_info["build_id"], library=mesh_info["source"],
                 preload=mesh_info["source"],
                 note=f"a copy of {os.path.relpath(mesh_info['source'], A.REPO_ROOT)} "
                      "taken when the runs began")
    return d


def _progress(stream: TextIO, text: str) -> None:
    stream.write(text + "\n")
    stream.flush()


def _interleaved(label: str, names: list, cfg: PaperConfig, stream: TextIO,
                 order_of: Optional[Callable[[list, int], list]] = None
                 ) -> Iterator[tuple[int, str]]:
    """(trial, allocator) for every trial of every allocator, each announced
    on stream. The allocators run in a fresh random order each trial (so that
    none always runs after the same one), or in order_of(names, trial)."""
    total = len(names) * cfg.trials
    done = 0
    for trial in range(1, cfg.trials + 1):
        order = list(names)
        if order_of is not None:
            order = order_of(order, trial)
        else:
            random.Random(cfg.order_seed * 1000 + trial).shuffle(order)
        for name in order:
            done += 1
            stream.write(f"[{label} {done}/{total}] trial {trial} {name} ... ")
            stream.flush()
            yield trial, name


def _ran(stream: TextIO, run: R.Run, start: float, ok_words: Callable[[dict], str]) -> None:
    """The end of a run's progress line: what it measured, or why it failed."""
    what = ok_words(run.result) if run.ok else f"{run.status.upper()}: {run.error}"
    _progress(stream, f"{what}  | {time.monotonic() - start:.0f} s")


def _redis_info(names: tuple, allocs: dict, mesh_info: dict,
                servers: redis_fig.Servers) -> dict:
    info = {}
    jem = redis_fig.linked_jemalloc()
    for name in names:
        a = allocs[name]
        if servers.built is not None and a.library is None:
            d = asdict(A.describe(a))
            d["server"] = servers.of(name)
            d["version"] = redis_fig.version_line(servers.of(name))
            d["version_source"] = "redis-server --version"
        elif a.library is None and jem:
            d = asdict(A.describe(replace(a, library=jem)))
            d["preload"] = None
            d["library"] = jem
            d["note"] = "linked into redis-server, not preloaded"
        else:
            d = _describe(a, mesh_info)
        info[name] = d
    return info


def _servers_info(servers: redis_fig.Servers, build_error: Optional[str]) -> dict:
    """Which redis-server each row ran, for a figure's config."""
    return {"source_build": servers.built is not None, "jemalloc_rows": servers.jemalloc,
            "other_rows": servers.libc, "build_error": build_error}


def redis_servers(stream: TextIO) -> tuple[redis_fig.Servers, Optional[str]]:
    """The source builds (made now if missing), or Debian's redis-server for
    every row with the reason there is no build."""
    try:
        return redis_fig.built_servers(redis_build.ensure(stream)), None
    except (redis_build.BuildError, OSError, subprocess.SubprocessError) as e:
        _progress(stream, f"redis: no source build ({e}); Debian's redis-server runs every row")
        return redis_fig.DEBIAN_SERVERS, str(e)


def collect_redis(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch: str,
                  stream: TextIO, mesh: dict, mesh_info: dict,
                  servers: Optional[redis_fig.Servers] = None) -> tuple[list, dict]:
    build_error = None
    if servers is None:
        servers, build_error = redis_servers(stream)
    allocs = redis_fig.redis_allocators(servers, mesh)
    names = list(cfg.redis_allocators)
    runs = []
    probes: dict = {}
    for name in [n for n in names if n in redis_fig.DEFRAG_ROWS]:
        a, server = allocs[name], servers.of(name)
        key = (server, a.library)
        if key not in probes:
            probes[key] = redis_fig.probe_activedefrag(server, a.child_env())
        ok, reply = probes[key]
        if ok:
            continue
        names.remove(name)
        why = f"{os.path.basename(server)} refuses it: {reply}"
        if build_error:
            why += f" (no source build: {build_error})"
        runs.append(R.Run(workload=redis_fig.WORKLOAD, allocator=name, trial=0,
                          seed=0, scale=1.0, argv=["config", "set", "activedefrag", "yes"],
                          status="skipped", error=why))
        _progress(stream, f"redis: {name} skipped: {why}")
    supported = {n: probes[(servers.of(n), allocs[n].library)][0]
                 for n in cfg.redis_allocators if n in redis_fig.DEFRAG_ROWS}
    start = time.monotonic()
    for trial, name in _interleaved("redis", names, cfg, stream):
        r = redis_fig.run_redis(name, hierarchy, scratch, trial=trial, script=cfg.redis_script,
                                hz=cfg.hz, pss_budget=cfg.pss_budget, allocators=allocs,
                                servers=servers)
        runs.append(r)
        _ran(stream, r, start, lambda res: (
            f"ok: {res['footprint_at_mark'] / 2**20:.1f} MiB at {cfg.redis_script.mark_s:g} s, "
            f"populate {res['populate_total_s']:.2f} s"))
    replies = {n: probes[(servers.of(n), allocs[n].library)][1]
               for n in cfg.redis_allocators if n in redis_fig.DEFRAG_ROWS}
    config = {"script": cfg.redis_script.describe(),
              "allocators": _redis_info(cfg.redis_allocators, allocs, mesh_info, servers),
              "activedefrag_supported": supported, "activedefrag_reply": replies,
              "defrag_config": dict(redis_fig.DEFRAG_CONFIG),
              "servers": _servers_info(servers, build_error),
              "versions": redis_fig.version(servers), "trials": cfg.trials}
    return runs, config


def collect_latency(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch: str,
                    stream: TextIO, mesh: dict, mesh_info: dict,
                    servers: Optional[redis_fig.Servers] = None) -> tuple[list, dict]:
    """The redis-latency figure on Figure 7's servers, the allocator order
    rotated per trial (redis_latency.rotation)."""
    build_error = None
    if servers is None:
        servers, build_error = redis_servers(stream)
    allocs = redis_fig.redis_allocators(servers, mesh)
    runs = []
    start = time.monotonic()
    for trial, name in _interleaved("redis-latency", list(cfg.latency_allocators), cfg, stream,
                                    order_of=redis_latency.rotation):
        r = redis_latency.run_latency(name, hierarchy, scratch, trial=trial,
                                      bench=cfg.latency_bench, allocators=allocs, servers=servers)
        runs.append(r)
        _ran(stream, r, start, redis_latency.progress_words)
    config = redis_latency.figure_config(cfg.latency_allocators, cfg.trials, cfg.latency_bench)
    config["servers"] = _servers_info(servers, build_error)
    config["versions"] = redis_fig.version(servers)
    config["allocators"] = _redis_info(cfg.latency_allocators, allocs, mesh_info, servers)
    return runs, config


def collect_webkit(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch: str,
                   stream: TextIO, mesh: dict, mesh_info: dict) -> tuple[list, dict]:
    allocs = webkit_fig.webkit_allocators(mesh)
    names = list(cfg.webkit_allocators)
    webkit_fig.build_pages()
    why = webkit_fig.missing() or next((allocs[n].missing() for n in names if allocs[n].missing()),
                                       None)
    if why:
        raise SystemExit(f"harness paper: webkit: {why}")
    runs = []
    start = time.monotonic()
    with webkit_fig.serve() as port:
        for trial, name in _interleaved("webkit", names, cfg, stream):
            with webkit_fig.xvfb() as display:
                r = webkit_fig.run_webkit(name, hierarchy, scratch, trial=trial, port=port,
                                          display=display, iterations=cfg.webkit_iterations,
                                          settle_s=cfg.webkit_settle_s, hz=cfg.hz,
                                          pss_budget=cfg.pss_budget, allocators=allocs,
                                          suites=cfg.webkit_suites)
            runs.append(r)
            _ran(stream, r, start, lambda res: (
                f"ok: score {res['score']:.1f}, mean {res['mean_run'] / 2**20:.0f} MiB, "
                f"settled {res['settled'] / 2**20:.0f} MiB"))
    info = {}
    for name in names:
        a = allocs[name]
        d = _describe(a, mesh_info) if a.is_mesh else asdict(A.describe(a))
        d["env"] = dict(a.env)
        d["description"] = a.description
        info[name] = d
    config = {"allocators": info, "iterations": cfg.webkit_iterations,
              "settle_s": cfg.webkit_settle_s, "suites": cfg.webkit_suites or "all",
              "versions": webkit_fig.version(), "trials": cfg.trials}
    return runs, config


def _matrix(workloads: list, allocator_names: tuple, cfg: PaperConfig, scale: float, timing: str,
            hierarchy, scratch: str, stream: TextIO, mesh: dict,
            full: bool = False) -> R.MatrixResult:
    """The harness's matrix runner; full=True runs each workload at its
    paper_scale with its paper_args (the figures set both)."""
    reg = {**A.registry(), **mesh}
    allocs = [reg[n] for n in allocator_names]
    missing = [a.missing() for a in allocs if a.missing()]
    if missing:
        raise SystemExit("harness paper: " + "; ".join(missing))
    mc = runner.MatrixConfig(workloads=workloads, allocators=allocs, trials=cfg.trials,
                             scale=scale, full=full, seed=cfg.seed, order_seed=cfg.order_seed,
                             hz=cfg.hz, pss_budget=cfg.pss_budget, timeout=cfg.timeout,
                             timing=timing, timing_runs=cfg.timing_runs, timing_warmup=0)
    return runner.run_matrix(mc, hierarchy, scratch, machine_info(), stream=stream)


def collect_ruby(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch: str,
                 stream: TextIO, mesh: dict) -> tuple[list, dict]:
    """Figure 8: Debian's ruby running the script, through the ordinary runner."""
    extra = tuple(cfg.ruby_args)
    ruby = replace(ruby_fig.RUBY, paper_scale=cfg.ruby_scale, paper_args=extra)
    m = _matrix([ruby], cfg.ruby_allocators, cfg, cfg.ruby_scale, "none",
                hierarchy, scratch, stream, mesh, full=True)
    config = {"script": os.path.relpath(ruby_fig.SCRIPT, A.REPO_ROOT),
              "argv_example": ruby_fig.RUBY.argv(cfg.seed, cfg.ruby_scale, None, extra=extra),
              "ruby": ruby_fig.version(), "scale": cfg.ruby_scale,
              "trials": cfg.trials, "complete": m.complete}
    return m.runs, config


def collect_browser(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch: str,
                    stream: TextIO, mesh: dict) -> tuple[list, dict]:
    """Figure 6's stand-in: browser-like at its paper scale, its runs named apart
    from the matrix's browser-like runs."""
    browser = replace(W.CATALOG["browser-like"], paper_scale=cfg.browser_scale,
                      paper_args=tuple(cfg.browser_args))
    m = _matrix([browser], cfg.browser_allocators, cfg, cfg.browser_scale, "none",
                hierarchy, scratch, stream, mesh, full=True)
    for r in m.runs:
        r.workload = BROWSER_RUN_NAME
    config = {"workload": "browser-like", "scale": cfg.browser_scale,
              "runs_named": BROWSER_RUN_NAME, "trials": cfg.trials, "complete": m.complete}
    return m.runs, config


def collect(cfg: PaperConfig, hierarchy: Optional[CgroupHierarchy], scratch_parent: str,
            stream: TextIO = sys.stderr, argv: Optional[list] = None) -> R.MatrixResult:
    """Run the chosen figures; returns one document (complete=False if interrupted)."""
    start = time.monotonic()
    os.makedirs(scratch_parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".paper-", dir=scratch_parent)
    mesh, mesh_info = snapshot_mesh(scratch)
    reg = {**A.registry(), **mesh}
    res = R.MatrixResult(created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine_info(),
                         commit=runner.git_commit(), config={}, allocators={},
                         harness_argv=list(argv or []))
    figures: dict = {}
    workloads: list = []
    names: list = []
    # Other work on the machine slows runs and adds noise; say how much there was.
    load = {"start": list(os.getloadavg())}
    try:
        if "redis" in cfg.figures:
            runs, figures["redis"] = collect_redis(cfg, hierarchy, scratch, stream, mesh, mesh_info)
            res.runs += runs
            workloads.append(redis_fig.WORKLOAD)
            names += [n for n in cfg.redis_allocators if n not in names]
        if "ruby" in cfg.figures:
            runs, figures["ruby"] = collect_ruby(cfg, hierarchy, scratch, stream, mesh)
            res.runs += runs
            workloads.append(ruby_fig.RUBY.name)
            names += [n for n in cfg.ruby_allocators if n not in names]
            if not figures["ruby"]["complete"]:
                raise KeyboardInterrupt
        if "browser" in cfg.figures:
            runs, figures["browser"] = collect_browser(cfg, hierarchy, scratch, stream, mesh)
            res.runs += runs
            workloads.append(BROWSER_RUN_NAME)
            names += [n for n in cfg.browser_allocators if n not in names]
            if not figures["browser"]["complete"]:
                raise KeyboardInterrupt
        if "webkit" in cfg.figures:
            runs, figures["webkit"] = collect_webkit(cfg, hierarchy, scratch, stream, mesh,
                                                     mesh_info)
            res.runs += runs
            workloads.append(webkit_fig.WORKLOAD)
            names += [n for n in cfg.webkit_allocators if n not in names and n in reg]
        if "redis-latency" in cfg.figures:
            runs, figures["redis-latency"] = collect_latency(cfg, hierarchy, scratch, stream,
                                                             mesh, mesh_info)
            res.runs += runs
            workloads.append(redis_latency.WORKLOAD)
            names += [n for n in cfg.latency_allocators if n not in names]
        if "matrix" in cfg.figures:
            ws = [W.CATALOG[w] for w in cfg.matrix_workloads]
            m = _matrix(ws, cfg.matrix_allocators, cfg, cfg.matrix_scale, "throughput",
                        hierarchy, scratch, stream, mesh)
            res.runs += m.runs
            res.timings += m.timings
            figures["matrix"] = {k: v for k, v in m.config.items()}
            workloads += [w.name for w in ws]
            names += [n for n in cfg.matrix_allocators if n not in names]
            if not m.complete:
                raise KeyboardInterrupt
        res.complete = True
    except KeyboardInterrupt:
        _progress(stream, "\ninterrupted: keeping the runs that finished")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        res.duration_s = time.monotonic() - start
        load["end"] = list(os.getloadavg())
    res.allocators = {n: _describe(reg[n], mesh_info) for n in names if n in reg}
    res.config = {"kind": "paper-figures", "trials": cfg.trials, "figures": figures,
                  "libmesh": {k: v for k, v in mesh_info.items() if k != "snapshot"},
                  "loadavg": load,
                  "workloads": workloads, "allocators": names, "seed": cfg.seed,
                  "order_seed": cfg.order_seed, "hz": cfg.hz, **cfg.extra}
    return res


def merge(base: R.MatrixResult, new: R.MatrixResult) -> R.MatrixResult:
    """base with every figure new measured replaced by new's runs: the runs
    and timings of new's workloads, its figure configs (marked with when,
    from which commit and library they were measured) and allocators."""
    workloads = {r.workload for r in new.runs} | {t.workload for t in new.timings}
    base.runs = [r for r in base.runs if r.workload not in workloads] + list(new.runs)
    base.timings = [t for t in base.timings if t.workload not in workloads] + list(new.timings)
    figs = base.config.setdefault("figures", {})
    for name, fig in (new.config.get("figures") or {}).items():
        figs[name] = {**fig, "created": new.created, "commit": new.commit,
                      "libmesh": new.config.get("libmesh"), "loadavg": new.config.get("loadavg"),
                      "duration_s": new.duration_s}
    base.allocators = {**base.allocators, **new.allocators}
    names = list(base.config.get("allocators") or [])
    base.config["allocators"] = names + [a for a in new.config.get("allocators") or [] if a not in names]
    base.config.setdefault("merged", []).append(
        {"figures": sorted(new.config.get("figures") or {}), "created": new.created,
         "commit": new.commit})
    return base


# A run of every figure in well under a minute: the tests' scale and the
# fixture's. Same code paths, fewer keys, a smaller budget, fewer allocators.
TINY_REDIS = redis_fig.RedisScript(populates=((20000, "asdf", 240), (5000, "asdf", 492)),
                                   maxmemory="3mb", settle_s=0.2, steady_s=0.6,
                                   duration_s=2.5, mark_s=2.0)
# The redis-latency figure on that script: a few thousand requests a test.
TINY_LATENCY = redis_latency.LatencyBench(script=TINY_REDIS, requests=3000, clients=4,
                                          keyspace=50000, test_timeout_s=60)


def tiny_config(trials: int = 2) -> PaperConfig:
    return PaperConfig(
        trials=trials, redis_script=TINY_REDIS, figures=("redis", "ruby", "browser", "matrix"),
        redis_allocators=("jemalloc", "jemalloc-activedefrag", "glibc", "mesh", "mesh-activedefrag",
                          "mesh-nomesh"),
        ruby_allocators=("jemalloc", "glibc", "mesh"), ruby_scale=0.05,
        browser_allocators=("jemalloc", "mesh"), browser_scale=0.05,
        matrix_workloads=("fragmenter", "larson"),
        matrix_allocators=("glibc", "jemalloc", "mesh"), matrix_scale=0.02,
        latency_allocators=("jemalloc", "mesh"), latency_bench=TINY_LATENCY,
        timing_runs=2, timeout=120.0, extra={"tiny": True})
