"""Placing the search's candidates in their budgets by speed-ups timed side by side, not by single numbers.

The search times each candidate once, in its own worker, minutes apart from the teacher; on a shared machine
that number moves by 10-20% with whatever else runs (one headline student was timed at 13.8 ms while another
job ran, and at 8.1 ms beside the teacher). A budget given as a speed-up, or an equal-latency band around a
hand-made baseline, is a ratio, so the recommendation for it is made from ratios: the few best candidates
near each budget are timed again together with the teacher (and the baselines of equal-latency budgets) in
the same workers, rounds alternating the order, and each candidate's latency becomes
`teacher_latency_ms / speed-up`. The bands are re-centred on the baselines' speed-ups from the same rounds.

`place()` is pure (the timing is a callable), so it is tested without timing anything.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdnas.search.objectives import Budget
from kdnas.search.results import Recommendation, TrialRecord, recommend, unique_complete
from kdnas.space.arch import Arch


@dataclass
class Timed:
    """Speed-ups over the teacher measured side by side: per arch_id and per baseline name, with the
    coefficient of variation of each ratio over the rounds."""

    speedup: dict[str, float]
    baseline_speedup: dict[str, float] = field(default_factory=dict)
    cv: dict[str, float] = field(default_factory=dict)
    rounds: int = 0


Measure = Callable[[list[Arch], list[str]], Timed]
"""(candidate archs, baseline names) -> their side-by-side speed-ups."""


def baseline_of(budget: Budget) -> str | None:
    """The baseline an equal-latency budget (label `=name`) is at, else None."""
    return budget.label[1:] if budget.label.startswith("=") else None


def candidates(
    records: Sequence[TrialRecord], budgets: Sequence[Budget], *, per_budget: int, margin: float
) -> dict[str, list[TrialRecord]]:
    """Per budget label, the `per_budget` candidates with the lowest short-proxy loss whose single-process
    latency lies within the budget widened by `margin` (relative) on each side: those the side-by-side
    timing may move into it."""
    done = unique_complete(records)
    out: dict[str, list[TrialRecord]] = {}
    for b in budgets:
        hi = b.latency_ms * (1 + margin)
        lo = (b.min_latency_ms or 0.0) * (1 - margin)
        near = [r for r in done if r.latency_ms is not None and lo <= r.latency_ms <= hi]
        near.sort(key=lambda r: r.kd_loss_short if r.kd_loss_short is not None else math.inf)
        out[b.label] = near[:per_budget]
    return out


def place(
    records: Sequence[TrialRecord],
    budgets: Sequence[Budget],
    measure: Measure,
    *,
    teacher_latency_ms: float,
    per_budget: int = 4,
    margin: float = 0.25,
    tolerance: float = 0.0,
    band: float = 0.05,
) -> tuple[list[Recommendation], dict[str, Any]]:
    """Recommendations per budget from side-by-side speed-ups; returns them and a placement record (per budget:
    the candidates, their search and side-by-side latencies, the spread of each ratio, the choice)."""
    near = candidates(records, budgets, per_budget=per_budget, margin=margin)
    pool: dict[str, TrialRecord] = {}
    for rs in near.values():
        for r in rs:
            assert r.arch is not None  # unique_complete keeps records with an arch
            pool.setdefault(r.arch.arch_id, r)
    names = sorted({n for b in budgets if (n := baseline_of(b)) is not None})
    timed = measure([r.arch for r in pool.values() if r.arch is not None], names)
    placed_budgets = []
    for b in budgets:
        name = baseline_of(b)
        s = timed.baseline_speedup.get(name) if name else None
        if s:  # the band around the baseline's speed-up from the same rounds
            ms = teacher_latency_ms / s
            b = dataclasses.replace(b, latency_ms=ms * (1 + band), min_latency_ms=ms * (1 - band), speedup=s)
        placed_budgets.append(b)
    recs = []
    detail: dict[str, Any] = {"rounds": timed.rounds, "budgets": {}}
    for b in placed_budgets:
        moved = [
            dataclasses.replace(r, latency_ms=teacher_latency_ms / timed.speedup[r.arch.arch_id])
            for r in near[b.label]
            if r.arch is not None and timed.speedup.get(r.arch.arch_id, 0) > 0
        ]
        (rec,) = recommend(moved, [b], tolerance=tolerance)
        if rec.arch is None:
            rec.reason = (
                f"none of the {len(near[b.label])} candidates near {b.label} meets it when timed side by side "
                "with the teacher" + (f" ({rec.reason})" if rec.reason else "")
            )
        recs.append(rec)
        detail["budgets"][b.label] = {
            "budget": b.to_dict(),
            "baseline_speedup": timed.baseline_speedup.get(baseline_of(b) or ""),
            "baseline_cv": timed.cv.get(f"={baseline_of(b)}") if baseline_of(b) else None,
            "candidates": [
                {
                    "arch_id": r.arch.arch_id,
                    "trial": r.number,
                    "kd_loss_short": r.kd_loss_short,
                    "search_latency_ms": r.latency_ms,
                    "speedup": timed.speedup.get(r.arch.arch_id),
                    "latency_ms": (
                        teacher_latency_ms / timed.speedup[r.arch.arch_id]
                        if timed.speedup.get(r.arch.arch_id)
                        else None
                    ),
                    "cv": timed.cv.get(r.arch.arch_id),
                }
                for r in near[b.label]
                if r.arch is not None
            ],
            "chosen": rec.arch.arch_id if rec.arch else None,
        }
    return recs, detail
