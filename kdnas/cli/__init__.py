"""The `kdnas` command line: one subcommand per pipeline stage, each in its own module here.

Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
Heavy imports (torch, transformers) happen inside the handlers so `kdnas --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from kdnas.errors import KdnasError

# Order is the order shown in `kdnas --help`.
COMMANDS = (
    "run",
    "validate",
    "fetch",
    "inspect",
    "latency",
    "distill",
    "search",
    "evaluate",
    "export",
    "report",
    "clean",
    "worker",
)


def build_parser() -> argparse.ArgumentParser:
    from kdnas import __version__

    p = argparse.ArgumentParser(
        prog="kdnas",
        description="Find the best small student architecture for a transformer encoder and distill it.",
    )
    p.add_argument("--version", action="version", version=f"kdnas {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"kdnas.cli.{name}").register(sub)
    return p


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Pull config overrides (`--section.key VALUE` or `--section.key=VALUE`) out of argv."""
    rest: list[str] = []
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "." in a[2:].split("=", 1)[0]:
            if "=" in a or i + 1 >= len(argv):
                overrides.append(a)
                i += 1
            else:
                overrides += [a, argv[i + 1]]
                i += 2
        else:
            rest.append(a)
            i += 1
    return rest, overrides


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    rest, override_args = split_overrides(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(rest)
    if override_args and not getattr(args, "accepts_overrides", False):
        parser.error(f"config overrides ({' '.join(override_args)}) only apply to run, validate and search")
    args.override_args = override_args
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s" if args.verbose else "%(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        if override_args:
            from kdnas.config import parse_overrides

            args.overrides = parse_overrides(override_args)
        else:
            args.overrides = {}
        return int(args.func(args) or 0)
    except KdnasError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept; resume with the same command or --resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kdnas ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
