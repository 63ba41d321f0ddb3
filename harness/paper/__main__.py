"""`python3 -m harness.paper ARGS` is `python3 -m harness paper ARGS`: one parser for both."""

import sys

from ..cli import main

sys.exit(main(["paper", *sys.argv[1:]]))
