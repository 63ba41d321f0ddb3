"""The command line end to end, on a real workload (workloads/bin must be built:
this test fails, it does not skip, when it is not)."""

import json
import os
import subprocess
import tempfile
import unittest

from harness import packages
from harness import results as R
from harness.allocators import REPO_ROOT
from harness.workloads import CATALOG

WORKLOAD = "fragmenter"
TINY = "0.05"


def harness(*args, timeout=300):
    return subprocess.run(["/usr/bin/python3", "-m", "harness", *args], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=timeout)


class TestEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        missing = CATALOG[WORKLOAD].missing()
        if missing:
            raise AssertionError(f"{missing}: the end-to-end test needs the real workloads")
        cls.tmp = tempfile.TemporaryDirectory()
        cls.results = os.path.join(cls.tmp.name, "results")
        cls.plots = os.path.join(cls.tmp.name, "plots")
        cls.matrix = harness("run", "--workloads", WORKLOAD, "--allocators", "glibc,jemalloc",
                          "--trials", "2", "--scale", TINY, "--timing", "all",
                          "--timing-runs", "2", "--timing-warmup", "0",
                          "--results-dir", cls.results)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_run_writes_results(self):
        self.assertEqual(self.matrix.returncode, 0, self.matrix.stdout + self.matrix.stderr)
        latest = os.path.join(self.results, "latest.json")
        res = R.load(latest)
        self.assertTrue(res.complete)
        self.assertEqual(len(res.runs), 4)
        for r in res.runs:
            self.assertEqual(r.status, "ok", f"{r.allocator}: {r.error} {r.stderr_tail}")
            self.assertEqual(r.scale, float(TINY))
            self.assertGreater(len(r.memory), 3)
            self.assertTrue(r.live.t, "the workload's live-bytes trace is stored")
            self.assertEqual(r.live.phase[-1], "end")
            self.assertRegex(r.result["checksum"], r"^[0-9a-f]{16}$")
        self.assertEqual(R.checksum_mismatches(res), [])
        self.assertEqual({t.allocator for t in res.timings}, {"glibc", "jemalloc"})
        self.assertEqual(res.allocators["jemalloc"]["package"].split(":")[0], "libjemalloc2")
        self.assertTrue(res.allocators["glibc"]["build_id"])
        self.assertIn("cpu_model", res.machine)
        self.assertTrue(os.path.exists(os.path.join(self.results, "latest.csv")))
        # progress on stderr, ratio table on stdout
        self.assertIn("[1/4]", self.matrix.stderr)
        self.assertIn("ETA", self.matrix.stderr)
        self.assertIn("xjemalloc", self.matrix.stdout)
        self.assertIn("results: ", self.matrix.stdout)

    def test_plot_and_report(self):
        self.assertEqual(self.matrix.returncode, 0)
        latest = os.path.join(self.results, "latest.json")
        old_plots = os.path.join(self.tmp.name, "old-plots")
        # the flag vocabulary, then the older spelling it replaced
        for args, out in ((["--results", latest, "--plots-dir", self.plots], self.plots),
                          ([latest, "--out", old_plots], old_plots)):
            p = harness("plot", *args)
            self.assertEqual(p.returncode, 0, p.stderr)
            files = set(os.listdir(out))
            for name in (f"memory-{WORKLOAD}", "summary-memory", "summary-time",
                         "fragmentation", "measures"):
                self.assertIn(f"{name}.png", files)
                self.assertIn(f"{name}.svg", files)
        for args in (["--results", latest, "--out"], [latest, "--markdown"]):
            md = os.path.join(self.tmp.name, f"report{len(args[0])}.md")
            p = harness("report", *args, md)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("geomean", p.stdout)
            with open(md) as f:
                self.assertIn(f"| {WORKLOAD} | jemalloc |", f.read())

    def test_bench_path(self):
        res_dir = os.path.join(self.tmp.name, "bench-results")
        plot_dir = os.path.join(self.tmp.name, "bench-plots")
        p = harness("bench", "--no-install", "--workloads", WORKLOAD, "--allocators",
                    "glibc,jemalloc,ghost", "--alloc", "ghost=/nonexistent/libghost.so",
                    "--trials", "1", "--scale", TINY, "--timing", "none",
                    "--results-dir", res_dir, "--plots-dir", plot_dir)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("skipping allocator ghost", p.stderr)
        self.assertIn("xglibc", p.stdout)
        self.assertIn(f"plot: {plot_dir}/summary-memory.png", p.stdout)
        res = R.load(os.path.join(res_dir, "latest.json"))
        self.assertIn("ghost", res.config["skipped"])
        self.assertEqual({r.allocator for r in res.runs}, {"glibc", "jemalloc"})


class TestCommands(unittest.TestCase):
    def test_help(self):
        p = harness("--help")
        self.assertEqual(p.returncode, 0)
        for cmd in ("run", "plot", "trace", "list", "bench", "report", "paper"):
            self.assertIn(cmd, p.stdout)
        p = harness("bench", "--help")
        self.assertIn("--full", p.stdout)

    def test_list(self):
        p = harness("list")
        self.assertEqual(p.returncode, 0, p.stderr)
        for name in ("glibc", "jemalloc", "mimalloc", "tcmalloc", "mesh", "mesh-nomesh",
                     "mesh-norand", *CATALOG):
            self.assertIn(name, p.stdout)
        self.assertIn("memory measured by: cgroup", p.stdout)

    def test_missing_allocator_refused(self):
        with tempfile.TemporaryDirectory() as d:
            p = harness("run", "--workloads", WORKLOAD, "--allocators", "ghost",
                        "--alloc", "ghost=/nonexistent/libghost.so", "--results-dir", d)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("/nonexistent/libghost.so does not exist", p.stderr)
            self.assertEqual(os.listdir(d), [])
            p = harness("run", "--workloads", "nosuch", "--results-dir", d)
            self.assertIn("unknown workload 'nosuch'", p.stderr)

    def test_trace(self):
        with tempfile.TemporaryDirectory() as d:
            tsv = os.path.join(d, "samples.tsv")
            code = "b = bytearray(48 << 20); import time; time.sleep(0.3); print('done')"
            p = harness("trace", "--tsv", tsv, "--", "/usr/bin/python3", "-c", code)
            self.assertEqual(p.returncode, 0, p.stderr)
            lines = p.stdout.strip().splitlines()
            self.assertEqual(lines[0], "done")
            s = json.loads(lines[-1])
            for k in ("peak_footprint_bytes", "mean_footprint_bytes", "final_footprint_bytes",
                      "peak_pss_bytes", "peak_rss_bytes", "wall_s", "exit_code"):
                self.assertIn(k, s)
            self.assertEqual(s["exit_code"], 0)
            self.assertGreater(s["peak_footprint_bytes"], 48 << 20)
            self.assertLess(s["peak_footprint_bytes"], 80 << 20)
            with open(tsv) as f:
                rows = f.read().splitlines()
            self.assertEqual(rows[0].split("\t"), list(R.MEMORY_COLUMNS))
            self.assertEqual(len(rows) - 1, s["samples"])
            p = harness("trace", "--allocator", "jemalloc", "--", "sh", "-c", "exit 5")
            self.assertEqual(p.returncode, 5)
            self.assertEqual(json.loads(p.stdout.splitlines()[-1])["exit_code"], 5)


class TestFullFlags(unittest.TestCase):
    def test_paper_flags_exist(self):
        """Every flag a run or --full passes is one the workload's --help lists."""
        for w in CATALOG.values():
            missing = w.missing()
            if missing:
                self.fail(missing)
            help_text = subprocess.run([w.binary(), "--help"], capture_output=True,
                                       text=True).stdout
            for flag in [a for a in w.paper_args + w.args if a.startswith("--")] + [
                    "--scale", "--seed", "--trace"]:
                self.assertIn(flag, help_text, f"{w.name} --help does not list {flag}")

    def test_full_argv(self):
        from harness import runner
        from harness.allocators import builtin_allocators
        glibc = builtin_allocators()["glibc"]
        cfg = runner.MatrixConfig(workloads=list(CATALOG.values()), allocators=[glibc], full=True)
        w = CATALOG["redis-like"]
        spec = runner.plan([w], [glibc], 1, cfg.scale_of, 1, 1, cfg.args_of)[0]
        self.assertEqual(w.argv(spec.seed, spec.scale, "/t", extra=spec.extra_args)[1:],
                         ["--seed", "1", "--scale", "1.0", "--hold", "6", "--trace", "/t"])
        b = CATALOG["browser-like"]
        spec = runner.plan([b], [glibc], 1, cfg.scale_of, 1, 1, cfg.args_of)[0]
        self.assertEqual(b.argv(spec.seed, spec.scale, "/t", extra=spec.extra_args)[1:],
                         ["--seed", "1", "--scale", "10.0", "--trace", "/t"])


class FakeDpkg:
    """Answers dpkg-query for a chosen set of installed packages."""

    def __init__(self, installed):
        self.installed = set(installed)
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        assert argv[0] == "dpkg-query", argv
        ok = argv[-1] in self.installed
        return subprocess.CompletedProcess(argv, 0 if ok else 1, "ii " if ok else "", "")


class TestPackages(unittest.TestCase):
    def test_not_root_prints_the_apt_line_and_installs_nothing(self):
        dpkg = FakeDpkg(set(packages.PACKAGES) - {"libjemalloc2", "hyperfine"})
        installs = []
        out = packages.ensure(euid=1000, run=dpkg, install_run=installs.append)
        self.assertFalse(out.ok)
        self.assertIn("apt-get install -y --no-install-recommends libjemalloc2 hyperfine", out.message)
        self.assertEqual(out.commands, ["apt-get install -y --no-install-recommends libjemalloc2 hyperfine"])
        self.assertEqual(installs, [])

    def test_root_installs_missing(self):
        dpkg = FakeDpkg(set(packages.PACKAGES) - {"libmimalloc2.0"})
        ran = []

        def install(argv):
            ran.append(argv)
            if argv[:2] == ["apt-get", "install"]:
                dpkg.installed.update(argv[3:])
            return 0
        out = packages.ensure(euid=0, run=dpkg, install_run=install)
        self.assertTrue(out.ok, out.message)
        self.assertEqual(ran, [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "libmimalloc2.0"]])

    def test_all_present(self):
        ran = []
        out = packages.ensure(euid=1000, run=FakeDpkg(packages.PACKAGES), install_run=ran.append)
        self.assertTrue(out.ok)
        self.assertEqual(ran, [])

    def test_real_dpkg_query(self):
        self.assertTrue(packages.installed("libc6"))
        self.assertFalse(packages.installed("no-such-package-xyz"))


class TestPaperRows(unittest.TestCase):
    """`paper run --redis-allocators` picks Figure 7's rows and refuses a
    name the figure does not know (before anything runs)."""

    def config(self, *argv):
        from harness.cli import parser
        from harness.paper import cli as paper_cli
        return paper_cli.config_of(parser().parse_args(["paper", "run", *argv]))

    def test_rows_taken(self):
        cfg = self.config("--figures", "redis", "--redis-allocators", "jemalloc, mesh,mesh-nomesh")
        self.assertEqual(cfg.redis_allocators, ("jemalloc", "mesh", "mesh-nomesh"))
        self.assertEqual(cfg.figures, ("redis",))

    def test_all_rows_by_default(self):
        from harness.paper import redis_fig
        self.assertEqual(self.config().redis_allocators, redis_fig.ALLOCATORS)

    def test_unknown_row_refused(self):
        with self.assertRaises(SystemExit) as e:
            self.config("--redis-allocators", "jemalloc,jemallocc")
        self.assertIn("jemallocc", str(e.exception))


if __name__ == "__main__":
    unittest.main()
