"""kdnas.distill: distillation losses, layer mappings, the teacher cache and the resumable training loop.

`distill(teacher, student, data, cfg, tokens=...)` trains a student; `heldout_kd_loss` scores it.
"""

from kdnas.distill.config import DistillConfig
from kdnas.distill.distiller import Distiller, mlm_head
from kdnas.distill.heldout import fit_projections, heldout_kd_loss
from kdnas.distill.mapping import capture_qkv, layer_map
from kdnas.distill.teacher_cache import CachedTeacher, TeacherCache, TeacherNeeds, teacher_info
from kdnas.distill.trainer import DistillResult, distill

__all__ = [
    "CachedTeacher",
    "DistillConfig",
    "DistillResult",
    "Distiller",
    "TeacherCache",
    "TeacherNeeds",
    "capture_qkv",
    "distill",
    "fit_projections",
    "heldout_kd_loss",
    "layer_map",
    "mlm_head",
    "teacher_info",
]
