"""What a search produced: per-trial records, the Pareto front (proxy KD loss vs latency), its hypervolume,
Kendall tau between short and long proxies, and a recommended arch per latency budget, as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas.search.objectives import Budget
from kdnas.space.arch import Arch


@dataclass
class TrialRecord:
    """One trial of a search, read back from the study."""

    number: int
    """Optuna trial number."""
    state: str
    """complete, failed, filtered (ruled out before distillation), duplicate (an arch already evaluated) or running."""
    arch: Arch | None = None
    kd_loss_short: float | None = None
    """Proxy KD loss after the short proxy distillation (every evaluated candidate has one)."""
    kd_loss_long: float | None = None
    """Proxy KD loss after the long proxy distillation (promoted candidates only)."""
    latency_ms: float | None = None
    params_m: float | None = None
    reward: float | None = None
    """KD-NAS reward from the short proxy loss."""
    reason: str | None = None
    """Why the trial failed or was filtered."""
    round: int | None = None
    evaluated: bool = False
    """Whether the candidate was distilled (complete, or failed during its evaluation)."""

    @property
    def fidelity(self) -> str | None:
        if self.kd_loss_long is not None:
            return "long"
        return "short" if self.kd_loss_short is not None else None

    @property
    def kd_loss(self) -> float | None:
        """The most trustworthy loss: the long one when there is one."""
        return self.kd_loss_long if self.kd_loss_long is not None else self.kd_loss_short

    def to_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "arch_id": self.arch.arch_id if self.arch else None,
            "arch": self.arch.to_dict() if self.arch else None,
            "kd_loss_short": self.kd_loss_short,
            "kd_loss_long": self.kd_loss_long,
            "fidelity": self.fidelity,
            "latency_ms": self.latency_ms,
            "params_m": self.params_m,
            "reward": self.reward,
            "reason": self.reason,
            "round": self.round,
        }


def pareto_mask(points: np.ndarray) -> np.ndarray:
    """Boolean mask [N] of the non-dominated rows of `points` [N, M] (all objectives minimised).

    Duplicated points are all kept.
    """
    pts = np.asarray(points, dtype=np.float64)
    n = len(pts)
    mask = np.ones(n, dtype=bool)
    for i in range(n):
        dominated = np.all(pts <= pts[i], axis=1) & np.any(pts < pts[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def nondominated_rank(points: np.ndarray) -> np.ndarray:
    """Pareto rank [N] of each row (0: the front; 1: the front once rank 0 is removed; ...)."""
    pts = np.asarray(points, dtype=np.float64)
    rank = np.full(len(pts), -1)
    left = np.arange(len(pts))
    r = 0
    while len(left):
        m = pareto_mask(pts[left])
        rank[left[m]] = r
        left = left[~m]
        r += 1
    return rank


def hypervolume_2d(points: np.ndarray, reference: tuple[float, float]) -> float:
    """Area dominated by `points` [N, 2] (both minimised) and bounded by `reference` (points beyond it add 0)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts = pts[(pts[:, 0] < reference[0]) & (pts[:, 1] < reference[1])]
    if not len(pts):
        return 0.0
    pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]  # by first objective, then second
    # sweep along x: between two consecutive points the covered height is set by the lowest y seen so far
    area, best_y = 0.0, reference[1]
    xs = pts[:, 0]
    for i in range(len(pts)):
        best_y = min(best_y, pts[i, 1])
        x_right = xs[i + 1] if i + 1 < len(pts) else reference[0]
        area += (x_right - xs[i]) * (reference[1] - best_y)
    return float(area)


def default_reference(teacher_latency_ms: float, kd_loss_ref: float = 4.0) -> tuple[float, float]:
    """The hypervolume reference point: (proxy KD loss 4.0, the teacher's latency).

    A student counts only if it is faster than the teacher and its proxy loss is below 4.0, so the hypervolume
    is comparable across strategies and seeds on the same teacher and target. kdnas's normalised KD loss is
    variance-normalised hidden MSE plus relation KL in nats: 1.3-2.7 for inherited MiniLM-L6 students after a
    40k-token proxy, with an uninformed student near 3; a reference of 1.0 would make every such front empty.
    """
    return (kd_loss_ref, float(teacher_latency_ms))


def kendall_tau(records: Sequence[TrialRecord]) -> tuple[float | None, int]:
    """Kendall tau between the short and long proxy losses of the promoted candidates, and how many there were.

    None when fewer than 3 candidates have both. Promoted candidates are the best of each round, so this is the
    agreement of the two proxies among good students (the case that matters for picking one).
    """
    pairs = [
        (r.kd_loss_short, r.kd_loss_long)
        for r in records
        if r.state == "complete" and r.kd_loss_short is not None and r.kd_loss_long is not None
    ]
    if len(pairs) < 3:
        return None, len(pairs)
    from scipy.stats import kendalltau

    tau = kendalltau([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return (None if tau is None or math.isnan(tau) else float(tau)), len(pairs)


@dataclass
class Recommendation:
    """The arch recommended for one latency budget (arch None when no evaluated arch meets it)."""

    budget: Budget
    arch: Arch | None
    kd_loss: float | None = None
    fidelity: str | None = None
    latency_ms: float | None = None
    params_m: float | None = None
    trial: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.to_dict(),
            "arch_id": self.arch.arch_id if self.arch else None,
            "arch": self.arch.to_dict() if self.arch else None,
            "kd_loss": self.kd_loss,
            "fidelity": self.fidelity,
            "latency_ms": self.latency_ms,
            "params_m": self.params_m,
            "trial": self.trial,
            "reason": self.reason,
        }


def unique_complete(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """Completed, evaluated records, one per arch (the first evaluation of a repeated arch)."""
    out: dict[str, TrialRecord] = {}
    for r in records:
        if (
            r.state == "complete"
            and r.arch is not None
            and r.kd_loss_short is not None
            and r.latency_ms is not None
        ):
            out.setdefault(r.arch.arch_id, r)
    return list(out.values())


def objective_points(records: Sequence[TrialRecord], objectives: Sequence[str]) -> np.ndarray:
    """[N, M] values of `objectives` (kd_loss = the short proxy loss) of the records; a missing value is inf."""

    def value(r: TrialRecord, o: str) -> float:
        v = {"kd_loss": r.kd_loss_short, "latency_ms": r.latency_ms, "params_m": r.params_m}[o]
        return math.inf if v is None else float(v)

    return np.array([[value(r, o) for o in objectives] for r in records], dtype=np.float64).reshape(
        len(records), len(objectives)
    )


def pareto_records(
    records: Sequence[TrialRecord], objectives: Sequence[str] = ("kd_loss", "latency_ms")
) -> list[TrialRecord]:
    """The Pareto front of the search's objectives (short proxy KD loss, latency and, when it is one, params)
    over the evaluated archs, fastest first.

    The short loss is used because every candidate has it (one fidelity for all points).
    """
    done = unique_complete(records)
    if not done:
        return []
    mask = pareto_mask(objective_points(done, objectives))
    return sorted((r for r, m in zip(done, mask) if m), key=lambda r: (r.latency_ms, r.kd_loss_short))


TOP_K_LONG = 3
"""Recommendations: how many of the best short-proxy candidates a long-proxy result may reorder."""


TIE_RTOL = 1e-6
"""KD losses this close (relative) are equal whatever `tolerance` says: float noise between two students with
the same transformer (e.g. the same arch with a full and a trimmed vocabulary) must not pick the bigger one."""


def _pick(rs: Sequence[TrialRecord], loss: Any, tolerance: float) -> TrialRecord:
    """The record with the lowest `loss(r)`; those within `tolerance` (relative) of it tie, and a tie goes to
    the fewest parameters, then the lowest latency."""
    best = min(loss(r) for r in rs)
    tied = [r for r in rs if loss(r) <= best + max(tolerance, TIE_RTOL) * abs(best)]
    inf = math.inf
    return min(
        tied, key=lambda r: (r.params_m if r.params_m is not None else inf, r.latency_ms or inf, loss(r))
    )


def _why_none(b: Budget, done: Sequence[TrialRecord]) -> str:
    """Why nothing evaluated meets `b`: for a plain budget the fastest arch is too slow; an equal-latency band
    may also be empty because every arch is slower or far faster than the baseline, so name the nearest ones."""
    timed = [(r.latency_ms, r) for r in done if r.latency_ms is not None]
    if not timed:
        return f"no evaluated arch meets {b.label} ({b.latency_ms:.3g} ms): nothing was evaluated"
    if b.min_latency_ms is None:
        return (
            f"no evaluated arch meets {b.label} ({b.latency_ms:.3g} ms): the fastest evaluated arch takes "
            f"{min(lat for lat, _ in timed):.3g} ms"
        )

    def name(lat: float, r: TrialRecord) -> str:
        return f"{r.arch.arch_id if r.arch else r.number} at {lat:.3g} ms"

    under = [(lat, r) for lat, r in timed if lat < b.min_latency_ms]
    over = [(lat, r) for lat, r in timed if lat > b.latency_ms]
    near = [f"the slowest under it {name(*max(under, key=lambda x: x[0]))}"] if under else []
    near += [f"the fastest over it {name(*min(over, key=lambda x: x[0]))}"] if over else []
    return (
        f"no evaluated arch lands in {b.label}'s band ({b.min_latency_ms:.3g}-{b.latency_ms:.3g} ms) or just under "
        f"it: {' and '.join(near)}"
    )


def recommend(
    records: Sequence[TrialRecord],
    budgets: Sequence[Budget],
    *,
    tolerance: float = 0.0,
    empty_band: bool = True,
) -> list[Recommendation]:
    """Per budget, the evaluated arch with the lowest KD loss that meets it.

    Every candidate is ranked by its short-proxy loss (the one fidelity they all have: a long-proxy loss is
    lower simply because it trained longer, so mixing the two favours whatever happened to be promoted). When
    the best few by short loss all have a long-proxy result, the long one breaks the order among them.
    Equal losses (within `tolerance` relative, and always within `TIE_RTOL`) are won by the smaller model:
    fewer parameters, then lower latency (so a trimmed vocabulary wins over the full one at the same loss).

    A band with a floor (an equal-latency budget at a baseline, `min_latency_ms`) keeps out archs far faster
    than the baseline (the short proxy favours shallow archs, so the best loss overall is rarely a fair pick at
    the baseline's latency), but not a dominating one just under it: an arch below the floor by at most the
    band's width, with a lower short-proxy loss than every arch inside the band, is at or under the baseline's
    latency and better by the search's measure, so it is recommended instead, with a reason saying so. A band
    with nothing inside it takes the best arch under it, as a plain budget at the baseline's latency would, with
    a reason saying so (`empty_band=False`: it stays empty, for a caller that goes looking for more archs near the
    band first): a baseline slower than any arch the search can build (BERT-small beside a 6-layer teacher) is
    compared with the best student that is faster than it, rather than with nothing.
    """
    done = unique_complete(records)
    out = []
    for b in budgets:
        ok = [r for r in done if r.latency_ms is not None and b.admits(r.latency_ms)]
        if not ok:
            why = _why_none(b, done)
            if b.min_latency_ms is not None and empty_band:
                (under,) = recommend(done, [dataclasses.replace(b, min_latency_ms=None)], tolerance=tolerance)
                if under.arch is not None:
                    under.budget = b
                    under.reason = f"{why}; the best arch under it instead, as a plain budget at its latency"
                    out.append(under)
                    continue
            out.append(Recommendation(b, None, reason=why))
            continue
        first = _pick(ok, lambda r: r.kd_loss_short, tolerance)
        rest = sorted((r for r in ok if r is not first), key=lambda r: r.kd_loss_short)  # type: ignore[arg-type,return-value]
        top = [first, *rest][:TOP_K_LONG]
        if len(top) > 1 and all(r.kd_loss_long is not None for r in top):
            best = _pick(top, lambda r: r.kd_loss_long, tolerance)
        else:
            best = first
        reason = None
        if b.min_latency_ms is not None and first.kd_loss_short is not None:
            floor = b.min_latency_ms
            lowest = floor - (b.latency_ms - floor)  # just under the floor: by at most the band's width
            faster = [
                r
                for r in done
                if r.latency_ms is not None and lowest <= r.latency_ms < floor and r.kd_loss_short is not None
            ]
            dom = _pick(faster, lambda r: r.kd_loss_short, tolerance) if faster else None
            margin = max(tolerance, TIE_RTOL) * abs(first.kd_loss_short)
            if dom is not None and dom.kd_loss_short < first.kd_loss_short - margin:  # type: ignore[operator]
                reason = (
                    f"{dom.arch.arch_id if dom.arch else dom.number} is faster than {b.label}'s band "
                    f"({dom.latency_ms:.3g} ms < {floor:.3g} ms) with a lower proxy loss than every arch in it "
                    f"({dom.kd_loss_short:.4g} < {first.kd_loss_short:.4g}): it dominates them"
                )
                best = dom
        out.append(
            Recommendation(
                b,
                best.arch,
                kd_loss=best.kd_loss,
                fidelity=best.fidelity,
                latency_ms=best.latency_ms,
                params_m=best.params_m,
                trial=best.number,
                reason=reason,
            )
        )
    return out


@dataclass
class SearchResult:
    """Everything a search produced; `to_dict()` is what goes into search.json and the study's user attrs."""

    study_name: str
    storage: str
    strategy: str
    records: list[TrialRecord]
    pareto: list[TrialRecord]
    hypervolume: float
    reference: tuple[float, float]
    recommendations: list[Recommendation]
    kendall_tau: float | None
    n_promoted: int
    teacher_latency_ms: float
    stopped_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.records)

    @property
    def n_evaluated(self) -> int:
        """Candidates that were distilled (completed or failed); filtered and duplicate trials cost nothing."""
        return sum(r.evaluated for r in self.records)

    def to_dict(self) -> dict[str, Any]:
        return {
            "study_name": self.study_name,
            "storage": self.storage,
            "strategy": self.strategy,
            "teacher_latency_ms": self.teacher_latency_ms,
            "counts": {s: self.count(s) for s in ("complete", "failed", "filtered", "duplicate", "running")},
            "pareto": [r.to_dict() for r in self.pareto],
            "hypervolume": self.hypervolume,
            "hypervolume_reference": {"kd_loss": self.reference[0], "latency_ms": self.reference[1]},
            "kendall_tau_short_long": self.kendall_tau,
            "n_promoted": self.n_promoted,
            "recommendations": [r.to_dict() for r in self.recommendations],
            "stopped_reason": self.stopped_reason,
            "trials": [r.to_dict() for r in self.records],
            **self.extra,
        }

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_json_default) + "\n")
        tmp.replace(path)
        return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
