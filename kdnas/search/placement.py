"""Placing the search's candidates in their budgets by speed-ups timed side by side, not by single numbers.

The search times each candidate once, in its own worker, minutes apart from the teacher; on a shared machine
that number moves by 10-20% with whatever else runs (one headline student was timed at 13.8 ms while another
job ran, and at 8.1 ms beside the teacher). A budget given as a speed-up, or an equal-latency band around a
hand-made baseline, is a ratio, so the recommendation for it is made from ratios: the few best candidates
near each budget are timed again together with the teacher (and the baselines of equal-latency budgets) in
the same workers, rounds alternating the order, and each candidate's latency becomes
`teacher_latency_ms / speed-up`. The bands are re-centred on the baselines' speed-ups from the same rounds.
A budget left empty gets a second pass with the search's numbers corrected by the bias the first one measured.

`place()` is pure (the timing is a callable), so it is tested without timing anything.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
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
    the candidates, their search and side-by-side latencies, the spread of each ratio, the choice).

    A second pass serves the budgets nothing met side by side: the search's single numbers can be off by more
    than `margin` (a headline run's were 30-60% slower than beside the teacher), which keeps the archs that
    are really at a band out of its candidates. The first pass measures how far off they were (the median of
    side-by-side / search latency over the archs it timed); the other archs' search latencies are corrected by
    that factor, and those then near an empty budget are timed side by side in their turn.
    """
    near = candidates(records, budgets, per_budget=per_budget, margin=margin)
    timed = _measure_near(near, budgets, measure)
    placed = [_recentre(b, timed, teacher_latency_ms, band) for b in budgets]
    speedups, cvs, base = dict(timed.speedup), dict(timed.cv), dict(timed.baseline_speedup)
    # every arch timed side by side is a candidate for every budget: the search's own numbers chose which to
    # time, but once timed an arch may land in another budget than the one it was timed for
    recs = [_choose(b, _pooled(near), speedups, teacher_latency_ms, tolerance) for b in placed]
    detail: dict[str, Any] = {"rounds": timed.rounds, "budgets": {}}
    empty = [i for i, r in enumerate(recs) if r.arch is None]
    factor = _search_bias(near, speedups, teacher_latency_ms)
    if empty and factor is not None:
        done = {r.arch.arch_id for rs in near.values() for r in rs if r.arch is not None}
        rest = [
            dataclasses.replace(r, latency_ms=r.latency_ms * factor)
            for r in unique_complete(records)
            if r.arch is not None and r.arch.arch_id not in done and r.latency_ms is not None
        ]
        again = [budgets[i] for i in empty]
        near2 = candidates(rest, again, per_budget=per_budget, margin=margin)
        if any(near2.values()):
            timed2 = _measure_near(near2, again, measure)
            speedups.update(timed2.speedup)
            cvs.update(timed2.cv)
            base.update(timed2.baseline_speedup)
            for i, b in zip(empty, again, strict=True):
                placed[i] = _recentre(b, timed2, teacher_latency_ms, band)
                near[b.label] = near[b.label] + near2[b.label]
                recs[i] = _choose(placed[i], _pooled(near), speedups, teacher_latency_ms, tolerance)
            detail["second_pass"] = {
                "search_latency_factor": round(factor, 4),
                "budgets": [b.label for b in again],
                "timed": sorted({r.arch.arch_id for rs in near2.values() for r in rs if r.arch is not None}),
                "rounds": timed2.rounds,
            }
    for i, b in enumerate(placed):  # a band still empty: the best arch timed under it (`recommend`)
        if recs[i].arch is None and b.min_latency_ms is not None:
            recs[i] = _choose(b, _pooled(near), speedups, teacher_latency_ms, tolerance, empty_band=True)
    for b, rec in zip(placed, recs, strict=True):
        if rec.arch is None:
            rec.reason = (
                f"none of the {len(near[b.label])} candidates near {b.label} meets it when timed side by side "
                "with the teacher" + (f" ({rec.reason})" if rec.reason else "")
            )
        name = baseline_of(b)
        detail["budgets"][b.label] = {
            "budget": b.to_dict(),
            "baseline_speedup": base.get(name) if name else None,
            "baseline_cv": cvs.get(f"={name}") if name else None,
            "candidates": [
                {
                    "arch_id": r.arch.arch_id,
                    "trial": r.number,
                    "kd_loss_short": r.kd_loss_short,
                    "search_latency_ms": r.latency_ms,
                    "speedup": speedups.get(r.arch.arch_id),
                    "latency_ms": (
                        teacher_latency_ms / speedups[r.arch.arch_id]
                        if speedups.get(r.arch.arch_id)
                        else None
                    ),
                    "cv": cvs.get(r.arch.arch_id),
                }
                for r in _with_chosen(near[b.label], rec, near)
                if r.arch is not None
            ],
            "chosen": rec.arch.arch_id if rec.arch else None,
        }
    return recs, detail


def _pooled(near: dict[str, list[TrialRecord]]) -> list[TrialRecord]:
    """Every candidate of every budget, once."""
    out: dict[str, TrialRecord] = {}
    for rs in near.values():
        for r in rs:
            if r.arch is not None:
                out.setdefault(r.arch.arch_id, r)
    return list(out.values())


def _with_chosen(
    own: list[TrialRecord], rec: Recommendation, near: dict[str, list[TrialRecord]]
) -> list[TrialRecord]:
    """A budget's own candidates, and its choice when that was timed for another budget."""
    ids = {r.arch.arch_id for r in own if r.arch is not None}
    if rec.arch is None or rec.arch.arch_id in ids:
        return own
    return own + [r for r in _pooled(near) if r.arch is not None and r.arch.arch_id == rec.arch.arch_id]


def _measure_near(near: dict[str, list[TrialRecord]], budgets: Sequence[Budget], measure: Measure) -> Timed:
    """One side-by-side timing of every candidate in `near` and the baselines of the equal-latency budgets."""
    pool: dict[str, Arch] = {}
    for rs in near.values():
        for r in rs:
            if r.arch is not None:
                pool.setdefault(r.arch.arch_id, r.arch)
    names = sorted({n for b in budgets if (n := baseline_of(b)) is not None})
    return measure(list(pool.values()), names)


def _recentre(b: Budget, timed: Timed, teacher_latency_ms: float, band: float) -> Budget:
    """An equal-latency budget re-centred on its baseline's speed-up from the same rounds (+-`band`)."""
    name = baseline_of(b)
    s = timed.baseline_speedup.get(name) if name else None
    if not s:
        return b
    ms = teacher_latency_ms / s
    return dataclasses.replace(b, latency_ms=ms * (1 + band), min_latency_ms=ms * (1 - band), speedup=s)


def _choose(
    b: Budget,
    near: list[TrialRecord],
    speedups: dict[str, float],
    teacher_latency_ms: float,
    tolerance: float,
    empty_band: bool = False,
) -> Recommendation:
    moved = [
        dataclasses.replace(r, latency_ms=teacher_latency_ms / speedups[r.arch.arch_id])
        for r in near
        if r.arch is not None and speedups.get(r.arch.arch_id, 0) > 0
    ]
    (rec,) = recommend(moved, [b], tolerance=tolerance, empty_band=empty_band)
    return rec


def _search_bias(
    near: dict[str, list[TrialRecord]], speedups: dict[str, float], teacher_latency_ms: float
) -> float | None:
    """Median of (side-by-side latency / the search's own latency) over the timed candidates (None: none)."""
    seen: dict[str, float] = {}
    for rs in near.values():
        for r in rs:
            if r.arch is not None and r.latency_ms and speedups.get(r.arch.arch_id):
                seen[r.arch.arch_id] = teacher_latency_ms / speedups[r.arch.arch_id] / r.latency_ms
    return statistics.median(seen.values()) if seen else None
