"""Task-specific distillation (TinyBERT's second stage): fine-tune the teacher, then train the student on the
labels and the fine-tuned teacher's logits (temperature `kd_temperature`, weight `kd_alpha`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from kdnas.data.tasks import Task
from kdnas.evaluate.config import EvaluateConfig
from kdnas.evaluate.finetune import (
    TaskModel,
    TaskResult,
    capped,
    encode_split,
    finetune,
    is_bi,
    predict_logits,
)
from kdnas.precision import resolve_device

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TaskDistillResult:
    """The fine-tuned teacher's result and the student's after training on the teacher's logits."""

    teacher: TaskResult
    student: TaskResult


def teacher_logits(
    model: TaskModel, tokenizer: PreTrainedTokenizerBase, task: Task, cfg: EvaluateConfig
) -> torch.Tensor:
    """Logits [N_train, K] of a fine-tuned task model on the task's train split (in its order)."""
    data = encode_split(tokenizer, task.train, task.kind, cfg.max_len, bi=is_bi(task))
    return predict_logits(model, data, batch_size=cfg.eval_batch_size)


def task_distill(
    teacher: PreTrainedModel,
    teacher_tokenizer: PreTrainedTokenizerBase,
    student: PreTrainedModel,
    student_tokenizer: PreTrainedTokenizerBase,
    task: Task,
    cfg: EvaluateConfig | None = None,
    *,
    teacher_model: TaskModel | None = None,
    teacher_result: TaskResult | None = None,
) -> TaskDistillResult:
    """Fine-tune `teacher` on `task` (or reuse `teacher_model`), then run the protocol on `student` with KD.

    Teacher and student may use different tokenizers: the teacher's logits are aligned by example.
    """
    cfg = cfg or EvaluateConfig()
    task = capped(task, cfg)  # teacher and student see the same train and dev subsets
    if teacher_model is None:
        teacher_result, teacher_model = finetune(teacher, teacher_tokenizer, task, cfg, return_model=True)
        assert teacher_model is not None
    elif teacher_result is None:
        raise ValueError("teacher_result is needed with teacher_model")
    assert teacher_result is not None
    soft = teacher_logits(
        teacher_model.to(resolve_device(cfg.device)), teacher_tokenizer, task, cfg
    )  # [N_train, K]
    log.info("%s: teacher fine-tuned (test %s %.4f); distilling the student on its logits",
             task.name, teacher_result.metric, teacher_result.test_mean)  # fmt: skip
    student_result, _ = finetune(student, student_tokenizer, task, cfg.for_students(), soft_targets=soft)
    return TaskDistillResult(teacher=teacher_result, student=student_result)
