"""The sampler against processes whose memory is known (known_memory.c), the
cgroup's life cycle (made, entered, removed on success, failure, timeout,
stragglers, Ctrl-C), and the v1/v2 arithmetic on fixture files."""

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

from harness import runner
from harness.sampler import (CGROUP_PREFIX, CgroupHierarchy, MemoryCgroup, Sampler,
                             reading_from_v1, reading_from_v2)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MIB = 1 << 20
TRUTH = 64 * MIB
TOLERANCE = 0.05 * TRUTH


def hierarchy_or_fail(test: unittest.TestCase) -> CgroupHierarchy:
    h = CgroupHierarchy.discover()
    if h is None:
        test.fail("no writable memory cgroup: these tests need one (run as root on a "
                  "machine with cgroup v1 or a delegated v2 memory controller)")
    return h


class KnownProcess:
    """known_memory started in a cgroup (or none), stepped stage by stage."""

    def __init__(self, exe: str, mode: str, cgroup) -> None:
        self.cgroup = cgroup
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([exe, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, preexec_fn=cgroup.enter_function() if cgroup else None)
        self.sampler = Sampler(self.proc.pid, cgroup, self.t0, pss_budget=1.0)

    def wait_stage(self, n: int) -> None:
        line = self.proc.stdout.readline().strip()
        if line != f"stage {n}":
            raise AssertionError(f"known_memory said {line!r}, expected 'stage {n}'")

    def next(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def settle(self, n: int = 5):
        """Median of n samples (all fields), taken 20 ms apart."""
        samples = []
        for _ in range(n):
            samples.append(self.sampler.sample())
            time.sleep(0.02)

        def med(field):
            vals = [getattr(s, field) for s in samples if getattr(s, field) is not None]
            return statistics.median(vals) if vals else None
        return {f: med(f) for f in ("footprint", "usage", "rss", "pss", "shmem", "anon", "kernel")}

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        self.proc.wait(10)
        self.proc.stdout.close()


class TestKnownMemory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.exe = os.path.join(cls.tmp.name, "known_memory")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", cls.exe,
                        os.path.join(HERE, "known_memory.c")], check=True)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def start(self, mode: str, use_cgroup: bool = True) -> KnownProcess:
        cg = hierarchy_or_fail(self).create("test") if use_cgroup else None
        kp = KnownProcess(self.exe, mode, cg)

        def cleanup():
            kp.close()
            if cg:
                cg.remove()
                self.assertFalse(os.path.exists(cg.path))
        self.addCleanup(cleanup)
        return kp

    def assertNear(self, value, truth, what):
        self.assertIsNotNone(value, what)
        self.assertLessEqual(abs(value - truth), TOLERANCE,
                             f"{what}: {value / MIB:.2f} MiB, truth {truth / MIB:.2f} MiB (+-5%)")

    def test_anonymous_64mib(self):
        kp = self.start("anon")
        kp.wait_stage(0)
        base = kp.settle()
        kp.next()
        kp.wait_stage(1)
        s = kp.settle()
        self.assertNear(s["footprint"], TRUTH, "footprint of 64 MiB anonymous")
        self.assertNear(s["footprint"] - base["footprint"], TRUTH, "footprint growth")
        self.assertNear(s["anon"], TRUTH, "cgroup anon")
        self.assertNear(s["pss"], TRUTH, "PSS")
        self.assertNear(s["rss"], TRUTH, "RSS")
        self.assertGreater(s["kernel"], 0, "page tables are charged as kernel memory")

    def test_memfd_mapped_twice_then_unmapped(self):
        kp = self.start("memfd")
        kp.wait_stage(0)
        kp.next()
        kp.wait_stage(1)
        s = kp.settle()
        # RSS counts both mappings of each page; the footprint counts each page once.
        self.assertGreaterEqual(s["rss"], 2 * TRUTH - TOLERANCE, "RSS should double")
        self.assertNear(s["footprint"], TRUTH, "footprint of a memfd mapped twice")
        self.assertNear(s["shmem"], TRUTH, "memfd pages are shmem")
        self.assertNear(s["pss"], TRUTH, "PSS of a memfd mapped twice")
        kp.next()
        kp.wait_stage(2)
        s = kp.settle()
        # Unmapped but not freed: invisible to PSS, still physical memory.
        self.assertLess(s["pss"], 0.1 * TRUTH, "PSS should drop after munmap")
        self.assertNear(s["footprint"], TRUTH, "footprint of an unmapped, unfreed memfd")
        self.assertGreaterEqual(s["usage"], TRUTH - TOLERANCE, "usage still counts it")

    def test_fallback_without_cgroup_is_pss(self):
        kp = self.start("anon", use_cgroup=False)
        self.assertEqual(kp.sampler.method, "pss")
        kp.wait_stage(0)
        kp.next()
        kp.wait_stage(1)
        s = kp.settle()
        self.assertNear(s["footprint"], TRUTH, "PSS fallback footprint")
        self.assertEqual(s["footprint"], s["pss"])
        self.assertIsNone(s["usage"])


def harness_cgroups(h: CgroupHierarchy, owner: int) -> list:
    return [n for n in os.listdir(h.base) if n.startswith(f"{CGROUP_PREFIX}{owner}-")]


class TestCgroupLifecycle(unittest.TestCase):
    def setUp(self):
        self.h = hierarchy_or_fail(self)

    def test_measure_removes_cgroup_and_kills_stragglers(self):
        with tempfile.TemporaryFile() as out:
            m = runner.measure(["/bin/sh", "-c", "sleep 60 & echo $!; exit 4"], runner.clean_env(),
                               self.h, stdout=out)
            out.seek(0)
            straggler = int(out.read().decode().split()[0])
        self.assertEqual(m.exit_code, 4)
        self.assertEqual(m.method, f"cgroup-v{self.h.version}")
        self.assertEqual(harness_cgroups(self.h, os.getpid()), [])
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{straggler}") and time.monotonic() < deadline:
            time.sleep(0.05)
        state = ""
        if os.path.exists(f"/proc/{straggler}/stat"):
            with open(f"/proc/{straggler}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        self.assertIn(state, ("", "Z"), "the background sleep must have been killed")

    def test_timeout_kills_and_removes(self):
        t = time.monotonic()
        m = runner.measure(["sleep", "30"], runner.clean_env(), self.h, timeout=0.5)
        self.assertTrue(m.timed_out)
        self.assertEqual(m.exit_code, -signal.SIGKILL)
        self.assertLess(time.monotonic() - t, 5)
        self.assertEqual(harness_cgroups(self.h, os.getpid()), [])

    def test_sampling_rate_and_exact_wall_time(self):
        m = runner.measure(["sleep", "0.5"], runner.clean_env(), self.h, hz=100)
        self.assertGreaterEqual(len(m.series), 40, "at least ~100 Hz")
        self.assertGreater(m.wall_s, 0.5)
        self.assertLess(m.wall_s, 0.56, "the pidfd wakes the loop at exit, not at the next tick")
        gaps = [b - a for a, b in zip(m.series.t, m.series.t[1:])]
        self.assertLess(statistics.median(gaps), 0.0125)

    def interrupt_trace(self, sig):
        code = ("import sys; from harness.cli import main; "
                "sys.exit(main(['trace', '--', 'sh', '-c', 'echo $$; exec sleep 30']))")
        p = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                             text=True)
        child = int(p.stdout.readline())
        p.stdout.close()
        self.assertEqual(len(harness_cgroups(self.h, p.pid)), 1, "trace runs in its own cgroup")
        p.send_signal(sig)
        rc = p.wait(20)
        self.assertEqual(rc, 130)
        self.assertEqual(harness_cgroups(self.h, p.pid), [], "cgroup removed after interrupt")
        self.assertFalse(os.path.exists(f"/proc/{child}"), "child killed after interrupt")

    def test_ctrl_c_removes_cgroup(self):
        self.interrupt_trace(signal.SIGINT)

    def test_sigterm_removes_cgroup(self):
        self.interrupt_trace(signal.SIGTERM)

    def test_remove_stale_only_dead_owners(self):
        p = subprocess.Popen(["true"])
        p.wait()
        dead = os.path.join(self.h.base, f"{CGROUP_PREFIX}{p.pid}-1-stale")
        mine = os.path.join(self.h.base, f"{CGROUP_PREFIX}{os.getpid()}-1-live")
        os.mkdir(dead)
        os.mkdir(mine)
        try:
            removed = self.h.remove_stale()
            self.assertIn(dead, removed)
            self.assertFalse(os.path.exists(dead))
            self.assertTrue(os.path.exists(mine))
        finally:
            for d in (dead, mine):
                if os.path.exists(d):
                    os.rmdir(d)


V1_STAT = """cache 70000000
rss 5000000
rss_huge 2097152
shmem 67108864
mapped_file 67108864
swap 0
total_cache 71000000
total_rss 6000000
total_rss_huge 2097152
total_shmem 67108864
total_mapped_file 67108864
total_swap 4096
"""

V2_STAT = """anon 10000000
file 80000000
kernel 3000000
kernel_stack 100000
pagetables 500000
sec_pagetables 0
percpu 1000
sock 0
vmalloc 0
shmem 67108864
slab 2000000
"""


class TestCgroupArithmetic(unittest.TestCase):
    def test_v1_uses_hierarchical_totals_and_excludes_file_cache(self):
        r = reading_from_v1(90000000, V1_STAT, kmem=1500000)
        self.assertEqual(r.anon, 6000000)
        self.assertEqual(r.shmem, 67108864)
        self.assertEqual(r.kernel, 1500000)
        self.assertEqual(r.file, 71000000 - 67108864)
        self.assertEqual(r.swap, 4096)
        self.assertEqual(r.footprint, 6000000 + 67108864 + 1500000)
        self.assertEqual(r.usage, 90000000)

    def test_v2_kernel_field_and_fallback_sum(self):
        r = reading_from_v2(95000000, V2_STAT)
        self.assertEqual(r.footprint, 10000000 + 67108864 + 3000000)
        self.assertEqual(r.file, 80000000 - 67108864)
        old = "\n".join(l for l in V2_STAT.splitlines() if not l.startswith("kernel "))
        r = reading_from_v2(95000000, old)
        self.assertEqual(r.kernel, 100000 + 500000 + 1000 + 2000000)

    def test_v2_cgroup_reads_its_files(self):
        with tempfile.TemporaryDirectory() as d:
            for name, text in (("memory.current", "95000000\n"), ("memory.stat", V2_STAT),
                               ("memory.swap.current", "8192\n"), ("cgroup.procs", "")):
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
            cg = MemoryCgroup(2, d)
            r = cg.read()
            self.assertEqual(cg.method, "cgroup-v2")
            self.assertEqual(r.usage, 95000000)
            self.assertEqual(r.swap, 8192)
            self.assertEqual(r.footprint, 10000000 + 67108864 + 3000000)

    def test_discovery(self):
        with tempfile.TemporaryDirectory() as d:
            v1 = os.path.join(d, "v1")
            v2 = os.path.join(d, "v2")
            os.makedirs(os.path.join(v1, "a", "b"))
            open(os.path.join(v1, "a", "b", "memory.stat"), "w").close()
            os.makedirs(os.path.join(v2, "user.slice", "s.scope"))
            mounts = (f"cgroup {v1} cgroup rw,nosuid,memory 0 0\n"
                      f"cgroup2 {v2} cgroup2 rw 0 0\n")
            proc = "4:memory:/a/b\n0::/user.slice/s.scope\n"
            # Without checks v2 comes first, own cgroup then its ancestors.
            h = CgroupHierarchy.discover(proc, mounts, check_writable=False)
            self.assertEqual((h.version, h.base), (2, os.path.join(v2, "user.slice", "s.scope")))
            # The fake v2 has no memory controller, so the v1 hierarchy is chosen.
            h = CgroupHierarchy.discover(proc, mounts)
            self.assertEqual((h.version, h.base), (1, os.path.join(v1, "a", "b")))
            # A v2 ancestor that delegates memory is used.
            with open(os.path.join(v2, "cgroup.controllers"), "w") as f:
                f.write("cpu memory pids\n")
            with open(os.path.join(v2, "cgroup.subtree_control"), "w") as f:
                f.write("memory\n")
            h = CgroupHierarchy.discover(proc, mounts)
            self.assertEqual((h.version, h.base), (2, v2))
            self.assertIsNone(CgroupHierarchy.discover("0::/\n", "proc /proc proc rw 0 0\n"))

    def test_v2_delegation_only_where_allowed(self):
        with tempfile.TemporaryDirectory() as root:
            own = os.path.join(root, "app.scope")
            os.makedirs(own)

            def put(d, name, text):
                with open(os.path.join(d, name), "w") as f:
                    f.write(text)
            # Our own cgroup holds processes: it may not delegate controllers.
            put(own, "cgroup.type", "domain\n")
            put(own, "cgroup.procs", "123\n")
            put(own, "cgroup.controllers", "memory\n")
            put(own, "cgroup.subtree_control", "")
            # The root may, although it holds processes; nothing is delegated yet.
            put(root, "cgroup.procs", "1\n")
            put(root, "cgroup.controllers", "cpu memory\n")
            put(root, "cgroup.subtree_control", "cpu\n")
            h = CgroupHierarchy.discover("0::/app.scope\n", f"cgroup2 {root} cgroup2 rw 0 0\n")
            self.assertEqual((h.version, h.base), (2, root))
            with open(os.path.join(root, "cgroup.subtree_control")) as f:
                self.assertEqual(f.read(), "cpu\n", "discovery changes nothing")
            cg = h.create("t")
            self.assertTrue(os.path.isdir(cg.path))
            with open(os.path.join(root, "cgroup.subtree_control")) as f:
                self.assertEqual(f.read(), "+memory", "create() delegates the memory controller")
            os.rmdir(cg.path)


if __name__ == "__main__":
    unittest.main()
