"""Evaluate one or more encoders on a list of tasks under the shared protocol, and compare them with a teacher.

Used by `kdnas evaluate`, the pipeline's evaluation stage and `benchmarks/evaluate.py`.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from kdnas.data.tasks import Task, load_task
from kdnas.errors import KdnasError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.evaluate.encoder import Encoder
from kdnas.evaluate.finetune import finetune
from kdnas.evaluate.retention import ModelReport

log = logging.getLogger(__name__)


def load_tasks(
    refs: list[str], *, cache_dir: str | Path | None = None, max_train: int | None = None
) -> list[Task]:
    """Load every task reference (zoo name or task file / dir) up front, so bad input fails before training."""
    return [load_task(r, cache_dir=cache_dir, max_train=max_train) for r in refs]


def evaluate_encoder(encoder: Encoder, tasks: list[Task], cfg: EvaluateConfig | None = None) -> ModelReport:
    """Run the protocol for `encoder` on each task."""
    cfg = cfg or EvaluateConfig()
    results = {}
    for task in tasks:
        log.info("%s on %s", encoder.name, task.describe())
        res, _ = finetune(encoder.model, encoder.tokenizer, task, cfg)
        results[task.name] = res
    arch = None
    try:
        from kdnas.models.student import arch_of

        arch = arch_of(encoder.model.config).describe()
    except KdnasError:  # an encoder family kdnas cannot describe still gets evaluated
        arch = None
    return ModelReport(name=encoder.name, results=results, params=encoder.params, arch=arch)


def config_with(cfg: EvaluateConfig, **changes: Any) -> EvaluateConfig:
    """A copy of `cfg` with `changes` applied (None values are ignored), validated."""
    from kdnas.errors import ConfigError

    new = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    problems = new.check()
    if problems:
        raise ConfigError([f"evaluate.{p}" for p in problems])
    return new
