"""`kdnas search CONFIG [--section.key VALUE ...]`: search student architectures (one Optuna study), one line per
trial and a Pareto-front table at the end. `--fake` runs the search on the synthetic evaluator.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search student architectures (KD-NAS, BO, TPE, NSGA-II, random)",
        description="Search the student space of a config: every candidate gets a short proxy distillation, the "
        "best of each round a long one. Resumes an interrupted search in the same storage. Overrides "
        "(--section.key VALUE, e.g. --search.strategy bo) are applied to the config first.",
    )
    p.add_argument("config", nargs="?", help="YAML file or recipe name (default: the embedded default)")
    p.add_argument(
        "--fake",
        action="store_true",
        help="use the synthetic evaluator (no distillation; a MiniLM-L6-shaped teacher) to try a search",
    )
    p.add_argument(
        "--fake-seconds",
        type=float,
        default=0.0,
        help="with --fake: wall seconds each synthetic evaluation takes (to try several workers)",
    )
    p.add_argument(
        "--study-name", help="Optuna study name (default: <run name>-<strategy>, with -fake for --fake)"
    )
    p.add_argument(
        "--storage", help="Optuna storage URL (default: search.storage, else SQLite in the run dir)"
    )
    p.add_argument("--run-dir", help="where search.db and search.json go (default: the config's run dir)")
    p.add_argument("--quiet", action="store_true", help="no per-trial lines, only the summary")
    p.set_defaults(func=_run, accepts_overrides=True)


def _fake_teacher_config() -> Any:
    from transformers import BertConfig

    return BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


def _run(args: argparse.Namespace) -> int:
    import optuna
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from kdnas import config
    from kdnas.search.entry import search_inputs
    from kdnas.search.results import TrialRecord
    from kdnas.search.workers import target_fingerprint
    from kdnas.stages.search import run_study

    cfg = config.load(args.config, getattr(args, "overrides", {}))
    run_dir = Path(args.run_dir) if args.run_dir else cfg.resolved_run_dir
    if args.fake:
        from kdnas.search.testing import FakeEvaluator

        teacher_config = _fake_teacher_config()
        fake = FakeEvaluator.for_teacher(teacher_config, seed=cfg.seed, seconds=args.fake_seconds)
        setup = fake.setup(teacher_config)
    else:
        from kdnas.search.evaluator import make_evaluator

        setup = make_evaluator(cfg, run_dir)
    s = cfg.search
    space, budgets = search_inputs(cfg, run_dir, setup)
    study_name = args.study_name or f"{cfg.name}-{s.strategy}" + ("-fake" if args.fake else "")
    console = Console()
    console.print(
        f"[bold]search[/] {study_name}: strategy {s.strategy}, space {space.name} "
        f"({space.size() if space.enumerable() else f'~{space.raw_size():,}'} archs), {s.n_trials} candidates, "
        f"teacher {setup.teacher_latency_ms:.3g} ms, budgets {', '.join(b.label for b in budgets) or 'none'}"
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.quiet,
    )
    with progress:
        task = progress.add_task("distilling candidates", total=s.n_trials)

        def on_trial(r: TrialRecord) -> None:
            if r.state in ("complete", "failed"):
                progress.advance(task)
            if not args.quiet:
                progress.console.print(_trial_line(r))

        result = run_study(
            space, setup, budgets, search=s, proxy_tokens=cfg.distill.proxy_tokens, run_dir=run_dir,
            study_name=study_name, seed=cfg.seed, callback=on_trial, storage=args.storage, role=None,
            hardware=("fake:" if args.fake else "") + target_fingerprint(cfg.target),
        )  # fmt: skip
    _summary(console, result)
    console.print(
        f"results: {run_dir / 'search.json'}  storage: {result.storage} (optuna-dashboard can open it)"
    )
    return 0


def _trial_line(r: Any) -> str:
    arch = r.arch.arch_id if r.arch else "?"
    if r.state in ("filtered", "failed"):
        colour = "yellow" if r.state == "filtered" else "red"
        return f"[{colour}]#{r.number:<4} {r.state:<9}[/] {arch}: {r.reason}"
    loss = f"{r.kd_loss_short:.4f}" + (
        f" -> {r.kd_loss_long:.4f} (long)" if r.kd_loss_long is not None else ""
    )
    tag = " [dim](repeat)[/]" if r.state == "duplicate" else ""
    reward = f"{r.reward:.3f}" if r.reward is not None else "-"
    return f"#{r.number:<4} {arch:<28} loss {loss}  latency {r.latency_ms:.3g} ms  reward {reward}{tag}"


def _summary(console: Any, result: Any) -> None:
    from rich.table import Table

    t = Table(title=f"Pareto front (proxy KD loss vs latency), hypervolume {result.hypervolume:.4g}")
    for col in ("trial", "arch", "kd loss (short)", "kd loss (long)", "latency ms", "speed-up", "params M"):
        t.add_column(col, justify="left" if col == "arch" else "right", no_wrap=col == "arch")
    for r in result.pareto:
        t.add_row(
            str(r.number),
            r.arch.arch_id,
            f"{r.kd_loss_short:.4f}",
            f"{r.kd_loss_long:.4f}" if r.kd_loss_long is not None else "-",
            f"{r.latency_ms:.3g}",
            f"{result.teacher_latency_ms / r.latency_ms:.1f}x",
            f"{r.params_m:.1f}",
        )
    console.print(t)
    counts = ", ".join(
        f"{result.count(s)} {s}" for s in ("complete", "failed", "filtered", "duplicate") if result.count(s)
    )
    tau = "n/a (fewer than 3 promoted)" if result.kendall_tau is None else f"{result.kendall_tau:.2f}"
    console.print(
        f"trials: {counts}; Kendall tau short vs long proxy: {tau} over {result.n_promoted} promoted"
    )
    for rec in result.recommendations:
        if rec.arch is None:
            console.print(f"[yellow]budget {rec.budget.label}[/]: {rec.reason}")
        else:
            console.print(
                f"budget {rec.budget.label} ({rec.budget.latency_ms:.3g} ms): [bold]{rec.arch.arch_id}[/] "
                f"kd loss {rec.kd_loss:.4f} ({rec.fidelity}), {rec.latency_ms:.3g} ms, {rec.params_m:.1f}M params"
            )
    if result.stopped_reason:
        console.print(f"[yellow]stopped early[/]: {result.stopped_reason}")
