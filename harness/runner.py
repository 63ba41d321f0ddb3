"""Running processes: one measured process, a matrix of them, and hyperfine timings.

measure() is the core every command shares: it starts a program in a clean
environment inside a fresh memory cgroup (the child enters the cgroup
between fork and exec, so all it ever maps is charged there), samples it
until it exits or times out, reaps it with wait4 for its CPU times, and
removes the cgroup whatever happens (failure, timeout, Ctrl-C).

run_matrix() runs workloads x allocators x trials, shuffling the order
within each trial (so slow drift of the machine, e.g. page cache or
thermal state, does not always favour the same allocator), records failed
runs with their exit code and stderr tail and goes on, and prints progress
with an ETA. time_with_hyperfine() times whole runs, all allocators of one
workload side by side, interleaved: one hyperfine invocation a round, each
allocator once a round.

Time accounting for `bench`: a memory run's wall, user and system time
come from the sampled run itself (os.wait4's rusage; the sampler costs
the workload about 1% of a core at 100 Hz plus the PSS budget), so the
default matrix needs no second set of runs for time. hyperfine adds
unsampled repeated runs only for the throughput workloads, where the
allocator's speed is the point (measured budget: harness/README.md, Time).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator, Optional, TextIO

from . import results as R
from .allocators import MESH_EVENTS_ENV, Allocator, describe
from .sampler import CgroupError, CgroupHierarchy, Sample, Sampler
from .workloads import WORKLOAD_DIR, Workload

STDERR_TAIL_BYTES = 4000


def clean_env(extra: Optional[dict] = None, home: str = "/") -> dict:
    """The whole environment of a measured child: nothing is inherited.

    LD_PRELOAD, MALLOC_*, GLIBC_TUNABLES, MESH_* and friends in the user's
    shell would otherwise silently change what is being measured.
    """
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LC_ALL": "C", "HOME": home,
           "TMPDIR": home}
    env.update(extra or {})
    return env


@dataclass
class Measurement:
    """What measure() saw of one process."""
    argv: list
    method: str
    series: R.MemorySeries = field(default_factory=R.MemorySeries)
    exit_code: Optional[int] = None     # exit status, or -signal
    timed_out: bool = False
    start_error: Optional[str] = None
    wall_s: Optional[float] = None
    user_s: Optional[float] = None
    sys_s: Optional[float] = None
    maxrss_bytes: Optional[int] = None
    pss_reads: int = 0
    exec_s: Optional[float] = None      # spawn to exec: when the program's own clock starts


def _kill(proc: subprocess.Popen, cgroup, new_session: bool) -> None:
    """SIGKILL the child, its process group if it leads one, and all of its cgroup."""
    try:
        if new_session:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if cgroup is not None:
        cgroup.kill_all()


def measure(argv: list, env: dict, hierarchy: Optional[CgroupHierarchy], *,
            hz: float = 100.0, pss_budget: float = 0.02, timeout: Optional[float] = None,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL, new_session: bool = True,
            cwd: Optional[str] = None, tag: str = "",
            on_sample: Optional[Callable[[Sample], None]] = None,
            on_start: Optional[Callable[[int, float], None]] = None) -> Measurement:
    """Run argv to completion in its own memory cgroup, sampling it.

    With hierarchy None (no writable cgroup) the footprint falls back to
    PSS and the measurement's method says "pss". With new_session the
    child gets its own session (a terminal's Ctrl-C reaches only the
    harness, which then kills the child); `trace` turns it off so that an
    interactive program keeps the terminal. on_start(pid, t0) is called
    once the program has started (t0: the time.monotonic() its samples
    count from), e.g. to drive a server from another thread. Raises
    KeyboardInterrupt after cleaning up if interrupted.
    """
    cg = hierarchy.create(tag) if hierarchy is not None else None
    m = Measurement(argv=list(argv), method=cg.method if cg else "pss")
    try:
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=stdin,
                                    stdout=stdout, stderr=stderr, close_fds=True,
                                    start_new_session=new_session,
                                    preexec_fn=cg.enter_function() if cg else None)
        except (OSError, subprocess.SubprocessError) as e:
            m.start_error = f"cannot start {argv[0]}: {e}"
            return m
        # Popen returns once the exec has succeeded (it waits on a
        # close-on-exec pipe), about 10 ms after the fork of this process.
        m.exec_s = time.monotonic() - t0
        try:
            if on_start is not None:
                on_start(proc.pid, t0)
            m.exit_code, ru, end = _sample_until_exit(proc, cg, t0, m, hz, pss_budget,
                                                      timeout, on_sample, new_session)
        except BaseException:
            _kill(proc, cg, new_session)
            try:
                os.waitpid(proc.pid, 0)
            except ChildProcessError:
                pass   # already reaped when the interrupt came
            proc.returncode = -signal.SIGKILL
            raise
        proc.returncode = m.exit_code
        m.wall_s = end - t0
        m.user_s, m.sys_s = ru.ru_utime, ru.ru_stime
        m.maxrss_bytes = ru.ru_maxrss * 1024
        return m
    finally:
        if cg is not None:
            cg.remove()


def _sample_until_exit(proc: subprocess.Popen, cg, t0: float, m: Measurement, hz: float,
                       pss_budget: float, timeout: Optional[float],
                       on_sample: Optional[Callable[[Sample], None]], new_session: bool):
    sampler = Sampler(proc.pid, cg, t0, hz=hz, pss_budget=pss_budget)
    # A pidfd becomes readable the moment the child exits, so the loop wakes
    # at once instead of at the next tick: wall time is exact, not +-10 ms.
    pidfd = os.pidfd_open(proc.pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    try:
        next_tick = time.monotonic()
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                end = time.monotonic()
                break
            if timeout is not None and time.monotonic() - t0 > timeout:
                m.timed_out = True
                _kill(proc, cg, new_session)
                pid, status, ru = os.wait4(proc.pid, 0)
                end = time.monotonic()
                break
            s = sampler.sample()
            if s is not None:
                m.series.append(**asdict(s))
                if on_sample:
                    on_sample(s)
            next_tick = max(next_tick + sampler.interval, time.monotonic())
            poller.poll(max(0.0, next_tick - time.monotonic()) * 1000.0)
    finally:
        os.close(pidfd)
    m.pss_reads = sampler.pss_reads
    return os.waitstatus_to_exitcode(status), ru, end


def file_tail(path: str, limit: int = STDERR_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def read_trace(path: str) -> tuple[R.LiveTrace, Optional[dict], Optional[str]]:
    """Parse a workload trace: (live series, result of the "end" line, problem or None).

    A truncated last line (the process was killed mid-write) is tolerated;
    any other malformed line is reported.
    """
    live = R.LiveTrace()
    result, problem = None, None
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return live, None, "no trace file written"
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            if i != len(lines) - 1:
                problem = f"trace line {i + 1} is not JSON"
            continue
        if not isinstance(d, dict) or "t" not in d:
            problem = problem or f"trace line {i + 1} has no \"t\""
            continue
        live.t.append(d.get("t"))
        live.live.append(d.get("live"))
        live.phase.append(d.get("phase"))
        if d.get("phase") == "end" and isinstance(d.get("result"), dict):
            result = d["result"]
    return live, result, problem


def last_json_line(path: str) -> Optional[dict]:
    for line in reversed(file_tail(path, 65536).splitlines()):
        if line.strip():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                return None
            return d if isinstance(d, dict) else None
    return None


def read_events(path: str) -> list:
    out = []
    try:
        with open(path, "r", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    except OSError:
        pass
    return out


@dataclass
class RunSpec:
    workload: Workload
    allocator: Allocator
    trial: int
    seed: int
    scale: float
    extra_args: tuple = ()


def run_one(spec: RunSpec, hierarchy: Optional[CgroupHierarchy], scratch: str, *,
            workload_dir: str = WORKLOAD_DIR, hz: float = 100.0, pss_budget: float = 0.02,
            timeout: Optional[float] = None) -> R.Run:
    """Run one workload under one allocator, measured; never raises for a failing workload."""
    w, a = spec.workload, spec.allocator
    d = tempfile.mkdtemp(prefix=f"{w.name}-{a.name}-{spec.trial}-", dir=scratch)
    trace, out, err, events = (os.path.join(d, n) for n in
                               ("trace.jsonl", "stdout", "stderr", "events.jsonl"))
    argv = w.argv(spec.seed, spec.scale, trace, workload_dir, spec.extra_args)
    extra = a.child_env()
    if a.is_mesh:
        extra[MESH_EVENTS_ENV] = events
    run = R.Run(workload=w.name, allocator=a.name, trial=spec.trial, seed=spec.seed,
                scale=spec.scale, argv=argv, status="failed",
                started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with recording(run, d):
        with open(out, "wb") as fo, open(err, "wb") as fe:
            m = measure(argv, clean_env(extra, home=d), hierarchy, hz=hz,
                        pss_budget=pss_budget, timeout=timeout, stdout=fo, stderr=fe,
                        cwd=d, tag=f"{w.name}-{a.name}")
        take_measurement(run, m)
        run.stderr_tail = file_tail(err)
        run.live, trace_result, problem = read_trace(trace)
        run.result = trace_result or last_json_line(out)
        run.events = read_events(events) if a.is_mesh else []
        if m.start_error:
            run.error = m.start_error
        elif m.timed_out:
            run.status, run.error = "timeout", f"killed after {timeout:g} s"
        elif m.exit_code != 0:
            run.error = (f"exit status {m.exit_code}" if m.exit_code > 0
                         else f"killed by signal {-m.exit_code} ({signal.Signals(-m.exit_code).name})")
        elif run.result is None:
            run.error = "no result object (neither a trace \"end\" line nor a JSON last line of stdout)"
        elif "checksum" not in run.result:
            run.error = "result object has no checksum"
        else:
            run.status = "ok"
        if problem:
            # The memory figures stand without the live-bytes trace.
            run.warnings.append(problem)
    return run


def take_measurement(run: R.Run, m: Measurement) -> None:
    """What measure() saw of the process, into its Run."""
    run.method, run.memory, run.pss_reads = m.method, m.series, m.pss_reads
    run.exit_code, run.wall_s, run.user_s, run.sys_s = m.exit_code, m.wall_s, m.user_s, m.sys_s
    run.maxrss_bytes, run.live_offset_s = m.maxrss_bytes, m.exec_s


@contextlib.contextmanager
def recording(run: R.Run, scratch_dir: str) -> Iterator[None]:
    """Around one measured run: a memory cgroup that could not be set up is
    the run's error (the run stays "failed" and the matrix goes on), an
    interrupt marks the run and goes on up, and the run's scratch directory
    is removed in any case."""
    try:
        yield
    except CgroupError as e:
        run.error = str(e)
    except KeyboardInterrupt:
        run.status, run.error = "interrupted", "interrupted"
        raise
    finally:
        shutil.rmtree(scratch_dir, ignore_errors=True)


def _fmt_s(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _mib(b: Optional[float]) -> str:
    return "-" if b is None else f"{b / 2**20:.1f} MiB"


class Progress:
    """One line per run on stderr: what runs, n of N, the run's figures, ETA."""

    def __init__(self, total: int, stream: TextIO = sys.stderr, default_s: float = 5.0) -> None:
        self.total, self.done, self.stream = total, 0, stream
        self.start = time.monotonic()
        self.default_s = default_s
        self.per_workload: dict[str, list[float]] = {}
        self.extra_s = 0.0   # estimated time of work after the matrix (timing runs)

    def estimate(self, workload: str) -> float:
        seen = self.per_workload.get(workload)
        if seen:
            return sum(seen) / len(seen)
        allv = [x for v in self.per_workload.values() for x in v]
        return sum(allv) / len(allv) if allv else self.default_s

    def eta(self, remaining: list[str]) -> float:
        return sum(self.estimate(w) for w in remaining) + self.extra_s

    def begin(self, spec: RunSpec) -> None:
        n = len(str(self.total))
        self.stream.write(f"[{self.done + 1:>{n}}/{self.total}] trial {spec.trial} "
                          f"{spec.workload.name} / {spec.allocator.name} ... ")
        self.stream.flush()

    def end(self, run: R.Run, seconds: float, remaining: list[str]) -> None:
        self.done += 1
        self.per_workload.setdefault(run.workload, []).append(seconds)
        if run.ok:
            s = R.summarize(run)
            what = (f"ok {run.wall_s:.2f}s  mean {_mib(s.mean_footprint)}  "
                    f"peak {_mib(s.peak_footprint)}")
            if run.warnings:
                what += "  (warning: " + "; ".join(run.warnings) + ")"
        else:
            what = f"{run.status.upper()}: {run.error}"
        elapsed = time.monotonic() - self.start
        self.stream.write(f"{what}  | {_fmt_s(elapsed)} elapsed, "
                          f"ETA {_fmt_s(self.eta(remaining))}\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()


def plan(workloads: list[Workload], allocators: list[Allocator], trials: int,
         scale_of: Callable[[Workload], float], seed: int, order_seed: int,
         args_of: Callable[[Workload], tuple] = lambda w: ()) -> list[RunSpec]:
    """The runs of a matrix in execution order: trial by trial, shuffled within each."""
    specs = []
    for trial in range(1, trials + 1):
        pairs = [(w, a) for w in workloads for a in allocators]
        random.Random(order_seed * 1000 + trial).shuffle(pairs)
        specs += [RunSpec(w, a, trial, seed + trial - 1, scale_of(w), tuple(args_of(w)))
                  for w, a in pairs]
    return specs


@dataclass
class MatrixConfig:
    workloads: list
    allocators: list
    trials: int = 3
    scale: float = 1.0
    full: bool = False
    seed: int = 1
    order_seed: int = 1
    hz: float = 100.0
    pss_budget: float = 0.02
    timeout: float = 300.0
    timing: str = "throughput"      # none | throughput | all
    timing_runs: int = 5
    timing_warmup: int = 1
    workload_dir: str = WORKLOAD_DIR
    skipped: dict = field(default_factory=dict)   # allocator -> why it was left out

    def scale_of(self, w: Workload) -> float:
        return w.paper_scale if self.full else self.scale

    def args_of(self, w: Workload) -> tuple:
        return tuple(w.paper_args) if self.full else ()


def git_commit() -> Optional[str]:
    from .allocators import REPO_ROOT, git_describe
    return git_describe(REPO_ROOT)


def run_matrix(cfg: MatrixConfig, hierarchy: Optional[CgroupHierarchy], scratch_parent: str,
               machine: dict, stream: TextIO = sys.stderr, argv: Optional[list] = None) -> R.MatrixResult:
    """Run the matrix; on Ctrl-C return what was done with complete=False."""
    start = time.monotonic()
    workloads, allocators = cfg.workloads, cfg.allocators
    config = {k: v for k, v in asdict(cfg).items() if k not in ("workloads", "allocators")}
    config["workloads"] = [w.name for w in workloads]
    config["allocators"] = [a.name for a in allocators]
    config["scales"] = {w.name: cfg.scale_of(w) for w in workloads}
    config["extra_args"] = {w.name: list(cfg.args_of(w)) for w in workloads if cfg.args_of(w)}
    res = R.MatrixResult(
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=machine, commit=git_commit(),
        config=config, allocators={a.name: asdict(describe(a)) for a in allocators},
        harness_argv=list(argv or []))
    specs = plan(workloads, allocators, cfg.trials, cfg.scale_of, cfg.seed, cfg.order_seed,
                 cfg.args_of)
    prog = Progress(len(specs), stream)
    timed = [w for w in workloads if cfg.timing == "all" or (cfg.timing == "throughput" and w.throughput)]
    if hierarchy is None:
        prog.note("warning: no writable memory cgroup; footprint falls back to PSS "
                  "(which cannot see unmapped memfd pages) and runs are marked \"pss\"")
    os.makedirs(scratch_parent, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=".scratch-", dir=scratch_parent)
    try:
        for i, spec in enumerate(specs):
            remaining = [s.workload.name for s in specs[i + 1:]]
            per_run = {w.name: prog.estimate(w.name) for w in timed}
            prog.extra_s = sum(per_run[w.name] * len(allocators) * (cfg.timing_runs + cfg.timing_warmup)
                               for w in timed)
            prog.begin(spec)
            t = time.monotonic()
            run = run_one(spec, hierarchy, scratch, workload_dir=cfg.workload_dir, hz=cfg.hz,
                          pss_budget=cfg.pss_budget, timeout=cfg.timeout)
            res.runs.append(run)
            prog.end(run, time.monotonic() - t, remaining)
        for w in timed:
            ok = [a for a in allocators if any(r.ok for r in res.runs
                                               if r.workload == w.name and r.allocator == a.name)]
            if not ok:
                continue
            prog.note(f"timing {w.name} with hyperfine: {len(ok)} allocators x "
                      f"{cfg.timing_runs} runs (+{cfg.timing_warmup} warm-up) ...")
            try:
                res.timings += time_with_hyperfine(w, ok, cfg.scale_of(w), cfg.seed, scratch,
                                                   runs=cfg.timing_runs, warmup=cfg.timing_warmup,
                                                   workload_dir=cfg.workload_dir,
                                                   timeout=cfg.timeout, extra=cfg.args_of(w))
            except TimingError as e:
                prog.note(f"warning: {e}")
        res.complete = True
    except KeyboardInterrupt:
        prog.note("\ninterrupted: keeping the runs that finished")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        res.duration_s = time.monotonic() - start
    return res


class TimingError(RuntimeError):
    pass


def time_with_hyperfine(w: Workload, allocators: list[Allocator], scale: float, seed: int,
                        scratch: str, *, runs: int = 5, warmup: int = 1,
                        workload_dir: str = WORKLOAD_DIR, timeout: Optional[float] = None,
                        extra: tuple = (), hyperfine: str = "hyperfine") -> list[R.Timing]:
    """Time w under each allocator, interleaved: `runs` rounds, each one
    hyperfine invocation that runs every allocator once (the first round
    after the warm-up runs), the order rotated by one allocator a round.
    hyperfine alone runs all of one command's runs before the next
    command's, so a change in the machine's speed (another tenant of the
    host, a frequency step) would land on whichever allocator ran then."""
    if shutil.which(hyperfine) is None:
        raise TimingError("hyperfine is not installed (Debian package hyperfine); no timings")
    # Every command goes through env(1), even glibc's, so each pays the
    # same extra exec.
    commands = []
    for a in allocators:
        env_args = [f"{k}={v}" for k, v in sorted(a.child_env().items())]
        commands.append(shlex.join(["env", *env_args,
                                    *w.argv(seed, scale, None, workload_dir, extra)]))
    per = {a.name: {"times": [], "user": [], "system": [], "exit_codes": []} for a in allocators}
    pairs = list(zip(allocators, commands))
    for k in range(runs):
        first = k % len(pairs)
        order = pairs[first:] + pairs[:first]
        for name, r in _hyperfine_round(w, order, scratch, warmup if k == 0 else 0,
                                        timeout, hyperfine).items():
            acc = per[name]
            acc["times"] += r.get("times", [])
            acc["exit_codes"] += r.get("exit_codes", [])
            acc["user"].append(r["user"])
            acc["system"].append(r["system"])
    out = []
    for a, c in zip(allocators, commands):
        acc = per[a.name]
        t = acc["times"]
        if not t:
            continue
        out.append(R.Timing(workload=w.name, allocator=a.name, scale=scale, seed=seed,
                            command=c, runs=len(t), mean_s=statistics.fmean(t),
                            stddev_s=statistics.stdev(t) if len(t) > 1 else None,
                            median_s=statistics.median(t), min_s=min(t), max_s=max(t),
                            user_s=statistics.fmean(acc["user"]),
                            system_s=statistics.fmean(acc["system"]),
                            times=t, exit_codes=acc["exit_codes"]))
    return out


def _hyperfine_round(w: Workload, order: list, scratch: str, warmup: int,
                     timeout: Optional[float], hyperfine: str) -> dict:
    """One hyperfine invocation, one run of each (allocator, command) in
    order; returns hyperfine's result for each allocator name."""
    d = tempfile.mkdtemp(prefix=f"hyperfine-{w.name}-", dir=scratch)
    export = os.path.join(d, "hyperfine.json")
    # -N: no intermediate shell.
    argv = [hyperfine, "-N", "--style", "none", "-i", "--runs", "1",
            "--warmup", str(warmup), "--export-json", export]
    for a, c in order:
        argv += ["--command-name", a.name, c]
    limit = None if timeout is None else timeout * len(order) * (1 + warmup)
    try:
        p = subprocess.run(argv, env=clean_env(home=d), cwd=d, capture_output=True,
                           text=True, timeout=limit)
        if p.returncode != 0:
            raise TimingError(f"hyperfine failed ({p.returncode}): {p.stderr.strip()[-500:]}")
        with open(export, "r", encoding="utf-8") as f:
            data = json.load(f)
    except subprocess.TimeoutExpired:
        raise TimingError(f"hyperfine for {w.name} exceeded {limit:g} s") from None
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return {a.name: r for (a, _), r in zip(order, data.get("results", []))}
