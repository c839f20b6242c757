"""Teachers (any HF encoder), students as configs of the teacher's own family, and weight inheritance.

Importing this package does not import torch or transformers; the functions do, when called.
"""

from kdnas.models.importance import Importance, compute_importance
from kdnas.models.inherit import InheritancePlan, inherit_student, plan_inheritance, select_layers
from kdnas.models.student import SUPPORTED_FAMILIES, arch_of, build_student, student_config
from kdnas.models.teacher import Teacher, load_teacher, load_teacher_config

__all__ = [
    "SUPPORTED_FAMILIES",
    "Importance",
    "InheritancePlan",
    "Teacher",
    "arch_of",
    "build_student",
    "compute_importance",
    "inherit_student",
    "load_teacher",
    "load_teacher_config",
    "plan_inheritance",
    "select_layers",
    "student_config",
]
