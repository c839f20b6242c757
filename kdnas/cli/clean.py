"""`kdnas clean RUN_DIR...`: free the disk a finished run holds only to resume faster (its teacher cache, the
training checkpoints of finished models), and drop old latency readings with `--latency`."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from kdnas.errors import KdnasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "clean",
        help="free a run dir's teacher cache and checkpoints; drop old latency readings",
        description="Delete what a run dir holds only to resume or rerun faster: the teacher cache (GBs; kept "
        "while the run's distill stage is unfinished unless --force) and the training checkpoints of finished "
        "models; with --previous also previous/ (the outputs of stages rerun after a config change). Results, "
        "models, exports and reports stay. `kdnas run` frees the same itself after its distill stage unless "
        "distill.keep_teacher_cache is set. With --latency, drop latency readings from the shared latency cache.",
    )
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR", help="run dirs written by `kdnas run`")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be deleted and its size; delete nothing"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="also delete the teacher cache of a run whose distill stage has not finished (never while that "
        "run is working: a resume then runs the teacher again)",
    )
    p.add_argument("--previous", action="store_true", help="also delete previous/ (earlier configs' outputs)")
    p.add_argument(
        "--latency",
        action="store_true",
        help="drop readings from the latency cache (all, or those older than --older-than)",
    )
    p.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="with --latency: only readings cached more than DAYS days ago",
    )
    p.add_argument(
        "--cache-dir", help="with --latency: the latency cache dir (default <kdnas cache>/latency)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kdnas import run_dir as rd

    if not args.run_dirs and not args.latency:
        raise KdnasError("nothing to clean: name run dirs (kdnas clean RUN_DIR...) and/or pass --latency")
    if args.older_than is not None and not args.latency:
        raise KdnasError("--older-than applies to --latency only")
    if args.older_than is not None and args.older_than < 0:
        raise KdnasError(f"--older-than {args.older_than}: give a number of days >= 0")
    dirs = [Path(d) for d in args.run_dirs]
    for d in dirs:  # every argument checked before anything is deleted
        if not (d / rd.CONFIG).is_file():
            raise KdnasError(
                f"{d} is not a kdnas run dir (no {rd.CONFIG} in it): give a dir `kdnas run` wrote (its --run-dir)"
            )
    verb = "would free" if args.dry_run else "freed"
    total = 0
    for d in dirs:
        items = rd.scratch(d, previous=args.previous, force=args.force)
        print(f"{d}:")
        if not items:
            print("  nothing to free")
        groups: dict[tuple[str, str | None], int] = {}
        for item in items:
            groups[(item.what, item.kept)] = groups.get((item.what, item.kept), 0) + item.bytes
        for (what, kept), n in groups.items():
            print(f"  {rd.size_text(n):>11}  {what}" + (f"  (kept: {kept})" if kept else ""))
        freed = sum(i.bytes for i in items if i.kept is None) if args.dry_run else rd.free(items)
        total += freed
        if items:
            print(f"  {verb} {rd.size_text(freed)}")
    if len(dirs) > 1:
        print(f"{verb} {rd.size_text(total)} in {len(dirs)} run dirs")
    if args.latency:
        from kdnas.latency.cache import LatencyCache

        cache = LatencyCache(args.cache_dir)
        before = time.time() - args.older_than * 86400 if args.older_than is not None else None
        n = cache.drop(before=before, dry_run=args.dry_run)
        age = f" cached more than {args.older_than:g} days ago" if args.older_than is not None else ""
        print(
            f"latency cache {cache.path}: {'would drop' if args.dry_run else 'dropped'} {n} reading"
            f"{'s' if n != 1 else ''}{age} ({len(cache)} {'in it' if args.dry_run else 'left'})"
        )
    return 0
