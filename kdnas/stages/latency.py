"""The latency stage: the teacher on the target, the latency predictor, the baselines' speed-ups."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.evaluate.config import EvaluateConfig
from kdnas.latency.config import TargetConfig
from kdnas.latency.result import LatencyResult as TimedResult
from kdnas.search.config import SearchConfig
from kdnas.stages.context import RunContext
from kdnas.stages.results import LatencyResult


def latency(
    ctx: RunContext, *, target: TargetConfig, evaluate: EvaluateConfig, search: SearchConfig
) -> LatencyResult:
    """Measure the teacher on the target and calibrate the latency predictor the search filters with."""
    from kdnas.latency import calibrate, load_predictor, measure_teacher

    tcfg = ctx.teacher().config
    readings = [measure_teacher(tcfg, target, cache=False)]
    if target.calibrate_archs > 0:
        cal = calibrate(tcfg, ctx.space(), target, n=target.calibrate_archs, seed=ctx.seed)
        predictor: Any = cal.to_dict() if hasattr(cal, "to_dict") else str(cal)
    else:
        predictor = None if load_predictor(tcfg, target) is None else "cached"
    readings += [measure_teacher(tcfg, target, cache=False) for _ in range(target.teacher_readings - 1)]
    teacher = median_reading(readings)
    if len(readings) > 1:
        ms = [r.median_ms for r in readings]
        spread = max(ms) / min(ms) - 1
        note = f"; they differ by {spread:.0%}" if spread > 0.1 else ""
        listed = ", ".join(f"{m:.1f}" for m in ms)
        ctx.say(
            f"  teacher: {teacher.median_ms:.1f} ms, the median of {len(ms)} readings in fresh workers ({listed} ms{note})"
        )
    baselines = None
    if evaluate.baselines and search.baseline_budgets:
        baselines = baseline_speedups(ctx, target=target, family=evaluate.baseline_family)
    out = LatencyResult(
        teacher=teacher.to_dict(),
        teacher_latency_ms=teacher.median_ms,
        predictor=predictor,
        baselines=baselines,
    )
    write_json_atomic(ctx.path(rd.LATENCY), out.to_dict())
    return out


def median_reading(readings: Sequence[TimedResult]) -> TimedResult:
    """The reading whose median is the median of the readings (the lower middle one of an even count), with
    every reading's median in its `extra["readings_ms"]`: one slow or fast process does not set the budgets."""
    if not readings:
        raise ValueError("median_reading: no readings")
    ordered = sorted(readings, key=lambda r: r.median_ms)
    chosen = ordered[(len(ordered) - 1) // 2]
    return dataclasses.replace(
        chosen, extra={**chosen.extra, "readings_ms": [round(r.median_ms, 3) for r in readings]}
    )


def baseline_speedups(ctx: RunContext, *, target: TargetConfig, family: bool) -> dict[str, Any]:
    """Each hand-made baseline's speed-up over the teacher, timed side by side in interleaved rounds (a ratio
    within one worker, not two numbers from different processes), with its spread over the rounds."""
    from kdnas.evaluate.baselines import baseline_archs
    from kdnas.latency import ModelSpec, measure_side_by_side

    tcfg = ctx.teacher().config
    archs = baseline_archs(tcfg, family=family)
    specs = [ModelSpec.for_config(tcfg), *(ModelSpec.for_arch(tcfg, a) for a in archs.values())]
    rounds = max(3, target.compare_rounds)
    sbs = measure_side_by_side(specs, target, rounds=rounds, progress=ctx.say)
    out: dict[str, Any] = {}
    for i, name in enumerate(archs, 1):
        lo, hi = sbs.speedup_range[i]
        out[name] = {"speedup": sbs.speedup[i], "speedup_range": [lo, hi], "median_ms": sbs.median_ms[i]}
        ctx.say(f"  baseline {name}: {sbs.speedup[i]:.2f}x the teacher (rounds {lo:.2f}-{hi:.2f}x)")
    out["rounds"] = rounds
    return out
