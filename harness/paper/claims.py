"""The paper's numbers (Mesh, PLDI 2019) and the targets our figures are held to.

Each claim is stated as the quantity we measure the same way, so that a
table can set the paper's value, ours and their ratio side by side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

PAPER = "Mesh: Compacting Memory Management for C/C++ Applications (Powers, Tench, Berger, McGregor; PLDI 2019)"


@dataclass(frozen=True)
class Claim:
    key: str
    figure: str
    what: str                 # the quantity, in words
    paper: float              # the paper's value, in `unit`
    unit: str                 # "ratio", "s", "ms", "MB"
    source: str               # where the paper says it
    target: Optional[float] = None    # the bound on ours, if any
    target_is_max: bool = True        # ours must be <= target (else >=)


CLAIMS = (
    Claim("redis.mesh_vs_nomesh", "7", "Redis footprint at 7.5 s, Mesh / Mesh without meshing",
          0.61, "ratio", "Fig. 7 and text: Mesh 39% below Mesh without meshing", target=0.61),
    Claim("redis.mesh_vs_defrag", "7", "Redis footprint at 7.5 s, Mesh / jemalloc with active defrag",
          1.00, "ratio", "text: equal to jemalloc's active defragmentation"),
    Claim("redis.populate_ratio", "7", "Redis insert time, Mesh / jemalloc",
          1.76 / 1.72, "ratio", "text: inserts 1.76 s with Mesh vs 1.72 s with jemalloc", target=1.05),
    Claim("redis.populate_mesh", "7", "Redis insert time with Mesh", 1.76, "s", "text"),
    Claim("redis.populate_jemalloc", "7", "Redis insert time with jemalloc", 1.72, "s", "text"),
    Claim("redis.mesh_total", "7", "Redis: total time spent meshing", 0.23, "s", "text"),
    Claim("redis.mesh_longest", "7", "Redis: longest meshing pause", 22.0, "ms", "text"),
    Claim("redis.defrag_total", "7", "Redis: CPU time of jemalloc's active defrag", 1.49, "s",
          "text: active defrag 1.49 s"),
    Claim("ruby.mesh_vs_jemalloc", "8", "Ruby mean footprint, Mesh / jemalloc",
          0.81, "ratio", "Fig. 8 and text: mean heap -19% vs jemalloc", target=0.81),
    Claim("ruby.mesh_time", "8", "Ruby time, Mesh / jemalloc", 1.107, "ratio", "text: +10.7% time"),
    Claim("ruby.norand_vs_jemalloc", "8", "Ruby mean footprint, Mesh without randomization / jemalloc",
          0.97, "ratio", "text: -3% heap"),
    Claim("ruby.norand_time", "8", "Ruby time, Mesh without randomization / jemalloc",
          1.04, "ratio", "text: +4% time"),
    Claim("browser.mesh_vs_jemalloc", "6", "Browser mean footprint, Mesh / jemalloc",
          530 / 632, "ratio", "Fig. 6: 530 MB vs 632 MB with mozjemalloc (-16%)"),
    Claim("browser.score_ratio", "6", "Browser score, Mesh / jemalloc", 1.00, "ratio",
          "text: Speedometer score within 1%"),
    Claim("browser.mesh_total", "6", "Browser: total time spent meshing", 0.135, "s", "text: 135 ms"),
    Claim("browser.mesh_longest", "6", "Browser: longest meshing pause", 7.5, "ms", "text: 7.5 ms"),
)

BY_KEY = {c.key: c for c in CLAIMS}

# A target also asks that Mesh's Redis footprint at 7.5 s be the lowest of all
# allocators run; figures.targets() checks that one beside the bounds above.
