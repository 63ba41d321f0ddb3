"""The workload catalog: which programs the matrix runs and how.

Every workload in workloads/bin follows one contract: `--seed N`,
`--scale X` (1 = the default run, a few seconds here), `--trace FILE`
(JSON lines {"t", "live", "phase"} and a final line with phase "end" and a
"result" object that always holds a "checksum"); the same result object is
the last line of stdout.

paper_scale and paper_args make a paper-sized run (`--full`), as
workloads/README.md documents them: the memory workloads are paper-sized at
scale 1 already (redis-like needs a longer idle to reach the paper's 7.5 s
mark; browser-like needs more loads and a bigger heap), and the throughput
workloads have no paper counterpart. One program may stand for several
workloads (replace-small on one thread and on two), each with its own
flags (`args`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from .allocators import REPO_ROOT

WORKLOAD_DIR = os.path.join(REPO_ROOT, "workloads", "bin")


@dataclass(frozen=True)
class Workload:
    name: str
    throughput: bool        # measures the allocator's speed: timed with hyperfine too
    paper_scale: float      # --scale for a paper-sized run
    description: str
    paper_args: tuple = ()  # further flags for a paper-sized run
    program: str = ""       # the binary in workload_dir, when not named as the workload
    args: tuple = ()        # flags of every run: one program, several workloads

    def binary(self, workload_dir: str = WORKLOAD_DIR) -> str:
        return os.path.join(workload_dir, self.program or self.name)

    def missing(self, workload_dir: str = WORKLOAD_DIR) -> Optional[str]:
        b = self.binary(workload_dir)
        if not os.access(b, os.X_OK):
            return f"workload {self.name}: {b} is missing or not executable (run `make` at the repository root)"
        return None

    def argv(self, seed: int, scale: float, trace: Optional[str] = None,
             workload_dir: str = WORKLOAD_DIR, extra: tuple = ()) -> list[str]:
        argv = [self.binary(workload_dir), "--seed", str(seed), "--scale", repr(float(scale)),
                *self.args, *extra]
        if trace:
            argv += ["--trace", trace]
        return argv


CATALOG: dict[str, Workload] = {w.name: w for w in (
    Workload("fragmenter", False, 1.0,
             "allocate size n, keep every 4th, double n within a 128 MiB budget (the paper's Ruby pattern)"),
    Workload("sizeshift", False, 1.0,
             "fill memory with one size, free a random 90%, allocate another size"),
    Workload("regular", False, 1.0,
             "strictly regular pattern that only randomized placement lets meshing recover"),
    Workload("redis-like", False, 1.0,
             "Redis-shaped store running the paper's populate/populate/idle script",
             ("--hold", "6")),
    Workload("browser-like", False, 10.0,
             "Speedometer-style page loads with caches and a parser thread"),
    Workload("larson", True, 1.0, "Larson server churn with cross-thread frees"),
    Workload("prodcons", True, 1.0, "producer threads allocate, consumer threads free"),
    Workload("churn", True, 1.0, "single-thread small-object churn"),
    Workload("replace-small", True, 1.0,
             "256K live objects of 8 B - 1 KiB (power law) replaced at random, written in full"),
    Workload("replace-small-xt", True, 1.0,
             "replace-small on 2 threads, every object freed by the other thread",
             program="replace-small", args=("--threads", "2")),
    Workload("replace-large", True, 1.0,
             "32 MiB live of 1-64 KiB objects replaced at random, both ends of each page written"),
    Workload("replace-large-xt", True, 1.0,
             "replace-large on 2 threads, every object freed by the other thread",
             program="replace-large", args=("--threads", "2")),
)}


class UnknownWorkload(KeyError):
    pass


def select(names: Optional[list[str]]) -> list[Workload]:
    if not names:
        return list(CATALOG.values())
    out = []
    for n in names:
        if n not in CATALOG:
            raise UnknownWorkload(f"unknown workload {n!r}; known: {', '.join(CATALOG)}")
        out.append(CATALOG[n])
    return out
