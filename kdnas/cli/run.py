"""`kdnas run [CONFIG]`: the whole pipeline (fetch, search, distill, evaluate, export, report), resumable."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole pipeline (default: the embedded default config)",
        description="Run every stage into the run dir; finished stages are skipped, so the same command (or "
        "--resume RUN_DIR) continues an interrupted run. CONFIG is a YAML file or a shipped recipe "
        "(default, smoke, multilingual). Override any key with --section.key VALUE.",
    )
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: the embedded default)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its saved config")
    p.add_argument("--run-dir", metavar="DIR", help="write the run here (default runs/<name>)")
    p.set_defaults(func=_run, accepts_overrides=True)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kdnas import config, pipeline
    from kdnas.errors import ConfigError

    console = Console()
    if args.resume:
        saved = Path(args.resume) / "config.yaml"
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
    pipeline.run(
        cfg, run_dir=run_dir, resume=bool(args.resume), console=console, progress=sys.stderr.isatty()
    )
    return 0
