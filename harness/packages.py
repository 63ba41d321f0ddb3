"""The Debian packages `bench` needs, checked and (as root) installed.

Nothing here runs unless `bench` asks: the check reads dpkg's database;
installing needs root and runs apt-get. Not root and something missing:
the exact apt-get line is returned for the user to run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Callable, Optional

# The allocators, hyperfine and the plots; then WebKitGTK for Python and the
# X server it runs in (Figure 6 on a real browser engine,
# harness/paper/webkit_fig.py).
PACKAGES = ("libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4", "hyperfine",
            "python3-matplotlib", "gir1.2-webkit2-4.1", "python3-gi", "xvfb", "xauth")
# Debian's node and npm build the browser benchmark's pages; asked for only
# when no npm is installed at all (a node from elsewhere that brings its own
# npm does as well, and Debian's npm would not install beside it).
NODE_PACKAGES = ("nodejs", "npm")


def wanted(which: Callable[[str], Optional[str]] = shutil.which) -> tuple:
    """PACKAGES, plus node and npm when there is no npm on PATH."""
    return PACKAGES + (() if which("npm") else NODE_PACKAGES)

Runner = Callable[[list], subprocess.CompletedProcess]


def _run(argv: list, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def installed(pkg: str, run: Runner = _run) -> bool:
    try:
        p = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", pkg])
    except OSError:
        return False
    return p.returncode == 0 and p.stdout.startswith("ii")


def missing(packages: tuple = PACKAGES, run: Runner = _run) -> list[str]:
    return [p for p in packages if not installed(p, run)]


def apt_line(pkgs: list[str]) -> str:
    return "apt-get install -y " + " ".join(pkgs)


@dataclass
class Outcome:
    ok: bool
    message: str
    commands: list      # what was run (or would have to be run)


def ensure(packages: tuple = PACKAGES, euid: Optional[int] = None, run: Runner = _run,
           install_run: Optional[Callable[[list], int]] = None) -> Outcome:
    """Make sure packages are installed.

    As root, runs `apt-get update` and `apt-get install -y` for the missing
    ones; otherwise says what to run and reports failure. euid and the
    command runners are parameters so tests can play a non-root user and
    never run apt.
    """
    need = missing(packages, run)
    if not need:
        return Outcome(True, "all needed Debian packages are installed", [])
    line = apt_line(need)
    if (os.geteuid() if euid is None else euid) != 0:
        return Outcome(False, f"missing Debian packages: {' '.join(need)}\n"
                              f"run as root:\n  {line}", [line])
    if install_run is None:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")

        def install_run(argv: list) -> int:
            return subprocess.run(argv, env=env).returncode
    cmds = [["apt-get", "update"], ["apt-get", "install", "-y", *need]]
    for c in cmds:
        rc = install_run(c)
        if rc != 0 and c[1] == "install":
            return Outcome(False, f"`{' '.join(c)}` failed with status {rc}",
                           [" ".join(x) for x in cmds])
    still = missing(packages, run)
    if still:
        return Outcome(False, f"still missing after apt-get: {' '.join(still)}",
                       [" ".join(x) for x in cmds])
    return Outcome(True, f"installed {' '.join(need)}", [" ".join(x) for x in cmds])
