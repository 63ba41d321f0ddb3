"""Figure 8: Debian's real ruby running the paper's fragmentation script.

workloads/ruby/fragment.rb follows the workloads' contract (--seed,
--scale, --trace, a result object with a checksum), so the harness's own
runner measures it like any workload: RUBY is a Workload whose command is
`ruby fragment.rb` instead of a binary in workloads/bin. Debian's ruby
uses glibc's malloc (libruby links no other allocator), so "glibc"
preloads nothing and the others are preloaded.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from ..allocators import REPO_ROOT
from ..workloads import WORKLOAD_DIR, Workload

RUBY_BIN = "/usr/bin/ruby"
SCRIPT = os.path.join(REPO_ROOT, "workloads", "ruby", "fragment.rb")
ALLOCATORS = ("jemalloc", "glibc", "mesh", "mesh-nomesh", "mesh-norand")


@dataclass(frozen=True)
class RubyWorkload(Workload):
    """A Ruby script run by Debian's ruby, under the workload contract."""
    script: str = SCRIPT
    ruby: str = RUBY_BIN

    def binary(self, workload_dir: str = WORKLOAD_DIR) -> str:
        return self.ruby

    def missing(self, workload_dir: str = WORKLOAD_DIR) -> Optional[str]:
        if not os.access(self.ruby, os.X_OK):
            return f"{self.ruby} is missing (Debian package ruby)"
        if not os.path.exists(self.script):
            return f"{self.script} is missing"
        return None

    def argv(self, seed: int, scale: float, trace: Optional[str] = None,
             workload_dir: str = WORKLOAD_DIR, extra: tuple = ()) -> list[str]:
        argv = [self.ruby, self.script, "--seed", str(seed), "--scale", repr(float(scale)), *extra]
        if trace:
            argv += ["--trace", trace]
        return argv


RUBY = RubyWorkload("ruby-fragment", False, 1.0,
                    "Debian's ruby: strings of n - 16 bytes, keep every 4th, full GC, "
                    "double n, within 128 MiB (the paper's Ruby script)")


def version() -> Optional[str]:
    try:
        return subprocess.run([RUBY_BIN, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None
