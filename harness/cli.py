"""Command line: /usr/bin/python3 -m harness {list,run,trace,plot,report,bench,paper}."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
from typing import Optional

from . import __version__
from . import allocators as A
from . import flags
from . import packages
from . import report
from . import results as R
from . import runner
from . import workloads as W
from .paper import cli as paper_cli
from .sampler import CgroupError, CgroupHierarchy, Sample, machine_info

RESULTS_DIR = os.path.join(A.REPO_ROOT, "results")
PLOTS_DIR = os.path.join(A.REPO_ROOT, "plots")
LATEST = os.path.join(RESULTS_DIR, "latest.json")

# Default matrix of `bench` (see the time accounting in harness/README.md).
BENCH_TRIALS = 3
BENCH_TIMING_RUNS = 3
BENCH_TIMING_WARMUP = 0
BENCH_TIMEOUT_S = 120.0
BENCH_FULL_TIMEOUT_S = 3600.0


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _csv(s: str) -> list[str]:
    return [x for x in (p.strip() for p in s.split(",")) if x]


def _hierarchy(args) -> Optional[CgroupHierarchy]:
    if getattr(args, "no_cgroup", False):
        return None
    h = CgroupHierarchy.discover()
    if h is not None:
        h.remove_stale()
    return h


def _allocators(args, names: Optional[list[str]], skip_missing: bool) -> tuple[list[A.Allocator], dict]:
    reg = A.registry(args.alloc or [])
    if not names:
        names = list(reg)
    chosen, skipped = [], {}
    for n in names:
        if n not in reg:
            raise SystemExit(f"harness: unknown allocator {n!r}; known: {', '.join(reg)} "
                             "(add others with --alloc NAME=/path/lib.so)")
        why = reg[n].missing()
        if why:
            if not skip_missing:
                raise SystemExit(f"harness: {why}\n(or leave it out, or pass --skip-missing)")
            print(f"harness: skipping {why}", file=sys.stderr)
            skipped[n] = why
            continue
        chosen.append(reg[n])
    return chosen, skipped


def _workloads(args) -> list[W.Workload]:
    try:
        ws = W.select(_csv(args.workloads) if args.workloads else None)
    except W.UnknownWorkload as e:
        raise SystemExit(f"harness: {e.args[0]}")
    problems = [p for p in (w.missing(args.workload_dir) for w in ws) if p]
    if problems:
        raise SystemExit("harness: " + "\nharness: ".join(problems))
    return ws


def cmd_list(args) -> int:
    reg = A.registry(args.alloc or [])
    print("allocators:")
    for a in reg.values():
        info = A.describe(a)
        state = "ok" if info.exists else "MISSING"
        env = " ".join(f"{k}={v}" for k, v in a.env.items())
        print(f"  {a.name:<12} {state:<7} {info.version or '-':<24} "
              f"build-id {(info.build_id or '-')[:16]:<16} {a.library or '(no preload)'}"
              + (f" {env}" if env else ""))
    print("workloads:")
    for w in W.CATALOG.values():
        state = "ok" if not w.missing(args.workload_dir) else "MISSING"
        kind = "throughput" if w.throughput else "memory"
        full = " ".join([*w.args, f"--scale {w.paper_scale:g}", *w.paper_args])
        print(f"  {w.name:<16} {state:<7} {kind:<10} {w.description}\n"
              f"  {'':<16} --full: {full}")
    h = CgroupHierarchy.discover()
    print("memory measured by: " + (f"cgroup v{h.version} under {h.base}" if h else
                                     "PSS fallback (no writable memory cgroup)"))
    return 0


def _matrix_config(args, ws, allocs, skipped, timeout: float) -> runner.MatrixConfig:
    return runner.MatrixConfig(
        workloads=ws, allocators=allocs, trials=args.trials, scale=args.scale, full=args.full,
        seed=args.seed, order_seed=args.order_seed, hz=args.hz, pss_budget=args.pss_budget,
        timeout=timeout, timing=args.timing, timing_runs=args.timing_runs,
        timing_warmup=args.timing_warmup, workload_dir=args.workload_dir, skipped=skipped)


def _finish(res: R.MatrixResult, results_dir: str) -> tuple[str, int]:
    path = R.save(res, results_dir, update_latest=res.complete)
    print(report.ratio_table(res))
    bad = R.checksum_mismatches(res)
    for b in bad:
        print(f"CHECKSUM MISMATCH: {b}")
    failed = [r for r in res.runs if r.status not in ("ok", "skipped")]
    for r in failed:
        print(f"FAILED: {r.workload} / {r.allocator} trial {r.trial}: {r.status}: {r.error}")
        if r.stderr_tail.strip():
            print("  stderr: " + r.stderr_tail.strip().splitlines()[-1][:300])
    print(f"results: {path}" + ("" if res.complete else "  (interrupted: latest.json not updated)"))
    rc = 0 if res.complete and not failed and not bad else 1
    if not res.complete:
        rc = 130
    return path, rc


def cmd_run(args) -> int:
    ws = _workloads(args)
    allocs, skipped = _allocators(args, _csv(args.allocators) if args.allocators else None,
                                  args.skip_missing)
    if not allocs:
        raise SystemExit("harness: no allocator to run")
    timeout = args.timeout or (BENCH_FULL_TIMEOUT_S if args.full else BENCH_TIMEOUT_S)
    cfg = _matrix_config(args, ws, allocs, skipped, timeout)
    res = runner.run_matrix(cfg, _hierarchy(args), args.results_dir, machine_info(),
                            argv=sys.argv)
    _, rc = _finish(res, args.results_dir)
    return rc


def _trace_summary(m: runner.Measurement) -> dict:
    run = R.Run(workload="", allocator="", trial=0, seed=0, scale=0.0, argv=m.argv,
                status="ok", memory=m.series)
    s = R.summarize(run)
    if m.start_error:
        code = None
    else:
        code = m.exit_code
    return {
        "command": m.argv, "method": m.method, "exit_code": code,
        "timed_out": m.timed_out, "error": m.start_error,
        "wall_s": m.wall_s, "user_s": m.user_s, "sys_s": m.sys_s,
        "peak_footprint_bytes": s.peak_footprint,
        "mean_footprint_bytes": round(s.mean_footprint) if s.mean_footprint is not None else None,
        "final_footprint_bytes": s.final_footprint,
        "peak_usage_bytes": s.peak_usage,
        "peak_pss_bytes": s.peak_pss, "peak_rss_bytes": s.peak_rss,
        "mean_pss_bytes": round(s.mean_pss) if s.mean_pss is not None else None,
        "mean_rss_bytes": round(s.mean_rss) if s.mean_rss is not None else None,
        "maxrss_bytes": m.maxrss_bytes, "samples": s.samples, "pss_samples": m.pss_reads,
    }


def cmd_trace(args) -> int:
    cmd = args.command
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise SystemExit("harness trace: give a command after --")
    env = dict(os.environ)
    if args.allocator:
        allocs, _ = _allocators(args, [args.allocator], skip_missing=False)
        env.update(allocs[0].child_env())
    tsv = open(args.tsv, "w", encoding="utf-8") if args.tsv else None
    cols = R.MEMORY_COLUMNS

    def on_sample(s: Sample) -> None:
        vals = [getattr(s, c) for c in cols]
        tsv.write("\t".join("" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
                            for v in vals) + "\n")
    if tsv:
        tsv.write("\t".join(cols) + "\n")
    try:
        m = runner.measure(cmd, env, _hierarchy(args), hz=args.hz, pss_budget=args.pss_budget,
                           timeout=args.timeout, stdout=None, stderr=None, stdin=None,
                           new_session=False, tag="trace",
                           on_sample=on_sample if tsv else None)
    finally:
        if tsv:
            tsv.close()
    print(json.dumps(_trace_summary(m)), flush=True)
    if m.start_error:
        return 127
    if m.exit_code is None:
        return 1
    return m.exit_code if m.exit_code >= 0 else 128 - m.exit_code


def _load(path: str) -> R.MatrixResult:
    try:
        return R.load(path)
    except FileNotFoundError:
        raise SystemExit(f"harness: {path} does not exist (run `make bench` or "
                         "`/usr/bin/python3 -m harness run` first)")
    except R.SchemaError as e:
        raise SystemExit(f"harness: {e}")


def committed_matrix(results_dir: str) -> Optional[tuple[str, R.MatrixResult]]:
    """The default matrix's runs from the newest compacted document in RESULTS_DIR
    (the paper run's results/paper.json holds one): what `plot` draws on a fresh
    clone, where the full documents `bench` writes are not committed."""
    best = None
    for name in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        path = os.path.join(results_dir, name)
        if not name.endswith(".json") or os.path.islink(path):
            continue
        try:
            res = R.load(path)
        except (OSError, R.SchemaError):
            continue
        runs = [r for r in res.runs if r.workload in W.CATALOG]
        if not res.config.get("compacted") or not runs:
            continue
        if best is None or res.created > best[1].created:
            best = (path, _matrix_only(res, runs))
    return best


def _matrix_only(res: R.MatrixResult, runs: list) -> R.MatrixResult:
    """The document cut down to the matrix's runs, with the matrix's own
    config (the paper run records it under figures), so that the figures'
    workloads and allocators leave no empty groups or bars in the plots."""
    ran = {r.allocator for r in runs}
    config = dict((res.config.get("figures") or {}).get("matrix") or res.config)
    config["workloads"] = [w for w in config.get("workloads") or [] if w in W.CATALOG]
    config["allocators"] = [a for a in config.get("allocators") or [] if a in ran]
    return dataclasses.replace(res, runs=runs, config=config,
                               timings=[t for t in res.timings if t.workload in W.CATALOG],
                               allocators={n: d for n, d in res.allocators.items() if n in ran})


def cmd_plot(args) -> int:
    from . import plots   # matplotlib only when plotting
    if args.results == LATEST and not os.path.exists(LATEST):
        found = committed_matrix(RESULTS_DIR)
        if found is None:
            _load(LATEST)   # the message that says how to make one
        path, res = found
        print(f"harness: no {os.path.relpath(LATEST, A.REPO_ROOT)} (`make bench` writes it); "
              f"drawing the default matrix of {os.path.relpath(path, A.REPO_ROOT)} "
              f"(created {res.created})", file=sys.stderr)
    else:
        res = _load(args.results)
    paths = plots.plot_all(res, args.plots_dir, baseline=args.baseline)
    for p in paths:
        print(p)
    if not paths:
        print("harness: nothing to plot (no successful runs)", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    res = _load(args.results)
    print(report.ratio_table(res))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report.markdown(res))
        print(f"wrote {args.out}")
    return 0


def cmd_bench(args) -> int:
    if not args.no_install:
        out = packages.ensure(packages.wanted())
        print(f"harness: {out.message}", file=sys.stderr)
        if not out.ok:
            return 2
    ws = _workloads(args)
    allocs, skipped = _allocators(args, _csv(args.allocators) if args.allocators else None,
                                  skip_missing=True)
    if not allocs:
        raise SystemExit("harness: no allocator to run")
    timeout = args.timeout or (BENCH_FULL_TIMEOUT_S if args.full else BENCH_TIMEOUT_S)
    cfg = _matrix_config(args, ws, allocs, skipped, timeout)
    print(f"harness: bench: {len(ws)} workloads x {len(allocs)} allocators x {cfg.trials} trials "
          f"({'paper scale' if cfg.full else f'scale {cfg.scale:g}'}), hyperfine "
          f"{cfg.timing_runs} runs for {cfg.timing} workloads", file=sys.stderr)
    res = runner.run_matrix(cfg, _hierarchy(args), args.results_dir, machine_info(),
                            argv=sys.argv)
    path, rc = _finish(res, args.results_dir)
    if res.runs and rc != 130:
        from . import plots
        for p in plots.plot_all(res, args.plots_dir):
            if p.endswith(".png"):
                print(f"plot: {p}")
    print(f"bench took {res.duration_s:.0f} s")
    return rc


def _add_matrix_args(p: argparse.ArgumentParser, trials: int, timing_runs: int,
                     timing_warmup: int) -> None:
    p.add_argument("--workloads", help="comma-separated workload names (default: all)")
    p.add_argument("--allocators", help="comma-separated allocator names (default: all)")
    p.add_argument("--trials", type=int, default=trials, help=f"trials per pair (default {trials})")
    p.add_argument("--scale", type=float, default=1.0,
                   help="--scale passed to every workload (default 1: a few seconds each)")
    p.add_argument("--full", action="store_true",
                   help="paper-sized runs: each workload at its documented paper scale and "
                        "flags (see `list`); overrides --scale")
    p.add_argument("--seed", type=int, default=1, help="seed of trial 1; trial k uses seed+k-1")
    p.add_argument("--order-seed", type=int, default=1, help="seed of the per-trial shuffle")
    p.add_argument("--timeout", type=float, default=None,
                   help=f"seconds per run (default {BENCH_TIMEOUT_S:g}, "
                        f"{BENCH_FULL_TIMEOUT_S:g} with --full)")
    p.add_argument("--timing", choices=("none", "throughput", "all"), default="throughput",
                   help="which workloads also get hyperfine timing runs (default throughput)")
    p.add_argument("--timing-runs", type=int, default=timing_runs,
                   help=f"hyperfine runs per allocator (default {timing_runs})")
    p.add_argument("--timing-warmup", type=int, default=timing_warmup,
                   help=f"hyperfine warm-up runs (default {timing_warmup})")
    p.add_argument("--results-dir", default=RESULTS_DIR, help="where results go (default results/)")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--alloc", action="append", metavar="NAME=/path/lib.so[:ENV=VAL...]",
                   help="add (or replace) an allocator; repeatable")
    p.add_argument("--workload-dir", default=W.WORKLOAD_DIR, help=argparse.SUPPRESS)


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hz", type=float, default=100.0, help="samples per second (default 100)")
    p.add_argument("--pss-budget", type=float, default=0.02,
                   help="fraction of a core PSS reads may cost (default 0.02); see README")
    p.add_argument("--no-cgroup", action="store_true",
                   help="do not make a memory cgroup; measure PSS only (marked \"pss\")")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="/usr/bin/python3 -m harness",
        description="Run workloads under allocators, measure physical memory honestly "
                    "(memory cgroup footprint), time them, plot them.")
    ap.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="allocators and workloads, and whether they are present")
    _add_common(p)
    p.set_defaults(fn=cmd_list)

    p = sub.add_parser("run", help="run a matrix of workloads x allocators x trials")
    _add_common(p)
    _add_matrix_args(p, trials=3, timing_runs=5, timing_warmup=1)
    _add_sampling(p)
    p.add_argument("--skip-missing", action="store_true",
                   help="leave out allocators whose library is missing instead of stopping")
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("trace", help="measure any command; prints a JSON summary as its last line",
                       description="Run CMD in its own memory cgroup, sample it, and print a JSON "
                                   "summary as the last line. Exits with CMD's status.")
    _add_common(p)
    _add_sampling(p)
    p.add_argument("--allocator", help="preload this allocator (a name from `list`)")
    p.add_argument("--tsv", help="write every sample to this file (tab-separated, bytes)")
    p.add_argument("--timeout", type=float, default=None, help="kill CMD after this many seconds")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    p.set_defaults(fn=cmd_trace)

    p = sub.add_parser("plot", help="draw the plots of a results file")
    flags.file_flag(p, "--results", "results",
                    "the results to plot (default results/latest.json, or without one the "
                    "default matrix of the newest compacted document in results/)",
                    default=LATEST)
    p.add_argument("--plots-dir", default=PLOTS_DIR, metavar="DIR",
                   help="directory for PNG and SVG (default plots/)")
    flags.hidden_alias(p, "--out", "plots_dir")
    p.add_argument("--baseline", default="glibc", help="allocator to normalise to (default glibc)")
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("report", help="print the ratio table of a results file")
    flags.file_flag(p, "--results", "results", "the results to read (default results/latest.json)",
                    default=LATEST)
    p.add_argument("--out", metavar="FILE", help="also write a Markdown report to this file")
    flags.hidden_alias(p, "--markdown", "out")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("bench", help="what `make bench` does: packages, default matrix, results, plots, table")
    _add_common(p)
    _add_matrix_args(p, trials=BENCH_TRIALS, timing_runs=BENCH_TIMING_RUNS,
                     timing_warmup=BENCH_TIMING_WARMUP)
    _add_sampling(p)
    p.add_argument("--plots-dir", default=PLOTS_DIR, metavar="DIR",
                   help="directory for plots (default plots/)")
    p.add_argument("--no-install", action="store_true",
                   help="do not check or install Debian packages")
    p.set_defaults(fn=cmd_bench)

    paper_cli.add_parser(sub)
    return ap


def main(argv: Optional[list] = None) -> int:
    ap = parser()
    args = flags.resolve(ap, ap.parse_args(argv))
    # SIGTERM cleans up like Ctrl-C: the child is killed and its cgroup removed.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return args.fn(args)
    except CgroupError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130
