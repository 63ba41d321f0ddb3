"""The one package list, scripts/packages.txt, as `make bench` (harness/packages.py)
and `make test` / .ci/run (scripts/packages.sh) read it.

scripts/packages.sh runs with dpkg-query, id and apt-get replaced by small
scripts on PATH, so the tests play root and another user and never run apt.
"""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

from harness import packages

TOP = Path(__file__).resolve().parent.parent.parent
SCRIPT = TOP / "scripts" / "packages.sh"

FAKE_DPKG = """#!/bin/sh
# installed packages: one a line in $FAKE_DIR/installed
pkg=$(eval echo \\${$#})
grep -qx "$pkg" "$FAKE_DIR/installed" && { printf 'ii '; exit 0; }
exit 1
"""
FAKE_ID = '#!/bin/sh\necho "$FAKE_UID"\n'
FAKE_APT = """#!/bin/sh
echo "$*" >> "$FAKE_DIR/apt-calls"
[ "$1" = install ] || exit 0
shift 2    # -y --no-install-recommends
shift
for p in "$@"; do echo "$p" >> "$FAKE_DIR/installed"; done
"""


class TestList(unittest.TestCase):
    def test_bench_section_is_what_bench_installs(self):
        names = [p for p, _ in packages.read_list("bench")]
        self.assertEqual(list(packages.wanted(lambda _: None)), names)
        self.assertIn("libjemalloc2", packages.PACKAGES)
        self.assertEqual(packages.NODE_PACKAGES, ("nodejs", "npm"))

    def test_test_section_has_the_programs_the_tests_run(self):
        names = [p for p, _ in packages.read_list("test")]
        for p in ("gcc", "make", "ruby", "perl", "sqlite3", "redis-server", "git"):
            self.assertIn(p, names)
        self.assertNotIn("libjemalloc2", names)


class TestScript(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)
        bin_ = self.dir / "bin"
        bin_.mkdir()
        for name, text in (("dpkg-query", FAKE_DPKG), ("id", FAKE_ID), ("apt-get", FAKE_APT)):
            (bin_ / name).write_text(text)
            (bin_ / name).chmod(0o755)
        # Everything but ruby, sqlite3 and nodejs; npm is not on the fake PATH.
        every = [p for s in ("test", "bench") for p, _ in packages.read_list(s)]
        self.have = [p for p in every if p not in ("ruby", "sqlite3", "nodejs", "npm")]
        (self.dir / "installed").write_text("\n".join(self.have) + "\n")
        # awk, tr and the shell from the system; no npm anywhere on PATH.
        self.path = f"{bin_}:{self._tools_dir()}"

    def _tools_dir(self):
        d = self.dir / "tools"
        d.mkdir()
        for tool in ("awk", "tr", "bash", "env", "grep", "cat", "dirname", "printf", "sh"):
            for where in ("/usr/bin", "/bin"):
                if os.path.exists(f"{where}/{tool}"):
                    os.symlink(f"{where}/{tool}", d / tool)
                    break
        return d

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, uid, *sections):
        env = {"PATH": self.path, "FAKE_DIR": str(self.dir), "FAKE_UID": str(uid)}
        return subprocess.run(["bash", str(SCRIPT), *sections], env=env,
                              capture_output=True, text=True)

    def apt_calls(self):
        p = self.dir / "apt-calls"
        return p.read_text().splitlines() if p.exists() else []

    def test_not_root_prints_the_line_and_runs_nothing(self):
        p = self.run_script(1000, "test", "bench")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("  apt-get install -y --no-install-recommends ruby sqlite3 nodejs npm\n",
                      p.stderr)
        self.assertEqual(self.apt_calls(), [])

    def test_root_updates_then_installs_the_missing(self):
        p = self.run_script(0, "test", "bench")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(self.apt_calls(), [
            "update", "install -y --no-install-recommends ruby sqlite3 nodejs npm"])
        self.assertEqual(self.run_script(0, "test", "bench").returncode, 0)
        self.assertEqual(len(self.apt_calls()), 2)    # nothing missing: apt-get not run again

    def test_only_the_sections_asked_for(self):
        p = self.run_script(1000, "bench")
        self.assertIn("--no-install-recommends nodejs npm\n", p.stderr)
        self.assertNotIn("ruby", p.stderr)

    def test_node_not_asked_for_when_npm_is_on_path(self):
        npm = self.dir / "bin" / "npm"
        npm.write_text("#!/bin/sh\n")
        npm.chmod(0o755)
        p = self.run_script(1000, "test", "bench")
        self.assertIn("--no-install-recommends ruby sqlite3\n", p.stderr)


if __name__ == "__main__":
    unittest.main()
