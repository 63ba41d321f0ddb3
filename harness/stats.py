"""Numbers shared by the harness's reports and plots and the paper's figures.

  MIB              bytes in a mebibyte (every MiB figure divides by it)
  geomean          the geometric mean of the positive values given
  median_run       the trial whose key is the median of its trials
  representative   the trial a memory-over-time plot draws: median mean footprint
  AllocatorRow     one allocator's line in a figure's table: trials, values, ratios
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from . import results as R

MIB = 2**20


def geomean(values: Iterable[Optional[float]]) -> Optional[float]:
    """Geometric mean of the values that are present and non-zero; None when there are none."""
    vals = [v for v in values if v]
    return math.exp(sum(map(math.log, vals)) / len(vals)) if vals else None


def median_run(runs: list[R.Run], key: Callable[[R.Run], Optional[float]]) -> Optional[R.Run]:
    """The run whose KEY is the median (the lower one of an even count; ties by trial),
    among those with a KEY; None when none has one."""
    vals = [(k, r.trial, r) for k, r in ((key(r), r) for r in runs) if k is not None]
    vals.sort(key=lambda x: x[:2])
    return vals[(len(vals) - 1) // 2][2] if vals else None


def representative(runs: list[R.Run]) -> Optional[R.Run]:
    """The ok trial whose mean footprint is the median of the trials."""
    return median_run([r for r in runs if r.ok and len(r.memory)],
                      lambda r: R.summarize(r).mean_footprint)


@dataclass
class AllocatorRow:
    """One allocator in one figure: its trials and its numbers, each a Stat
    over trials (None when no trial has it)."""
    allocator: str
    trials: int
    failed: int
    values: dict = field(default_factory=dict)   # name -> Optional[R.Stat]
    ratios: dict = field(default_factory=dict)   # name -> Optional[R.Stat], the row / a baseline
