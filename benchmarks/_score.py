"""Shared by the benchmarks that distil a model into a finished run dir: score it (suite and label-free fidelity)
once, keeping the scores in an eval.json beside it so a rerun reads them back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def score(
    ctx: Any, model_dir: Path, eval_file: Path, *, name: str, arch: str, tasks: list[Any] | None
) -> Any:
    """The ModelReport of `model_dir`: the suite `tasks` under the run's student protocol (None: no suite) and
    the fidelity the evaluate stage measures; what eval_file already holds is read back, what is new is added."""
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.retention import ModelReport
    from kdnas.evaluate.runner import evaluate_encoder
    from kdnas.stages.evaluate import fidelity

    cfg = ctx.cfg
    report = (
        ModelReport.from_dict(json.loads(eval_file.read_text()))
        if eval_file.is_file()
        else ModelReport(name=name, results={}, arch=arch)
    )
    changed = False
    if tasks and not report.results:
        fid = report.fidelity
        report = evaluate_encoder(load_encoder(str(model_dir), name=name), tasks, cfg.evaluate.for_students())
        report.fidelity = fid
        changed = True
    if report.fidelity is None and cfg.evaluate.fidelity_passages > 0:
        report.fidelity = fidelity(ctx, model_dir, passages=cfg.evaluate.fidelity_passages)
        changed = True
    if changed:
        eval_file.write_text(json.dumps(report.to_dict(), indent=1))
    return report
