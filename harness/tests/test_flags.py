"""The file flags (--results, --out, --plots-dir) and their hidden older spellings."""

import contextlib
import io
import unittest

from harness import cli, flags


def parse(*argv):
    ap = cli.parser()
    return flags.resolve(ap, ap.parse_args(list(argv)))


def refused(*argv) -> str:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), unittest.TestCase().assertRaises(SystemExit):
        parse(*argv)
    return err.getvalue()


class TestFlags(unittest.TestCase):
    def test_new_and_old_spellings_agree(self):
        pairs = [
            (["plot", "--results", "r.json", "--plots-dir", "d"], ["plot", "r.json", "--out", "d"]),
            (["report", "--results", "r.json", "--out", "m.md"],
             ["report", "r.json", "--markdown", "m.md"]),
            (["paper", "report", "--results", "p.json", "--plots-dir", "d"],
             ["paper", "report", "p.json", "--plots", "d"]),
            (["paper", "run", "--plots-dir", "d"], ["paper", "run", "--plots", "d"]),
            (["paper", "compact", "--results", "full.json", "--out", "small.json"],
             ["paper", "compact", "full.json", "small.json"]),
            (["paper", "merge", "--results", "a.json", "--new", "b.json", "--out", "c.json"],
             ["paper", "merge", "a.json", "b.json", "c.json"]),
        ]
        for new, old in pairs:
            a, b = vars(parse(*new)), vars(parse(*old))
            a.pop("fn"), b.pop("fn")
            self.assertEqual(a, b, f"{new} vs {old}")

    def test_defaults(self):
        self.assertEqual(parse("plot").results, cli.LATEST)
        self.assertEqual(parse("plot").plots_dir, cli.PLOTS_DIR)
        self.assertIsNone(parse("report").out)

    def test_required_and_conflicting(self):
        self.assertIn("--out FILE is required", refused("paper", "compact", "--results", "f.json"))
        self.assertIn("disagree", refused("plot", "a.json", "--results", "b.json"))

    def test_old_spellings_hidden(self):
        out = io.StringIO()
        for argv, old in ((["report", "--help"], "--markdown"), (["plot", "--help"], "--out"),
                          (["paper", "report", "--help"], "--plots ")):
            out.seek(0), out.truncate()
            with contextlib.redirect_stdout(out), self.assertRaises(SystemExit):
                cli.parser().parse_args(argv)
            self.assertNotIn(old, out.getvalue())
            self.assertIn("--results", out.getvalue())


if __name__ == "__main__":
    unittest.main()
