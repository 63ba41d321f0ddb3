"""The allocator registry: name -> preload library, environment, identity.

An allocator is run by preloading its shared library (LD_PRELOAD) into an
unmodified program, with optional environment variables (the mesh control
variants are the same library with MESH_MESHING=0 or MESH_RANDOMIZE=0).
"glibc" preloads nothing. Each run records the library's path, version
(the Debian package version, or the git commit for libmesh) and GNU build
id, so a result can always be tied to the exact binary that produced it.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sysconfig
from dataclasses import dataclass, field
from typing import Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MULTIARCH = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
LIBDIR = f"/usr/lib/{MULTIARCH}"
MESH_LIBRARY = os.path.join(REPO_ROOT, "libmesh", "libmesh.so")

# The environment variable libmesh appends its mesh-pass log to.
MESH_EVENTS_ENV = "MESH_EVENTS"


@dataclass(frozen=True)
class Allocator:
    name: str
    library: Optional[str]                # None: the system allocator, nothing preloaded
    env: dict = field(default_factory=dict)  # extra environment for the child
    package: Optional[str] = None         # Debian package that ships the library
    description: str = ""
    is_mesh: bool = False                 # understands MESH_EVENTS

    def missing(self) -> Optional[str]:
        """Why this allocator cannot run, or None if it can."""
        if self.library is None:
            return None
        if not os.path.exists(self.library):
            hint = ""
            if self.package:
                hint = f" (Debian package {self.package}: apt-get install -y {self.package})"
            elif self.library == MESH_LIBRARY:
                hint = " (build it with `make` at the repository root)"
            return f"allocator {self.name}: library {self.library} does not exist{hint}"
        return None

    def child_env(self) -> dict:
        """The environment entries this allocator adds to a clean environment."""
        env = dict(self.env)
        if self.library:
            env["LD_PRELOAD"] = self.library
        return env


def _glibc_path() -> Optional[str]:
    for d in (f"/lib/{MULTIARCH}", LIBDIR):
        p = os.path.join(d, "libc.so.6")
        if os.path.exists(p):
            return p
    return None


def builtin_allocators() -> dict[str, Allocator]:
    """The allocators the harness knows, in the order plots and tables use."""
    mesh = dict(library=MESH_LIBRARY, is_mesh=True)
    allocs = [
        Allocator("glibc", None, description="glibc malloc (ptmalloc2), nothing preloaded"),
        Allocator("jemalloc", f"{LIBDIR}/libjemalloc.so.2", package="libjemalloc2",
                  description="jemalloc (Debian)"),
        Allocator("mimalloc", f"{LIBDIR}/libmimalloc.so.2", package="libmimalloc2.0",
                  description="mimalloc (Debian)"),
        Allocator("tcmalloc", f"{LIBDIR}/libtcmalloc_minimal.so.4",
                  package="libtcmalloc-minimal4", description="gperftools tcmalloc_minimal (Debian)"),
        Allocator("mesh", description="libmesh, meshing on", **mesh),
        Allocator("mesh-nomesh", env={"MESH_MESHING": "0"},
                  description="libmesh with meshing off (control)", **mesh),
        Allocator("mesh-norand", env={"MESH_RANDOMIZE": "0"},
                  description="libmesh with randomized placement off (control)", **mesh),
    ]
    return {a.name: a for a in allocs}


class SpecError(ValueError):
    pass


def parse_spec(spec: str) -> Allocator:
    """Parse NAME=/path/lib.so[:ENV=VAL...] as given to --alloc."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise SpecError(f"--alloc wants NAME=/path/lib.so[:ENV=VAL...], got {spec!r}")
    parts = rest.split(":")
    library, env = parts[0], {}
    for p in parts[1:]:
        k, sep, v = p.partition("=")
        if not sep or not k:
            raise SpecError(f"--alloc {spec!r}: {p!r} is not ENV=VAL")
        env[k] = v
    if not library.startswith("/"):
        library = os.path.abspath(library)
    is_mesh = os.path.realpath(library) == os.path.realpath(MESH_LIBRARY)
    return Allocator(name, library, env, description=f"user-supplied {library}", is_mesh=is_mesh)


def registry(extra_specs: tuple[str, ...] | list[str] = ()) -> dict[str, Allocator]:
    """Built-in allocators plus any --alloc specs (which may replace a built-in)."""
    reg = builtin_allocators()
    for s in extra_specs:
        a = parse_spec(s)
        reg[a.name] = a
    return reg


def gnu_build_id(path: str) -> Optional[str]:
    """The NT_GNU_BUILD_ID note of an ELF file, as hex, read from its PT_NOTE segments."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or len(data) < 64:
        return None
    cls, order = data[4], data[5]
    end = "<" if order == 1 else ">"
    if cls == 2:   # ELF64
        phoff, = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    elif cls == 1:  # ELF32
        phoff, = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    else:
        return None
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from(end + "I", data, off)
        if p_type != 4:  # PT_NOTE
            continue
        if cls == 2:
            p_offset, = struct.unpack_from(end + "Q", data, off + 8)
            p_filesz, = struct.unpack_from(end + "Q", data, off + 32)
        else:
            p_offset, = struct.unpack_from(end + "I", data, off + 4)
            p_filesz, = struct.unpack_from(end + "I", data, off + 16)
        pos, stop = p_offset, p_offset + p_filesz
        while pos + 12 <= stop:
            namesz, descsz, ntype = struct.unpack_from(end + "III", data, pos)
            name_start = pos + 12
            desc_start = name_start + ((namesz + 3) & ~3)
            if ntype == 3 and data[name_start:name_start + namesz] == b"GNU\x00":
                return data[desc_start:desc_start + descsz].hex()
            pos = desc_start + ((descsz + 3) & ~3)
    return None


def _run(argv: list[str], cwd: Optional[str] = None) -> Optional[str]:
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def debian_package(path: str) -> Optional[tuple[str, str]]:
    """(package, version) of the Debian package that ships path, if any."""
    tried = []
    for p in (path, os.path.realpath(path)):
        for q in (p, p[4:] if p.startswith("/usr/") else "/usr" + p):
            if q not in tried:
                tried.append(q)
    for q in tried:
        out = _run(["dpkg-query", "-S", q])
        if not out:
            continue
        pkg = out.splitlines()[0].split(": ", 1)[0].split(", ")[0]
        ver = _run(["dpkg-query", "-W", "-f=${Version}", pkg])
        if ver:
            return pkg, ver
    return None


def git_describe(path: str) -> Optional[str]:
    """The commit of the repository holding path, "+dirty" if its directory has changes."""
    d = path if os.path.isdir(path) else os.path.dirname(path)
    sha = _run(["git", "rev-parse", "HEAD"], cwd=d)
    if not sha:
        return None
    dirty = _run(["git", "status", "--porcelain", "--", "."], cwd=d)
    return sha + ("+dirty" if dirty else "")


@dataclass
class AllocatorInfo:
    """What a results file records about an allocator."""
    name: str
    library: Optional[str]          # the library identified (for glibc: libc.so.6)
    preload: Optional[str]          # what LD_PRELOAD is set to (None for glibc)
    env: dict
    description: str
    exists: bool
    version: Optional[str]
    version_source: Optional[str]   # "dpkg", "git" or None
    package: Optional[str]
    build_id: Optional[str]


def describe(a: Allocator) -> AllocatorInfo:
    lib = a.library
    if lib is None:
        lib_for_id = _glibc_path()
        exists = True
    else:
        lib_for_id = lib
        exists = os.path.exists(lib)
    version = source = package = build_id = None
    if lib_for_id and os.path.exists(lib_for_id):
        build_id = gnu_build_id(lib_for_id)
        deb = debian_package(lib_for_id)
        if deb:
            package, version = deb
            source = "dpkg"
        else:
            version = git_describe(lib_for_id)
            source = "git" if version else None
    return AllocatorInfo(name=a.name, library=lib_for_id, preload=lib,
                         env=dict(a.env), description=a.description, exists=exists,
                         version=version, version_source=source, package=package,
                         build_id=build_id)
