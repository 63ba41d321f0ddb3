"""`plot` without results/latest.json draws the default matrix of the newest
compacted document (what a fresh clone has: bench's full documents are not committed)."""

import contextlib
import dataclasses
import io
import os
import tempfile
import unittest
from unittest import mock

from harness import cli
from harness import results as R
from harness.tests.test_results import make_result, make_run


def doc(created: str, workloads: list, compacted: bool = True) -> R.MatrixResult:
    runs = [make_run(workload=w, allocator=al, trial=t)
            for w in workloads for al in ("glibc", "jemalloc") for t in (1, 2)]
    res = make_result(runs)
    config = dict(res.config, **({"compacted": {"how": "test"}} if compacted else {}))
    return dataclasses.replace(res, created=created, config=config)


class TestPlotFallback(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.results = os.path.join(self.tmp.name, "results")
        os.makedirs(self.results)
        save = lambda res, name: R.save(res, self.results, name=name, update_latest=False)  # noqa: E731
        save(doc("2026-01-01T00:00:00+0000", ["fragmenter", "ruby-fragment"]), "paper")
        save(doc("2025-01-01T00:00:00+0000", ["larson"]), "older")
        # newer, but not compacted, or with no default-matrix workload: not chosen
        save(doc("2027-01-01T00:00:00+0000", ["churn"], compacted=False), "full")
        save(doc("2027-01-01T00:00:00+0000", ["webkit"]), "paper-webkit")

    def tearDown(self):
        self.tmp.cleanup()

    def test_newest_compacted_matrix(self):
        path, res = cli.committed_matrix(self.results)
        self.assertEqual(os.path.basename(path), "paper.json")
        self.assertEqual({r.workload for r in res.runs}, {"fragmenter"})
        self.assertIsNone(cli.committed_matrix(os.path.join(self.tmp.name, "none")))

    def test_plot_without_latest(self):
        plots = os.path.join(self.tmp.name, "plots")
        latest = os.path.join(self.results, "latest.json")
        err = io.StringIO()
        with mock.patch.object(cli, "RESULTS_DIR", self.results), \
                mock.patch.object(cli, "LATEST", latest), contextlib.redirect_stderr(err), \
                contextlib.redirect_stdout(io.StringIO()):
            self.assertEqual(cli.main(["plot", "--plots-dir", plots]), 0)
        self.assertIn("paper.json", err.getvalue())
        self.assertIn("memory-fragmenter.svg", os.listdir(plots))
        self.assertNotIn("memory-ruby-fragment.svg", os.listdir(plots))


if __name__ == "__main__":
    unittest.main()
