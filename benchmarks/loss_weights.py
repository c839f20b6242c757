"""Loss-weight sweep: one student shape distilled with several `distill.losses` weightings inside a finished run dir.

Each variant is distilled with the run's own data split, teacher cache, token budget and every other `distill`
setting (only `distill.losses`, and `distill.lr` where a variant names one, change), then scored on the label-free
fidelity the evaluate stage measures (mean cosine of the pooled embedding to the teacher's, recall@10 of its
neighbours over `evaluate.fidelity_passages` held-out passages) and, with `--suite`, fine-tuned on the run's suite
under its student protocol. Prints the variants side by side with the held-out KD loss and training time.

    python benchmarks/loss_weights.py --run-dir runs/headline-family3 --arch L1-H384-A12-F768-gelu \\
        --variant default= --variant sentence10=hidden:1,relation:1,sentence:10,similarity:1 [--suite]

A variant is NAME=LOSS:WEIGHT,...[,lr:LR]; an empty right-hand side is the run's own `distill.losses`.
Outputs go to RUN_DIR/loss-weights/<arch_id>-<name>/ (model, result.json, eval.json); a variant already there is
read back, not redone, so an interrupted sweep continues where it stopped. Reports, does not assert.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from _score import score  # benchmarks/_score.py, next to this script

from kdnas import config
from kdnas.errors import KdnasError


def parse_variant(text: str) -> tuple[str, dict[str, float] | None, float | None]:
    """`NAME=LOSS:W,...[,lr:LR]` -> (name, losses or None for the run's own, lr or None)."""
    name, sep, rest = text.partition("=")
    if not sep or not name.strip():
        raise KdnasError(f"--variant {text!r}: write NAME=LOSS:WEIGHT,... (e.g. s10=hidden:1,sentence:10)")
    losses: dict[str, float] = {}
    lr = None
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition(":")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or weight != weight:
            raise KdnasError(f"--variant {text!r}: {item!r} is not LOSS:WEIGHT with a number for the weight")
        if key == "lr":
            lr = weight
        else:
            losses[key] = weight
    return name.strip(), (losses or None), lr


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run-dir", default="runs/headline-family3", help="a run dir whose evaluate stage has run"
    )
    ap.add_argument("--arch", required=True, help="student arch id, e.g. L1-H384-A12-F768-gelu")
    ap.add_argument("--variant", action="append", required=True, help="NAME=LOSS:WEIGHT,...[,lr:LR] (repeat)")
    ap.add_argument("--tokens", type=int, help="token budget (default: the run's distill.full_tokens)")
    ap.add_argument("--suite", action="store_true", help="also fine-tune each variant on the run's suite")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    if len({n for n, *_ in variants}) != len(variants):
        raise KdnasError("--variant names must differ")

    from kdnas.distill.config import DistillConfig
    from kdnas.evaluate.retention import ModelReport, retention_table
    from kdnas.evaluate.runner import load_tasks
    from kdnas.space.arch import Arch
    from kdnas.stages import RunContext
    from kdnas.stages.distill import distill_student

    run_dir = Path(args.run_dir)
    teacher_file = run_dir / "evaluate" / "teacher.json"
    if args.suite and not teacher_file.is_file():
        raise KdnasError(f"{teacher_file} is missing: run the pipeline's evaluate stage in {run_dir} first")
    cfg = config.load(str(run_dir / "config.yaml"))
    arch = Arch.parse(args.arch)
    tasks = load_tasks(cfg.evaluate.tasks, max_train=cfg.evaluate.max_train_examples) if args.suite else None
    ctx = RunContext(cfg=cfg, run_dir=run_dir, progress=sys.stderr.isatty())
    rows: list[tuple[str, DistillConfig, dict[str, Any], ModelReport]] = []
    for name, losses, lr in variants:
        dcfg = dataclasses.replace(
            cfg.distill,
            losses=losses if losses is not None else cfg.distill.losses,
            lr=lr if lr is not None else cfg.distill.lr,
            full_tokens=args.tokens or cfg.distill.full_tokens,
        )
        problems = dcfg.check()
        if problems:
            raise KdnasError(f"--variant {name}: " + "; ".join(problems))
        out = run_dir / "loss-weights" / f"{arch.arch_id}-{name}"
        spec = {"losses": dcfg.losses, "lr": dcfg.lr, "tokens": dcfg.full_tokens}
        spec_file = out / "variant.json"
        if spec_file.is_file() and json.loads(spec_file.read_text()) != spec:
            raise KdnasError(
                f"{out} holds variant {name} with other settings; pick another name or remove it"
            )
        out.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps(spec))
        model_dir = distill_student(ctx, f"{arch.arch_id}-{name}", arch, out, distill=dcfg)
        result = json.loads((out / "result.json").read_text())
        report = score(ctx, model_dir, out / "eval.json", name=name, arch=arch.arch_id, tasks=tasks)
        rows.append((name, dcfg, result, dataclasses.replace(report, name=name)))

    print(f"\nloss-weight sweep: {arch.arch_id} in {run_dir} (teacher {cfg.teacher.name}), "
          f"{rows[0][1].full_tokens:,} tokens each")  # fmt: skip
    print(
        "cosine: mean cosine of the pooled embedding to the teacher's; R@10: recall@10 of its neighbours; "
        "KD held-out: each variant's own loss mix, so not comparable across variants"
    )
    head = f"{'variant':>14} {'losses':>44} {'lr':>7} {'KD held-out':>11} {'distill s':>9} {'cosine':>6} {'R@10':>6}"
    scored = [r for *_, r in rows if r.results]
    table = None
    if scored:
        teacher = ModelReport.from_dict(json.loads(teacher_file.read_text()))
        table = retention_table(teacher, scored)
        head += (
            " " + " ".join(f"{c.replace('wiki-', '')[:10]:>10}" for c in table.tasks) + f" {'retention':>9}"
        )
    print(head)
    print("-" * len(head))
    by_name = {r.model: r for r in table.rows} if table else {}
    for name, dcfg, result, report in rows:
        fid = report.fidelity or {}
        losses = ",".join(f"{k}:{v:g}" for k, v in dcfg.losses.items())
        line = (f"{name:>14} {losses:>44} {dcfg.lr:7.0e} {result['heldout_kd_loss']:11.4f} {result['seconds']:9.0f} "
                f"{_num(fid.get('mean_cosine'))} {_num(fid.get('recall_at_10'))}")  # fmt: skip
        if table is not None and name in by_name:
            r = by_name[name]
            line += " " + " ".join(f"{100 * r.scores[c]:10.2f}" for c in table.tasks)
            line += f" {100 * (r.avg_retention or 0):8.1f}%"
        print(line)
    return 0


def _num(v: float | None) -> str:
    return f"{v:6.3f}" if v is not None else f"{'-':>6}"


if __name__ == "__main__":
    sys.exit(main())
