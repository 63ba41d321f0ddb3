"""The file flags every command spells the same way.

  --results FILE    a results document the command reads
  --out FILE        a file the command writes
  --plots-dir DIR   the directory plots go to

Older spellings (a positional FILE, --markdown, --plots, plot's --out DIR)
stay accepted but hidden from --help, so scripts written for them still work.
"""

from __future__ import annotations

import argparse
from typing import Optional

_PAIRS = "_file_flags"


def file_flag(p: argparse.ArgumentParser, flag: str, dest: str, help: str,
              default: Optional[str] = None, metavar: str = "FILE") -> None:
    """FLAG FILE, also accepted as the next positional argument (the older spelling).

    resolve() picks the flag, else the positional, else DEFAULT; with no
    DEFAULT the value is required."""
    p.add_argument(flag, dest=dest, metavar=metavar, default=None, help=help)
    p.add_argument(f"{dest}_positional", nargs="?", default=None, help=argparse.SUPPRESS)
    pairs = list(p.get_default(_PAIRS) or [])
    pairs.append((flag, dest, default))
    p.set_defaults(**{_PAIRS: pairs})


def hidden_alias(p: argparse.ArgumentParser, old: str, dest: str) -> None:
    """OLD is a deprecated spelling of the flag whose value goes to DEST."""
    p.add_argument(old, dest=dest, help=argparse.SUPPRESS)


def resolve(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    """Fold each file_flag's positional spelling into its flag's value."""
    for flag, dest, default in getattr(args, _PAIRS, None) or []:
        flagged, positional = getattr(args, dest), getattr(args, f"{dest}_positional")
        if flagged is not None and positional is not None and flagged != positional:
            ap.error(f"{flag} {flagged} and the positional {positional} disagree: give one")
        value = flagged if flagged is not None else positional
        if value is None:
            value = default
        if value is None:
            ap.error(f"{flag} FILE is required")
        setattr(args, dest, value)
        delattr(args, f"{dest}_positional")
    return args
