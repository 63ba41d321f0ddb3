"""Figure 7: Debian's real redis-server running the paper's Redis script.

The server runs on 127.0.0.1 (a free port, no persistence, DEBUG enabled)
in its own memory cgroup, sampled from the moment it is spawned, while a
driver thread plays the paper's harness (mesh-testsuite, 1-redis/test)
with redis-cli, which runs outside the cgroup and without any preload:

  config set maxmemory 100mb
  config set maxmemory-policy allkeys-lru
  debug populate 700000 asdf 240
  debug populate 170000 asdf 492
  (0.5 s) dbsize; info                 <- commands: Redis evicts before each
  (5 s)   info
  (after 7.5 s) EXISTS on samples of the keys, to tell the end state
  at 10 s from spawn: SIGTERM, as the paper's harness did.

Runs of this script end in one of two states (end_state() below): the
second populate looks up the keys the first created under its own
numbers, and a lookup renews a key's LRU time, whose clock ticks once a
second. If it ticked in between, those keys are the newest and all survive
eviction; if not, eviction picks among all keys alike. The probe counts,
with EXISTS (which leaves LRU times alone), how many of an even sample of
each group still exist, after the footprint at 7.5 s has been read.

The footprint at 7.5 s is read from the sampled series (the value in
force at that moment); populate time is the wall time of the two DEBUG
POPULATE round trips. The paper's jemalloc row used active
defragmentation ("config set activedefrag yes" where the paper's harness
sent its first "info"). Debian's redis links the stock libjemalloc, which
lacks the hint active defrag needs, so the servers are built from
Debian's source of the installed version (redis_build.py): with Redis's
bundled jemalloc for the jemalloc rows, on the system malloc for the
rest (preloaded; glibc's is the system's own), both with our patch that
lets the libc build defragment through libmesh's mesh_defrag_* API.
Without that build, Debian's redis-server runs every row as before and
the active-defrag rows are skipped: probe_activedefrag() asks a
throw-away server and records its answer.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Optional

from .. import results as R
from .. import runner
from ..allocators import MESH_EVENTS_ENV, MULTIARCH, REPO_ROOT, Allocator, builtin_allocators
from ..sampler import CgroupHierarchy
from . import redis_build

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"
GLIBC_SHIM = os.path.join(REPO_ROOT, "workloads", "bin", "glibc-shim.so")
WORKLOAD = "redis-server"

# The allocators of Figure 7, in the order tables and plots use.
ALLOCATORS = ("jemalloc", "jemalloc-activedefrag", "glibc", "mesh", "mesh-activedefrag",
              "mesh-nomesh", "mesh-nomesh-activedefrag", "mesh-norand", "mimalloc", "tcmalloc")

# Debian's libjemalloc preloaded into the libc build, as libmesh is (the
# Redis latency benchmark's row; Figure 7 does not run it).
SAME_BINARY_JEMALLOC = "jemalloc-libc"

# Rows that turn Redis's active defragmentation on, and the row each is
# otherwise the same as.
DEFRAG_ROWS = {"jemalloc-activedefrag": "jemalloc", "mesh-activedefrag": "mesh",
               "mesh-nomesh-activedefrag": "mesh-nomesh"}

# Sent with "config set activedefrag yes". Redis 7's defaults would let
# the defragmenter use 1-25% of a core; the paper ran Redis 4.0.2, whose
# defaults were 25-75%, which is what lets a scan finish within the
# script's 7.5 s. The thresholds stay Redis's defaults (start above 10%
# fragmentation and 100 MiB of it); active-defrag-ignore-bytes is lowered
# to 10 MiB so that a heap meshing has already compacted below 100 MiB of
# fragmentation is still defragmented (the same for every row).
DEFRAG_CONFIG = (("active-defrag-cycle-min", "25"), ("active-defrag-cycle-max", "75"),
                 ("active-defrag-ignore-bytes", "10mb"))

# INFO fields kept in a run's result.
INFO_FIELDS = ("used_memory", "used_memory_rss", "mem_fragmentation_ratio",
               "allocator_frag_ratio", "allocator_allocated", "allocator_active",
               "allocator_resident", "mem_allocator", "evicted_keys", "expired_keys",
               "active_defrag_running", "active_defrag_hits", "active_defrag_misses",
               "active_defrag_key_hits", "active_defrag_key_misses", "total_active_defrag_time",
               "active_defrag_cpu_us", "used_cpu_user", "used_cpu_sys",
               "total_eviction_exceeded_time")


@dataclass(frozen=True)
class RedisScript:
    """The paper's script and timeline; the tests shrink it."""
    maxmemory: str = "100mb"
    policy: str = "allkeys-lru"
    populates: tuple = ((700000, "asdf", 240), (170000, "asdf", 492))
    settle_s: float = 0.5       # after the script: dbsize and info
    steady_s: float = 5.0       # then the second info
    duration_s: float = 10.0    # SIGTERM this long after spawn
    mark_s: float = 7.5         # the footprint the paper reports
    ready_timeout_s: float = 10.0
    cli_timeout_s: float = 120.0

    def describe(self) -> dict:
        return {"maxmemory": self.maxmemory, "policy": self.policy,
                "populates": [list(p) for p in self.populates], "settle_s": self.settle_s,
                "steady_s": self.steady_s, "duration_s": self.duration_s, "mark_s": self.mark_s}


PAPER_SCRIPT = RedisScript()

# The end states (see the module's docstring), and how many keys of each
# group the probe asks about.
RENEWED, EVEN = "renewed", "even"
PROBE_KEYS = 500


def probe_groups(script: RedisScript) -> Optional[tuple[list[str], list[str]]]:
    """Even samples of the keys the later populates look up again (renewed
    when the clock ticked) and of the first populate's other keys; None when
    the script has no such overlap."""
    if len(script.populates) < 2:
        return None
    first_n, prefix, _ = script.populates[0]
    looked_up = max((int(n) for n, p, _ in script.populates[1:] if p == prefix), default=0)
    looked_up = min(looked_up, int(first_n))
    if looked_up < 1 or looked_up >= int(first_n):
        return None

    def sample(lo: int, hi: int) -> list[str]:
        k = min(PROBE_KEYS, hi - lo)
        return [f"{prefix}:{lo + (hi - lo) * i // k}" for i in range(k)]
    return sample(0, looked_up), sample(looked_up, int(first_n))


def end_state(renewed_alive: float, others_alive: float) -> str:
    """RENEWED when the looked-up keys outlived the others clearly, else EVEN."""
    return RENEWED if renewed_alive - others_alive > 0.25 else EVEN


@dataclass(frozen=True)
class Servers:
    """The redis-server binaries the rows run: built from source (jemalloc
    rows on the bundled-jemalloc build, the rest on the libc build), or
    Debian's for every row when there is no build."""
    jemalloc: str = REDIS_SERVER
    libc: str = REDIS_SERVER
    built: Optional[redis_build.RedisBuild] = None

    def of(self, name: str) -> str:
        return self.jemalloc if DEFRAG_ROWS.get(name, name) == "jemalloc" else self.libc


DEBIAN_SERVERS = Servers()


def built_servers(b: redis_build.RedisBuild) -> Servers:
    return Servers(b.server("jemalloc"), b.server("libc"), b)


def redis_allocators(servers: Servers = DEBIAN_SERVERS,
                     mesh: Optional[dict] = None) -> dict[str, Allocator]:
    """What each name means for redis-server. mesh: libmesh allocators to
    use instead of the registry's (the run's snapshot of the library)."""
    reg = {**builtin_allocators(), **(mesh or {})}
    built = servers.built is not None
    jem = ("Redis's bundled jemalloc, linked into redis-server-jemalloc built from source"
           if built else "jemalloc linked into Debian's redis-server")
    out = {
        "jemalloc": Allocator("jemalloc", None, description=f"{jem} (nothing preloaded)"),
        "glibc": (Allocator("glibc", None, description="glibc malloc: redis-server-libc built "
                            "from source, nothing preloaded") if built else
                  Allocator("glibc", GLIBC_SHIM,
                            description="glibc malloc through workloads/bin/glibc-shim.so")),
    }
    for name in ("mesh", "mesh-nomesh", "mesh-norand", "mimalloc", "tcmalloc"):
        out[name] = reg[name]
    # jemalloc on the binary the preloaded rows run: what the allocator
    # costs apart from how the two builds differ.
    out[SAME_BINARY_JEMALLOC] = replace(
        reg["jemalloc"], name=SAME_BINARY_JEMALLOC,
        description="Debian's libjemalloc preloaded into " + (
            "redis-server-libc built from source" if built else
            "Debian's redis-server (which links it already)"))
    for row, base in DEFRAG_ROWS.items():
        out[row] = replace(out[base], name=row,
                           description=f"{out[base].description}, CONFIG SET activedefrag yes")
    return out


def linked_jemalloc() -> Optional[str]:
    """The libjemalloc redis-server loads, from ldd (None if it links none)."""
    try:
        out = subprocess.run(["ldd", REDIS_SERVER], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        if "libjemalloc" in line and "=>" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(port: int, workdir: str, server: str = REDIS_SERVER) -> list[str]:
    return [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--enable-debug-command", "yes", "--daemonize", "no",
            "--dir", workdir, "--logfile", ""]


class CliError(RuntimeError):
    pass


def cli(port: int, *args: str, timeout: float = 30.0) -> str:
    """One redis-cli command: its reply as text. Raises CliError on an error reply."""
    try:
        p = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), *args],
                           env=runner.clean_env(), capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CliError(f"redis-cli {' '.join(args)}: no reply in {timeout:g} s") from None
    out = p.stdout.strip()
    if p.returncode != 0 or out.startswith("ERR") or out.startswith("(error)") \
            or "Could not connect" in out + p.stderr:
        raise CliError(f"redis-cli {' '.join(args)}: {(out or p.stderr.strip())[:300]}")
    return out


def parse_info(text: str, fields: tuple = INFO_FIELDS) -> dict:
    """The INFO reply's fields named in `fields`, numbers as numbers."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.strip().partition(":")
        if sep and k in fields:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v)
                except ValueError:
                    out[k] = v
    return out


def probe_activedefrag(server: str = REDIS_SERVER, env: Optional[dict] = None) -> tuple[bool, str]:
    """Does this redis-server, with this environment (a preload), accept
    CONFIG SET activedefrag yes? (answer, its reply)"""
    d = tempfile.mkdtemp(prefix="redis-probe-")
    port = free_port()
    proc = subprocess.Popen(server_argv(port, d, server), env=runner.clean_env(env, home=d), cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                cli(port, "ping", timeout=5)
                break
            except CliError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    return False, "redis-server did not start"
                time.sleep(0.02)
        p = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), "config", "set",
                            "activedefrag", "yes"], env=runner.clean_env(), capture_output=True,
                           text=True, timeout=30)
        reply = (p.stdout.strip() or p.stderr.strip())
        return reply == "OK", reply
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@dataclass
class ScriptDriver:
    """The client side of one run, on its own thread."""
    port: int
    script: RedisScript
    activedefrag: bool
    pid: int = 0
    pidfd: int = -1
    t0: float = 0.0
    result: dict = field(default_factory=dict)
    error: Optional[str] = None
    thread: Optional[threading.Thread] = None
    stop: threading.Event = field(default_factory=threading.Event)

    def since(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def start(self, pid: int, t0: float) -> None:
        # A pidfd names this process even after it is reaped, so a late
        # signal can never reach a process that reused the pid.
        self.pid, self.t0 = pid, t0
        self.pidfd = os.pidfd_open(pid)
        self.thread = threading.Thread(target=self._run, name="redis-driver", daemon=True)
        self.thread.start()

    def _signal(self, sig: int) -> None:
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
        except (ProcessLookupError, OSError):
            pass   # gone already

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=self.script.cli_timeout_s + 30)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    def _sleep(self, seconds: float) -> None:
        if seconds > 0 and self.stop.wait(seconds):
            raise CliError("stopped: the server is gone")

    def _sleep_until(self, t: float) -> None:
        self._sleep(self.t0 + t - time.monotonic())

    def wait_ready(self) -> None:
        """Until the server answers PING (records ready_s)."""
        s = self.script
        while True:
            try:
                cli(self.port, "ping", timeout=5)
                break
            except CliError:
                if time.monotonic() - self.t0 > s.ready_timeout_s:
                    raise CliError(f"redis-server did not answer within {s.ready_timeout_s:g} s")
                self._sleep(0.01)
        self.result["ready_s"] = self.since()

    def play_script(self) -> None:
        """The paper's script: the memory limit and policy, then the
        populates, timed one by one."""
        s, res = self.script, self.result
        start = time.monotonic()
        cli(self.port, "config", "set", "maxmemory", s.maxmemory)
        cli(self.port, "config", "set", "maxmemory-policy", s.policy)
        res["populate_s"], res["populate_at_s"] = [], []
        for keys, prefix, size in s.populates:
            res["populate_at_s"].append(self.since())
            t = time.monotonic()
            reply = cli(self.port, "debug", "populate", str(keys), prefix, str(size),
                        timeout=s.cli_timeout_s)
            if reply != "OK":
                raise CliError(f"debug populate replied {reply[:200]!r}")
            res["populate_s"].append(round(time.monotonic() - t, 6))
        res["populate_total_s"] = round(sum(res["populate_s"]), 6)
        res["script_s"] = round(time.monotonic() - start, 6)
        res["script_end_s"] = self.since()

    def _run(self) -> None:
        try:
            self.wait_ready()
            self.play_script()
            self.after_script()
        except BaseException as e:   # the server must not outlive a failed driver
            self.error = str(e) or type(e).__name__
            self._signal(signal.SIGKILL)

    def after_script(self) -> None:
        """Figure 7's timeline after the script, ending with SIGTERM."""
        s, res = self.script, self.result
        self._sleep(s.settle_s)
        res["dbsize"] = int(cli(self.port, "dbsize"))
        if self.activedefrag:
            for k, v in DEFRAG_CONFIG:
                cli(self.port, "config", "set", k, v)
            reply = cli(self.port, "config", "set", "activedefrag", "yes")
            res["activedefrag_reply"] = reply
            res["activedefrag_at_s"] = self.since()
        res["info_settled"] = parse_info(cli(self.port, "info"))
        res["info_settled_at_s"] = self.since()
        self._sleep(s.steady_s)
        res["info_steady"] = parse_info(cli(self.port, "info"))
        res["info_steady_at_s"] = self.since()
        if self.activedefrag:
            cli(self.port, "config", "set", "activedefrag", "no")
        groups = probe_groups(s)
        if groups is not None and s.mark_s + 0.1 < s.duration_s:
            self._sleep_until(s.mark_s + 0.05)
            alive = [int(cli(self.port, "exists", *g)) / len(g) for g in groups]
            res["end_state"] = {"renewed_alive": round(alive[0], 4),
                                "others_alive": round(alive[1], 4),
                                "probed_at_s": self.since(),
                                "state": end_state(*alive)}
        # CPU and defrag counters over the whole run, just before the end.
        self._sleep_until(s.duration_s - 0.3)
        res["info_final"] = parse_info(cli(self.port, "info"))
        res["info_final_at_s"] = self.since()
        self._sleep_until(s.duration_s)
        res["stopped_at_s"] = self.since()
        self._signal(signal.SIGTERM)


def value_at(t: list, v: list, when: float) -> Optional[float]:
    """The sampled value in force at time `when`: the last sample at or before
    it, provided the series goes on past it (a run that ended earlier has no
    value then)."""
    best, covered = None, False
    for a, b in zip(t, v):
        if a is None or b is None:
            continue
        if a > when:
            covered = True
            break
        best = b
    return best if covered else None


def parse_mallocstats(text: str) -> Optional[dict]:
    """libmesh's MALLOCSTATS=2 report at exit: per size class (by object
    size) its pages and objects per span, physical spans, live objects and
    meshed-away spans; and the large objects' bytes. None if absent."""
    lines = text.splitlines()
    try:
        i = next(k for k, l in enumerate(lines) if l.strip() == "-- size classes --")
    except StopIteration:
        return None
    classes, large = {}, None
    for line in lines[i + 2:]:
        f = line.split()
        if len(f) == 12 and all(x.isdigit() for x in f):
            size, pages, objs, spans, live, _, _, _, _, _, aliases, _ = map(int, f)
            classes[str(size)] = {"pages": pages, "objects": objs, "spans": spans, "live": live,
                                  "aliases": aliases}
        elif line.startswith("large objects:"):
            try:
                large = int(float(line.split(" in ")[1].split()[0]) * 2**20)
            except (IndexError, ValueError):
                large = None
            break
        else:
            break
    return {"classes": classes, "large_bytes": large} if classes else None


def measure_server(run: R.Run, env: dict, drv: ScriptDriver,
                   hierarchy: Optional[CgroupHierarchy], cwd: str, log: str,
                   events: Optional[str], *, hz: float, pss_budget: float, timeout: float,
                   tag: str) -> runner.Measurement:
    """redis-server (run.argv) in its own memory cgroup, drv its client, its
    output into log: what was measured, the log's tail and the MESH_EVENTS
    log (events, for the libmesh rows) go into run."""
    with open(log, "wb") as fo:
        m = runner.measure(run.argv, env, hierarchy, hz=hz, pss_budget=pss_budget,
                           timeout=timeout, stdout=fo, stderr=subprocess.STDOUT, cwd=cwd,
                           tag=tag, on_start=drv.start)
    drv.close()
    runner.take_measurement(run, m)
    run.stderr_tail = runner.file_tail(log, 1500)
    run.events = runner.read_events(events) if events else []
    return m


def server_failed(run: R.Run, m: runner.Measurement, drv: ScriptDriver) -> bool:
    """Whether the server or its driver failed, with why as the run's error
    (a server that outlived SIGTERM makes the run a timeout)."""
    if m.start_error:
        run.error = m.start_error
    elif drv.error:
        run.error = f"driver: {drv.error}"
    elif m.timed_out:
        run.status, run.error = "timeout", "redis-server did not exit after SIGTERM"
    elif m.exit_code != 0:
        run.error = f"redis-server exit status {m.exit_code}"
    else:
        return False
    return True


def run_redis(name: str, hierarchy: Optional[CgroupHierarchy], scratch: str, *, trial: int,
              script: RedisScript = PAPER_SCRIPT, hz: float = 100.0,
              pss_budget: float = 0.02, allocators: Optional[dict] = None,
              servers: Servers = DEBIAN_SERVERS) -> R.Run:
    """One run of the script under allocator `name` (a key of redis_allocators()).

    Never raises for a failing run: the Run says what went wrong. The
    server is killed (with its whole cgroup) whatever happens.
    """
    a = (allocators or redis_allocators(servers))[name]
    d = tempfile.mkdtemp(prefix=f"redis-{name}-{trial}-", dir=scratch)
    out, events = os.path.join(d, "server.log"), os.path.join(d, "events.jsonl")
    port = free_port()
    argv = server_argv(port, d, servers.of(name))
    extra = a.child_env()
    if a.is_mesh:
        extra[MESH_EVENTS_ENV] = events
        extra["MALLOCSTATS"] = "2"   # where the memory is, printed at exit
    run = R.Run(workload=WORKLOAD, allocator=name, trial=trial, seed=0, scale=1.0, argv=argv,
                status="failed", started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    drv = ScriptDriver(port, script, activedefrag=name in DEFRAG_ROWS)
    with runner.recording(run, d):
        try:
            missing = a.missing()
            if missing:
                run.error = missing
                return run
            m = measure_server(run, runner.clean_env(extra, home=d), drv, hierarchy, d, out,
                               events if a.is_mesh else None, hz=hz, pss_budget=pss_budget,
                               timeout=script.duration_s + 60, tag=f"redis-{name}")
            res = dict(drv.result)
            res["port"] = port
            res["mark_s"] = script.mark_s
            res["footprint_at_mark"] = value_at(m.series.t, m.series.footprint, script.mark_s)
            for col in ("anon", "shmem", "kernel"):
                res[f"{col}_at_mark"] = value_at(m.series.t, getattr(m.series, col), script.mark_s)
            if a.is_mesh:
                with open(out, encoding="utf-8", errors="replace") as fo:
                    res["mallocstats"] = parse_mallocstats(fo.read())
            run.result = res
            if not server_failed(run, m, drv):
                if res["footprint_at_mark"] is None:
                    run.error = f"no sample at {script.mark_s:g} s"
                else:
                    run.status = "ok"
        finally:
            # measure() has killed and reaped the server and removed its
            # cgroup by now, whatever happened; the driver may still be
            # waiting on redis-cli, whose connection is gone.
            drv.close()
    return run


def version_line(server: str) -> Optional[str]:
    try:
        return subprocess.run([server, "--version"], capture_output=True, text=True,
                              timeout=30).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        return None


def version(servers: Servers = DEBIAN_SERVERS) -> dict:
    """redis-server's own version line(s), and the jemalloc Debian's links."""
    out = {"redis_server": version_line(REDIS_SERVER), "linked_jemalloc": linked_jemalloc(),
           "multiarch": MULTIARCH}
    if servers.built is not None:
        out["built_from"] = servers.built.version
        out["built_jemalloc"] = version_line(servers.jemalloc)
        out["built_libc"] = version_line(servers.libc)
        out["patch"] = os.path.relpath(redis_build.PATCH, REPO_ROOT)
    return out
