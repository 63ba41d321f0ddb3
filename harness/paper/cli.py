"""The `paper` commands of the harness: /usr/bin/python3 -m harness paper COMMAND.

  run      measure every figure (about 40 minutes here), save the full
           document under results/paper-raw/ (not for committing), the
           compacted one as results/paper.json, then write the report
  report   paper-figures.md and plots/paper/ from a results document
           (what `make paper` runs; seconds)
  compact  compact a full document into a committable one
  merge    replace the figures a newer run measured (say `run --figures redis-latency`)
           in a results document, keeping the others
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import Optional

from .. import flags
from .. import results as R
from ..allocators import REPO_ROOT
from ..sampler import CgroupHierarchy
from . import collect, compact, redis_build, redis_fig, report

RESULTS_DIR = os.path.join(REPO_ROOT, "results")
DEFAULT_RESULTS = os.path.join(RESULTS_DIR, "paper.json")
DEFAULT_MD = os.path.join(REPO_ROOT, "paper-figures.md")
DEFAULT_PLOTS = os.path.join(REPO_ROOT, "plots", "paper")
# Figure 6 on WebKit measured on its own (`run --figures webkit --name paper-webkit`).
DEFAULT_WEBKIT = os.path.join(RESULTS_DIR, "paper-webkit.json")


def _load_optional(path: Optional[str]) -> Optional[R.MatrixResult]:
    """A results document, or None when path is empty or names no file."""
    if not path or not os.path.exists(path):
        return None
    try:
        return R.load(path)
    except R.SchemaError as e:
        raise SystemExit(f"harness paper: {e}")


def _save_raw(res: R.MatrixResult, raw_dir: str) -> str:
    os.makedirs(raw_dir, exist_ok=True)
    ignore = os.path.join(raw_dir, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w", encoding="utf-8") as f:
            f.write("# Full-resolution paper runs (tens of MB): kept locally, not committed.\n*\n")
    return R.save(res, raw_dir, update_latest=False)


def config_of(args) -> collect.PaperConfig:
    """What `run` measures, from its arguments; SystemExit on a name no
    figure knows."""
    cfg = collect.tiny_config(args.trials) if args.tiny else collect.PaperConfig(trials=args.trials)
    if args.figures:
        wanted = tuple(f.strip() for f in args.figures.split(",") if f.strip())
        bad = [f for f in wanted if f not in collect.FIGURES]
        if bad:
            raise SystemExit(f"harness paper: unknown figure(s) {', '.join(bad)}; "
                             f"known: {', '.join(collect.FIGURES)}")
        cfg.figures = wanted
    if args.webkit_iterations:
        cfg.webkit_iterations = args.webkit_iterations
    if args.redis_allocators:
        cfg.redis_allocators = tuple(a.strip() for a in args.redis_allocators.split(","))
        bad = [a for a in cfg.redis_allocators if a not in redis_fig.ALLOCATORS]
        if bad:
            raise SystemExit(f"harness paper: unknown Figure 7 row(s) {', '.join(bad)}; "
                             f"known: {', '.join(redis_fig.ALLOCATORS)}")
    if args.webkit_allocators:
        cfg.webkit_allocators = tuple(a.strip() for a in args.webkit_allocators.split(","))
    if args.redis_latency_requests:
        cfg.latency_bench = replace(cfg.latency_bench, requests=args.redis_latency_requests)
    if args.redis_latency_allocators:
        cfg.latency_allocators = tuple(a.strip() for a in args.redis_latency_allocators.split(","))
    return cfg


def cmd_run(args) -> int:
    cfg = config_of(args)
    h = None if args.no_cgroup else CgroupHierarchy.discover()
    if h is not None:
        h.remove_stale()
    else:
        print("harness paper: warning: no writable memory cgroup; footprint falls back to PSS",
              file=sys.stderr)
    res = collect.collect(cfg, h, args.results_dir, argv=sys.argv)
    raw = _save_raw(res, os.path.join(args.results_dir, "paper-raw"))
    print(f"full results: {raw}")
    small = compact.compact(res)
    path = R.save(small, args.results_dir, name=args.name, update_latest=False)
    print(f"compacted results: {path} ({os.path.getsize(path) // 1024} KiB)")
    failed = [r for r in res.runs if r.status not in ("ok", "skipped")]
    for r in failed:
        print(f"FAILED: {r.workload} / {r.allocator} trial {r.trial}: {r.status}: {r.error}")
    if not res.complete:
        return 130
    if not args.no_report:
        if tuple(cfg.figures) == ("webkit",):
            # only the WebKit figure: the rest of the report from the main file
            main = _load_optional(DEFAULT_RESULTS)
            if main is None:
                print(f"no {DEFAULT_RESULTS}: report not written")
                return 1 if failed else 0
            report.write(main, DEFAULT_RESULTS, args.out, args.plots_dir, small, path)
        else:
            report.write(small, path, args.out, args.plots_dir, _load_optional(DEFAULT_WEBKIT),
                         DEFAULT_WEBKIT)
        print(f"report: {args.out}")
    return 1 if failed else 0


def cmd_report(args) -> int:
    try:
        res = R.load(args.results)
    except FileNotFoundError:
        raise SystemExit(f"harness paper: {args.results} does not exist "
                         "(run `/usr/bin/python3 -m harness paper run` first)")
    except R.SchemaError as e:
        raise SystemExit(f"harness paper: {e}")
    paths = report.write(res, args.results, args.out, args.plots_dir,
                         _load_optional(args.webkit), args.webkit)
    for p in paths:
        print(p)
    return 0


def cmd_compact(args) -> int:
    res = R.load(args.full)
    out_dir, name = os.path.split(os.path.abspath(args.out))
    path = R.save(compact.compact(res), out_dir, name=os.path.splitext(name)[0],
                  update_latest=False)
    print(f"{path} ({os.path.getsize(path) // 1024} KiB)")
    return 0


def cmd_merge(args) -> int:
    res = collect.merge(R.load(args.base), R.load(args.new))
    out_dir, name = os.path.split(os.path.abspath(args.out))
    path = R.save(res, out_dir, name=os.path.splitext(name)[0], update_latest=False)
    print(path)
    return 0


def cmd_redis_build(args) -> int:
    return redis_build.main()


def add_parser(sub) -> None:
    """The `paper` command and its subcommands, under the harness's subparsers SUB."""
    ap = sub.add_parser("paper", help="reproduce the Mesh paper's figures (run, report, compact, merge)",
                        description="Reproduce the Mesh paper's figures on real programs "
                                    "and write paper-figures.md.")
    sub = ap.add_subparsers(dest="paper_cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="measure the figures, save results, write the report")
    p.add_argument("--trials", type=int, default=3, help="trials per allocator (default 3)")
    p.add_argument("--figures", help=f"comma-separated subset of {','.join(collect.FIGURES)}")
    p.add_argument("--tiny", action="store_true",
                   help="a seconds-long run of every figure at a tiny scale (tests, fixtures)")
    p.add_argument("--redis-allocators",
                   help="comma-separated rows of Figure 7, Redis (default all)")
    p.add_argument("--webkit-iterations", type=int,
                   help="iterations of the TodoMVC benchmark in each WebKit run (default 12)")
    p.add_argument("--webkit-allocators",
                   help="comma-separated rows of the WebKit figure (default all)")
    p.add_argument("--redis-latency-requests", type=int,
                   help="requests in each redis-benchmark test of the redis-latency figure "
                        "(default 300000)")
    p.add_argument("--redis-latency-allocators",
                   help="comma-separated rows of the redis-latency figure (default all)")
    p.add_argument("--results-dir", default=RESULTS_DIR)
    p.add_argument("--name", default="paper", help="compacted results file name (default paper)")
    p.add_argument("--out", default=DEFAULT_MD, metavar="FILE",
                   help="the report (default paper-figures.md)")
    p.add_argument("--plots-dir", default=DEFAULT_PLOTS, metavar="DIR",
                   help="plot directory (default plots/paper)")
    flags.hidden_alias(p, "--plots", "plots_dir")
    p.add_argument("--no-report", action="store_true", help="measure and save only")
    p.add_argument("--no-cgroup", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(fn=cmd_run)

    p = sub.add_parser("report", help="write paper-figures.md and its plots from a results file")
    flags.file_flag(p, "--results", "results", "the results to report (default results/paper.json)",
                    default=DEFAULT_RESULTS)
    p.add_argument("--webkit", default=DEFAULT_WEBKIT, metavar="FILE",
                   help="the WebKit figure's results, used when --results has none "
                        "(default results/paper-webkit.json; '' for none)")
    p.add_argument("--out", default=DEFAULT_MD, metavar="FILE",
                   help="the report (default paper-figures.md)")
    p.add_argument("--plots-dir", default=DEFAULT_PLOTS, metavar="DIR",
                   help="plot directory (default plots/paper)")
    flags.hidden_alias(p, "--plots", "plots_dir")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("merge", help="put the figures of a newer run into a results file")
    flags.file_flag(p, "--results", "base", "the results file to update (say results/paper.json)")
    flags.file_flag(p, "--new", "new", "a compacted run of some figures (run --figures ... --name ...)")
    flags.file_flag(p, "--out", "out", "where to write the merged document")
    p.set_defaults(fn=cmd_merge)

    p = sub.add_parser("compact", help="compact a full results file for committing")
    flags.file_flag(p, "--results", "full", "the full results document to compact")
    flags.file_flag(p, "--out", "out", "where to write the compacted document")
    p.set_defaults(fn=cmd_compact)

    p = sub.add_parser("redis-build", help="build redis-server for Figure 7 (cached in build/redis/; "
                                           "`run` does this itself)")
    p.set_defaults(fn=cmd_redis_build)
