"""What a search optimises: the objectives (proxy KD loss, latency, params), the KD-NAS scalar reward, latency
budgets (in ms or as speed-up over the teacher) and the constraints the samplers see.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kdnas.errors import SearchError

OBJECTIVES: dict[str, str] = {
    "kd_loss": "held-out proxy KD loss (normalised; lower is better)",
    "latency_ms": "median latency on the target (ms)",
    "params_m": "parameters (millions, embeddings included)",
}


def kdnas_reward(
    kd_loss: float, latency_ms: float, teacher_latency_ms: float, *, alpha: float = -0.5, beta: float = 0.25
) -> float:
    """KD-NAS reward `R = (1 - L) * (lat_student / (beta * lat_teacher)) ** alpha` with `L = 1 - exp(-kd_loss)`,
    that is `R = exp(-kd_loss) * (lat_student / (beta * lat_teacher)) ** alpha`.

    KD-NAS defines L as a normalised loss below 1 (0: the student reproduces the teacher); kdnas's held-out KD
    loss (variance-normalised hidden MSE plus relation KL in nats, plus the sentence terms) is routinely above 1,
    so it is mapped by `1 - exp(-loss)`, which equals the loss to first order for small losses. The quality
    factor `exp(-kd_loss)` is positive for every loss and needs no floor: the `max(0.01, 1 - L)` floor kdnas had
    until the twenty-first session held every loss above 4.6 at 0.01, so at the fast end latency alone ranked
    the students and a loss-7.2 student outscored a loss-4.5 one (docs/search.md#kd-nas-reward).

    `beta` is the latency target as a fraction of the teacher's (0.25: 4x faster); at exactly that latency the
    latency factor is 1. `alpha` < 0 trades accuracy for speed: each halving of latency multiplies R by
    2**-alpha (alpha=-0.5: x1.41, worth 0.35 of KD loss).
    """
    if alpha >= 0:
        raise SearchError(f"reward alpha {alpha} must be negative (faster students score higher)")
    if beta <= 0 or teacher_latency_ms <= 0 or latency_ms <= 0:
        raise SearchError(
            f"reward needs positive beta and latencies (beta={beta}, student {latency_ms} ms, teacher {teacher_latency_ms} ms)"
        )
    if not math.isfinite(kd_loss) or kd_loss < 0:
        raise SearchError(f"KD loss {kd_loss} must be finite and >= 0")
    return math.exp(-kd_loss) * (latency_ms / (beta * teacher_latency_ms)) ** alpha


@dataclass(frozen=True)
class Budget:
    """A latency budget: a student is recommended for each."""

    latency_ms: float
    """The budget in ms on the target."""
    label: str
    """How the user gave it: `12 ms` or `7x` (speed-up over the teacher)."""
    speedup: float | None = None
    """The speed-up over the teacher, when the budget was given as one."""
    min_latency_ms: float | None = None
    """An equal-latency budget (at a hand-made baseline's latency): only archs at least this slow are
    recommended for it, so the comparison with the baseline is at the same latency, not at any lower one."""
    reference: str | None = None
    """An equal-latency budget: the arch_id of the baseline it is at, when the baseline is an arch of the
    teacher's family. `search.anchors` predicts its latency with the search's own predictor and anchors the
    band relative to it, so the band's anchors do not depend on how the predictor's units compare with the
    side-by-side timing the band comes from."""

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.latency_ms, "label": self.label, "speedup": self.speedup,
                "min_latency_ms": self.min_latency_ms,
                **({"reference": self.reference} if self.reference else {})}  # fmt: skip

    def admits(self, latency_ms: float) -> bool:
        return latency_ms <= self.latency_ms and (
            self.min_latency_ms is None or latency_ms >= self.min_latency_ms
        )


def resolve_budgets(
    *,
    budgets_ms: Sequence[float] = (),
    speedups: Sequence[float] = (),
    teacher_latency_ms: float | None = None,
) -> list[Budget]:
    """Budgets in ms plus speed-ups over the teacher (`7.0`: at least 7x faster), tightest last."""
    out = [Budget(float(b), f"{b:g} ms") for b in budgets_ms]
    if speedups:
        if not teacher_latency_ms or teacher_latency_ms <= 0:
            raise SearchError("speed-up budgets need the teacher's latency on the target; measure it first")
        out += [Budget(teacher_latency_ms / s, f"{s:g}x", speedup=float(s)) for s in speedups]
    for b in out:
        if not b.latency_ms > 0 or not math.isfinite(b.latency_ms):
            raise SearchError(f"latency budget {b.label} must be a positive number of ms")
    return sorted(out, key=lambda b: -b.latency_ms)


def equal_latency_budgets(
    speedups: dict[str, float],
    teacher_latency_ms: float,
    *,
    tolerance: float = 0.05,
    references: dict[str, str] | None = None,
) -> list[Budget]:
    """One budget per hand-made baseline at its latency: `speedups` is name -> the baseline's speed-up over
    the teacher measured side by side (a ratio, so it carries over to the search's own teacher latency);
    an arch within `tolerance` of that latency is recommended for it. `references`: name -> the baseline's
    arch_id (`Budget.reference`)."""
    out = []
    for name, s in speedups.items():
        if not s > 0 or not math.isfinite(s):
            raise SearchError(f"baseline {name}: speed-up {s} must be a positive number")
        ms = teacher_latency_ms / s
        out.append(
            Budget(
                ms * (1 + tolerance),
                f"={name}",
                speedup=float(s),
                min_latency_ms=ms * (1 - tolerance),
                reference=(references or {}).get(name),
            )
        )
    return out


def check_objectives(objectives: Sequence[str]) -> list[str]:
    """Problems with a list of objective names (empty when fine)."""
    out = [
        f"objectives: {o!r} is not one of {', '.join(OBJECTIVES)}" for o in objectives if o not in OBJECTIVES
    ]
    if "kd_loss" not in objectives:
        out.append("objectives: must include kd_loss (the search is for accurate students)")
    if len(set(objectives)) != len(objectives):
        out.append("objectives: listed twice")
    return out


def objective_values(
    objectives: Sequence[str], *, kd_loss: float, latency_ms: float, params_m: float
) -> list[float]:
    """The values told to Optuna for these objectives (all minimised)."""
    vals = {"kd_loss": kd_loss, "latency_ms": latency_ms, "params_m": params_m}
    return [float(vals[o]) for o in objectives]


def constraint_values(
    *, latency_ms: float, params_m: float, max_latency_ms: float | None, max_params_m: float | None
) -> dict[str, float]:
    """Optuna constraint values (feasible when <= 0), one per active cap: for `trial.set_constraint`."""
    out = {}
    if max_latency_ms is not None:
        out["latency_ms"] = latency_ms - max_latency_ms
    if max_params_m is not None:
        out["params_m"] = params_m - max_params_m
    return out
