"""Physical memory of a process, measured honestly (harness/README.md).

This module is the only code in the harness that reads /proc or cgroup
files. It has three parts:

- discovery of a memory cgroup hierarchy we may create children in
  (cgroup v2 or v1, found from /proc/self/cgroup and /proc/self/mounts);
- MemoryCgroup, one fresh cgroup per measured process: created, entered by
  the child before it execs, read, and removed (stragglers killed first);
- Sampler, which takes one Sample of a running process: the cgroup's
  counters at every tick, RSS from /proc/PID/status at every tick, and PSS
  from /proc/PID/smaps_rollup at a rate bounded by a CPU budget.

Footprint (what the plots show) is the physical memory charged to the
run's cgroup that belongs to the program: anonymous + shmem + kernel.

  v1: total_rss + total_shmem (memory.stat) + memory.kmem.usage_in_bytes
  v2: anon + shmem + kernel (memory.stat; kernel = kernel_stack +
      pagetables + percpu + sock + slab + vmalloc on kernels without the
      "kernel" field)

Page cache of ordinary files is charged to the cgroup too (v1 "cache"
minus "shmem", v2 "file" minus "shmem"), but it is left out: it is the
executable, the libraries and the trace file, it is charged only to the
first cgroup that touches a page (so it would penalise whichever allocator
runs first), and the kernel drops it under pressure. It is recorded as
"file" beside the footprint, and the cgroup's own usage counter (which
includes it) is recorded as "usage".

smaps_rollup walks every page table entry of the process under its
mmap lock: about 1.3 ms for 128 MiB and 7 ms for 1 GiB here. Read at
100 Hz it would cost the workload most of a core on a 2-core machine and
stall its mmap calls (meshing makes many), so PSS is read only when the
time since the last read is at least the last read's cost divided by
pss_budget (default 2% of one core). RSS comes from /proc/PID/status,
which is a counter and costs microseconds, so it is read every tick.
"""

from __future__ import annotations

import errno
import os
import platform
import signal
import socket
import time
from dataclasses import dataclass
from typing import Callable, Optional

CGROUP_PREFIX = "mesh-harness-"

# v2 kernels before 5.18 have no "kernel" line in memory.stat; these are
# the kernel-memory lines that memory.current charges besides anon and file.
_V2_KERNEL_PARTS = ("kernel_stack", "pagetables", "sec_pagetables", "percpu",
                    "sock", "slab", "vmalloc")


class CgroupError(Exception):
    """A memory cgroup could not be made, entered or removed."""


@dataclass
class CgroupReading:
    """One reading of a memory cgroup, in bytes."""
    usage: int           # the cgroup's own counter (v1 usage_in_bytes, v2 memory.current)
    anon: int            # anonymous pages (v1 total_rss, v2 anon)
    shmem: int           # shmem/tmpfs/memfd pages, mapped or not
    kernel: Optional[int]  # kernel memory charged (page tables, slab, stacks); None if unaccounted
    file: int            # page cache of ordinary files (not shmem): not heap
    swap: int            # anonymous/shmem pages swapped out (not physical)

    @property
    def footprint(self) -> int:
        return self.anon + self.shmem + (self.kernel or 0)


def _read_text(path: str) -> str:
    with open(path, "r", encoding="ascii", errors="replace") as f:
        return f.read()


def _read_int(path: str) -> int:
    return int(_read_text(path).strip())


def _parse_flat_keyed(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def reading_from_v1(usage: int, stat_text: str, kmem: Optional[int]) -> CgroupReading:
    """Combine v1 memory.usage_in_bytes, memory.stat and memory.kmem.usage_in_bytes.

    The total_* lines include child cgroups (use_hierarchy is 1 on every
    kernel since 5.x); a workload never makes any, but the totals are right
    either way.
    """
    s = _parse_flat_keyed(stat_text)

    def get(name: str) -> int:
        return s.get("total_" + name, s.get(name, 0))

    shmem = get("shmem")
    return CgroupReading(usage=usage, anon=get("rss"), shmem=shmem, kernel=kmem,
                         file=max(0, get("cache") - shmem), swap=get("swap"))


def reading_from_v2(current: int, stat_text: str, swap: int = 0) -> CgroupReading:
    """Combine v2 memory.current and memory.stat (and memory.swap.current)."""
    s = _parse_flat_keyed(stat_text)
    if "kernel" in s:
        kernel = s["kernel"]
    else:
        kernel = sum(s.get(k, 0) for k in _V2_KERNEL_PARTS)
        if "slab" not in s:
            kernel += s.get("slab_reclaimable", 0) + s.get("slab_unreclaimable", 0)
    shmem = s.get("shmem", 0)
    # v2 "file" includes shmem; v1 "cache" does too.
    return CgroupReading(usage=current, anon=s.get("anon", 0), shmem=shmem,
                         kernel=kernel, file=max(0, s.get("file", 0) - shmem),
                         swap=swap)


@dataclass
class CgroupHierarchy:
    """A directory in a memory cgroup hierarchy where we may make children."""
    version: int   # 1 or 2
    base: str      # absolute directory path

    @classmethod
    def discover(cls, proc_cgroup: Optional[str] = None,
                 mounts: Optional[str] = None,
                 check_writable: bool = True) -> Optional["CgroupHierarchy"]:
        """Find where this process may create memory cgroups, or None.

        v2 is preferred when its hierarchy has the memory controller;
        otherwise the v1 memory hierarchy. The texts can be passed in (tests);
        by default they are read from /proc/self.
        """
        if proc_cgroup is None:
            proc_cgroup = _read_text("/proc/self/cgroup")
        if mounts is None:
            mounts = _read_text("/proc/self/mounts")
        v1_mount = v2_mount = None
        for line in mounts.splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            mnt, fstype, opts = parts[1], parts[2], parts[3].split(",")
            if fstype == "cgroup2" and v2_mount is None:
                v2_mount = mnt
            elif fstype == "cgroup" and "memory" in opts and v1_mount is None:
                v1_mount = mnt
        v1_path = v2_path = None
        for line in proc_cgroup.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            if parts[0] == "0" and parts[1] == "":
                v2_path = parts[2]
            elif "memory" in parts[1].split(","):
                v1_path = parts[2]
        candidates: list[CgroupHierarchy] = []
        if v2_mount and v2_path is not None:
            candidates.extend(cls._v2_candidates(v2_mount, v2_path))
        if v1_mount and v1_path is not None:
            candidates.extend(cls._v1_candidates(v1_mount, v1_path))
        for c in candidates:
            if not check_writable or c._usable():
                return c
        return None

    @classmethod
    def _v1_candidates(cls, mount: str, path: str) -> list["CgroupHierarchy"]:
        own = os.path.normpath(os.path.join(mount, path.lstrip("/")))
        if os.path.isdir(own):
            return [cls(1, own)]
        # Inside a cgroup namespace /proc/self/cgroup may name a path the
        # mount does not show; the mount root is then our own cgroup.
        return [cls(1, os.path.normpath(mount))]

    @classmethod
    def _v2_candidates(cls, mount: str, path: str) -> list["CgroupHierarchy"]:
        # A v2 cgroup that holds processes cannot enable controllers for
        # children ("no internal processes"), so our own cgroup usually does
        # not work; the nearest ancestor that already delegates the memory
        # controller does (under systemd, the root as root).
        out = []
        d = os.path.normpath(os.path.join(mount, path.lstrip("/")))
        mount = os.path.normpath(mount)
        while True:
            out.append(cls(2, d))
            if d == mount or len(d) <= len(mount):
                break
            d = os.path.dirname(d)
        return out

    def _usable(self) -> bool:
        """Could children made here be measured? Reads only; changes nothing."""
        if not os.access(self.base, os.W_OK):
            return False
        if self.version == 1:
            return os.path.exists(os.path.join(self.base, "memory.stat"))
        try:
            ctl = _read_text(os.path.join(self.base, "cgroup.subtree_control")).split()
            avail = _read_text(os.path.join(self.base, "cgroup.controllers")).split()
        except OSError:
            return False
        if "memory" in ctl:
            return True
        if "memory" not in avail:
            return False
        # The controller can be delegated to children only from a cgroup
        # with no processes of its own (or the root); create() does it.
        try:
            procs = _read_text(os.path.join(self.base, "cgroup.procs")).split()
        except OSError:
            return False
        is_root = not os.path.exists(os.path.join(self.base, "cgroup.type"))
        return is_root or not procs

    def _delegate_memory(self) -> None:
        ctl = os.path.join(self.base, "cgroup.subtree_control")
        if "memory" in _read_text(ctl).split():
            return
        try:
            with open(ctl, "w") as f:
                f.write("+memory")
        except OSError as e:
            raise CgroupError(f"cannot enable the memory controller in {ctl}: {e.strerror}") from e

    def create(self, tag: str = "") -> "MemoryCgroup":
        """Make a fresh, empty child cgroup for one measured process."""
        if self.version == 2:
            self._delegate_memory()
        name = f"{CGROUP_PREFIX}{os.getpid()}-{time.monotonic_ns()}{('-' + tag) if tag else ''}"
        path = os.path.join(self.base, name)
        try:
            os.mkdir(path)
        except OSError as e:
            raise CgroupError(f"cannot create memory cgroup {path}: {e.strerror}") from e
        return MemoryCgroup(self.version, path)

    def remove_stale(self) -> list[str]:
        """Remove empty cgroups left by harness processes that no longer exist.

        Only directories named by this harness whose creating pid is gone are
        touched, so concurrent harness runs keep theirs.
        """
        removed = []
        try:
            names = os.listdir(self.base)
        except OSError:
            return removed
        for name in names:
            if not name.startswith(CGROUP_PREFIX):
                continue
            try:
                owner = int(name[len(CGROUP_PREFIX):].split("-")[0])
            except ValueError:
                continue
            if owner == os.getpid() or _pid_alive(owner):
                continue
            cg = MemoryCgroup(self.version, os.path.join(self.base, name))
            try:
                cg.remove()
                removed.append(cg.path)
            except CgroupError:
                pass
        return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MemoryCgroup:
    """One memory cgroup made for one measured process."""

    def __init__(self, version: int, path: str) -> None:
        self.version = version
        self.path = path
        self._procs = os.path.join(path, "cgroup.procs")
        if version == 1:
            kmem = os.path.join(path, "memory.kmem.usage_in_bytes")
            self._kmem: Optional[str] = kmem if os.path.exists(kmem) else None
        else:
            self._kmem = None
            swap = os.path.join(path, "memory.swap.current")
            self._swap: Optional[str] = swap if os.path.exists(swap) else None

    @property
    def method(self) -> str:
        return f"cgroup-v{self.version}"

    def enter_function(self) -> Callable[[], None]:
        """A function for subprocess's preexec_fn: moves the calling process here.

        It runs in the forked child before exec, so everything the program
        ever maps is charged to this cgroup. It uses only os.open/os.write
        (no allocation-heavy Python) because it runs between fork and exec.
        """
        procs = self._procs

        def enter() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        return enter

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read_text(self._procs).split()]
        except (OSError, ValueError):
            return []

    def read(self) -> CgroupReading:
        p = self.path
        if self.version == 1:
            kmem = _read_int(self._kmem) if self._kmem else None
            return reading_from_v1(_read_int(os.path.join(p, "memory.usage_in_bytes")),
                                   _read_text(os.path.join(p, "memory.stat")), kmem)
        swap = _read_int(self._swap) if self._swap else 0
        return reading_from_v2(_read_int(os.path.join(p, "memory.current")),
                               _read_text(os.path.join(p, "memory.stat")), swap)

    def kill_all(self) -> None:
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def remove(self, wait_s: float = 5.0) -> None:
        """Kill whatever still runs in the cgroup, then remove it.

        rmdir fails with EBUSY while tasks remain, so stragglers (e.g. a
        daemon the workload forked) are killed and waited for; any that
        will not die in wait_s are moved to the parent cgroup so the
        directory can still go.
        """
        if not os.path.isdir(self.path):
            return
        deadline = time.monotonic() + wait_s
        while self.pids() and time.monotonic() < deadline:
            self.kill_all()
            time.sleep(0.01)
        left = self.pids()
        if left:
            parent = os.path.join(os.path.dirname(self.path), "cgroup.procs")
            for pid in left:
                try:
                    with open(parent, "w") as f:
                        f.write(str(pid))
                except OSError:
                    pass
        last: Optional[OSError] = None
        for _ in range(100):
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError as e:
                last = e
                if e.errno != errno.EBUSY:
                    break
                time.sleep(0.01)
        raise CgroupError(f"cannot remove cgroup {self.path}: {last}")


@dataclass
class Sample:
    """One sample of a measured process. Bytes; t in seconds since spawn."""
    t: float
    footprint: Optional[int]
    usage: Optional[int] = None
    anon: Optional[int] = None
    shmem: Optional[int] = None
    kernel: Optional[int] = None
    file: Optional[int] = None
    rss: Optional[int] = None
    pss: Optional[int] = None


def _proc_kib(path: str, key: str) -> Optional[int]:
    """The "key N kB" line of a /proc file, in bytes; None when the process
    is gone or the line is missing (a zombie has no VmRSS)."""
    try:
        text = _read_text(path)
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return None


def read_rss(pid: int) -> Optional[int]:
    """VmRSS of one process from /proc/PID/status (a counter: cheap)."""
    return _proc_kib(f"/proc/{pid}/status", "VmRSS:")


def read_pss(pid: int) -> Optional[int]:
    """Pss of one process from /proc/PID/smaps_rollup (walks page tables: costly)."""
    return _proc_kib(f"/proc/{pid}/smaps_rollup", "Pss:")


def descendants(pid: int) -> list[int]:
    """pid and all its descendants, via /proc/PID/task/TID/children."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                todo.extend(int(c) for c in _read_text(f"/proc/{p}/task/{tid}/children").split())
            except (OSError, ValueError):
                pass
    return out


class Sampler:
    """Takes samples of one running process (and its cgroup, if any).

    With a cgroup the footprint comes from the cgroup and is read every
    tick; PSS and RSS are summed over the processes in the cgroup. Without
    one (method "pss") the footprint is the PSS of the process tree, read
    every tick, and the tick is stretched so that reading PSS costs at most
    fallback_budget of a core.
    """

    def __init__(self, pid: int, cgroup: Optional[MemoryCgroup], t0: float,
                 hz: float = 100.0, pss_budget: float = 0.02,
                 fallback_budget: float = 0.25) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self.t0 = t0
        self.tick = 1.0 / hz
        self.pss_budget = pss_budget
        self.fallback_budget = fallback_budget
        self._next_pss = 0.0
        self._interval = self.tick
        self.pss_reads = 0

    @property
    def method(self) -> str:
        return self.cgroup.method if self.cgroup else "pss"

    @property
    def interval(self) -> float:
        """Seconds to wait before the next sample."""
        return self._interval

    def _pids(self) -> list[int]:
        if self.cgroup:
            return self.cgroup.pids() or [self.pid]
        return descendants(self.pid)

    def _sum(self, fn: Callable[[int], Optional[int]], pids: list[int]) -> Optional[int]:
        vals = [v for v in (fn(p) for p in pids) if v is not None]
        return sum(vals) if vals else None

    def _timed_pss(self, pids: list[int]) -> tuple[Optional[int], float]:
        start = time.monotonic()
        pss = self._sum(read_pss, pids)
        self.pss_reads += 1
        return pss, time.monotonic() - start

    def sample(self) -> Optional[Sample]:
        """One sample, or None once the main process has let go of its memory.

        An exiting process drops its mm (and with it VmRSS in
        /proc/PID/status) before the kernel frees its pages and long before
        it is reaped; samples taken during that teardown would show the
        memory falling to nothing and spoil the final and mean figures.
        """
        now = time.monotonic()
        main_rss = read_rss(self.pid)
        if main_rss is None:
            return None
        pids = self._pids()
        rss = main_rss + (self._sum(read_rss, [p for p in pids if p != self.pid]) or 0)
        if self.cgroup is None:
            pss, cost = self._timed_pss(pids)
            self._interval = max(self.tick, cost / self.fallback_budget)
            return Sample(t=round(now - self.t0, 4), footprint=pss, rss=rss, pss=pss)
        r = self.cgroup.read()
        pss = None
        if now >= self._next_pss:
            pss, cost = self._timed_pss(pids)
            self._next_pss = now + max(self.tick, cost / self.pss_budget)
        return Sample(t=round(now - self.t0, 4), footprint=r.footprint, usage=r.usage,
                      anon=r.anon, shmem=r.shmem, kernel=r.kernel, file=r.file,
                      rss=rss, pss=pss)


def _first_value(path: str, key: str) -> Optional[str]:
    try:
        for line in _read_text(path).splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict:
    """What results are compared across: CPU, memory, kernel, OS, knobs that change allocators' behaviour."""
    os_release = {}
    try:
        for line in _read_text("/etc/os-release").splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                os_release[k] = v.strip('"')
    except OSError:
        pass
    mem_total = _first_value("/proc/meminfo", "MemTotal")

    def sysfs(path: str) -> Optional[str]:
        try:
            return _read_text(path).strip()
        except OSError:
            return None
    u = os.uname()
    hier = CgroupHierarchy.discover()
    return {
        "hostname": socket.gethostname(),
        "kernel": f"{u.sysname} {u.release} {u.version}",
        "arch": u.machine,
        "cpu_model": _first_value("/proc/cpuinfo", "model name"),
        "cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "mem_total_bytes": int(mem_total.split()[0]) * 1024 if mem_total else None,
        "os": os_release.get("PRETTY_NAME"),
        "python": platform.python_version(),
        "page_size": os.sysconf("SC_PAGE_SIZE"),
        "thp": sysfs("/sys/kernel/mm/transparent_hugepage/enabled"),
        "max_map_count": sysfs("/proc/sys/vm/max_map_count"),
        "cgroup": {"version": hier.version, "base": hier.base} if hier else None,
    }
