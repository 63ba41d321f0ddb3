"""Figure 7's active-defrag rows without running Redis: the compaction
numbers and bounds computed from runs made up from the fixture's, merging
one figure's new runs into a results document, and the pieces of the
source build that need no network (deb-src stanzas, the cache stamp)."""

import copy
import json
import os
import tempfile
import unittest
from unittest import mock

from harness import results as R
from harness.paper import collect, figures, redis_build, redis_defrag, report

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "paper-small.json")
MIB = 2**20


def with_defrag_rows(res: R.MatrixResult) -> R.MatrixResult:
    """The fixture plus mesh-activedefrag and jemalloc-activedefrag runs:
    copies of mesh's and jemalloc's with a known footprint and defrag CPU."""
    res.runs = [r for r in res.runs if r.allocator != "jemalloc-activedefrag"]
    made = []
    for r in [r for r in res.runs if r.workload == "redis-server" and r.ok]:
        if r.allocator == "mesh-nomesh":
            r.result["footprint_at_mark"] = 200 * MIB
        if r.allocator in ("mesh", "jemalloc"):
            d = copy.deepcopy(r)
            d.allocator += "-activedefrag"
            mesh = r.allocator == "mesh"
            d.result["footprint_at_mark"] = (90 if mesh else 120) * MIB
            d.result["info_final"] = {"active_defrag_cpu_us": 300000 if mesh else 1000000,
                                      "active_defrag_hits": 5, "active_defrag_misses": 7}
            made.append(d)
    res.runs += made
    fig = res.config["figures"]["redis"]
    fig["activedefrag_supported"] = {"jemalloc-activedefrag": True, "mesh-activedefrag": True}
    fig["activedefrag_reply"] = {"jemalloc-activedefrag": "OK", "mesh-activedefrag": "OK"}
    return res


class TestDefragRows(unittest.TestCase):
    def setUp(self):
        self.res = with_defrag_rows(R.load(FIXTURE))

    def test_targets_by_hand(self):
        mesh_s = [figures.event_summary(r.events).total_s for r in self.res.runs
                  if r.workload == "redis-server" and r.allocator == "mesh-activedefrag"]
        t = {x.what: x for x in redis_defrag.targets(self.res)}
        vs_nomesh = t["Redis footprint at 7.5 s, Mesh + active defrag / Mesh without meshing"]
        self.assertAlmostEqual(vs_nomesh.ours.mean, 0.45)
        self.assertTrue(vs_nomesh.met)
        vs_jem = t["Redis footprint at 7.5 s, Mesh + active defrag / jemalloc + active defrag"]
        self.assertAlmostEqual(vs_jem.ours.mean, 0.75)
        self.assertTrue(vs_jem.met)
        cpu = [x for k, x in t.items() if k.startswith("Redis CPU spent compacting")][0]
        self.assertAlmostEqual(cpu.ours.mean, (0.3 + sum(mesh_s) / len(mesh_s)) / 1.0, places=6)

    def test_missed_bound_is_said(self):
        for r in self.res.runs:
            if r.allocator == "mesh-activedefrag":
                r.result["footprint_at_mark"] = 130 * MIB
        t = {x.what: x for x in redis_defrag.targets(self.res)}
        self.assertFalse(t["Redis footprint at 7.5 s, Mesh + active defrag / jemalloc + active defrag"].met)
        lines, notes = redis_defrag.section(self.res, 7.5)
        self.assertTrue(any("Missed" in n and "jemalloc + active defrag" in n for n in notes), notes)

    def test_report_has_the_rows_and_the_claim(self):
        md = report.markdown(self.res, FIXTURE, "/tmp", "/tmp/plots")
        self.assertIn("| mesh-activedefrag |", md)
        self.assertIn("Mesh + active defrag / Mesh without meshing | <= 0.50 | 0.45", md)
        self.assertIn("| Redis: CPU time of jemalloc's active defrag | 1.49 s | 1.000 ± 0.000 s (n=2)", md)
        self.assertNotIn("could not be run", md)

    def test_old_results_still_say_defrag_was_refused(self):
        md = report.markdown(R.load(FIXTURE), FIXTURE, "/tmp", "/tmp/plots")
        self.assertIn("jemalloc with active defragmentation could not be run", md)
        self.assertEqual(redis_defrag.targets(R.load(FIXTURE)), [])


class TestMerge(unittest.TestCase):
    def test_replaces_only_the_new_figures(self):
        base = R.load(FIXTURE)
        new = R.load(FIXTURE)
        new.runs = [r for r in new.runs if r.workload == "redis-server"]
        for r in new.runs:
            r.trial += 10
        new.timings = []
        new.created, new.commit = "2030-01-01T00:00:00+0000", "abc"
        new.config["figures"] = {"redis": new.config["figures"]["redis"]}
        others = [r for r in base.runs if r.workload != "redis-server"]
        out = collect.merge(base, new)
        self.assertEqual([r for r in out.runs if r.workload != "redis-server"], others)
        self.assertTrue(all(r.trial >= 10 for r in out.runs if r.workload == "redis-server"))
        self.assertEqual(out.config["figures"]["redis"]["created"], "2030-01-01T00:00:00+0000")
        self.assertIn("ruby", out.config["figures"])
        self.assertTrue(out.timings, "the matrix's timings are kept")
        self.assertIn("measured on its own", report.markdown(out, FIXTURE, "/tmp", "/tmp/p"))


class TestBuildPieces(unittest.TestCase):
    SOURCES = ("Types: deb\n# a comment\nURIs: http://deb.debian.org/debian\n"
               "Suites: bookworm bookworm-updates\nComponents: main\n\n"
               "Types: deb deb-src\nURIs: http://security\nSuites: bookworm-security\n\n"
               "Types: deb-src\nURIs: http://other\n")

    def test_deb_src_stanzas(self):
        text = redis_build.deb_src_stanzas(self.SOURCES)
        stanzas = text.strip().split("\n\n")
        self.assertEqual(len(stanzas), 2)
        self.assertTrue(all(s.startswith("Types: deb-src\n") for s in stanzas))
        self.assertIn("Suites: bookworm bookworm-updates", stanzas[0])
        self.assertNotIn("comment", text)
        self.assertEqual(redis_build.deb_src_stanzas("Types: deb-src\nURIs: x\n"), "")

    def test_cache_needs_the_current_patch(self):
        with tempfile.TemporaryDirectory() as d:
            with mock.patch.object(redis_build, "BUILD_ROOT", d):
                bd = redis_build.build_dir("5:1.0-1")
                os.makedirs(bd)
                for v in redis_build.VARIANTS:
                    p = os.path.join(bd, f"redis-server-{v}")
                    with open(p, "w") as f:
                        f.write("#!/bin/sh\n")
                    os.chmod(p, 0o755)
                stamp = os.path.join(bd, "stamp.json")
                with open(stamp, "w") as f:
                    json.dump({"patch": "something else"}, f)
                self.assertIsNone(redis_build.cached("5:1.0-1"))
                with open(stamp, "w") as f:
                    json.dump({"patch": redis_build._patch_digest()}, f)
                b = redis_build.cached("5:1.0-1")
                self.assertEqual(b.server("libc"), os.path.join(bd, "redis-server-libc"))


if __name__ == "__main__":
    unittest.main()
