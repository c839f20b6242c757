"""Task-head losses as pure functions: the label loss and the teacher-logit loss of task distillation.

Shapes: logits [B, K] (K = classes, 1 for regression), labels [B] (long for classes, float for regression).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def label_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Cross-entropy for classification, MSE for regression. logits [B, K], labels [B] -> scalar."""
    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.float(), labels.long())


def logit_kd_loss(
    student: torch.Tensor, teacher: torch.Tensor, kind: str, temperature: float
) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton) for classes; MSE to the teacher's output for regression.

    student, teacher: [B, K] -> scalar (batch mean).
    """
    if kind == "regression":
        return F.mse_loss(student.float(), teacher.float())
    t = temperature
    log_p_s = F.log_softmax(student.float() / t, dim=-1)  # [B, K]
    log_p_t = F.log_softmax(teacher.float() / t, dim=-1)  # [B, K]
    return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * (t * t)


def task_kd_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    labels: torch.Tensor,
    kind: str,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """alpha * logit_kd_loss + (1 - alpha) * label_loss (TinyBERT's second stage, Hinton-style)."""
    return alpha * logit_kd_loss(student, teacher, kind, temperature) + (1 - alpha) * label_loss(
        student, labels, kind
    )
