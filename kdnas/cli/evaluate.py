"""`kdnas evaluate MODEL_DIR --tasks wiki-vital-en,bbc-news [--teacher T]`: fine-tune and score on labeled tasks.

Prints a table (task, metric, score ± std over seeds); with `--teacher` also the teacher's column and retention.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

from kdnas.errors import ConfigError


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give comma-separated numbers, e.g. 1e-4,3e-4") from None


def _ints(s: str) -> list[int]:
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r}: give comma-separated integers, e.g. 0,1,2") from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="fine-tune a model on labeled tasks and print scores (and retention vs a teacher)",
        description="Fine-tune MODEL_DIR (an exported student, a teacher dir or zoo name) on each task with the "
        "shared protocol (lr grid, early stopping on dev, several seeds) and print test scores.",
    )
    p.add_argument(
        "model", metavar="MODEL_DIR", help="exported student dir, HF encoder dir, or zoo teacher name"
    )
    p.add_argument("--tasks", help="comma-separated zoo tasks or task files/dirs (default: the config's)")
    p.add_argument("--teacher", help="also evaluate this teacher and print retention (zoo name or dir)")
    p.add_argument("--task-distill", action="store_true",
                   help="train the model on the fine-tuned teacher's logits too (needs --teacher)")  # fmt: skip
    p.add_argument("--seeds", type=_ints, help="fine-tuning seeds, e.g. 0,1,2")
    p.add_argument("--lrs", type=_floats, help="learning-rate grid, e.g. 1e-4,3e-4")
    p.add_argument("--max-train", type=int, help="cap on training examples per task")
    p.add_argument("--epochs", type=int, help="max epochs per run (early stopping on dev)")
    p.add_argument("--max-len", type=int, help="tokens per example")
    p.add_argument("--batch-size", type=int, help="fine-tuning batch size")
    p.add_argument("--pooling", choices=("cls", "mean"), help="sentence representation for the head")
    p.add_argument("--device", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is much faster on a busy machine)")
    p.add_argument(
        "--config", metavar="CONFIG", help="take the evaluate settings from this run config / recipe"
    )
    p.add_argument("--cache-dir", help="zoo cache dir (default $KDNAS_CACHE or ~/.cache/kdnas)")
    p.add_argument("--out", help="write results as JSON here (and a Markdown table next to it)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from kdnas import config as kconfig
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.retention import retention_table
    from kdnas.evaluate.runner import config_with, evaluate_encoder, load_tasks

    if args.task_distill and not args.teacher:
        raise ConfigError(
            "--task-distill: needs --teacher (the model is trained on the fine-tuned teacher's logits)"
        )
    base = kconfig.load(args.config).evaluate if args.config else kconfig.RunConfig().evaluate
    tasks_arg = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    cfg = config_with(
        base, tasks=tasks_arg, seeds=args.seeds, lrs=args.lrs, max_train_examples=args.max_train,
        epochs=args.epochs, max_len=args.max_len, batch_size=args.batch_size, pooling=args.pooling,
        device=args.device, threads=args.threads,
    )  # fmt: skip
    tasks = load_tasks(cfg.tasks, cache_dir=args.cache_dir, max_train=cfg.max_train_examples)
    student = load_encoder(args.model, cache_dir=args.cache_dir)
    teacher = load_encoder(args.teacher, cache_dir=args.cache_dir) if args.teacher else None
    if teacher is not None and teacher.name == student.name:
        teacher.name = f"{teacher.name} (teacher)"

    if args.task_distill:
        assert teacher is not None
        t_report, s_report = _task_distill(teacher, student, tasks, cfg)
    else:
        s_report = evaluate_encoder(student, tasks, cfg)
        t_report = evaluate_encoder(teacher, tasks, cfg) if teacher is not None else None

    table = retention_table(t_report, [s_report]) if t_report is not None else None
    _print(s_report, t_report, table)
    if args.out:
        out = Path(args.out)
        payload: dict[str, Any] = {
            "config": dataclasses.asdict(cfg), "model": s_report.to_dict(),
            "teacher": t_report.to_dict() if t_report else None,
            "retention": table.to_dict() if table else None,
        }  # fmt: skip
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        if table is not None:
            table.write_markdown(out.with_suffix(".md"))
        print(f"wrote {out}" + (f" and {out.with_suffix('.md')}" if table else ""))
    return 0


def _task_distill(teacher: Any, student: Any, tasks: list[Any], cfg: Any) -> tuple[Any, Any]:
    from kdnas.evaluate.retention import ModelReport
    from kdnas.evaluate.task_distill import task_distill

    t_res, s_res = {}, {}
    for task in tasks:
        r = task_distill(teacher.model, teacher.tokenizer, student.model, student.tokenizer, task, cfg)
        t_res[task.name], s_res[task.name] = r.teacher, r.student
    return (
        ModelReport(name=teacher.name, results=t_res, params=teacher.params),
        ModelReport(name=f"{student.name} (task-distilled)", results=s_res, params=student.params),
    )


def _print(s_report: Any, t_report: Any, table: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{s_report.name}: test scores (mean ± std over seeds, lr chosen on dev)")
    for col in ("task", "metric", s_report.name):
        t.add_column(col, justify="right" if col == s_report.name else "left")
    if t_report is not None:
        t.add_column(t_report.name, justify="right")
        t.add_column("retention", justify="right")
    row_of = {r.model: r for r in table.rows} if table is not None else {}
    for name, res in s_report.results.items():
        cells = [name, res.metric, f"{100 * res.test_mean:.2f} ± {100 * res.test_std:.2f}"]
        if t_report is not None:
            tr = t_report.results[name]
            ret = row_of[s_report.name].retention.get(name)
            cells += [
                f"{100 * tr.test_mean:.2f} ± {100 * tr.test_std:.2f}",
                "–" if ret is None else f"{ret:.1%}",
            ]
        t.add_row(*cells)
    console = Console()
    console.print(t)
    if table is not None:
        r = row_of[s_report.name]
        avg = "–" if r.avg_retention is None else f"{r.avg_retention:.1%}"
        ratio = "–" if r.params_ratio is None else f"{r.params_ratio:.3f}"
        console.print(
            f"average retention {avg}; params {s_report.params / 1e6:.1f}M ({ratio} of the teacher)"
        )
