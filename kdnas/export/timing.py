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
    model_dirs: list[Path], teacher: str, backends: list[str], target: TargetConfig, *, rounds: int = 3
) -> list[dict[str, dict[str, float | bool]]]:
    """`measure_speedups` of several folders at once: per backend one side-by-side of the teacher and every
    folder, so a worker starts and the teacher is timed once per round for all of them (an export of a run's
    students took 149 s per student one by one). Each folder's ratio is still taken against the teacher's
    readings just before and after it (`target.compare_bracket`)."""
    from kdnas.latency import ModelSpec, load_teacher_config, measure_side_by_side

    specs = [ModelSpec.for_config(load_teacher_config(teacher)), *(ModelSpec.for_dir(d) for d in model_dirs)]
    out: list[dict[str, dict[str, float | bool]]] = [{} for _ in model_dirs]
    for backend in backends:
        sbs = measure_side_by_side(
            specs, dataclasses.replace(target, backend=backend, device="cpu"), rounds=rounds
        )
        for i in range(1, len(specs)):
            lo, hi = sbs.speedup_range[i]
            cv = sbs.speedup_cv[i] if sbs.speedup_cv else 0.0
            out[i - 1][backend] = {"speedup": sbs.speedup[i], "lo": lo, "hi": hi, "cv": cv,
                                   "teacher_ms": sbs.median_ms[0], "student_ms": sbs.median_ms[i], "rounds": rounds,
                                   "reliable": rounds > 1 and cv <= SPREAD_LIMIT}  # fmt: skip
    return out


def hardware_description(threads: int) -> str:
    """This machine in words (CPU, cores, ISA flags, architecture) with the latency engine's fingerprint id."""
    from kdnas.latency import fingerprint

    fp = fingerprint(threads)
    isa = "/".join(fp.isa) or "no flags"
    return f"{fp.cpu} ({fp.cores} cpus, {isa}, {fp.machine}; fingerprint {fp.id})"
