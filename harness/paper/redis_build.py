"""redis-server built from Debian's source package of the installed version.

Debian's redis-server links Debian's libjemalloc, which lacks the
per-allocation hint Redis's active defragmentation needs, so Figure 7's
"jemalloc with active defrag" needs Redis's own build. Two builds of the
same source, once, cached under build/redis/<version>/:

  redis-server-jemalloc   MALLOC=jemalloc: Redis's bundled jemalloc
                          (deps/jemalloc), which supports active defrag
  redis-server-libc       MALLOC=libc: the system malloc, which LD_PRELOAD
                          replaces; active defrag works when the preloaded
                          malloc is libmesh (its mesh_defrag_* API)

Both carry redis-defrag.patch (beside this file): the libc build's defrag
entry points (looked up with dlsym, refused cleanly without libmesh) and
an INFO field both builds report, active_defrag_cpu_us, the CPU time of
the defragmenter's cycles. Fetching the source needs a deb-src line; as
root one is added for the archives apt already uses (a file of its own in
/etc/apt/sources.list.d), otherwise the error says what to add.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Optional, TextIO

from ..allocators import REPO_ROOT

PATCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "redis-defrag.patch")
BUILD_ROOT = os.path.join(REPO_ROOT, "build", "redis")
VARIANTS = ("jemalloc", "libc")
SRC_LIST = "/etc/apt/sources.list.d/mesh-harness-deb-src.sources"
APT_SOURCES = "/etc/apt/sources.list.d/debian.sources"


class BuildError(RuntimeError):
    pass


@dataclass(frozen=True)
class RedisBuild:
    version: str                # Debian source version, e.g. 5:7.0.15-1~deb12u10
    directory: str
    servers: dict               # variant -> path of redis-server

    def server(self, variant: str) -> str:
        return self.servers[variant]


def _run(argv: list, cwd: Optional[str] = None, log: Optional[TextIO] = None,
         timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, stdout=log or subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def installed_source() -> Optional[tuple[str, str]]:
    """(source package, version) of the installed redis-server, or None."""
    try:
        p = _run(["dpkg-query", "-W", "-f=${source:Package} ${source:Version}", "redis-server"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = p.stdout.split() if p.returncode == 0 else []
    return (parts[0], parts[1]) if len(parts) == 2 else None


def _patch_digest() -> str:
    with open(PATCH, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def build_dir(version: str) -> str:
    return os.path.join(BUILD_ROOT, version.replace(":", "_"))


def cached(version: Optional[str] = None) -> Optional[RedisBuild]:
    """The finished build for the installed (or given) version and the
    current patch, or None."""
    if version is None:
        src = installed_source()
        if src is None:
            return None
        version = src[1]
    d = build_dir(version)
    try:
        with open(os.path.join(d, "stamp.json"), encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    servers = {v: os.path.join(d, f"redis-server-{v}") for v in VARIANTS}
    if stamp.get("patch") != _patch_digest() or not all(os.access(p, os.X_OK) for p in servers.values()):
        return None
    return RedisBuild(version, d, servers)


def deb_src_stanzas(sources: str) -> str:
    """deb822 sources (apt's format) -> the same archives as deb-src stanzas
    ('' if none has Types: deb)."""
    out = []
    for stanza in sources.split("\n\n"):
        lines = [l for l in stanza.strip().splitlines() if l and not l.startswith("#")]
        if any(l.split(":", 1)[0] == "Types" and "deb" in l.split(":", 1)[1].split() for l in lines):
            out.append("\n".join("Types: deb-src" if l.split(":", 1)[0] == "Types" else l
                                 for l in lines))
    return "\n\n".join(out) + "\n" if out else ""


def _add_deb_src(stream: TextIO) -> None:
    """As root: a deb-src stanza for every deb stanza of debian.sources."""
    with open(APT_SOURCES, encoding="utf-8") as f:
        text = deb_src_stanzas(f.read())
    if not text:
        raise BuildError(f"no 'Types: deb' stanza in {APT_SOURCES} to derive a deb-src line from")
    with open(SRC_LIST, "w", encoding="utf-8") as f:
        f.write("# Added by the Mesh harness to fetch redis's source (harness/paper/redis_build.py).\n")
        f.write(text)
    stream.write(f"redis build: added {SRC_LIST}; apt-get update\n")
    p = _run(["apt-get", "update"])
    if p.returncode != 0:
        raise BuildError(f"apt-get update failed: {p.stdout[-500:]}")


def _fetch(pkg: str, version: str, into: str, stream: TextIO) -> str:
    """Unpacks Debian's source (its patches applied) under into; returns the tree."""
    os.makedirs(into, exist_ok=True)
    if shutil.which("dpkg-source") is None:
        if os.geteuid() != 0:
            raise BuildError("dpkg-source is missing: apt-get install -y dpkg-dev")
        _run(["apt-get", "install", "-y", "dpkg-dev"])
    for attempt in (1, 2):
        p = _run(["apt-get", "source", "-q", f"{pkg}={version}"], cwd=into)
        if p.returncode == 0:
            break
        no_src = "deb-src" in p.stdout or "source URIs" in p.stdout or "Unable to find a source" in p.stdout
        if attempt == 1 and no_src and os.geteuid() == 0 and os.path.exists(APT_SOURCES):
            _add_deb_src(stream)
            continue
        raise BuildError(
            f"cannot fetch the source of {pkg} {version} (apt-get source said: "
            f"{p.stdout.strip()[-300:]}). Add a deb-src line for the archive redis-server came "
            f"from (in {APT_SOURCES}: 'Types: deb deb-src'), run apt-get update, and try again.")
    trees = [e for e in os.listdir(into)
             if os.path.isdir(os.path.join(into, e)) and os.path.exists(os.path.join(into, e, "src", "server.c"))]
    if len(trees) != 1:
        raise BuildError(f"apt-get source left no single redis tree in {into}: {os.listdir(into)}")
    return os.path.join(into, trees[0])


def _build_variant(tree: str, variant: str, d: str, stream: TextIO) -> str:
    work = os.path.join(d, f"tree-{variant}")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tree, work, symlinks=True)
    log_path = os.path.join(d, f"build-{variant}.log")
    with open(log_path, "w", encoding="utf-8") as log:
        p = _run(["patch", "-p1", "--forward", "-i", PATCH], cwd=work, log=log)
        if p.returncode != 0:
            raise BuildError(f"{os.path.basename(PATCH)} does not apply to this source: see {log_path}")
        stream.write(f"redis build: make MALLOC={variant} (-j2; a few minutes) ...\n")
        stream.flush()
        p = _run(["make", "-j2", f"MALLOC={variant}", "BUILD_TLS=no", "USE_SYSTEMD=no"], cwd=work, log=log)
    server = os.path.join(work, "src", "redis-server")
    if p.returncode != 0 or not os.access(server, os.X_OK):
        raise BuildError(f"make MALLOC={variant} failed: see {log_path}")
    out = os.path.join(d, f"redis-server-{variant}")
    shutil.copy2(server, out)
    shutil.rmtree(work, ignore_errors=True)
    return out


def ensure(stream: TextIO = sys.stderr) -> RedisBuild:
    """The cached build, or fetch and build it now. Raises BuildError with a
    message saying what to do when that cannot be done."""
    src = installed_source()
    if src is None:
        raise BuildError("redis-server is not installed (apt-get install redis-server): "
                         "its version picks the source to build")
    pkg, version = src
    done = cached(version)
    if done is not None:
        return done
    d = build_dir(version)
    os.makedirs(d, exist_ok=True)
    stream.write(f"redis build: fetching Debian's source of {pkg} {version}\n")
    fetch = os.path.join(d, "source")
    shutil.rmtree(fetch, ignore_errors=True)
    tree = _fetch(pkg, version, fetch, stream)
    servers = {v: _build_variant(tree, v, d, stream) for v in VARIANTS}
    shutil.rmtree(fetch, ignore_errors=True)
    with open(os.path.join(d, "stamp.json"), "w", encoding="utf-8") as f:
        json.dump({"package": pkg, "version": version, "patch": _patch_digest(),
                   "variants": {v: os.path.basename(p) for v, p in servers.items()}}, f, indent=1)
    stream.write(f"redis build: done, {d}\n")
    return RedisBuild(version, d, servers)


def main() -> int:
    try:
        b = ensure()
    except BuildError as e:
        print(f"redis build: {e}", file=sys.stderr)
        return 1
    for v, p in b.servers.items():
        print(f"{v}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
