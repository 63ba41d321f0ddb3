"""harness/stats.py: the numbers the harness's and the paper's reports share."""

import math
import unittest

from harness import results as R
from harness import stats


def run(trial: int, value, status: str = "ok") -> R.Run:
    return R.Run(workload="w", allocator="a", trial=trial, seed=trial, scale=1.0, argv=[],
                 status=status, result={"v": value})


def key(r: R.Run):
    return r.result["v"]


class TestStats(unittest.TestCase):
    def test_geomean(self):
        self.assertAlmostEqual(stats.geomean([2.0, 8.0]), 4.0)
        # absent and zero values are left out, not taken as zero
        self.assertAlmostEqual(stats.geomean([None, 0.0, 1.0, 4.0, 16.0]), 4.0)
        self.assertIsNone(stats.geomean([]))
        self.assertIsNone(stats.geomean([None, 0]))
        self.assertTrue(math.isclose(stats.geomean(iter([3.0])), 3.0))

    def test_median_run(self):
        runs = [run(1, 30), run(2, 10), run(3, None), run(4, 20), run(5, 40)]
        # the keyed runs sorted: 10, 20, 30, 40; the lower median of an even count
        self.assertEqual(stats.median_run(runs, key).trial, 4)
        self.assertEqual(stats.median_run(runs[:3], key).trial, 2)
        # equal keys: the earlier trial first
        self.assertEqual(stats.median_run([run(3, 5), run(1, 5), run(2, 5)], key).trial, 2)
        self.assertIsNone(stats.median_run([run(1, None)], key))
        self.assertIsNone(stats.median_run([], key))

    def test_representative_skips_failed_and_empty_runs(self):
        self.assertIsNone(stats.representative([run(1, 1, "failed"), run(2, 1)]))

    def test_row_types_share_the_base(self):
        from harness.paper import figures, webkit_report
        for row_type in (figures.Row, webkit_report.Row):
            row = row_type("mesh", 3, 0)
            self.assertIsInstance(row, stats.AllocatorRow)
            self.assertEqual((row.values, row.ratios), ({}, {}))


if __name__ == "__main__":
    unittest.main()
