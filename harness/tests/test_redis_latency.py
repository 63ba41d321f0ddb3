"""The redis-latency figure at a tiny scale: Debian's redis-server under
jemalloc (linked) and mesh (preloaded), fragmented by a small version of
the paper's script and driven by a few thousand redis-benchmark requests
(what `paper run --tiny --figures redis-latency` runs).
Checks what is parsed and the shape of the rows and the report, not the
numbers. Skips (exit 77) when redis-server, redis-cli or redis-benchmark
is not installed.
"""

import os
import sys
import tempfile
import unittest
from dataclasses import replace

from harness.paper import redis_fig
from harness.paper import redis_latency as L

_MISSING = [p for p in (redis_fig.REDIS_SERVER, redis_fig.REDIS_CLI, L.REDIS_BENCHMARK)
            if not os.access(p, os.X_OK)]
if _MISSING:
    print(f"skipped: {', '.join(_MISSING)} not installed (apt-get install redis-server redis-tools)")
    sys.exit(77)

from harness import results as R   # noqa: E402
from harness.allocators import registry   # noqa: E402
from harness.paper import collect, compact   # noqa: E402
from harness.paper import redis_latency_report as RL   # noqa: E402
from harness.sampler import CgroupHierarchy   # noqa: E402

TINY = collect.tiny_config().latency_bench
PAIR = collect.tiny_config().latency_allocators

# redis-benchmark 7.0's report of one test, progress lines (ending in \r)
# first; the percentile table is cut short.
REPORT = ("SET: rps=0.0 (overall: 0.0) avg_msec=-nan (overall: -nan)\r"
          "SET: rps=22039.8 (overall: 21952.4) avg_msec=0.607 (overall: 0.607)\r"
          "====== SET ======\n"
          "  20000 requests completed in 0.69 seconds\n  20 parallel clients\n"
          "  240 bytes payload\n  keep alive: 1\n  multi-thread: no\n\n"
          "Latency by percentile distribution:\n"
          "0.000% <= 0.071 milliseconds (cumulative count 1)\n"
          "50.000% <= 0.335 milliseconds (cumulative count 10216)\n"
          "99.805% <= 8.839 milliseconds (cumulative count 19961)\n"
          "99.902% <= 9.559 milliseconds (cumulative count 19981)\n"
          "99.951% <= 9.655 milliseconds (cumulative count 19991)\n"
          "100.000% <= 12.487 milliseconds (cumulative count 20000)\n\n"
          "Cumulative distribution of latencies:\n"
          "0.400% <= 0.103 milliseconds (cumulative count 80)\n"
          "100.000% <= 13.103 milliseconds (cumulative count 20000)\n\n"
          "Summary:\n  throughput summary: 28985.51 requests per second\n"
          "  latency summary (msec):\n"
          "          avg       min       p50       p95       p99       max\n"
          "        0.474     0.064     0.335     0.663     4.431    12.487\n")


class TestParse(unittest.TestCase):
    def test_report(self):
        p = L.parse_benchmark(REPORT)
        self.assertEqual((p["requests"], p["seconds"], p["rps"]), (20000, 0.69, 28985.51))
        self.assertEqual((p["avg_ms"], p["min_ms"], p["p50_ms"], p["p95_ms"], p["p99_ms"],
                          p["max_ms"]), (0.474, 0.064, 0.335, 0.663, 4.431, 12.487))
        # the first row at or above 99.9%, and only the percentile table's rows
        self.assertEqual(p["p999_ms"], 9.559)
        self.assertEqual(len(p["percentiles"]), 6)
        self.assertEqual(p["percentiles"][-1], [100.0, 12.487, 20000])

    def test_truncated_report_is_an_error(self):
        with self.assertRaises(L.BenchmarkError):
            L.parse_benchmark(REPORT.split("Summary:")[0])
        with self.assertRaises(L.BenchmarkError):
            L.parse_benchmark("Could not connect to Redis at 127.0.0.1:1: Connection refused\n")

    def test_target_verdicts(self):
        t = RL._target("p99", R.Stat(1.20, 0.05, 3), 1.10)
        self.assertEqual((t.met, t.within_spread, RL._verdict(t)), (False, False, "**no**"))
        t = RL._target("p99", R.Stat(1.12, 0.05, 3), 1.10)
        self.assertEqual(RL._verdict(t), "**no** (within one sd)")
        t = RL._target("rps", R.Stat(0.99, 0.01, 3), 0.97, at_most=False)
        self.assertEqual((t.met, t.within_spread), (True, False))

    def test_targets_against_the_same_binary(self):
        def row(name, p99, max_ms, rps):
            r = RL.Row(name, 3, 0)
            for test in L.TESTS:
                r.tests[test] = RL.TestRow(values={"p99_ms": R.Stat(p99, 0.01, 3),
                                                   "max_ms": R.Stat(max_ms, 1.0, 3),
                                                   "rps": R.Stat(rps, 100.0, 3)})
            return r
        rs = {"jemalloc": row("jemalloc", 0.30, 5.0, 50000),
              RL.SAME_BINARY: row(RL.SAME_BINARY, 0.40, 6.0, 48000),
              "mesh": row("mesh", 0.42, 7.0, 48000)}
        ts = RL.targets(rs)
        self.assertEqual(len(ts), 10)
        got = {t.what.split(" (")[0]: t.met for t in ts}
        self.assertFalse(got["SET: p99 latency, mesh / jemalloc"])      # 1.40
        self.assertTrue(got[f"SET: p99 latency, mesh / {RL.SAME_BINARY}"])  # 1.05
        self.assertTrue(got[f"SET: max latency, mesh - {RL.SAME_BINARY}"])  # +1 ms
        self.assertTrue(got[f"SET: throughput, mesh / {RL.SAME_BINARY}"])
        del rs[RL.SAME_BINARY]
        self.assertEqual(len(RL.targets(rs)), 5)

    def test_window_footprint_between_samples(self):
        m = R.MemorySeries(t=[0.0, 0.1, 0.2, 0.3], footprint=[10, 20, 40, 80])
        self.assertEqual(L._window_footprint(m, 0.05, 0.25),
                         {"footprint_peak": 40, "footprint_mean": 30})
        # a window between two samples: the samples on either side
        self.assertEqual(L._window_footprint(m, 0.12, 0.18),
                         {"footprint_peak": 40, "footprint_mean": 30})
        self.assertEqual(L._window_footprint(m, 0.35, 0.4),
                         {"footprint_peak": 80, "footprint_mean": 80})

    def test_tests_draw_different_keys(self):
        """A seed redis-benchmark draws twice must not replay SET's keys in
        GET: each test takes another modulus."""
        b = replace(TINY, tests=("set", "get"), keyspace=1000)
        r = {t: b.argv(6379, t)[b.argv(6379, t).index("-r") + 1] for t in b.tests}
        self.assertEqual(r, {"set": "1000", "get": "999"})

    def test_hit_notes_name_replayed_runs(self):
        from types import SimpleNamespace as NS

        def run(name, keys):
            return NS(allocator=name, trial=1,
                      result={"tests": {"set": {"keys": 1000}, "get": {"keys": keys}}})
        notes = RL._hit_notes([(run("a", 999), 0.13), (run("b", 999), 0.14),
                               (run("c", 1000), 0.93), (run("d", 999), 0.9)])
        self.assertEqual(len(notes), 3)
        self.assertIn("13-14% of its keys in 2 of 4 runs", notes[0])
        self.assertIn("in c trial 1: redis-benchmark may have seeded", notes[1])
        self.assertIn("in d trial 1: not a seed drawn twice", notes[2])

    def test_rotation(self):
        names = ["a", "b", "c"]
        self.assertEqual([L.rotation(names, t) for t in (1, 2, 3, 4)],
                         [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]])

    def test_trials_run_in_rotated_order(self):
        cfg = replace(collect.tiny_config(), trials=3)
        with open(os.devnull, "w") as quiet:
            got = list(collect._interleaved("redis-latency", ["a", "b", "c"], cfg, quiet,
                                            order_of=L.rotation))
        self.assertEqual([n for _, n in got], list("abcbcacab"))
        self.assertEqual([t for t, _ in got], [1, 1, 1, 2, 2, 2, 3, 3, 3])

    def test_stalls_in_window(self):
        ev = [{"t": 0.5, "meshes": 3, "duration_us": 900, "max_pause_us": 40, "kind": "busy"},
              {"t": 1.5, "meshes": 2, "duration_us": 300, "max_pause_us": 70,
               "max_barrier_wait_us": 15, "kind": "resumed"},
              {"t": 1.7, "meshes": 1, "duration_us": 4000, "max_pause_us": 20, "kind": "idle"},
              {"t": 3.0, "meshes": 9, "duration_us": 5000, "max_pause_us": 999, "kind": "busy"}]
        s = L.stalls(ev, 1.0, 2.5, offset_s=0.01)
        self.assertEqual((s["passes"], s["meshes"], s["max_pass_us"], s["max_busy_pass_us"],
                          s["max_pause_us"], s["max_barrier_wait_us"], s["max_lock_wait_us"]),
                         (2, 3, 4000, 300, 70, 15, None))
        # A log from before scavenges were timed has no such field: not a 0.
        self.assertIsNone(s["max_scavenge_us"])
        ev[2]["max_scavenge_us"] = 2500
        self.assertEqual(L.stalls(ev, 1.0, 2.5, offset_s=0.01)["max_scavenge_us"], 2500)
        self.assertEqual(L.stalls(ev, 10.0, 20.0)["max_scavenge_us"], 0)


class TestTinyRuns(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        mesh = registry()["mesh"].library
        if not os.path.exists(mesh):
            raise AssertionError(f"{mesh} is missing: run make first")
        cls.tmp = tempfile.TemporaryDirectory()
        cfg = replace(collect.tiny_config(), trials=1)
        snapshot, info = collect.snapshot_mesh(cls.tmp.name)
        with open(os.devnull, "w") as quiet:
            runs, fig = collect.collect_latency(cfg, CgroupHierarchy.discover(), cls.tmp.name,
                                                quiet, snapshot, info,
                                                servers=redis_fig.DEBIAN_SERVERS)
        cls.runs = {r.allocator: r for r in runs}
        cls.res = R.MatrixResult(created="now", machine={"cpus": 2}, commit="c", config={
            "figures": {L.WORKLOAD: fig}, "trials": 1}, allocators={}, runs=runs, complete=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_runs_are_ok_and_parsed(self):
        for name, r in self.runs.items():
            self.assertTrue(r.ok, f"{name}: {r.error}\n{r.stderr_tail}")
            self.assertEqual(list(r.result["tests"]), list(L.TESTS))
            for t in r.result["tests"].values():
                self.assertEqual(t["requests"], TINY.requests)
                self.assertLessEqual(t["p50_ms"], t["p99_ms"])
                self.assertLessEqual(t["p99_ms"], t["max_ms"])
                self.assertLess(t["start_s"], t["end_s"])
                self.assertGreater(t["server_cpu_s"], 0)
            self.assertGreater(r.result["info_after"]["evicted_keys"], 0)

    def test_mesh_run_has_its_stalls(self):
        for t in self.runs["mesh"].result["tests"].values():
            self.assertEqual(set(t["mesh"]), {"passes", "meshes", "max_pass_us", "max_busy_pass_us"}
                             | set(L.STALL_FIELDS))
        self.assertNotIn("mesh", self.runs["jemalloc"].result["tests"]["set"])

    def test_rows_survive_compaction(self):
        rs = RL.rows(compact.compact(self.res))
        self.assertEqual(list(rs), list(PAIR))
        jem, mesh = rs["jemalloc"].tests["set"], rs["mesh"].tests["set"]
        for k in RL.KEYS + ("cpu_us", "footprint_mib"):
            self.assertIsNotNone(mesh.values[k], k)
        self.assertAlmostEqual(jem.ratios["rps"].mean, 1.0)
        self.assertAlmostEqual(mesh.max_over_base_ms.mean,
                               mesh.values["max_ms"].mean - jem.values["max_ms"].mean)
        self.assertTrue(mesh.stalls)
        self.assertEqual(len(RL.targets(rs)), 5)

    def test_section_has_every_row(self):
        text = "\n".join(RL.section(self.res, self.tmp.name, self.tmp.name))
        table = [l for l in text.splitlines() if l.startswith("| SET |") or l.startswith("| GET |")]
        # the main table (4 rows) and the mesh row's stalls (2 rows)
        self.assertEqual(len(table), 6, text)
        widths = {l.count("|") for l in table[:4]}
        self.assertEqual(widths, {16})

    def test_not_in_the_matrix(self):
        from harness.paper import figures
        self.assertEqual(figures.matrix_workloads(self.res), [])

    def test_plot_is_drawn(self):
        from harness.paper import plots   # matplotlib only here
        paths = plots.redis_latency(self.res, self.tmp.name)
        self.assertTrue(any(p.endswith("redis-latency.png") for p in paths), paths)


if __name__ == "__main__":
    unittest.main()
