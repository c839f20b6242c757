"""`kdnas report RUN_DIR`: Pareto plot (PNG, offline HTML), trials CSV and Markdown summary into RUN_DIR/report/."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="plot and summarise a run (Pareto plot, trials CSV, Markdown, terminal summary)",
        description="Read a run dir's search results (and teacher, baselines, retention when present) and write "
        "pareto.png, pareto.html (works offline), trials.csv and summary.md into RUN_DIR/report/ (or --out); "
        "print a summary.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the dir `kdnas run` wrote (e.g. runs/default)")
    p.add_argument("--out", metavar="DIR", help="write the report here instead of RUN_DIR/report")
    p.add_argument("--quiet", action="store_true", help="do not print the terminal summary")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kdnas.report import load_report_data, print_summary, write_report

    data = load_report_data(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "report"
    paths = write_report(data, out)
    con = Console()
    if not args.quiet:
        print_summary(data, con)
    con.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
