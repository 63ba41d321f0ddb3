#!/usr/bin/python3
"""Speed of libmesh against jemalloc and mimalloc on the throughput workloads.

Usage: scripts/speed-profile.py [--trials N] [--workloads a,b] [--no-perf]

1. Times: every workload under every allocator, trial after trial, the
   allocators in a new random (seeded) order each trial. The time is the
   workload's own timed phase (run_s, churn_s), which leaves out filling
   and freeing the live set. Prints the median over trials and its ratio
   to jemalloc's, with the smallest and largest ratio of one trial.
2. Counters per operation (unless --no-perf): `perf stat` of one run with
   the default operations and one with none, the difference divided by the
   operations, so that the fill and teardown cancel; trials interleaved as
   in 1, medians. CPU time per operation (task-clock) is the steadier
   measure on a shared machine: it leaves out the time spent waiting for
   a core. Only software events
   are counted: on a virtual machine without a PMU (as here) cycles,
   cache and TLB misses are not available, and the script says so.

Raw results go to build/speed-profile/. Needs perf (apt-get install
linux-perf) for part 2.
"""
import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(TOP, "workloads", "bin")
OUT = os.path.join(TOP, "build", "speed-profile")
ALLOCATORS = {
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "mimalloc": "/usr/lib/x86_64-linux-gnu/libmimalloc.so.2",
    "libmesh": os.path.join(TOP, "libmesh", "libmesh.so"),
}
# name: (program, flags, result key of the timed phase, flags for a run without operations)
WORKLOADS = {
    "larson": ("larson", (), "run_s", ("--rounds", "0")),
    "churn": ("churn", (), "churn_s", ("--ops", "0")),
    "replace-small": ("replace-small", (), "run_s", ("--ops", "0")),
    "replace-small-xt": ("replace-small", ("--threads", "2"), "run_s", ("--ops", "0")),
    "replace-large": ("replace-large", (), "run_s", ("--ops", "0")),
    "replace-large-xt": ("replace-large", ("--threads", "2"), "run_s", ("--ops", "0")),
}
HW_EVENTS = "cycles,instructions,cache-misses,dTLB-load-misses"
SW_EVENTS = "task-clock,page-faults,context-switches"


def run(workload: str, alloc: str, extra: tuple = (), perf: bool = False) -> dict:
    prog, flags, _, _ = WORKLOADS[workload]
    argv = [os.path.join(BIN, prog), *flags, *extra]
    if perf:
        stat = os.path.join(OUT, "perf.csv")
        argv = ["perf", "stat", "-x", ",", "-o", stat, "-e", f"{HW_EVENTS},{SW_EVENTS}", *argv]
    env = dict(os.environ, LD_PRELOAD=ALLOCATORS[alloc])
    t0 = time.monotonic()
    p = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"{workload} under {alloc} exited with {p.returncode}: {p.stderr[-500:]}")
    result = json.loads(p.stdout.strip().split("\n")[-1])
    result["wall_s"] = wall
    if perf:
        result["counters"] = read_perf(stat)
    return result


def read_perf(path: str) -> dict:
    """Event name -> count, or None where the event is not supported."""
    counters = {}
    with open(path) as f:
        for line in f:
            fields = line.strip().split(",")
            if len(fields) < 3 or line.startswith("#"):
                continue
            value, event = fields[0], fields[2]
            counters[event] = None if value.startswith("<") else float(value)
    return counters


def times(names: list, trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    got = {(w, a): [] for w in names for a in ALLOCATORS}
    with open(os.path.join(OUT, "times.jsonl"), "w") as log:
        for trial in range(1, trials + 1):
            for w in names:
                order = list(ALLOCATORS)
                rng.shuffle(order)
                for a in order:
                    r = run(w, a)
                    s = r[WORKLOADS[w][2]]
                    got[(w, a)].append(s)
                    log.write(json.dumps({"trial": trial, "workload": w, "allocator": a,
                                          "timed_s": s, "wall_s": r["wall_s"],
                                          "ops": r["ops"]}) + "\n")
                    print(f"trial {trial} {w:<17} {a:<9} {s:7.3f} s", file=sys.stderr)
    return got


def print_times(names: list, got: dict) -> None:
    print("| workload | jemalloc s | mimalloc s | libmesh s | mimalloc / jemalloc | "
          "libmesh / jemalloc (range over trials) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in names:
        med = {a: statistics.median(got[(w, a)]) for a in ALLOCATORS}
        per_trial = [m / j for m, j in zip(got[(w, "libmesh")], got[(w, "jemalloc")])]
        print(f"| {w} | {med['jemalloc']:.3f} | {med['mimalloc']:.3f} | {med['libmesh']:.3f} | "
              f"{med['mimalloc'] / med['jemalloc']:.2f} | **{med['libmesh'] / med['jemalloc']:.2f}** "
              f"({min(per_trial):.2f}-{max(per_trial):.2f}) |")


def per_op(w: str, a: str, unsupported: set) -> dict:
    """Counters of a run with operations minus one without, per operation."""
    full = run(w, a, perf=True)
    empty = run(w, a, WORKLOADS[w][3], perf=True)
    diff = {}
    for e, v in full["counters"].items():
        if v is None or empty["counters"].get(e) is None:
            unsupported.add(e)
        else:
            diff[e] = (v - empty["counters"][e]) / full["ops"]
    return diff


def counters(names: list, trials: int, seed: int) -> None:
    """Per-operation counters, trials interleaved as for the times; medians.
    task-clock is CPU time, so it leaves out the time a run waits for a
    core on a busy machine, which wall time does not."""
    rng = random.Random(seed + 1)
    got = {(w, a): [] for w in names for a in ALLOCATORS}
    unsupported = set()
    with open(os.path.join(OUT, "counters.jsonl"), "w") as log:
        for trial in range(1, trials + 1):
            for w in names:
                order = list(ALLOCATORS)
                rng.shuffle(order)
                for a in order:
                    d = per_op(w, a, unsupported)
                    got[(w, a)].append(d)
                    log.write(json.dumps({"trial": trial, "workload": w, "allocator": a,
                                          "per_op": d}) + "\n")
                    print(f"perf trial {trial} {w:<17} {a:<9} {d['task-clock'] * 1e6:6.0f} ns/op",
                          file=sys.stderr)
    med = {k: {e: statistics.median(d[e] for d in v) for e in v[0]} for k, v in got.items()}
    print("\n| workload | allocator | CPU ns/op | x jemalloc | page faults /1k ops | "
          "context switches /1k ops |")
    print("| --- | --- | --- | --- | --- | --- |")
    for w in names:
        for a in ALLOCATORS:
            m = med[(w, a)]
            ratio = m["task-clock"] / med[(w, "jemalloc")]["task-clock"]
            print(f"| {w} | {a} | {m['task-clock'] * 1e6:.0f} | {ratio:.2f} | "
                  f"{m['page-faults'] * 1e3:.2f} | {m['context-switches'] * 1e3:.3f} |")
    if unsupported:
        print(f"\nnot supported on this machine: {', '.join(sorted(unsupported))}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--seed", type=int, default=1, help="seed of the allocator order")
    ap.add_argument("--no-perf", action="store_true", help="times only")
    ap.add_argument("--no-times", action="store_true", help="counters only")
    args = ap.parse_args()
    names = args.workloads.split(",")
    for w in names:
        if w not in WORKLOADS:
            sys.exit(f"unknown workload {w}; known: {', '.join(WORKLOADS)}")
    for a, lib in ALLOCATORS.items():
        if not os.path.exists(lib):
            sys.exit(f"{a}: {lib} is missing (apt-get install -y libjemalloc2 libmimalloc2.0; "
                     "make for libmesh)")
    os.makedirs(OUT, exist_ok=True)
    if not args.no_times:
        print_times(names, times(names, args.trials, args.seed))
    if not args.no_perf:
        counters(names, args.trials, args.seed)


if __name__ == "__main__":
    main()
