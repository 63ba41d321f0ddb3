"""The allocator registry: names, --alloc specs, missing libraries, identity."""

import os
import subprocess
import tempfile
import unittest

from harness import allocators as A


def readelf_build_id(path: str) -> str:
    out = subprocess.run(["readelf", "-n", path], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "Build ID:" in line:
            return line.split("Build ID:")[1].strip()
    raise AssertionError(f"readelf shows no build id for {path}")


class TestRegistry(unittest.TestCase):
    def test_builtins(self):
        reg = A.builtin_allocators()
        self.assertEqual(list(reg), ["glibc", "jemalloc", "mimalloc", "tcmalloc", "mesh",
                                     "mesh-nomesh", "mesh-norand"])
        self.assertIsNone(reg["glibc"].library)
        self.assertEqual(reg["glibc"].child_env(), {})
        self.assertEqual(reg["mesh-nomesh"].child_env(),
                         {"MESH_MESHING": "0", "LD_PRELOAD": A.MESH_LIBRARY})
        self.assertEqual(reg["mesh-norand"].env, {"MESH_RANDOMIZE": "0"})
        self.assertEqual(A.MESH_LIBRARY, os.path.join(A.REPO_ROOT, "libmesh", "libmesh.so"))
        for name in ("jemalloc", "mimalloc", "tcmalloc"):
            self.assertTrue(reg[name].library.startswith("/usr/lib/"), name)
            self.assertTrue(reg[name].package)

    def test_spec(self):
        a = A.parse_spec("hoard=/opt/libhoard.so:HOARD_X=1:Y=a=b")
        self.assertEqual((a.name, a.library), ("hoard", "/opt/libhoard.so"))
        self.assertEqual(a.env, {"HOARD_X": "1", "Y": "a=b"})
        self.assertEqual(a.child_env()["LD_PRELOAD"], "/opt/libhoard.so")
        for bad in ("nolib", "=x.so", "a=", "a=/x.so:NOEQUALS"):
            with self.assertRaises(A.SpecError, msg=bad):
                A.parse_spec(bad)
        reg = A.registry(["jemalloc=/opt/other.so", "new=/opt/new.so"])
        self.assertEqual(reg["jemalloc"].library, "/opt/other.so")
        self.assertIn("new", reg)

    def test_missing_library_is_reported(self):
        a = A.parse_spec("ghost=/nonexistent/libghost.so")
        self.assertIn("/nonexistent/libghost.so does not exist", a.missing())
        info = A.describe(a)
        self.assertFalse(info.exists)
        self.assertIsNone(info.build_id)
        self.assertIsNone(A.builtin_allocators()["glibc"].missing())
        mesh = A.Allocator("m", "/nonexistent/libmesh.so")
        self.assertIn("does not exist", mesh.missing())
        pkg = A.Allocator("p", "/nonexistent/libp.so", package="libp1")
        self.assertIn("apt-get install -y libp1", pkg.missing())

    def test_debian_identity(self):
        a = A.builtin_allocators()["jemalloc"]
        if a.missing():
            self.fail(a.missing())
        info = A.describe(a)
        want = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libjemalloc2"],
                              capture_output=True, text=True).stdout
        self.assertEqual(info.version, want)
        self.assertEqual(info.version_source, "dpkg")
        self.assertTrue(info.package.startswith("libjemalloc2"))
        self.assertEqual(info.build_id, readelf_build_id(a.library))
        glibc = A.describe(A.builtin_allocators()["glibc"])
        self.assertTrue(glibc.package.startswith("libc6"))
        self.assertIsNone(glibc.preload)
        self.assertEqual(glibc.build_id, readelf_build_id(glibc.library))

    def test_build_id_of_fresh_library(self):
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "x.c")
            with open(src, "w") as f:
                f.write("int x(void) { return 1; }\n")
            for ident in ("0x0123456789abcdef0123456789abcdef01234567", "none"):
                lib = os.path.join(d, "libx.so")
                subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,--build-id={ident}",
                                "-o", lib, src], check=True)
                if ident == "none":
                    self.assertIsNone(A.gnu_build_id(lib))
                else:
                    self.assertEqual(A.gnu_build_id(lib), ident[2:])
                    self.assertEqual(A.gnu_build_id(lib), readelf_build_id(lib))
            self.assertIsNone(A.gnu_build_id(src))

    def test_git_version_for_repo_files(self):
        v = A.git_describe(os.path.join(A.REPO_ROOT, "harness", "allocators.py"))
        self.assertRegex(v, r"^[0-9a-f]{40}(\+dirty)?$")


if __name__ == "__main__":
    unittest.main()
