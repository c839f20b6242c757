"""`kdnas report RUN_DIR`: Pareto plot (PNG, offline HTML), trials CSV and Markdown summary into RUN_DIR/report/."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdnas import run_dir as rd


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
    p.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the run's Optuna study in optuna-dashboard (the [dashboard] extra) instead; Ctrl-C stops it",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="--dashboard: address to listen on (default 127.0.0.1)"
    )
    p.add_argument("--port", type=int, default=8080, help="--dashboard: port (default 8080)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.dashboard:
        return _dashboard(args)
    from rich.console import Console

    from kdnas.report import load_report_data, print_summary, write_report

    data = load_report_data(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / rd.REPORT
    paths = write_report(data, out)
    con = Console()
    if not args.quiet:
        print_summary(data, con)
    con.print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on the run's storage, the objectives named, each trial's kdnas attributes (arch_id,
    latency_ms, kd_loss_short / kd_loss_long, params_m, fidelity, budget band) shown as its user attrs."""
    from kdnas._imports import optional_import

    dashboard = optional_import("optuna_dashboard", purpose="kdnas report --dashboard")
    import optuna

    from kdnas import config
    from kdnas.errors import ConfigError
    from kdnas.search.workers import open_storage, quiet_optuna, redact, storage_url

    run_dir = Path(args.run_dir)
    if not (run_dir / rd.CONFIG).is_file():
        raise ConfigError(f"{run_dir}: not a kdnas run dir (no config.yaml); pass the dir `kdnas run` wrote")
    cfg = config.load(str(run_dir / rd.CONFIG))
    url = storage_url(cfg.search, None, run_dir)
    if url and url.startswith("sqlite") and not (run_dir / rd.STUDY).is_file():
        raise ConfigError(
            f"{run_dir}: no search.db yet; run the search stage first (`kdnas run --resume {run_dir}`)"
        )
    storage = open_storage(url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        names = study.user_attrs.get("objectives")
        if names and len(names) == len(study.directions) and study.metric_names != names:
            with quiet_optuna():  # set_metric_names is marked experimental
                study.set_metric_names(list(names))
    print(
        f"optuna-dashboard on {redact(url)}: http://{args.host}:{args.port}/dashboard (Ctrl-C stops it)",
        flush=True,
    )
    try:
        dashboard.run_server(storage, host=args.host, port=args.port)
    except OSError as e:
        raise ConfigError(
            f"--port {args.port}: cannot listen on {args.host}:{args.port} ({e.strerror}); pick another port"
        ) from None
    return 0
