from __future__ import annotations

import dataclasses

import torch

from kdnas.evaluate.baselines import every_other_layer
from kdnas.evaluate.finetune import finetune
from kdnas.evaluate.task_distill import task_distill, teacher_logits
from kdnas.testing import tiny_teacher, tiny_tokenizer


def test_task_distill_trains_student_on_teacher_logits(task, fast_cfg):
    tok = tiny_tokenizer()
    teacher = tiny_teacher(num_layers=2)
    student = every_other_layer(teacher)
    out = task_distill(teacher, tok, student, tok, task, fast_cfg)
    assert out.teacher.test_mean >= 0.9
    assert out.student.test_mean >= 0.9
    assert out.student.task == "toy" and len(out.student.runs) == len(fast_cfg.seeds)


def test_teacher_logits_follow_train_order_and_reuse(task, fast_cfg):
    tok = tiny_tokenizer()
    cfg = dataclasses.replace(fast_cfg, epochs=1)
    res, model = finetune(tiny_teacher(), tok, task, cfg, return_model=True)
    assert model is not None
    logits = teacher_logits(model, tok, task, cfg)
    assert logits.shape == (len(task.train), 2)
    first = teacher_logits(model, tok, type(task)(**{**task.__dict__, "train": task.train.subset([0])}), cfg)
    torch.testing.assert_close(first[0], logits[0], atol=1e-5, rtol=1e-4)
    # a given fine-tuned teacher is reused, not fine-tuned again
    out = task_distill(tiny_teacher(), tok, tiny_teacher(seed=1), tok, task, cfg, teacher_model=model,
                       teacher_result=res)  # fmt: skip
    assert out.teacher is res
