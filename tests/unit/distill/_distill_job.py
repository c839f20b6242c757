"""A distillation run in its own process, for the tests that start real processes (torchrun, SIGKILL).

    python _distill_job.py OUT_JSON [--out-dir D] [--resume] [--stop-after K] [--grad-accum A] [--slow S]

Writes the loss history and a digest of the student's weights to OUT_JSON (rank 0 only).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdnas.distill import DistillConfig, distill, parallel, trainer
from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_batch, tiny_teacher


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out_json")
    p.add_argument("--out-dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int)
    p.add_argument("--grad-accum", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--slow", type=float, default=0.0, help="seconds of sleep per step (to be killed mid-run)")
    a = p.parse_args()
    torch.set_num_threads(1)
    w = parallel.init_from_env()
    if a.slow:
        real = trainer.lr_factor

        def slow(step: int, steps: int, cfg: DistillConfig) -> float:
            time.sleep(a.slow)
            return real(step, steps, cfg)

        trainer.lr_factor = slow  # type: ignore[assignment]
    teacher = tiny_teacher("bert", num_layers=4)
    student = build_student(
        teacher.config, Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32), seed=0
    )
    cfg = DistillConfig(
        batch_size=4, grad_accum=a.grad_accum, relation_heads=4, checkpoint_every=1,
        losses={"hidden": 1.0, "relation": 1.0, "attention": 1.0},
    )  # fmt: skip
    try:
        res = distill(
            teacher, student, tiny_batch(48, 12), cfg, steps=a.steps, progress=False, out_dir=a.out_dir,
            resume=a.resume, stop_after_steps=a.stop_after, teacher_cache=None,
        )  # fmt: skip
    finally:
        parallel.shutdown()
    if w.is_main:
        weights = {k: v.double().sum().item() for k, v in student.state_dict().items()}
        out = {"loss": [e["loss"] for e in res.history], "weights": weights, "failed": res.failed,
               "tokens": res.tokens, "world": w.size}  # fmt: skip
        with open(a.out_json, "w") as f:
            json.dump(out, f)
    if w.size > 1:
        parallel.leave(0)  # as `kdnas distill` does under torchrun


if __name__ == "__main__":
    main()
