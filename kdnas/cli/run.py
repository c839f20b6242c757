"""`kdnas run [CONFIG]`: the whole pipeline (fetch, search, distill, evaluate, export, report), resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdnas import recipes
from kdnas import run_dir as rd


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline (default: the embedded default config)",
        description="Run every stage into the run dir; finished stages are skipped, so the same command (or "
        "--resume RUN_DIR) continues an interrupted run. CONFIG is a YAML file or a shipped recipe "
        f"({', '.join(recipes.names())}). Override any key with --section.key VALUE.",
    )
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: the embedded default)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    p.add_argument("--run-dir", metavar="DIR", help="write the run here (default runs/<name>)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars or per-step lines, only each stage's line and results")  # fmt: skip
    role = p.add_mutually_exclusive_group()
    role.add_argument("--join", action="store_true",
                      help="shared search storage: help with the search of a run started on another machine "
                      "(same config), then exit when the study is complete; that run does the stages after it")  # fmt: skip
    role.add_argument("--take-over", action="store_true",
                      help="shared search storage: make this run the one that runs the stages after the search, "
                      "in place of the run that started the study (when that machine is gone)")  # fmt: skip
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kdnas import config, pipeline
    from kdnas.errors import ConfigError

    console = Console()
    if args.resume:
        saved = Path(args.resume) / rd.CONFIG
        if not saved.exists():
            raise ConfigError(f"{args.resume}: nothing to resume (no config.yaml there)")
        ref = args.config or str(saved)
        cfg = config.load(ref, args.overrides)
        run_dir = Path(args.resume)
    else:
        cfg = config.load(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else cfg.resolved_run_dir
    console.print(
        f"kdnas run: {args.config or 'embedded default'} -> {run_dir} (config {cfg.hash()})",
        markup=False,
        soft_wrap=True,
    )
    role = "join" if args.join else "take-over" if args.take_over else None
    if role:
        from kdnas.search.workers import is_shared_url

        if not (cfg.search.storage and is_shared_url(cfg.search.storage)):
            raise ConfigError(
                f"--{role}: needs a shared search storage that every machine reaches "
                "(search.storage: postgresql://user:password@host/db); with SQLite in the run dir one machine runs "
                "the whole run"
            )
    ctx = pipeline.run(
        cfg, run_dir=run_dir, resume=bool(args.resume), console=console, progress=sys.stderr.isatty(),
        until="search" if args.join else None, role=role, quiet=args.quiet,
    )  # fmt: skip
    if args.join:
        search = ctx.values.get("search")
        leader = getattr(search, "leader", None) or "the run that started the study (none has registered yet)"
        console.print(
            f"search complete ({getattr(search, 'n_evaluated', '?')} candidates evaluated in the shared study); the "
            f"stages after the search run once, in {leader}. This worker stops here.",
            markup=False,
            soft_wrap=True,
        )
    return 0
