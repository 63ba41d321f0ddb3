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
from pathlib import Path
from typing import Callable, Optional

# scripts/packages.txt is the one list: `make test` and .ci/run read it too.
PACKAGE_LIST = Path(__file__).resolve().parent.parent / "scripts" / "packages.txt"


def read_list(section: str, path: Path = PACKAGE_LIST) -> list[tuple[str, Optional[str]]]:
    """(package, guard) for each line of a section; guard is the command
    whose presence on PATH makes the package unnecessary, or None."""
    out, current = [], None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            continue
        if current != section:
            continue
        words = line.split()
        guard = words[2] if len(words) == 3 and words[1] == "unless" else None
        out.append((words[0], guard))
    return out


_BENCH = read_list("bench")
# Needed whatever is on PATH: the allocators, hyperfine, the plots, WebKitGTK.
PACKAGES = tuple(p for p, guard in _BENCH if guard is None)
# Node and npm, asked for only when no npm is installed at all.
NODE_PACKAGES = tuple(p for p, guard in _BENCH if guard is not None)


def wanted(which: Callable[[str], Optional[str]] = shutil.which,
           entries: Optional[list] = None) -> tuple:
    """The bench packages, less those whose guard command is on PATH."""
    entries = _BENCH if entries is None else entries
    return tuple(p for p, guard in entries if guard is None or not which(guard))

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
    return "apt-get install -y --no-install-recommends " + " ".join(pkgs)


@dataclass
class Outcome:
    ok: bool
    message: str
    commands: list      # what was run (or would have to be run)


def ensure(packages: tuple = PACKAGES, euid: Optional[int] = None, run: Runner = _run,
           install_run: Optional[Callable[[list], int]] = None) -> Outcome:
    """Make sure packages are installed.

    As root, runs `apt-get update` and `apt-get install` for the missing
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
    cmds = [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *need]]
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
