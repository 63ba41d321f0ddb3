"""Figure 6 on WebKit: the checks and numbers of webkit_fig and webkit_report,
on made-up runs (the browser itself is exercised by
libmesh/tests/programs/test_webkit.sh)."""

import os
import tempfile
import unittest

from harness import packages
from harness import results as R
from harness import runner
from harness.allocators import MESH_LIBRARY
from harness.paper import report, webkit_fig, webkit_report

WEB = webkit_fig.WEB_COMM
MIB = 2**20


def process(comm=WEB, mapped=(), malloc="1", preload=None):
    return {"pid": 42, "comm": comm, "preload": preload, "malloc_env": malloc,
            "mapped": list(mapped)}


class TestAllocatorCheck(unittest.TestCase):
    def setUp(self):
        self.allocs = webkit_fig.webkit_allocators()

    def test_rows_run_with_malloc_1_but_webkit_own(self):
        for name, a in self.allocs.items():
            self.assertEqual(a.env.get("Malloc"), None if name == webkit_fig.OWN else "1", name)
        self.assertIsNone(self.allocs[webkit_fig.OWN].library)
        self.assertEqual(self.allocs["mesh-nomesh"].env["MESH_MESHING"], "0")

    def test_mesh_mapped_passes(self):
        ps = [process("WebKitNetworkPr"), process(mapped=[MESH_LIBRARY])]
        self.assertIsNone(webkit_fig.check_web_processes(ps, self.allocs["mesh"]))

    def test_preload_dropped_fails(self):
        why = webkit_fig.check_web_processes([process(mapped=[])], self.allocs["mesh"])
        self.assertIn("does not map", why)

    def test_every_web_process_is_checked(self):
        ps = [process(mapped=[MESH_LIBRARY]), process(mapped=[])]
        self.assertIsNotNone(webkit_fig.check_web_processes(ps, self.allocs["mesh"]))

    def test_glibc_must_map_no_other_allocator(self):
        why = webkit_fig.check_web_processes([process(mapped=[MESH_LIBRARY])],
                                             self.allocs["glibc"])
        self.assertIn("preloads nothing", why)
        self.assertIsNone(webkit_fig.check_web_processes([process()], self.allocs["glibc"]))

    def test_malloc_variable_checked(self):
        why = webkit_fig.check_web_processes([process(malloc="1")], self.allocs[webkit_fig.OWN])
        self.assertIn("Malloc", why)
        why = webkit_fig.check_web_processes([process(malloc=None)], self.allocs["glibc"])
        self.assertIn("Malloc", why)

    def test_no_web_process_fails(self):
        why = webkit_fig.check_web_processes([process("WebKitNetworkPr")], self.allocs["glibc"])
        self.assertIn("no web process", why)


class TestPackages(unittest.TestCase):
    def test_webkit_packages_installed_by_bench(self):
        for p in webkit_fig.PACKAGES:
            self.assertIn(p, packages.PACKAGES)

    def test_node_only_without_npm(self):
        self.assertEqual(packages.wanted(lambda _: None)[-2:], ("nodejs", "npm"))
        self.assertNotIn("npm", packages.wanted(lambda _: "/usr/bin/npm"))


class TestVerdict(unittest.TestCase):
    def setUp(self):
        self.allocs = webkit_fig.webkit_allocators()
        self.m = runner.Measurement(argv=[], method="cgroup-v2", exit_code=0)
        self.page = {"score": 100.0, "launcher": {"error": None}}

    def res(self, mapped=(MESH_LIBRARY,), web_stats=True):
        return {"processes": [process(mapped=list(mapped))], "helpers_exited": True,
                "score": 100.0, "mean_run": 1.0,
                "mallocstats": {"web": {"mesh_count": 1} if web_stats else None}}

    def test_ok(self):
        self.assertEqual(webkit_fig.verdict(self.m, self.page, self.res(), self.allocs["mesh"]),
                         ("ok", None))

    def test_allocator_not_mapped_fails_the_run(self):
        status, why = webkit_fig.verdict(self.m, self.page, self.res(mapped=()),
                                         self.allocs["mesh"])
        self.assertEqual(status, "failed")
        self.assertIn("allocator check", why)

    def test_no_exit_report_fails_the_run(self):
        status, why = webkit_fig.verdict(self.m, self.page, self.res(web_stats=False),
                                         self.allocs["mesh"])
        self.assertIn("MALLOCSTATS", why)

    def test_helpers_killed_fails_the_run(self):
        res = self.res()
        res["helpers_exited"] = False
        self.assertIn("exit on their own",
                      webkit_fig.verdict(self.m, self.page, res, self.allocs["mesh"])[1])


class TestNumbers(unittest.TestCase):
    def test_parse_counters(self):
        text = ("MESH COUNT: 3\nMeshed MB (total): 0.1\n-- counters --\n"
                "mesh_count (meshes performed): 3\n"
                "mesh_pause_max_ns (longest write-protect pause of one mesh, ns): 1500000\n"
                "-- size classes --\n16 1 256 0 0\n")
        self.assertEqual(webkit_fig.parse_counters(text),
                         {"mesh_count": 3, "mesh_pause_max_ns": 1500000})
        self.assertIsNone(webkit_fig.parse_counters("MESH COUNT: 3\n"))

    def test_pause_summary(self):
        hist = {"<1000": 5, "<2000": 1, "<5000": 2, ">=5000": 1}
        events = [{"t": float(i), "max_pause_us": 100 * i, "pause_us_hist": hist}
                  for i in range(1, 11)]
        p = webkit_fig.pause_summary(events)
        self.assertEqual((p["passes"], p["p50_us"], p["p90_us"], p["max_us"]), (10, 600, 1000, 1000))
        self.assertEqual((p["meshes_over_2ms"], p["meshes"]), (30, 90))
        self.assertIsNone(webkit_fig.pause_summary([]))

    def test_settled_parts(self):
        m = R.MemorySeries()
        m.t, m.anon, m.shmem, m.kernel = [0.0, 9.0, 10.0], [1, 2, 3], [4, 5, 6], [7, 8, 9]
        got = webkit_fig.settled_parts(m, {"result_s": 5.0, "closing_s": 10.0})
        self.assertEqual(got, {"anon": 2.0, "shmem": 5.0, "kernel": 8.0})
        self.assertIsNone(webkit_fig.settled_parts(m, {}))

    def test_window_mean(self):
        t, v = [0.0, 1.0, 2.0, 3.0], [10, 20, 30, 40]
        self.assertAlmostEqual(webkit_fig.window_mean(t, v, 0.0, 2.0), 15.0)
        self.assertAlmostEqual(webkit_fig.window_mean(t, v, 0.5, 1.5), 15.0)
        # the last sample holds until the end of the window
        self.assertAlmostEqual(webkit_fig.window_mean(t, v, 3.0, 4.0), 40.0)
        self.assertIsNone(webkit_fig.window_mean(t, v, 5.0, 5.0))


def run(al, trial, mean, settled, score, pause_ns=0, ok=True):
    res = {"mean_run": mean * MIB, "settled": settled * MIB, "peak_run": mean * 1.5 * MIB,
           "score": score, "result_s": 60.0,
           "settled_parts": {"anon": 50 * MIB, "shmem": (settled - 60) * MIB,
                             "kernel": (10 if al == "mesh" else 5) * MIB}}
    if al.startswith("mesh"):
        res["mallocstats"] = {"web": {"mesh_count": 100, "mesh_pause_max_ns": pause_ns,
                                      "mesh_pass_max_ns": 2 * pause_ns, "mesh_passes": 10,
                                      "mesh_pass_ns": 10**8, "meshed_pages_total": 256,
                                      "barrier_waits": 3}}
    return R.Run(workload=webkit_fig.WORKLOAD, allocator=al, trial=trial, seed=0, scale=12.0,
                 argv=[], status="ok" if ok else "failed", result=res, user_s=20.0,
                 sys_s=10.0 if al.startswith("mesh") else 5.0,
                 error=None if ok else "allocator check: web process 42 does not map x")


def document(runs):
    return R.MatrixResult(created="2026-12-01T00:00:00+0000", machine={"cpus": 2},
                          commit="abc", config={"figures": {"webkit": {"trials": 2}}},
                          allocators={}, runs=runs, complete=True)


class TestReport(unittest.TestCase):
    def setUp(self):
        self.doc = document([
            run("jemalloc", 1, 400, 380, 100), run("jemalloc", 2, 400, 380, 100),
            run("mesh", 1, 300, 300, 99, pause_ns=1_500_000),
            run("mesh", 2, 340, 320, 97, pause_ns=3_000_000),
            run("glibc", 1, 420, 410, 110), run("glibc", 2, 420, 410, 110),
            run(webkit_fig.OWN, 1, 350, 290, 200), run(webkit_fig.OWN, 2, 350, 290, 200),
            run("mesh", 3, 1, 1, 1, ok=False),
            run("mesh-nomesh", 1, 330, 310, 99), run("mesh-nomesh", 2, 330, 310, 99),
        ])

    def test_ratios_by_hand(self):
        rows = webkit_report.rows(self.doc)
        mesh = rows["mesh"]
        self.assertEqual((mesh.trials, mesh.failed), (2, 1))
        self.assertAlmostEqual(mesh.ratios["mean_run"].mean, 320 / 400)
        self.assertAlmostEqual(mesh.ratios["settled"].mean, 310 / 380)
        self.assertAlmostEqual(mesh.ratios["score"].mean, 98 / 100)
        self.assertAlmostEqual(mesh.meshing["longest_pause_ms"], 3.0)
        self.assertAlmostEqual(mesh.ratios["cpu_s"].mean, 30 / 25)

    def test_targets(self):
        got = {t.what: t.met for t in webkit_report.targets(webkit_report.rows(self.doc))}
        self.assertTrue(got["mean footprint over the run, mesh / jemalloc"])      # 0.80
        self.assertTrue(got["footprint after the run settles, mesh / jemalloc"])   # 0.82
        self.assertTrue(got["footprint after the run settles, mesh below glibc"])
        self.assertFalse(got["footprint after the run settles, mesh below webkit-own"])
        self.assertTrue(got["score, mesh / jemalloc"])
        self.assertFalse(got["longest meshing stall in the web process (write-protect pause)"])

    def test_section_and_failure_listed(self):
        text = "\n".join(webkit_report.section(self.doc, "/r/paper-webkit.json", "/r", "/r/plots"))
        self.assertIn("| mean footprint over the run, mesh / jemalloc | 0.84 (530 / 632 MB) | "
                      "0.80 ± ", text)
        self.assertIn("Failed: mesh trial 3: failed: allocator check", text)
        self.assertIn("| mesh | 100 ± 0 | 1.0 ± 0.0 | 10 ± 0 | 0.100 ± 0.000 | 3.00 | - / - | - | "
                      "6.00 |", text)
        self.assertIn("0.10 s a run in mesh passes, 0.2% of the run's 60 s", text)
        self.assertIn("Against libmesh without meshing", text)
        self.assertIn("(the write barrier): 3.0 a run", text)
        self.assertIn("mesh / jemalloc 1.20 ± 0.00, mesh-nomesh / jemalloc 1.20", text)
        self.assertIn("Settled, mesh minus mesh-nomesh: anon +0.0 MiB, shmem +0.0 MiB, "
                      "kernel +5.0 MiB", text)
        self.assertIn("| mesh | 310.0 ± 14.1 | 50.0 ± 0.0 | 250.0 ± 14.1 | 10.0 ± 0.0 |", text)

    def test_not_measured(self):
        text = "\n".join(webkit_report.section(None, None, "/r", "/r/plots"))
        self.assertIn("Not measured", text)

    def test_separate_file_used_only_when_main_has_none(self):
        main = document([])
        self.assertEqual(report.webkit_source(main, "m", self.doc, "w"), (self.doc, "w"))
        self.assertEqual(report.webkit_source(self.doc, "m", None, None), (self.doc, "m"))

    def test_plot_drawn(self):
        from harness.paper import plots
        with tempfile.TemporaryDirectory() as d:
            for r in self.doc.runs:
                r.memory.t, r.memory.footprint = [0.0, 30.0, 60.0, 65.0], [MIB, 300 * MIB,
                                                                         310 * MIB, 300 * MIB]
            paths = plots.fig6_webkit(self.doc, d)
            self.assertTrue(os.path.getsize(os.path.join(d, "fig6-webkit.png")) > 1000, paths)


if __name__ == "__main__":
    unittest.main()
