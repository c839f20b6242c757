"""Latency of an exported folder per backend (torch, onnxruntime fp32, onnxruntime int8) via `kdnas.latency`.

Each backend runs in the latency engine's isolated, thread-pinned worker, on the target's first shape, and
uses the folder's own model.onnx / model-int8.onnx for the onnxruntime backends.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdnas.latency.config import TargetConfig
    from kdnas.latency.result import LatencyResult

BACKEND_FILES = {
    "torch": "model.safetensors",
    "onnxruntime": "model.onnx",
    "onnxruntime-int8": "model-int8.onnx",
}
"""Backends an export is timed on, and the file each one runs."""


def measure_export(model_dir: Path, backends: list[str], target: TargetConfig) -> dict[str, LatencyResult]:
    """Median latency of each backend for `model_dir` on `target` (its threads, batch size, first seq length)."""
    from kdnas.errors import LatencyError
    from kdnas.latency import measure_model_dir

    out = {}
    for backend in backends:
        if backend not in BACKEND_FILES:
            raise LatencyError(f"unknown export backend {backend!r}; one of {', '.join(BACKEND_FILES)}")
        out[backend] = measure_model_dir(
            model_dir, dataclasses.replace(target, backend=backend, device="cpu")
        )
    return out


SPREAD_LIMIT = 0.10
"""A side-by-side speed-up whose per-round coefficient of variation is above this is marked unreliable."""


def measure_speedups(
    model_dir: Path, teacher: str, backends: list[str], target: TargetConfig, *, rounds: int = 3
) -> dict[str, dict[str, float | bool]]:
    """Per backend, the folder's speed-up over `teacher` timed side by side in the same workers (`rounds`
    fresh workers, order alternating; `kdnas.latency.measure_side_by_side`), with the target's settings
    (threads, attention implementation, first shape): speedup (median of per-round ratios), lo, hi, cv,
    teacher_ms, student_ms, reliable (more than one round and cv <= SPREAD_LIMIT)."""
    return measure_speedups_together([model_dir], teacher, backends, target, rounds=rounds)[0]


def measure_speedups_together(
    model_dirs: list[Path],
    teacher: str,
    backends: list[str],
    target: TargetConfig,
    *,
    rounds: int = 3,
    known: dict[str, list[dict[str, float | bool] | None]] | None = None,
) -> list[dict[str, dict[str, float | bool]]]:
    """`measure_speedups` for several folders at once: per backend, the teacher and every folder in the same
    workers, so the teacher (the slowest model, timed once per round) is not timed again for each folder.

    `known`: backend -> per folder, a speed-up already timed side by side under the same target (e.g. by the
    pipeline's evaluate stage), in this function's format; a backend whose folders are all known is not timed.
    """
    from kdnas.latency import ModelSpec, load_teacher_config, measure_side_by_side

    known = known or {}
    out: list[dict[str, dict[str, float | bool]]] = [{} for _ in model_dirs]
    for backend in backends:
        given = known.get(backend) or [None] * len(model_dirs)
        todo = [i for i, k in enumerate(given) if k is None]
        for i, k in enumerate(given):
            if k is not None:
                out[i][backend] = k
        if not todo:
            continue
        specs = [ModelSpec.for_config(load_teacher_config(teacher))] + [
            ModelSpec.for_dir(model_dirs[i]) for i in todo
        ]
        sbs = measure_side_by_side(
            specs, dataclasses.replace(target, backend=backend, device="cpu"), rounds=rounds
        )
        for j, i in enumerate(todo, start=1):
            lo, hi = sbs.speedup_range[j]
            cv = sbs.speedup_cv[j] if sbs.speedup_cv else 0.0
            out[i][backend] = speedup_entry(
                sbs.speedup[j], lo, hi, cv, sbs.median_ms[0], sbs.median_ms[j], rounds
            )
    return out


def speedup_entry(
    speedup: float, lo: float, hi: float, cv: float, teacher_ms: float, student_ms: float, rounds: int
) -> dict[str, float | bool]:
    """One backend's side-by-side speed-up as export.json and the card record it."""
    return {"speedup": speedup, "lo": lo, "hi": hi, "cv": cv, "teacher_ms": teacher_ms, "student_ms": student_ms,
            "rounds": rounds, "reliable": rounds > 1 and cv <= SPREAD_LIMIT}  # fmt: skip


def hardware_description(threads: int) -> str:
    """This machine in words (CPU, cores, ISA flags, architecture) with the latency engine's fingerprint id."""
    from kdnas.latency import fingerprint

    fp = fingerprint(threads)
    isa = "/".join(fp.isa) or "no flags"
    return f"{fp.cpu} ({fp.cores} cpus, {isa}, {fp.machine}; fingerprint {fp.id})"
