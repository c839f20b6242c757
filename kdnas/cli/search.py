"""`kdnas search`: not built yet (see the open issues)."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="(not built yet)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    print("kdnas search: this stage is not built yet", file=sys.stderr)
    return 3
