"""kdnas.distill: distillation losses, layer mappings, the teacher cache and the resumable training loop.

`distill(teacher, student, data, cfg, tokens=...)` trains a student; `heldout_kd_loss` scores it. Names load
lazily so `import kdnas.config` (which needs only `kdnas.distill.config`) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kdnas.distill.config import DistillConfig
    from kdnas.distill.distiller import Distiller, mlm_head
    from kdnas.distill.heldout import fit_projections, heldout_kd_loss, heldout_kd_losses
    from kdnas.distill.mapping import capture_qkv, layer_map
    from kdnas.distill.teacher_cache import CachedTeacher, TeacherCache, TeacherNeeds, teacher_info
    from kdnas.distill.trainer import DistillResult, distill

_EXPORTS = {
    "DistillConfig": "kdnas.distill.config",
    "Distiller": "kdnas.distill.distiller",
    "mlm_head": "kdnas.distill.distiller",
    "fit_projections": "kdnas.distill.heldout",
    "heldout_kd_loss": "kdnas.distill.heldout",
    "heldout_kd_losses": "kdnas.distill.heldout",
    "capture_qkv": "kdnas.distill.mapping",
    "layer_map": "kdnas.distill.mapping",
    "CachedTeacher": "kdnas.distill.teacher_cache",
    "TeacherCache": "kdnas.distill.teacher_cache",
    "TeacherNeeds": "kdnas.distill.teacher_cache",
    "teacher_info": "kdnas.distill.teacher_cache",
    "DistillResult": "kdnas.distill.trainer",
    "LossTerm": "kdnas.distill.terms",
    "StepView": "kdnas.distill.terms",
    "register_loss": "kdnas.distill.terms",
    "distill": "kdnas.distill.trainer",
}
__all__ = [
    "CachedTeacher",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "LossTerm",
    "StepView",
    "TeacherCache",
    "TeacherNeeds",
    "capture_qkv",
    "distill",
    "fit_projections",
    "heldout_kd_loss",
    "heldout_kd_losses",
    "layer_map",
    "mlm_head",
    "register_loss",
    "teacher_info",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdnas.distill' has no attribute {name!r}")
