"""The paper figures: the Redis and Ruby drivers end to end at a tiny
scale under glibc and mesh, the compaction that keeps the committed results
small, and `make paper` regenerating the report from a fixture.

Needs root (memory cgroups), Debian's redis-server, redis-cli and ruby, the
built libmesh and workloads; a missing one fails the test, it does not skip.
"""

import json
import os
import socket
import statistics
import subprocess
import tempfile
import unittest

from harness import results as R
from harness import runner
from harness.allocators import REPO_ROOT, registry
from harness.paper import collect, compact, figures, redis_fig, redis_report, ruby_fig
from harness.sampler import CGROUP_PREFIX, CgroupHierarchy

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                       "paper-small.json")
TINY = collect.TINY_REDIS


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def our_cgroups(h: CgroupHierarchy) -> list:
    return [n for n in os.listdir(h.base) if n.startswith(f"{CGROUP_PREFIX}{os.getpid()}-")]


def need(*paths):
    for p in paths:
        if not os.access(p, os.X_OK) and not os.path.exists(p):
            raise AssertionError(f"{p} is missing: the paper tests need it")


class TestRedisDriver(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(redis_fig.REDIS_SERVER, redis_fig.REDIS_CLI, redis_fig.GLIBC_SHIM,
             registry()["mesh"].library)
        cls.h = CgroupHierarchy.discover()
        if cls.h is None:
            raise AssertionError("no writable memory cgroup (run as root)")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.runs = {a: redis_fig.run_redis(a, cls.h, cls.tmp.name, trial=1, script=TINY)
                    for a in ("glibc", "mesh")}

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_runs_are_ok(self):
        for a, r in self.runs.items():
            self.assertEqual(r.status, "ok", f"{a}: {r.error}\n{r.stderr_tail}")
            self.assertEqual(r.exit_code, 0)
            self.assertEqual(r.workload, "redis-server")
            self.assertTrue(r.method.startswith("cgroup"))

    def test_script_results(self):
        for a, r in self.runs.items():
            res = r.result
            self.assertEqual(len(res["populate_s"]), 2)
            self.assertTrue(all(x > 0 for x in res["populate_s"]))
            self.assertAlmostEqual(res["populate_total_s"], sum(res["populate_s"]), places=5)
            # maxmemory 3mb evicts most of the 20,000 + 5,000 keys
            self.assertGreater(res["dbsize"], 100, a)
            self.assertLess(res["dbsize"], 20000, a)
            self.assertGreater(res["info_steady"]["evicted_keys"], 0)
            self.assertGreaterEqual(res["stopped_at_s"], TINY.duration_s)
            # When the script ends depends on the machine's load: only that
            # it was recorded, within the run.
            self.assertGreater(res["script_end_s"], 0)
            self.assertLessEqual(res["script_end_s"], res["stopped_at_s"])

    def test_footprint_at_mark_comes_from_the_series(self):
        for a, r in self.runs.items():
            m = r.memory
            self.assertGreater(m.t[-1], TINY.duration_s - 0.05, "sampled until the stop")
            before = [f for t, f in zip(m.t, m.footprint) if t <= TINY.mark_s]
            self.assertEqual(r.result["footprint_at_mark"], before[-1])
            self.assertGreater(r.result["footprint_at_mark"], 2**20)

    def test_end_state_probed_after_the_mark(self):
        for a, r in self.runs.items():
            st = r.result["end_state"]
            self.assertIn(st["state"], (redis_fig.RENEWED, redis_fig.EVEN), a)
            self.assertGreater(st["probed_at_s"], TINY.mark_s)
            for k in ("renewed_alive", "others_alive"):
                self.assertTrue(0.0 <= st[k] <= 1.0, (a, st))
            # 3 MiB holds far fewer than the 20,000 keys: some were evicted
            self.assertLess(min(st["renewed_alive"], st["others_alive"]), 1.0, (a, st))
            self.assertEqual(st["state"], redis_fig.end_state(st["renewed_alive"],
                                                              st["others_alive"]))

    def test_where_the_memory_is(self):
        for a, r in self.runs.items():
            res = r.result
            for col in ("anon", "shmem", "kernel"):
                self.assertIsNotNone(res[f"{col}_at_mark"], (a, col))
        st = self.runs["mesh"].result["mallocstats"]
        self.assertIn("256", st["classes"], "the 240-byte values' class")
        c = st["classes"]["256"]
        self.assertEqual((c["pages"], c["objects"]), (1, 16))
        self.assertGreater(c["live"], 100)
        self.assertNotIn("mallocstats", self.runs["glibc"].result)

    def test_mesh_events_collected_for_mesh_only(self):
        ev = self.runs["mesh"].events
        self.assertTrue(ev, "MESH_EVENTS lines are read back")
        self.assertTrue(all("duration_us" in e and "meshes" in e for e in ev))
        self.assertEqual(self.runs["glibc"].events, [])

    def test_nothing_left_behind(self):
        for r in self.runs.values():
            self.assertFalse(port_open(r.result["port"]), "redis-server still listens")
        self.assertEqual(our_cgroups(self.h), [])

    def test_failing_script_kills_the_server(self):
        bad = redis_fig.RedisScript(populates=((100, "asdf", "not-a-number"),),
                                    duration_s=30.0, mark_s=1.0)
        r = redis_fig.run_redis("glibc", self.h, self.tmp.name, trial=1, script=bad)
        self.assertEqual(r.status, "failed")
        self.assertIn("driver", r.error)
        self.assertLess(r.wall_s, 10, "killed at once, not at the end of the timeline")
        self.assertFalse(port_open(r.result["port"]))
        self.assertEqual(our_cgroups(self.h), [])

    def test_value_at(self):
        t, v = [0.0, 1.0, 2.0, 3.0], [5, 6, None, 8]
        self.assertEqual(redis_fig.value_at(t, v, 1.5), 6)
        self.assertEqual(redis_fig.value_at(t, v, 2.5), 6)
        self.assertEqual(redis_fig.value_at(t, v, 0.0), 5)
        self.assertIsNone(redis_fig.value_at(t, v, 3.5), "the series ended before")


class TestEndState(unittest.TestCase):
    def test_probe_groups(self):
        renewed, others = redis_fig.probe_groups(redis_fig.PAPER_SCRIPT)
        self.assertEqual(len(renewed), redis_fig.PROBE_KEYS)
        self.assertEqual(renewed[0], "asdf:0")
        self.assertTrue(all(int(k.split(":")[1]) < 170000 for k in renewed))
        self.assertTrue(all(170000 <= int(k.split(":")[1]) < 700000 for k in others))
        self.assertEqual(len(set(others)), len(others))
        small = redis_fig.RedisScript(populates=((300, "k", 10), (100, "k", 20)))
        self.assertEqual(redis_fig.probe_groups(small)[0], [f"k:{i}" for i in range(100)])
        self.assertIsNone(redis_fig.probe_groups(redis_fig.RedisScript(populates=((300, "k", 10),))))
        self.assertIsNone(redis_fig.probe_groups(
            redis_fig.RedisScript(populates=((300, "k", 10), (100, "other", 20)))))

    def test_end_state(self):
        self.assertEqual(redis_fig.end_state(1.0, 0.24), redis_fig.RENEWED)
        self.assertEqual(redis_fig.end_state(0.45, 0.44), redis_fig.EVEN)
        self.assertEqual(redis_fig.end_state(0.50, 0.35), redis_fig.EVEN)

    def test_rows_and_targets_by_state(self):
        res = R.load(FIXTURE)
        runs = [r for r in res.runs if r.workload == "redis-server" and r.ok]
        mesh = [r for r in runs if r.allocator == "mesh"]
        nomesh = [r for r in runs if r.allocator == "mesh-nomesh"]
        self.assertGreaterEqual(len(mesh), 2)
        for r in runs:
            r.result["end_state"] = {"state": redis_fig.EVEN}
        mesh[0].result["end_state"]["state"] = redis_fig.RENEWED
        rows = figures.redis_state_rows(res)
        renewed, even = rows[redis_fig.RENEWED], rows[redis_fig.EVEN]
        self.assertEqual(list(renewed), ["mesh"])
        want = mesh[0].result["footprint_at_mark"] / statistics.fmean(
            r.result["footprint_at_mark"] for r in nomesh)
        self.assertAlmostEqual(renewed["mesh"].vs_nomesh.mean, want, places=9)
        self.assertFalse(renewed["mesh"].nomesh_same_state)
        self.assertTrue(even["mesh"].nomesh_same_state)
        self.assertEqual(even["mesh"].at_mark.n, len(mesh) - 1)
        ts = [t for t in figures.targets(res) if "end state" in t.what]
        self.assertEqual(len(ts), 3, [t.what for t in ts])   # renewed has no other allocator
        self.assertEqual(ts[0].met, want <= 0.61)
        self.assertIn("n=1", ts[0].what)
        # results from before the probe: no rows, no extra targets
        for r in runs:
            del r.result["end_state"]
        self.assertEqual(figures.redis_state_rows(res), {})
        self.assertFalse([t for t in figures.targets(res) if "end state" in t.what])


class TestBreakdown(unittest.TestCase):
    REPORT = """MESH COUNT: 3
-- size classes --
 class  pages objs   spans  live objs occupancy%  attached    full partial   empty  meshed  meshes
    16      1  256     100      11008         43         0      10      90       0       0       0
   256      1   16    2000      28000         87         1    1500     499       0    1900    1900
  2048      4    8       3          9         37         0       0       3       0       0       0
large objects: 8 in 8.5 MB; arena resident: 10.0 MB
"""

    def test_parse_mallocstats(self):
        st = redis_fig.parse_mallocstats("noise\n" + self.REPORT + "more noise\n")
        self.assertEqual(st["classes"]["256"], {"pages": 1, "objects": 16, "spans": 2000,
                                                 "live": 28000, "aliases": 1900})
        self.assertEqual(st["classes"]["2048"]["pages"], 4)
        self.assertEqual(st["large_bytes"], int(8.5 * 2**20))
        self.assertIsNone(redis_fig.parse_mallocstats("MESH COUNT: 3\n"))

    def test_breakdown_and_its_notes(self):
        res = R.load(FIXTURE)
        runs = [r for r in res.runs if r.workload == "redis-server" and r.ok
                and r.allocator in ("mesh", "mesh-nomesh")]
        nomesh_report = self.REPORT.replace("    2000      28000         87", "    4000      28000         43") \
                                   .replace("1900    1900", "   0       0")
        for r in runs:
            r.result["end_state"] = {"state": redis_fig.EVEN}
            r.result["kernel_at_mark"] = 7 * 2**20 if r.allocator == "mesh" else 2**20
            r.result["mallocstats"] = redis_fig.parse_mallocstats(
                self.REPORT if r.allocator == "mesh" else nomesh_report)
        bd = figures.redis_breakdown(res)[redis_fig.EVEN]
        c256 = next(c for c in bd["mesh"].classes if c.size == 256)
        self.assertEqual(c256.span_bytes.mean, 2000 * 4096)
        self.assertAlmostEqual(c256.occupancy, 28000 / (2000 * 16))
        self.assertEqual([c.size for c in bd["mesh"].classes], [256],
                         "classes under 1 MiB of spans are left out")
        _, notes = redis_report.breakdown_section(res, 7.5)
        self.assertEqual(len(notes), 1)
        self.assertIn("meshing's mappings cost 6.0 MiB of kernel memory", notes[0])
        self.assertIn("Meshing works on the 256-byte class: 1900 spans meshed away, the rest 88% "
                      "full (44% without meshing", notes[0])
        self.assertAlmostEqual(figures.disjoint_chance(16, 0.5), 0.75 ** 16)


class TestNorandNote(unittest.TestCase):
    def test_says_why_when_norand_is_lowest(self):
        res = R.load(FIXTURE)
        mesh = [r for r in res.runs if r.workload == "redis-server" and r.allocator == "mesh" and r.ok]
        self.assertEqual(redis_report.norand_note(res), [], "mesh is lowest in the fixture")
        for r in [r for r in res.runs if r.workload == "redis-server" and r.allocator == "mesh-nomesh"]:
            r.allocator = "mesh-norand"
            r.result["footprint_at_mark"] = 0.9 * mesh[0].result["footprint_at_mark"]
        for r in mesh:
            r.result["end_state"] = {"state": redis_fig.EVEN}
        for r in res.runs:
            if r.allocator == "mesh-norand" and r.workload == "redis-server":
                r.result["end_state"] = {"state": redis_fig.EVEN}
        notes = redis_report.norand_note(res)
        self.assertEqual(len(notes), 1)
        self.assertIn("randomized placement off", notes[0])
        self.assertIn("even eviction 1.", notes[0])


class TestRubyDriver(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        need(ruby_fig.RUBY_BIN, ruby_fig.SCRIPT)
        cls.h = CgroupHierarchy.discover()
        cls.tmp = tempfile.TemporaryDirectory()
        reg = registry()
        cls.runs = {}
        for a, seed in (("glibc", 1), ("mesh", 1), ("glibc", 2)):
            spec = runner.RunSpec(ruby_fig.RUBY, reg[a], 1, seed, 0.05)
            cls.runs[(a, seed)] = runner.run_one(spec, cls.h, cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_ok_with_trace(self):
        for key, r in self.runs.items():
            self.assertEqual(r.status, "ok", f"{key}: {r.error}\n{r.stderr_tail}")
            self.assertEqual(r.argv[:2], [ruby_fig.RUBY_BIN, ruby_fig.SCRIPT])
            phases = [p for i, p in enumerate(r.live.phase) if i == 0 or p != r.live.phase[i - 1]]
            self.assertEqual(phases[0], "round-496")
            self.assertEqual(phases[1], "round-1008")
            self.assertEqual(phases[-1], "end")
            res = r.result
            self.assertEqual(res["budget"], int(128 * 2**20 * 0.05))
            self.assertEqual(res["final_live"], res["held_bytes"])
            self.assertLessEqual(res["held_bytes"], res["budget"])
            self.assertGreater(res["held_bytes"], res["budget"] // 2)
            self.assertGreater(R.summarize(r).mean_footprint, res["held_bytes"] / 2)

    def test_checksums(self):
        a, b, c = (self.runs[k].result["checksum"] for k in (("glibc", 1), ("mesh", 1), ("glibc", 2)))
        self.assertEqual(a, b, "the same seed gives the same survivors under every allocator")
        self.assertNotEqual(a, c)

    def test_mesh_preloaded(self):
        self.assertTrue(self.runs[("mesh", 1)].events, "libmesh was loaded and logged passes")

    def test_bad_flag(self):
        p = subprocess.run([ruby_fig.RUBY_BIN, ruby_fig.SCRIPT, "--no-such-flag", "1"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)


class TestCompact(unittest.TestCase):
    def series(self):
        m = R.MemorySeries()
        t = 0.0
        for i in range(1000):
            t += 0.01 + (i % 7) * 0.001
            m.append(t=t, footprint=1000 + (i * 37) % 500 + (5000 if i == 613 else 0),
                     rss=2000 + i, pss=(3000 + i) if i % 10 == 0 else None)
        return m

    def test_mean_and_peak_kept(self):
        m = self.series()
        c = compact.compact_series(m, 20, ("footprint", "rss", "pss"))
        self.assertLess(len(c.t), 30)
        for col in ("footprint", "rss"):
            want = R.time_weighted_mean(m.t, getattr(m, col))
            got = R.time_weighted_mean(c.t, getattr(c, col))
            self.assertAlmostEqual(got / want, 1.0, delta=1e-4, msg=col)
        self.assertEqual(max(c.footprint), max(m.footprint))
        self.assertEqual(c.usage, [], "dropped columns are empty")

    def test_live_keeps_phases(self):
        lv = R.LiveTrace()
        for i in range(500):
            lv.t.append(i * 0.01)
            lv.live.append(i * 10)
            lv.phase.append("a" if i < 123 else "b" if i < 400 else "end")
        c = compact.compact_live(lv, 10)
        self.assertIn(123 * 0.01, [round(x, 2) for x in c.t])
        self.assertEqual([p for i, p in enumerate(c.phase) if i == 0 or p != c.phase[i - 1]],
                         ["a", "b", "end"])
        self.assertAlmostEqual(R.time_weighted_mean(c.t, c.live) / R.time_weighted_mean(lv.t, lv.live),
                               1.0, delta=1e-4)

    def test_events_merged_exactly(self):
        ev = [{"t": i * 0.1, "duration_us": 100 + i, "meshes": i % 3, "bytes_released": 4096 * (i % 3),
               "max_pause_us": 7 * i, "stopped": "time" if i % 4 == 0 else None}
              for i in range(50)]
        merged = compact.merge_events(ev, 1.0)
        self.assertLess(len(merged), 10)
        a, b = figures.event_summary(ev), figures.event_summary(merged)
        self.assertAlmostEqual(a.total_s, b.total_s, places=9)
        a.total_s = b.total_s
        self.assertEqual(a, b)
        self.assertEqual(a.passes, 50)
        self.assertEqual(a.longest_pause_ms, 0.343)
        self.assertEqual(a.stopped_time, 13)
        self.assertEqual(compact.merge_events(merged, 1.0), merged, "merging twice changes nothing")


class TestReportFromFixture(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.res = R.load(FIXTURE)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.md = os.path.join(cls.tmp.name, "paper-figures.md")
        cls.plots = os.path.join(cls.tmp.name, "plots")
        cls.make = subprocess.run(["make", "-s", "paper", f"PAPER_RESULTS={FIXTURE}",
                                   f"PAPER_OUT={cls.md}", f"PAPER_PLOTS={cls.plots}"],
                                  cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def text(self):
        self.assertEqual(self.make.returncode, 0, self.make.stdout + self.make.stderr)
        with open(self.md, encoding="utf-8") as f:
            return f.read()

    def test_fixture_has_every_figure(self):
        ws = {r.workload for r in self.res.runs}
        self.assertTrue({"redis-server", "ruby-fragment", "browser-like-paper"} <= ws)
        self.assertTrue(figures.matrix_workloads(self.res))

    def test_plots_written(self):
        self.text()
        for name in ("fig7-redis", "redis-measures", "fig8-ruby", "fig6-browser",
                     "fragmentation", "summary-time"):
            p = os.path.join(self.plots, name + ".png")
            self.assertTrue(os.path.getsize(p) > 1000, name)

    def test_redis_ratio_by_hand(self):
        text = self.text()

        def at(al):
            return [r.result["footprint_at_mark"] for r in self.res.runs
                    if r.workload == "redis-server" and r.allocator == al and r.ok]
        mesh, nomesh = at("mesh"), at("mesh-nomesh")
        ratio = statistics.fmean(mesh) / statistics.fmean(nomesh)
        line = next(l for l in text.splitlines()
                    if l.startswith("| Redis footprint at 7.5 s, Mesh / Mesh without meshing | <= 0.61 |"))
        self.assertIn(f"| {ratio:.2f} ± ", line)
        self.assertTrue(line.endswith(f"| {'yes' if ratio <= 0.61 else '**no**'} |"), line)
        self.assertIn(f"| mesh | {statistics.fmean(mesh) / 2**20:.1f} ± "
                      f"{statistics.stdev(mesh) / 2**20:.1f} |", text)

    def test_ruby_ratio_by_hand(self):
        text = self.text()

        def mean(al):
            return statistics.fmean(R.summarize(r).mean_footprint for r in self.res.runs
                                    if r.workload == "ruby-fragment" and r.allocator == al and r.ok)
        ratio = mean("mesh") / mean("jemalloc")
        self.assertIn(f"| Ruby mean footprint, Mesh / jemalloc | <= 0.81 | {ratio:.2f} ± ", text)

    def test_events_and_honesty(self):
        text = self.text()
        total = statistics.fmean(figures.event_summary(r.events).total_s for r in self.res.runs
                                 if r.workload == "redis-server" and r.allocator == "mesh" and r.ok)
        self.assertIn(f"| Redis: total time spent meshing | 0.23 s | {total:.3f}", text)
        self.assertIn("not Firefox", text)
        self.assertIn("activedefrag", text)
        self.assertIn("| paper (Mesh) | - | 0.23 | 22 |", text)

    def test_same_results_same_report(self):
        first = self.text()
        # the one CLI's spelling, and the old module and flags that forward to it
        for cmd, args in ((["harness", "paper"], ["--results", FIXTURE, "--plots-dir"]),
                          (["harness.paper"], [FIXTURE, "--plots"])):
            again = subprocess.run(["/usr/bin/python3", "-m", *cmd, "report", *args, self.plots,
                                    "--out", self.md],
                                   cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
            self.assertEqual(again.returncode, 0, again.stderr)
            with open(self.md, encoding="utf-8") as f:
                self.assertEqual(f.read(), first)

    def test_fixture_is_small(self):
        self.assertLess(os.path.getsize(FIXTURE), 200 * 1024)
        with open(FIXTURE, encoding="utf-8") as f:
            self.assertIn("compacted", json.load(f)["config"])


if __name__ == "__main__":
    unittest.main()
