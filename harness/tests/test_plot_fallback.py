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


def paper_doc() -> R.MatrixResult:
    """Like results/paper.json: the figures' runs before the matrix's, an
    allocator only a figure ran, and the matrix's own config under figures."""
    runs = [make_run(workload="redis-server", allocator=al, trial=1)
            for al in ("jemalloc", "jemalloc-activedefrag", "glibc")]
    runs += [make_run(workload=w, allocator=al, trial=t) for w in ("larson", "fragmenter")
             for al in ("glibc", "jemalloc") for t in (1, 2)]
    res = make_result(runs)
    matrix = {"workloads": ["fragmenter", "larson"], "allocators": ["glibc", "jemalloc"],
              "trials": 2}
    config = {"compacted": {"how": "test"}, "trials": 2, "figures": {"matrix": matrix},
              "workloads": ["redis-server", "larson", "fragmenter"],
              "allocators": ["jemalloc", "jemalloc-activedefrag", "glibc"]}
    return dataclasses.replace(res, created="2026-06-01T00:00:00+0000", config=config)


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

    def test_the_matrix_alone_in_its_own_order(self):
        # The figures' workloads would be empty groups on every summary plot,
        # and their allocators empty bars in each group.
        R.save(paper_doc(), self.results, name="zpaper", update_latest=False)
        path, res = cli.committed_matrix(self.results)
        self.assertEqual(os.path.basename(path), "zpaper.json")
        self.assertEqual(R.ordered_workloads(res), ["fragmenter", "larson"])
        self.assertEqual(R.ordered_allocators(res), ["glibc", "jemalloc"])
        self.assertEqual(set(res.allocators) - {"glibc", "jemalloc"}, set())

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
