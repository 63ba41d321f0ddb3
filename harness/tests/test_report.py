"""The ratio table and the Markdown report, checked against figures
recomputed by hand from the fixture's raw series."""

import copy
import math
import os
import statistics
import unittest

from harness import report
from harness import results as R

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures",
                       "small-results.json")


def mean_footprint(run: R.Run) -> float:
    """Time-weighted mean, computed here without the harness's helper."""
    pts = [(t, f) for t, f in zip(run.memory.t, run.memory.footprint) if f is not None]
    area = sum(f0 * (t1 - t0) for (t0, f0), (t1, _) in zip(pts, pts[1:]))
    return area / (pts[-1][0] - pts[0][0])


class TestReport(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.res = R.load(FIXTURE)
        cls.rows = {(r.workload, r.allocator): r for r in report.rows(cls.res)}

    def by_hand(self, workload, allocator):
        runs = [r for r in self.res.runs if r.workload == workload and r.allocator == allocator and r.ok]
        return statistics.fmean(mean_footprint(r) for r in runs)

    def test_memory_ratios(self):
        for w in ("fragmenter", "redis-like"):
            for al in ("jemalloc", "mesh"):
                row = self.rows[(w, al)]
                want = self.by_hand(w, al) / self.by_hand(w, "glibc")
                self.assertAlmostEqual(row.ratios[("mean", "glibc")], want, places=9)
                want = self.by_hand(w, al) / self.by_hand(w, "jemalloc")
                self.assertAlmostEqual(row.ratios[("mean", "jemalloc")], want, places=9)
            self.assertEqual(self.rows[(w, "glibc")].ratios[("mean", "glibc")], 1.0)

    def test_time_uses_hyperfine(self):
        t = {(x.workload, x.allocator): x for x in self.res.timings}
        row = self.rows[("fragmenter", "mesh")]
        self.assertEqual(row.time_source, "hyperfine")
        mine, base = t[("fragmenter", "mesh")].times, t[("fragmenter", "glibc")].times
        self.assertGreater(len(mine), 1)
        # Paired by round: the median of the per-round ratios (of two,
        # their geometric mean).
        want = math.exp(statistics.median(math.log(a / b) for a, b in zip(mine, base)))
        self.assertAlmostEqual(row.ratios[("time", "glibc")], want, places=9)

    def test_wall_time_pairs_trials(self):
        runs = {r.trial: r.wall_s for r in self.res.runs
                if r.workload == "redis-like" and r.allocator == "mesh" and r.ok}
        base = {r.trial: r.wall_s for r in self.res.runs
                if r.workload == "redis-like" and r.allocator == "glibc" and r.ok}
        self.assertEqual(set(runs), set(base))
        self.assertGreater(len(runs), 1)
        untimed = copy.copy(self.res)
        untimed.timings = []  # no hyperfine: time is the memory runs' wall time
        row = {(r.workload, r.allocator): r for r in report.rows(untimed)}[("redis-like", "mesh")]
        self.assertEqual(row.time_source, "wall")
        want = math.exp(statistics.median(math.log(runs[k] / base[k]) for k in runs))
        self.assertAlmostEqual(row.ratios[("time", "glibc")], want, places=9)

    def test_geomean(self):
        g = report.geomeans(list(self.rows.values()))
        a = self.rows[("fragmenter", "mesh")].ratios[("peak", "jemalloc")]
        b = self.rows[("redis-like", "mesh")].ratios[("peak", "jemalloc")]
        self.assertAlmostEqual(g["mesh"][("peak", "jemalloc")], math.sqrt(a * b), places=9)

    def test_text_and_markdown(self):
        text = report.ratio_table(self.res)
        self.assertIn("xglibc", text)
        self.assertIn("xjemalloc", text)
        row = self.rows[("redis-like", "mesh")]
        line = next(l for l in text.splitlines() if l.startswith("redis-like") and " mesh " in l)
        self.assertIn(f"{row.ratios[('mean', 'glibc')]:.2f}", line)
        md = report.markdown(self.res)
        self.assertIn("| redis-like | mesh |", md)
        self.assertIn(self.res.allocators["jemalloc"]["version"], md)
        self.assertIn("median of per-round ratios", md)

    def test_failed_runs_counted_not_averaged(self):
        res = R.load(FIXTURE)
        bad = next(r for r in res.runs if r.workload == "fragmenter" and r.allocator == "mesh")
        bad.status, bad.error = "failed", "exit status 1"
        rows = {(r.workload, r.allocator): r for r in report.rows(res)}
        self.assertEqual((rows[("fragmenter", "mesh")].trials, rows[("fragmenter", "mesh")].failed), (1, 1))
        self.assertIn("1/2", report.ratio_table(res))
        self.assertIn("exit status 1", report.markdown(res))


if __name__ == "__main__":
    unittest.main()
