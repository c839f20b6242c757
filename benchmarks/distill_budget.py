"""Full-distillation budget sweep: one student shape distilled on several token budgets inside a finished run dir.

Each budget is distilled with the run's own data split, teacher cache and `distill` settings (only
`distill.full_tokens` changes), then fine-tuned under the run's student protocol (`evaluate.student_lrs`) and
compared with the teacher scores the run already has (`evaluate/teacher.json`). Prints held-out KD loss, the
scores, average in-language retention, zero-shot retention and the label-free fidelity to the teacher (mean
cosine of the pooled embedding, recall@10 of its neighbours over `evaluate.fidelity_passages` held-out passages,
as the evaluate stage measures it) per budget, side by side.

    python benchmarks/distill_budget.py --run-dir runs/multilingual --arch L2-H256-A8-F256-gelu-V35319 \\
        --tokens 600000,1800000,3600000

Outputs go to RUN_DIR/budgets/<arch_id>-T<tokens>/ (model, result.json, eval.json); a budget already there is
read back, not redone, so an interrupted sweep continues where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from _score import score  # benchmarks/_score.py, next to this script

from kdnas import config
from kdnas.errors import KdnasError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", default="runs/multilingual", help="a run dir whose evaluate stage has run")
    ap.add_argument("--arch", required=True, help="student arch id, e.g. L2-H256-A8-F256-gelu-V35319")
    ap.add_argument("--tokens", required=True, help="comma-separated token budgets, e.g. 600000,1800000")
    ap.add_argument(
        "--losses",
        default="",
        help="loss weights to change, e.g. sentence=30,similarity=0.3 (the others keep the run's weights); "
        "outputs go to <arch>-T<tokens>-<name><weight>... so runs with other weights stay apart",
    )
    ap.add_argument(
        "--teacher-scores", help="the teacher's evaluate json (default: RUN_DIR/evaluate/teacher.json)"
    )
    args = ap.parse_args(argv)

    from kdnas.evaluate.retention import ModelReport, retention_table
    from kdnas.evaluate.runner import load_tasks
    from kdnas.space.arch import Arch
    from kdnas.stages import RunContext
    from kdnas.stages.distill import distill_student

    run_dir = Path(args.run_dir)
    teacher_file = Path(args.teacher_scores or run_dir / "evaluate" / "teacher.json")
    if not teacher_file.is_file():
        raise KdnasError(f"{teacher_file} is missing: run the pipeline's evaluate stage in {run_dir} first")
    changed = _losses(args.losses)
    # the run's config with the changed weights, checked as any config is (a misspelt loss name is an error)
    cfg = config.load(str(run_dir / "config.yaml"), {f"distill.losses.{k}": v for k, v in changed.items()})
    teacher = ModelReport.from_dict(json.loads(teacher_file.read_text()))
    arch = Arch.parse(args.arch)
    budgets = [int(t) for t in args.tokens.split(",")]
    suffix = "".join(f"-{k}{v:g}" for k, v in changed.items())
    tasks = load_tasks(cfg.evaluate.tasks, max_train=cfg.evaluate.max_train_examples)

    # one context for every budget: teacher, corpus split and vocabulary are loaded once; only the distill
    # budget differs between the distillations
    ctx = RunContext(cfg=cfg, run_dir=run_dir, progress=sys.stderr.isatty())
    rows = []
    for tokens in budgets:
        dcfg = dataclasses.replace(cfg.distill, full_tokens=tokens)
        out = run_dir / "budgets" / f"{arch.arch_id}-T{tokens}{suffix}"
        model_dir = distill_student(ctx, arch.arch_id, arch, out, distill=dcfg)
        result = json.loads((out / "result.json").read_text())
        report = score(ctx, model_dir, out / "eval.json", name=arch.arch_id, arch=arch.arch_id, tasks=tasks)
        report = dataclasses.replace(report, name=f"T{tokens}")
        rows.append((tokens, result["heldout_kd_loss"], result["seconds"], report))

    table = retention_table(teacher, [r for *_, r in rows])
    by_name = {r.model: r for r in table.rows}
    cols = table.tasks
    head = (f"{'tokens':>10} {'KD held-out':>11} {'distill s':>9} "
            + " ".join(f"{c.replace('wiki-vital-', ''):>8}" for c in cols) + f" {'avg':>6} {'zero-shot':>9} {'cosine':>6} {'R@10':>6}")  # fmt: skip
    print(
        f"\nbudget sweep: {arch.arch_id} in {run_dir} (teacher {cfg.teacher.name}; losses {cfg.distill.losses})"
    )
    print(
        "avg: mean in-language retention; zero-shot: mean zero-shot retention; distill s: training time, "
        "without building the teacher cache"
    )
    print(head)
    print("-" * len(head))
    t = by_name[table.teacher]
    print(f"{'teacher':>10} {'':>11} {'':>9} " + " ".join(f"{100 * t.scores[c]:8.2f}" for c in cols))
    for tokens, kd, distill_s, report in rows:
        r = by_name[report.name]
        zs = r.zero_shot_retention
        print(f"{tokens:>10,} {kd:11.4f} {distill_s:9.0f} "
              + " ".join(f"{100 * r.scores[c]:8.2f}" for c in cols)
              + f" {100 * (r.avg_retention or 0):5.1f}% " + (f"{100 * zs:8.1f}%" if zs is not None else f"{'-':>9}")
              + f" {_num((report.fidelity or {}).get('mean_cosine'))} {_num((report.fidelity or {}).get('recall_at_10'))}")  # fmt: skip
    return 0


def _losses(text: str) -> dict[str, float]:
    """`--losses`: "name=weight,..." -> {name: weight}; a clear error for anything else."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, eq, weight = part.partition("=")
        try:
            if not eq:
                raise ValueError
            out[name.strip()] = float(weight)
        except ValueError:
            raise KdnasError(f"--losses: {part!r} is not NAME=WEIGHT (e.g. sentence=30)") from None
    return out


def _num(v: float | None) -> str:
    return f"{'-':>6}" if v is None else f"{v:6.3f}"


if __name__ == "__main__":
    sys.exit(main())
