"""Plots drawn from a small fixture results file.

fixtures/small-results.json is a real run, made with
  /usr/bin/python3 -m harness run --workloads fragmenter,redis-like \
      --allocators glibc,jemalloc,mesh --trials 2 --scale 0.1 \
      --timing all --timing-runs 2 --timing-warmup 0
"""

import copy
import os
import tempfile
import unittest
from unittest import mock
import xml.etree.ElementTree as ET

from harness import plots
from harness import results as R

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                       "small-results.json")
EXPECTED = ("memory-fragmenter", "memory-redis-like", "measures", "summary-memory",
            "summary-time", "fragmentation")


class TestPlots(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.res = R.load(FIXTURE)
        cls.tmp = tempfile.TemporaryDirectory()
        cls.paths = plots.plot_all(cls.res, cls.tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def svg_text(self, name):
        with open(os.path.join(self.tmp.name, name + ".svg"), encoding="utf-8") as f:
            text = f.read()
        root = ET.fromstring(text)
        self.assertTrue(root.tag.endswith("svg"))
        return " ".join(t for t in root.itertext())

    def test_files(self):
        want = {os.path.join(self.tmp.name, f"{n}.{e}") for n in EXPECTED for e in ("png", "svg")}
        self.assertEqual(set(self.paths), want)
        for p in self.paths:
            if p.endswith(".png"):
                with open(p, "rb") as f:
                    self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")
                self.assertGreater(os.path.getsize(p), 10_000)

    def test_memory_over_time_has_every_allocator_and_live_bytes(self):
        text = self.svg_text("memory-redis-like")
        for label in ("glibc", "jemalloc", "mesh", "live bytes", "footprint (MiB)", "populate1"):
            self.assertIn(label, text)

    def test_series_are_drawn_as_the_step_functions_they_are(self):
        # A sample holds until the next one (results.time_weighted_mean), and
        # a compacted series is interval means: a straight line between two
        # points would show a change before it happened.
        import matplotlib.axes
        calls = []
        plot = matplotlib.axes.Axes.plot

        def spy(ax, *args, **kw):
            calls.append(kw)
            return plot(ax, *args, **kw)

        with tempfile.TemporaryDirectory() as d, \
                mock.patch.object(matplotlib.axes.Axes, "plot", spy):
            plots.memory_over_time(self.res, "fragmenter", d)
            plots.measures(self.res, d)
        series = [kw for kw in calls if kw.get("label") in
                  ("glibc", "jemalloc", "mesh", "RSS", "PSS", "cgroup usage", "footprint")]
        self.assertGreaterEqual(len(series), 3 + 2 * 3)
        self.assertEqual({kw.get("drawstyle") for kw in series}, {"steps-post"})

    def test_no_measures_plot_without_rss_or_pss(self):
        # A compacted matrix keeps the footprint alone: a "footprint vs RSS
        # and PSS" plot of it would show no RSS or PSS.
        res = copy.deepcopy(self.res)
        for r in res.runs:
            r.memory.rss, r.memory.pss, r.memory.usage = [], [], []
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(plots.measures(res, d), [])
            self.assertNotIn(os.path.join(d, "measures.svg"), plots.plot_all(res, d))

    def test_summaries(self):
        self.assertIn("mean footprint / glibc", self.svg_text("summary-memory"))
        self.assertIn("hyperfine", self.svg_text("summary-time"))
        self.assertIn("1.0 = physical limit", self.svg_text("fragmentation"))
        self.assertIn("RSS", self.svg_text("measures"))

    def test_deterministic(self):
        with tempfile.TemporaryDirectory() as d:
            plots.plot_all(self.res, d)
            for n in EXPECTED:
                with open(os.path.join(d, n + ".svg"), "rb") as a, \
                        open(os.path.join(self.tmp.name, n + ".svg"), "rb") as b:
                    self.assertEqual(a.read(), b.read(), n)

    def test_other_baseline_and_failed_runs(self):
        res = copy.deepcopy(self.res)
        res.runs = [r for r in res.runs if r.allocator != "glibc"]
        res.timings = []
        res.config["allocators"] = ["jemalloc", "mesh"]
        with tempfile.TemporaryDirectory() as d:
            paths = plots.plot_all(res, d)
            self.assertIn(os.path.join(d, "summary-memory.svg"), paths)
            with open(os.path.join(d, "summary-memory.svg")) as f:
                self.assertIn("mean footprint / jemalloc", f.read())
        for r in res.runs:
            r.status = "failed"
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(plots.plot_all(res, d), [])

    def test_representative_trial_is_the_median(self):
        runs = [r for r in self.res.runs if r.workload == "fragmenter" and r.allocator == "jemalloc"]
        means = sorted(R.summarize(r).mean_footprint for r in runs)
        rep = plots.representative(runs)
        self.assertEqual(R.summarize(rep).mean_footprint, means[(len(means) - 1) // 2])


if __name__ == "__main__":
    unittest.main()
