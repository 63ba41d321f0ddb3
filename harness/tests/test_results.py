"""The results model: round trip, version refusal, latest links, CSV, derived figures."""

import csv
import json
import math
import os
import tempfile
import unittest

from harness import results as R


def make_run(workload="w", allocator="glibc", trial=1, footprint=(10, 20, 30), live=(5, 10),
             status="ok", checksum="00000000000000aa", wall=1.0, seed=1) -> R.Run:
    mem = R.MemorySeries()
    for i, f in enumerate(footprint):
        mem.append(t=0.01 * (i + 1), footprint=f, usage=f + 1, anon=f, shmem=0, kernel=0,
                   file=1, rss=2 * f, pss=f if i % 2 == 0 else None)
    lv = R.LiveTrace(t=[0.0, 0.02][:len(live)], live=list(live), phase=["a", "end"][:len(live)])
    return R.Run(workload=workload, allocator=allocator, trial=trial, seed=seed, scale=1.0,
                 argv=["/bin/w"], status=status, method="cgroup-v1", exit_code=0,
                 wall_s=wall, user_s=0.5, sys_s=0.1, memory=mem, live=lv,
                 result={"checksum": checksum, "ops_per_sec": 123.0}, live_offset_s=0.01)


def make_result(runs, timings=()) -> R.MatrixResult:
    return R.MatrixResult(created="2025-01-01T00:00:00+0000", machine={"cpus": 2},
                          commit="abc", config={"workloads": ["w"], "allocators": ["glibc", "jemalloc"],
                                                "trials": 2},
                          allocators={"glibc": {"version": "2.36"}}, runs=list(runs),
                          timings=list(timings), complete=True)


class TestRoundTrip(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)

    def test_write_read_equal(self):
        t = R.Timing("w", "glibc", 1.0, 1, "env w", 2, 1.0, 0.1, 1.0, 0.9, 1.1, 0.8, 0.1,
                     [0.9, 1.1], [0, 0])
        res = make_result([make_run(), make_run(allocator="jemalloc", trial=2)], [t])
        path = R.save(res, self.tmp.name, name="one")
        back = R.load(path)
        self.assertEqual(back, res)
        self.assertEqual(back.runs[0].memory.pss, [10, None, 30])

    def test_refuses_versions_it_cannot_read(self):
        readable = ", ".join(map(str, R.READABLE_VERSIONS))
        path = os.path.join(self.tmp.name, "other.json")
        for v in (R.SCHEMA_VERSION + 1, 0, -3):
            d = R.to_dict(make_result([make_run()]))
            d["schema_version"] = v
            with open(path, "w") as f:
                json.dump(d, f)
            # the message names the file, the version found and the versions readable
            with self.assertRaisesRegex(R.SchemaError, f"other.json: results schema version {v} "
                                        f"cannot be read: this harness reads version {readable}"):
                R.load(path)
        d["schema_version"] = True
        with self.assertRaisesRegex(R.SchemaError, "no schema_version"):
            R.from_dict(d)
        for v in R.READABLE_VERSIONS:
            d["schema_version"] = v
            self.assertEqual(len(R.from_dict(d).runs), 1)

    def test_refuses_other_documents(self):
        path = os.path.join(self.tmp.name, "x.json")
        for doc in ({"schema_version": 1}, [1, 2], {"schema": R.SCHEMA}):
            with open(path, "w") as f:
                json.dump(doc, f)
            with self.assertRaises(R.SchemaError):
                R.load(path)
        with open(path, "w") as f:
            f.write("{not json")
        with self.assertRaises(R.SchemaError):
            R.load(path)

    def test_latest_points_at_newest_and_csv_beside(self):
        R.save(make_result([make_run()]), self.tmp.name, name="a")
        p2 = R.save(make_result([make_run(allocator="jemalloc")]), self.tmp.name, name="b")
        latest = os.path.join(self.tmp.name, "latest.json")
        self.assertTrue(os.path.islink(latest))
        self.assertEqual(os.readlink(latest), "b.json")
        self.assertEqual(R.load(latest), R.load(p2))
        self.assertEqual(os.readlink(os.path.join(self.tmp.name, "latest.csv")), "b.csv")
        R.save(make_result([make_run()]), self.tmp.name, name="c", update_latest=False)
        self.assertEqual(os.readlink(latest), "b.json")
        with open(os.path.join(self.tmp.name, "b.csv")) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), 1)
        self.assertEqual(rows[0]["allocator"], "jemalloc")
        self.assertEqual(rows[0]["peak_footprint_bytes"], "30")
        self.assertEqual(rows[0]["checksum"], "00000000000000aa")


class TestDerived(unittest.TestCase):
    def test_time_weighted_mean(self):
        # 10 for 1 s, then 40 for 3 s: (10 + 120) / 4
        self.assertAlmostEqual(R.time_weighted_mean([0, 1, 4], [10, 40, 99]), 32.5)
        # a None is skipped: 10 holds for 2 s, 30 for 1 s
        self.assertAlmostEqual(R.time_weighted_mean([0, 1, 2, 3], [10, None, 30, 0]), 50 / 3)
        self.assertIsNone(R.time_weighted_mean([0, 1], [None, None]))
        self.assertEqual(R.time_weighted_mean([5], [7]), 7.0)

    def test_summary(self):
        s = R.summarize(make_run(footprint=(10, 20, 30), live=(5, 10)))
        self.assertEqual(s.peak_footprint, 30)
        self.assertEqual(s.final_footprint, 30)
        self.assertAlmostEqual(s.mean_footprint, 15.0)
        self.assertEqual(s.peak_rss, 60)
        self.assertEqual(s.peak_pss, 30)
        self.assertAlmostEqual(s.mean_live, 5.0)
        self.assertAlmostEqual(s.frag_ratio, 3.0)

    def test_mean_before_teardown(self):
        # footprint 10 from 0.01 s, 20 from 0.02, 30 from 0.03, 1 from 0.04;
        # the teardown begins at 0.025 on the memory clock (0.015 + offset)
        r = make_run(footprint=(10, 20, 30, 1), live=(5, 10))
        r.live = R.LiveTrace(t=[0.0, 0.015], live=[5, 10], phase=["work", "teardown"])
        s = R.summarize(r)
        self.assertAlmostEqual(s.mean_footprint_pre_teardown, (10 * 0.01 + 20 * 0.005) / 0.015)
        self.assertAlmostEqual(s.mean_footprint, (10 + 20 + 30) / 3)
        self.assertIsNone(R.summarize(make_run()).mean_footprint_pre_teardown)

    def test_stat_ratio_pairs_rounds(self):
        # Round 1 ran slow for both (the machine): paired, the ratio stays
        # 1.2, where the means would give 4.8 / 4.0 only by luck of equal
        # weights.
        a = R.Stat.of_rounds({0: 1.2, 1: 2.4, 2: 1.2})
        b = R.Stat.of_rounds({0: 1.0, 1: 2.0, 2: 1.0})
        self.assertAlmostEqual(a.ratio(b).mean, 1.2)
        self.assertAlmostEqual(a.ratio(b).stdev, 0.0)
        self.assertEqual(a.ratio(b).n, 3)
        # One run of the baseline fell into a fast moment (round 0): one
        # round's ratio moves, the median does not; the means would say
        # 6.3 / 5.0 = 1.26.
        a = R.Stat.of_rounds({0: 2.1, 1: 2.1, 2: 2.1})
        b = R.Stat.of_rounds({0: 1.0, 1: 2.0, 2: 2.0})
        self.assertAlmostEqual(a.ratio(b).mean, 1.05)
        self.assertGreater(a.ratio(b).stdev, 0.3)
        # Two rounds: the geometric mean of their ratios.
        a = R.Stat.of_rounds({0: 2.0, 1: 8.0})
        b = R.Stat.of_rounds({0: 1.0, 1: 2.0})
        self.assertAlmostEqual(a.ratio(b).mean, math.sqrt(2.0 * 4.0))
        self.assertAlmostEqual(a.ratio(b).stdev, math.sqrt(8.0) * math.log(2.0) / math.sqrt(2.0))

    def test_stat_ratio_unpaired_falls_back_to_means(self):
        # Different rounds (a failed trial), one round, or no rounds at all.
        for a, b in ((R.Stat.of_rounds({0: 2.0, 1: 4.0}), R.Stat.of_rounds({0: 1.0, 2: 2.0})),
                     (R.Stat.of_rounds({0: 3.0}), R.Stat.of_rounds({0: 1.0})),
                     (R.Stat.of_rounds({0: 2.0, 1: 4.0}), R.Stat.of([1.0, 2.0]))):
            self.assertAlmostEqual(a.ratio(b).mean, a.mean / b.mean)

    def test_stat_ratio_error(self):
        a, b = R.Stat(20.0, 2.0, 3), R.Stat(10.0, 1.0, 3)
        r = a.ratio(b)
        self.assertAlmostEqual(r.mean, 2.0)
        self.assertAlmostEqual(r.stdev, 2.0 * math.hypot(0.1, 0.1))
        self.assertEqual(R.Stat.of([1.0, 3.0]).stdev, math.sqrt(2.0))
        self.assertIsNone(R.Stat.of([None]))

    def test_aggregate_prefers_hyperfine_and_skips_failures(self):
        runs = [make_run(trial=1, wall=1.0), make_run(trial=2, wall=3.0),
                make_run(trial=3, status="failed", wall=100.0)]
        t = R.Timing("w", "glibc", 1.0, 1, "c", 2, 0.5, 0.0, 0.5, 0.5, 0.5, 0.4, 0.1,
                     [0.5, 0.5], [0, 0])
        agg = R.aggregate(make_result(runs))[("w", "glibc")]
        self.assertEqual((agg.trials, agg.failed), (2, 1))
        self.assertEqual(agg.time.mean, 2.0)
        self.assertEqual(agg.time_source, "wall")
        agg = R.aggregate(make_result(runs, [t]))[("w", "glibc")]
        self.assertEqual(agg.time.mean, 0.5)
        self.assertEqual(agg.time_source, "hyperfine")
        self.assertEqual(agg.wall.mean, 2.0)

    def test_checksum_mismatch(self):
        ok = [make_run(allocator="glibc"), make_run(allocator="jemalloc")]
        self.assertEqual(R.checksum_mismatches(make_result(ok)), [])
        bad = ok + [make_run(allocator="mesh", checksum="00000000000000bb")]
        msgs = R.checksum_mismatches(make_result(bad))
        self.assertEqual(len(msgs), 1)
        self.assertIn("mesh", msgs[0])
        # Different seeds are different computations, not a mismatch.
        other = ok + [make_run(allocator="mesh", checksum="00000000000000bb", seed=2)]
        self.assertEqual(R.checksum_mismatches(make_result(other)), [])


if __name__ == "__main__":
    unittest.main()
