"""The runner against stand-in programs that follow the workload contract.

The stand-ins (Python scripts written to a temporary directory under the
catalog's names) each play one case: a good run, a failing one, a hang, a
crash, a missing result, a checksum that depends on the allocator. They
test the runner, not the real workloads (test_cli runs those).
"""

import io
import json
import os
import stat
import tempfile
import textwrap
import unittest

from harness import allocators as A
from harness import results as R
from harness import runner
from harness import workloads as W
from harness.sampler import CGROUP_PREFIX, CgroupError, CgroupHierarchy

STANDIN = textwrap.dedent('''\
    #!/usr/bin/python3
    import json, os, signal, sys, time
    name = os.path.basename(sys.argv[0])
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    seed, scale, trace = int(args["--seed"]), float(args["--scale"]), args.get("--trace")
    start = time.monotonic()
    lines = []
    def mark(live, phase, **extra):
        lines.append(json.dumps(dict(t=time.monotonic() - start, live=live, phase=phase, **extra)))
    def finish(result):
        mark(0, "end", result=result)
        if trace:
            with open(trace, "w") as f:
                f.write("\\n".join(lines) + "\\n")
        print("some output")
        print(json.dumps(result))
    checksum = "%016x" % seed
    if name in ("fragmenter", "churn"):
        mark(0, "fill")
        block = bytearray(b"x" * (8 << 20))
        mark(len(block), "hold")
        time.sleep(0.15 * scale)
        if os.environ.get("MESH_EVENTS"):
            with open(os.environ["MESH_EVENTS"], "a") as f:
                f.write(json.dumps({"pairs": 3}) + "\\n")
        finish({"checksum": checksum, "env": dict(os.environ), "argv": sys.argv})
    elif name == "sizeshift":
        sys.stderr.write("boom: sizeshift failed on purpose\\n")
        sys.exit(3)
    elif name == "regular":
        time.sleep(30)
    elif name == "redis-like":
        finish({"checksum": "%016x" % (seed + ("LD_PRELOAD" in os.environ))})
    elif name == "browser-like":
        print(json.dumps({"checksum": checksum, "score": 1.0}))
    elif name == "larson":
        print("no result here")
    elif name == "prodcons":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif name.startswith("replace-"):
        mark(0, "run")
        finish({"checksum": checksum, "argv": sys.argv})
    ''')


def write_standins(d: str) -> None:
    for name in {os.path.basename(w.binary()) for w in W.CATALOG.values()}:
        p = os.path.join(d, name)
        with open(p, "w") as f:
            f.write(STANDIN)
        os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR)


class TestMatrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.bin = os.path.join(cls.tmp.name, "bin")
        os.mkdir(cls.bin)
        write_standins(cls.bin)
        cls.h = CgroupHierarchy.discover()
        if cls.h is None:
            raise AssertionError("no writable memory cgroup")
        reg = A.builtin_allocators()
        cls.allocs = [reg["glibc"], reg["jemalloc"]]
        cfg = runner.MatrixConfig(workloads=list(W.CATALOG.values()), allocators=cls.allocs,
                                  trials=1, scale=0.5, seed=7, timeout=1.0, timing="throughput",
                                  timing_runs=2, timing_warmup=0, workload_dir=cls.bin)
        cls.progress = io.StringIO()
        cls.out = os.path.join(cls.tmp.name, "results")
        cls.res = runner.run_matrix(cfg, cls.h, cls.out, {"cpus": 2}, stream=cls.progress)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def run_of(self, workload, allocator="glibc") -> R.Run:
        return next(r for r in self.res.runs if r.workload == workload and r.allocator == allocator)

    def test_complete_and_clean(self):
        self.assertTrue(self.res.complete)
        self.assertEqual(len(self.res.runs), 2 * len(W.CATALOG))
        self.assertEqual([n for n in os.listdir(self.h.base)
                          if n.startswith(f"{CGROUP_PREFIX}{os.getpid()}-")], [])
        self.assertEqual(os.listdir(self.out), [], "scratch directory removed")
        self.assertEqual(self.res.config["scales"]["churn"], 0.5)
        self.assertEqual(set(self.res.allocators), {"glibc", "jemalloc"})
        self.assertEqual(self.res.allocators["jemalloc"]["version_source"], "dpkg")

    def test_good_run(self):
        for alloc in ("glibc", "jemalloc"):
            r = self.run_of("fragmenter", alloc)
            self.assertEqual(r.status, "ok", r.error)
            self.assertEqual(r.method, f"cgroup-v{self.h.version}")
            argv = r.result["argv"]
            self.assertEqual(argv[1:5], ["--seed", "7", "--scale", "0.5"])
            self.assertEqual(argv[5], "--trace")
            env = r.result["env"]
            want = {"PATH", "LC_ALL", "HOME", "TMPDIR"} | ({"LD_PRELOAD"} if alloc == "jemalloc" else set())
            self.assertEqual(set(env), want, "the child's environment is clean and explicit")
            if alloc == "jemalloc":
                self.assertTrue(env["LD_PRELOAD"].endswith("libjemalloc.so.2"))
            s = R.summarize(r)
            self.assertGreater(s.peak_footprint, 8 << 20)
            self.assertGreater(s.samples, 5)
            self.assertEqual(r.live.phase, ["fill", "hold", "end"])
            self.assertEqual(r.live.live[1], 8 << 20)
            self.assertGreater(r.live_offset_s, 0)
            self.assertGreater(r.wall_s, 0.07)
            self.assertIsNotNone(r.user_s)
            self.assertEqual(r.events, [])

    def test_one_program_several_workloads(self):
        """replace-small-xt runs the replace-small program with its own flags."""
        one, two = self.run_of("replace-small"), self.run_of("replace-small-xt")
        self.assertEqual((one.status, two.status), ("ok", "ok"), (one.error, two.error))
        self.assertEqual(os.path.basename(two.result["argv"][0]), "replace-small")
        self.assertEqual(one.result["argv"][1:5], two.result["argv"][1:5])
        self.assertNotIn("--threads", one.result["argv"])
        self.assertEqual(two.result["argv"][5:7], ["--threads", "2"])

    def test_failures_are_recorded_and_the_matrix_goes_on(self):
        r = self.run_of("sizeshift")
        self.assertEqual((r.status, r.exit_code, r.error), ("failed", 3, "exit status 3"))
        self.assertIn("boom: sizeshift failed on purpose", r.stderr_tail)
        r = self.run_of("regular")
        self.assertEqual(r.status, "timeout")
        self.assertLess(r.wall_s, 3)
        r = self.run_of("prodcons")
        self.assertEqual(r.status, "failed")
        self.assertIn("SIGSEGV", r.error)
        r = self.run_of("larson")
        self.assertEqual(r.status, "failed")
        self.assertIn("no result object", r.error)
        r = self.run_of("browser-like")
        self.assertEqual(r.status, "ok", "a result on stdout's last line suffices")
        self.assertEqual(r.result["score"], 1.0)
        self.assertEqual(r.warnings, ["no trace file written"])

    def test_checksum_mismatch_found(self):
        msgs = R.checksum_mismatches(self.res)
        self.assertEqual(len(msgs), 1)
        self.assertIn("redis-like", msgs[0])

    def test_hyperfine_timings_for_throughput_workloads(self):
        by = {(t.workload, t.allocator): t for t in self.res.timings}
        self.assertIn(("churn", "glibc"), by)
        self.assertIn(("churn", "jemalloc"), by)
        self.assertNotIn("fragmenter", {t.workload for t in self.res.timings})
        t = by[("churn", "jemalloc")]
        self.assertEqual(t.runs, 2)
        self.assertEqual(t.exit_codes, [0, 0])
        self.assertGreater(t.mean_s, 0.07)
        self.assertIn("LD_PRELOAD=", t.command)
        # larson and prodcons never ran ok, so they are not timed.
        self.assertNotIn("larson", {t.workload for t in self.res.timings})

    def test_progress(self):
        text = self.progress.getvalue()
        n = 2 * len(W.CATALOG)
        self.assertIn(f"[ 1/{n}] trial 1 ", text)
        self.assertIn(f"[{n}/{n}]", text)
        self.assertIn("ETA", text)
        self.assertIn("FAILED: exit status 3", text)
        self.assertIn("timing churn with hyperfine", text)

    def test_saved_document_round_trips(self):
        with tempfile.TemporaryDirectory() as d:
            p = R.save(self.res, d)
            self.assertEqual(R.load(p), self.res)


class TestOneRun(unittest.TestCase):
    def test_mesh_events_collected(self):
        with tempfile.TemporaryDirectory() as d:
            b = os.path.join(d, "bin")
            os.mkdir(b)
            write_standins(b)
            h = CgroupHierarchy.discover()
            fake_mesh = A.Allocator("fake-mesh", A.builtin_allocators()["jemalloc"].library,
                                    is_mesh=True)
            spec = runner.RunSpec(W.CATALOG["fragmenter"], fake_mesh, 1, 1, 0.1)
            r = runner.run_one(spec, h, d, workload_dir=b, timeout=10)
            self.assertEqual(r.status, "ok", r.error)
            self.assertEqual(r.events, [{"pairs": 3}])
            self.assertIn("MESH_EVENTS", r.result["env"])

    def test_plan_shuffles_each_trial_deterministically(self):
        ws = list(W.CATALOG.values())
        al = list(A.builtin_allocators().values())
        p1 = runner.plan(ws, al, 3, lambda w: 1.0, seed=10, order_seed=1)
        p2 = runner.plan(ws, al, 3, lambda w: 1.0, seed=10, order_seed=1)
        key = lambda s: (s.workload.name, s.allocator.name, s.trial, s.seed)
        self.assertEqual([key(s) for s in p1], [key(s) for s in p2])
        self.assertEqual(len(p1), 3 * len(ws) * len(al))
        trials = [[(s.workload.name, s.allocator.name) for s in p1 if s.trial == t] for t in (1, 2, 3)]
        for t in trials:
            self.assertEqual(len(set(t)), len(ws) * len(al))
        self.assertNotEqual(trials[0], trials[1])
        self.assertEqual({s.seed for s in p1 if s.trial == 2}, {11})
        p3 = runner.plan(ws, al, 1, lambda w: 1.0, seed=10, order_seed=2)
        self.assertNotEqual([key(s) for s in p3], [key(s) for s in p1[:len(p3)]])

    def test_recording_a_run_that_goes_wrong(self):
        # What every driver (run_one, run_redis, run_webkit) relies on.
        for raised, status, error, propagates in (
                (CgroupError("no memory controller"), "failed", "no memory controller", False),
                (KeyboardInterrupt(), "interrupted", "interrupted", True)):
            with tempfile.TemporaryDirectory() as parent:
                scratch = tempfile.mkdtemp(dir=parent)
                run = R.Run(workload="w", allocator="a", trial=1, seed=1, scale=1.0, argv=[],
                            status="failed")

                def measure_and_fail():
                    with runner.recording(run, scratch):
                        raise raised
                    return "went on"

                if propagates:
                    self.assertRaises(KeyboardInterrupt, measure_and_fail)
                else:
                    self.assertEqual(measure_and_fail(), "went on")
                self.assertEqual((run.status, run.error), (status, error))
                self.assertFalse(os.path.exists(scratch), "the scratch directory is removed")

    def test_trace_parsing_tolerates_a_cut_last_line(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t")
            with open(p, "w") as f:
                f.write('{"t": 0, "live": 1, "phase": "a"}\n{"t": 0.1, "live": 2, "pha')
            live, result, problem = runner.read_trace(p)
            self.assertEqual(live.live, [1])
            self.assertIsNone(result)
            self.assertIsNone(problem)
            with open(p, "w") as f:
                f.write('garbage\n{"t": 0.1, "live": 2, "phase": "end", "result": {"checksum": "1"}}\n')
            live, result, problem = runner.read_trace(p)
            self.assertEqual(result, {"checksum": "1"})
            self.assertIn("line 1", problem)

# A hyperfine stand-in: runs nothing, logs the order of the commands it
# was given, and reports each command's position in this invocation (plus
# the invocation's number) as its time.
FAKE_HYPERFINE = textwrap.dedent('''\
    #!/usr/bin/python3
    import json, os, sys
    log = os.path.join(os.path.dirname(sys.argv[0]), "log")
    a = sys.argv[1:]
    export = a[a.index("--export-json") + 1]
    warmup = int(a[a.index("--warmup") + 1])
    runs = int(a[a.index("--runs") + 1])
    names = [a[i + 1] for i, x in enumerate(a) if x == "--command-name"]
    n = sum(1 for _ in open(log)) if os.path.exists(log) else 0
    with open(log, "a") as f:
        f.write(json.dumps({"names": names, "warmup": warmup, "runs": runs}) + "\\n")
    res = [{"command": x, "times": [10.0 * n + i], "exit_codes": [0], "user": 1.0 + n,
            "system": 0.5, "mean": 10.0 * n + i, "median": 10.0 * n + i} for i, x in enumerate(names)]
    json.dump({"results": res}, open(export, "w"))
    ''')


class TestTimingInterleaved(unittest.TestCase):
    def test_rounds_rotate_allocators(self):
        with tempfile.TemporaryDirectory() as d:
            fake = os.path.join(d, "hyperfine")
            with open(fake, "w") as f:
                f.write(FAKE_HYPERFINE)
            os.chmod(fake, 0o755)
            allocs = [A.builtin_allocators()[n] for n in ("glibc", "jemalloc", "mesh")]
            t = runner.time_with_hyperfine(W.CATALOG["churn"], allocs, 1.0, 1, d, runs=3,
                                           warmup=1, hyperfine=fake)
            with open(os.path.join(d, "log")) as f:
                calls = [json.loads(x) for x in f]
        # one invocation a round, every allocator once in each, each round
        # starting one allocator later; only the first warms up
        self.assertEqual([c["names"] for c in calls],
                         [["glibc", "jemalloc", "mesh"], ["jemalloc", "mesh", "glibc"],
                          ["mesh", "glibc", "jemalloc"]])
        self.assertEqual([c["warmup"] for c in calls], [1, 0, 0])
        self.assertEqual({c["runs"] for c in calls}, {1})
        by = {x.allocator: x for x in t}
        self.assertEqual(by["glibc"].times, [0.0, 12.0, 21.0])
        self.assertEqual(by["mesh"].times, [2.0, 11.0, 20.0])
        self.assertEqual(by["jemalloc"].runs, 3)
        self.assertAlmostEqual(by["jemalloc"].mean_s, (1.0 + 10.0 + 22.0) / 3)
        self.assertEqual(by["jemalloc"].median_s, 10.0)
        self.assertEqual((by["glibc"].min_s, by["glibc"].max_s), (0.0, 21.0))
        self.assertAlmostEqual(by["mesh"].user_s, 2.0)
        self.assertEqual(by["mesh"].exit_codes, [0, 0, 0])
        self.assertIn("LD_PRELOAD=", by["jemalloc"].command)


if __name__ == "__main__":
    unittest.main()
