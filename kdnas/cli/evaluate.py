"""`kdnas evaluate MODEL_DIR --tasks wiki-vital-en,bbc-news [--teacher T]`: fine-tune and score on labeled tasks.

Prints a table (language, task, metric, score ± std over seeds); with `--teacher` also the teacher's column,
retention and retention per language. `SOURCE>TARGET` tasks are zero-shot transfer (quote them in a shell).
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
    p.add_argument(
        "--tasks",
        help="comma-separated zoo tasks, task files/dirs, or zero-shot SOURCE>TARGET pairs (quote them: "
        "'wiki-vital-en,wiki-vital-en>wiki-vital-fr'); default: the config's",
    )
    p.add_argument("--text-field", help="task files: column of the (first) text (default: text)")
    p.add_argument("--text-b-field", help="task files: column of the second text of a sentence-pair task")
    p.add_argument("--label-field", help="task files: label column (default: label)")
    p.add_argument("--kind", choices=("classification", "regression"),
                   help="task files: label kind (default: inferred from the labels)")  # fmt: skip
    p.add_argument(
        "--resplit", choices=("none", "group_by_text"),
        help="task files: group_by_text re-splits pair data by first text, so no premise is in two splits",
    )  # fmt: skip
    p.add_argument(
        "--pair-encoding", choices=("cross", "bi", "embedding"),
        help="task files: fine-tune a pair task as a cross-encoder (both texts in one sequence, the default) or a "
        "bi-encoder (each text embedded alone), or score it without fine-tuning from the cosine of the two "
        "embeddings (embedding: for similarity / paraphrase)",
    )  # fmt: skip
    p.add_argument("--teacher", help="also evaluate this teacher and print retention (zoo name or dir)")
    p.add_argument("--task-distill", action="store_true",
                   help="train the model on the fine-tuned teacher's logits too (needs --teacher)")  # fmt: skip
    p.add_argument("--seeds", type=_ints, help="fine-tuning seeds, e.g. 0,1,2")
    p.add_argument("--lrs", type=_floats, help="learning-rate grid, e.g. 1e-4,3e-4")
    p.add_argument(
        "--student-lrs", type=_floats,
        help="learning-rate grid of MODEL_DIR when it differs from --teacher's (--lrs), e.g. 2e-4,1e-3",
    )  # fmt: skip
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
    from kdnas.evaluate.config import TASK_OPTIONS
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
        base, tasks=tasks_arg, seeds=args.seeds, lrs=args.lrs, student_lrs=args.student_lrs,
        max_train_examples=args.max_train,
        epochs=args.epochs, max_len=args.max_len, batch_size=args.batch_size, pooling=args.pooling,
        device=args.device, threads=args.threads,
    )  # fmt: skip
    if args.lrs and not args.student_lrs:
        cfg = dataclasses.replace(cfg, student_lrs=None)  # --lrs alone is the grid of every model evaluated
    flags = {k: getattr(args, k) for k in TASK_OPTIONS if getattr(args, k, None) is not None}
    options = {ref: {**cfg.task_options.get(ref, {}), **flags} for ref in cfg.tasks} if flags else None
    tasks = load_tasks(
        cfg.tasks, cache_dir=args.cache_dir, max_train=cfg.max_train_examples,
        options=options or cfg.task_options,
    )  # fmt: skip
    if args.task_distill:
        from kdnas.data.topics import ZeroShotTask

        zs = [t.name for t in tasks if isinstance(t, ZeroShotTask)]
        if zs:
            raise ConfigError(
                f"--task-distill: not available for zero-shot tasks ({', '.join(zs)}); evaluate them in a "
                "run without --task-distill"
            )
    student = load_encoder(args.model, cache_dir=args.cache_dir)
    teacher = load_encoder(args.teacher, cache_dir=args.cache_dir) if args.teacher else None
    if teacher is not None and teacher.name == student.name:
        teacher.name = f"{teacher.name} (teacher)"

    if args.task_distill:
        assert teacher is not None
        t_report, s_report = _task_distill(teacher, student, tasks, cfg)
    else:
        s_report = evaluate_encoder(student, tasks, cfg.for_students())
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


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.1%}"


def _print(s_report: Any, t_report: Any, table: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from kdnas.data.topics import language_of_ref
    from kdnas.evaluate.retention import OTHER_LANGUAGE

    t = Table(title=f"{s_report.name}: test scores (mean ± std over seeds, lr chosen on dev)")
    for col in ("lang", "task", "metric", s_report.name):
        t.add_column(col, justify="right" if col == s_report.name else "left")
    if t_report is not None:
        t.add_column(t_report.name, justify="right")
        t.add_column("retention", justify="right")
    row_of = {r.model: r for r in table.rows} if table is not None else {}

    def lang_of(name: str) -> str:
        return s_report.results[name].language or language_of_ref(name) or OTHER_LANGUAGE

    names = list(s_report.results)
    langs = list(dict.fromkeys(lang_of(n) for n in names))
    for lang in langs:  # rows grouped by language, zero-shot columns after the in-language ones
        group = sorted((n for n in names if lang_of(n) == lang),
                       key=lambda n: s_report.results[n].zero_shot is not None)  # fmt: skip
        for name in group:
            res = s_report.results[name]
            zs = res.zero_shot is not None
            cells = [lang, f"{name} (zero-shot)" if zs else name, res.metric,
                     f"{100 * res.test_mean:.2f} ± {100 * res.test_std:.2f}"]  # fmt: skip
            if t_report is not None:
                tr = t_report.results[name]
                ret = row_of[s_report.name].retention.get(name)
                cells += [
                    f"{100 * tr.test_mean:.2f} ± {100 * tr.test_std:.2f}",
                    "–" if ret is None else f"{ret:.1%}",
                ]
            t.add_row(*cells, end_section=name == group[-1])
    console = Console()
    console.print(t)
    for res in s_report.results.values():
        z = res.zero_shot
        if z and z.get("n_excluded"):
            console.print(
                f"{res.task}: {z['n_excluded']} {z['target']} test examples excluded (their topic has no "
                f"{z['source']} counterpart: {', '.join(z['excluded'])})"
            )
    if table is not None:
        r = row_of[s_report.name]
        ratio = "–" if r.params_ratio is None else f"{r.params_ratio:.3f}"
        line = f"average retention {_pct(r.avg_retention)}"
        if table.zero_shot:
            line += f" (in-language tasks); zero-shot retention {_pct(r.zero_shot_retention)}"
        console.print(f"{line}; params {s_report.params / 1e6:.1f}M ({ratio} of the teacher)")
        if table.has_language_view():
            parts = []
            for lang in table.language_groups():
                bits = []
                if lang in r.language_retention:
                    bits.append(_pct(r.language_retention[lang]))
                if lang in r.language_zero_shot_retention:
                    bits.append(f"zero-shot {_pct(r.language_zero_shot_retention[lang])}")
                parts.append(f"{lang} {', '.join(bits)}")
            console.print(
                f"retention by language: {'; '.join(parts)}; average over languages "
                f"{_pct(r.language_avg_retention)}"
            )
