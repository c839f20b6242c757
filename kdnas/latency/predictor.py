"""Latency predictor: a per-layer additive model fitted on cost features of real measurements, and calibration.

latency ≈ c0 + L·(c_layer + Σ_k w_k·feature_k per layer) — non-negative weights fitted on relative error, so
each term is a cost the hardware pays (a GEMM rate, a bandwidth, a per-op overhead), and it extrapolates sanely.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas.errors import LatencyError
from kdnas.latency.features import FEATURES, arch_features
from kdnas.latency.result import LatencyResult
from kdnas.space.arch import Arch

log = logging.getLogger(__name__)


@dataclass
class Accuracy:
    """How well predictions match held-out measurements."""

    n: int
    """Held-out archs."""
    within_10pct: float
    """Share predicted within +-10% of measured."""
    spearman: float
    """Spearman rank correlation of predicted vs measured."""
    mape: float
    """Mean absolute percentage error (0.05 = 5%)."""

    def describe(self) -> str:
        return (
            f"{self.n} held-out archs: {self.within_10pct:.0%} within ±10%, Spearman ρ {self.spearman:.3f}, "
            f"MAPE {self.mape:.1%}"
        )


def accuracy(predicted_ms: Sequence[float], measured_ms: Sequence[float]) -> Accuracy:
    from scipy.stats import spearmanr

    p, m = np.asarray(predicted_ms, float), np.asarray(measured_ms, float)
    rel = np.abs(p - m) / m
    rho = float(spearmanr(p, m).statistic) if len(p) > 2 else float("nan")
    return Accuracy(
        n=len(p), within_10pct=float(np.mean(rel <= 0.10)), spearman=rho, mape=float(np.mean(rel))
    )


@dataclass
class LatencyPredictor:
    """Predicts a forward pass's latency for an arch on one target (fingerprint, backend, shape)."""

    weights: dict[str, float]
    """Non-negative weight per feature (ms per unit of FEATURES)."""
    batch_size: int
    """Default batch size for predict_ms."""
    seq_len: int
    """Default sequence length for predict_ms."""
    backend: str = ""
    """Backend the measurements came from."""
    fingerprint: str = ""
    """Hardware fingerprint id of the measurements."""
    teacher: str = ""
    """Teacher family key (model type, vocabulary, positions)."""
    n_train: int = 0
    """Measurements fitted on."""
    accuracy: dict[str, Any] = field(default_factory=dict)
    """Held-out accuracy at calibration (Accuracy as a dict)."""

    @classmethod
    def fit(cls, archs: Sequence[Arch], results: Sequence[LatencyResult], **meta: Any) -> LatencyPredictor:
        """Fit on measured archs (each result's own batch and seq_len are used, so shapes may be mixed)."""
        from scipy.optimize import nnls

        if len(archs) != len(results):
            raise LatencyError(f"fit: {len(archs)} archs but {len(results)} results")
        if len(archs) < 3:
            raise LatencyError(f"fit: need at least 3 measured archs, got {len(archs)}")
        X = np.array([_row(a, r.batch_size, r.seq_len) for a, r in zip(archs, results)])
        y = np.array([r.median_ms for r in results])
        scale = X.max(axis=0)
        scale[scale == 0] = 1.0
        # relative least squares: rows divided by the measurement, so a 10% miss costs the same everywhere
        w, _ = nnls((X / scale) / y[:, None], np.ones(len(y)))
        weights = {k: float(v / s) for k, v, s in zip(FEATURES, w, scale)}
        meta.setdefault("batch_size", results[0].batch_size)
        meta.setdefault("seq_len", results[0].seq_len)
        meta.setdefault("backend", results[0].backend)
        meta.setdefault("fingerprint", results[0].fingerprint)
        return cls(weights=weights, n_train=len(archs), **meta)

    def predict_ms(self, arch: Arch, *, batch_size: int | None = None, seq_len: int | None = None) -> float:
        row = _row(arch, batch_size or self.batch_size, seq_len or self.seq_len)
        return float(sum(self.weights.get(k, 0.0) * v for k, v in zip(FEATURES, row)))

    def predict_many(self, archs: Sequence[Arch], **kw: Any) -> list[float]:
        return [self.predict_ms(a, **kw) for a in archs]

    def evaluate(self, archs: Sequence[Arch], results: Sequence[LatencyResult]) -> Accuracy:
        pred = [
            self.predict_ms(a, batch_size=r.batch_size, seq_len=r.seq_len) for a, r in zip(archs, results)
        ]
        return accuracy(pred, [r.median_ms for r in results])

    # persistence ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "features": list(FEATURES), **self.__dict__}

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        tmp.replace(p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> LatencyPredictor:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise LatencyError(
                f"cannot read latency predictor {p}: {e}; run `kdnas latency calibrate`"
            ) from e
        if d.pop("version", None) != 1 or d.pop("features", None) != list(FEATURES):
            raise LatencyError(f"{p} was saved by another kdnas version; run `kdnas latency calibrate` again")
        return cls(**d)

    @staticmethod
    def path_for(
        cache_dir: str | Path, *, fingerprint: str, backend: str, teacher: str, batch_size: int, seq_len: int
    ) -> Path:
        """Where the predictor for this target lives (next to the latency cache)."""
        return (
            Path(cache_dir)
            / "predictors"
            / f"{fingerprint}-{backend}-b{batch_size}-s{seq_len}-{teacher}.json"
        )


def _row(arch: Arch, batch_size: int, seq_len: int) -> list[float]:
    f = arch_features(arch, batch_size=batch_size, seq_len=seq_len)
    return [f[k] for k in FEATURES]


# --------------------------------------------------------------------------------------------------------------
# space-filling designs


def _coords(arch: Arch) -> list[float]:
    return [arch.num_layers, np.log2(arch.hidden_size), np.log2(arch.num_heads), np.log2(arch.ffn_size)]


def space_filling(candidates: Sequence[Arch], n: int, *, seed: int = 0) -> list[Arch]:
    """`n` archs from `candidates` spread over (layers, log width, log heads, log FFN): greedy maximin."""
    uniq = list({a.arch_id: a for a in candidates}.values())
    if len(uniq) <= n:
        return uniq
    X = np.array([_coords(a) for a in uniq], float)
    span = X.max(axis=0) - X.min(axis=0)
    X = (X - X.min(axis=0)) / np.where(span > 0, span, 1)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(uniq)))]
    dist = np.linalg.norm(X - X[chosen[0]], axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(X - X[nxt], axis=1))
    return [uniq[i] for i in chosen]


def default_archs(teacher_config: Any, n: int, *, seed: int = 0) -> list[Arch]:
    """A Latin-hypercube design over the teacher's dims: layers 1..Lt, width multiples of 64 up to Ht, heads
    with head dim 32..128, FFN 1..4 x width (multiples of 64). Used when no search space is given."""
    from kdnas.models.student import arch_of

    t = arch_of(teacher_config)
    rng = np.random.default_rng(seed)
    m = max(n * 4, 16)
    # one stratum per draw on each axis, strata shuffled independently: a Latin hypercube
    u = (np.stack([rng.permutation(m) for _ in range(4)], axis=1) + rng.random((m, 4))) / m
    out: list[Arch] = []
    widths = list(range(64, max(64, t.hidden_size) + 1, 64))
    for a, b, c, d in u:
        L = 1 + int(a * t.num_layers)
        H = widths[min(len(widths) - 1, int(b * len(widths)))]
        heads = [h for h in range(1, H + 1) if H % h == 0 and 32 <= H // h <= 128] or [max(1, H // 64)]
        A = heads[min(len(heads) - 1, int(c * len(heads)))]
        F = max(64, round((1 + 3 * d) * H / 64) * 64)
        out.append(Arch(L, H, A, F, activation=t.activation))
    return space_filling(out, n, seed=seed)


def design(space: Any, n: int, *, teacher_config: Any = None, seed: int = 0) -> list[Arch]:
    """`n` archs to measure: from a list of archs, a sampler `rng -> Arch`, an object with `sample(rng)`, or
    the string "default" (default_archs over the teacher's dims)."""
    if isinstance(space, str):
        if space != "default":
            raise LatencyError(
                f"space {space!r}: pass a SearchSpace, a sampler, a list of archs or 'default'"
            )
        return default_archs(teacher_config, n, seed=seed)
    if isinstance(space, Sequence):
        return space_filling(list(space), n, seed=seed)
    sampler: Callable[[Any], Arch] = space.sample if hasattr(space, "sample") else space
    rng = np.random.default_rng(seed)
    pool = [sampler(rng) for _ in range(max(20 * n, 200))]
    return space_filling(pool, n, seed=seed)
