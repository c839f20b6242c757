"""kdnas.evaluate: downstream fine-tuning and scoring (zero-shot transfer included), task distillation, baselines,
retention per task and per language, speed-up.

Heavy modules (torch) are imported on first use of a name, so `import kdnas.evaluate` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "EvaluateConfig": "config",
    "evaluate": "runner",
    "Encoder": "encoder",
    "load_encoder": "encoder",
    "TaskModel": "finetune",
    "TaskResult": "finetune",
    "RunResult": "finetune",
    "finetune": "finetune",
    "encode_task": "finetune",
    "predict_logits": "finetune",
    "zero_shot_logits": "finetune",
    "task_distill": "task_distill",
    "TaskDistillResult": "task_distill",
    "ModelReport": "retention",
    "RetentionTable": "retention",
    "retention_table": "retention",
    "baseline_archs": "baselines",
    "every_other_layer": "baselines",
    "truncate_layers": "baselines",
    "evaluate_encoder": "runner",
    "load_tasks": "runner",
    "plan_sources": "runner",
    "score": "metrics",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"kdnas.evaluate.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'kdnas.evaluate' has no attribute {name!r}")
