"""`calibrate`: measure a space-filling design for real, fit a LatencyPredictor, report held-out accuracy, save it.

The saved predictor sits next to the latency cache, keyed by fingerprint + target, so the search finds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdnas.errors import LatencyError
from kdnas.latency.api import CacheArg, load_teacher_config, measure_many, open_cache, shapes_of
from kdnas.latency.config import TargetConfig
from kdnas.latency.predictor import Accuracy, LatencyPredictor, design
from kdnas.latency.result import LatencyResult
from kdnas.latency.spec import ModelSpec, family_key
from kdnas.space.arch import Arch

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    """A fitted predictor and how well it did on archs it was not fitted on."""

    predictor: LatencyPredictor
    """Fitted on every measured arch (train + held-out)."""
    accuracy: Accuracy
    """Of a predictor fitted on the train archs only, on the held-out ones."""
    path: Path | None
    """Where the predictor was saved."""
    train: list[tuple[Arch, LatencyResult]]
    """Measured train archs."""
    test: list[tuple[Arch, LatencyResult]]
    """Measured held-out archs."""
    failed: list[str]
    """Archs that could not be measured, with the reason."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON summary (accuracy, where the predictor is, how many archs)."""
        return {
            "accuracy": self.accuracy.__dict__.copy(),
            "path": str(self.path) if self.path else None,
            "n_train": len(self.train),
            "n_test": len(self.test),
            "failed": list(self.failed),
            "weights": dict(self.predictor.weights),
        }


def predictor_path(teacher_config: Any, target: TargetConfig, cache: CacheArg = None) -> Path:
    from kdnas.latency.api import resolve_backend
    from kdnas.latency.cache import LatencyCache
    from kdnas.latency.fingerprint import fingerprint

    db = open_cache(cache, target) or LatencyCache(target.cache_dir)
    tcfg = load_teacher_config(teacher_config)
    return LatencyPredictor.path_for(
        db.dir,
        fingerprint=fingerprint(target.threads, target.device).id,
        backend=resolve_backend(target.backend, target.device),
        teacher=family_key(tcfg),
        batch_size=target.batch_size,
        seq_len=target.seq_lens[0],
    )


def load_predictor(
    teacher_config: Any, target: TargetConfig, cache: CacheArg = None
) -> LatencyPredictor | None:
    """The calibrated predictor for this teacher family and target on this machine, or None if there is none."""
    p = predictor_path(teacher_config, target, cache)
    return LatencyPredictor.load(p) if p.is_file() else None


def calibrate(
    teacher_config: Any,
    archs: Sequence[Arch] | Callable[[Any], Arch] | Any,
    target: TargetConfig,
    *,
    n: int = 60,
    test_archs: Sequence[Arch] | None = None,
    holdout_fraction: float = 0.33,
    seed: int = 0,
    cache: CacheArg = None,
    save: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Calibration:
    """Measure `n` design archs (from a list, a sampler, a SearchSpace or "default"), fit, report, save.

    Held-out accuracy comes from `test_archs` when given, else from `holdout_fraction` of the design; the saved
    predictor is then refitted on everything measured.
    """
    tcfg = load_teacher_config(teacher_config)
    chosen = design(archs, n, teacher_config=tcfg, seed=seed)
    if test_archs is not None:
        ids = {a.arch_id for a in chosen}
        test = [a for a in test_archs if a.arch_id not in ids]
        train = chosen
    else:
        order = np.random.default_rng(seed).permutation(len(chosen))
        k = max(3, round(len(chosen) * holdout_fraction))
        test = [chosen[i] for i in order[:k]]
        train = [chosen[i] for i in order[k:]]
    if len(train) < 5:
        raise LatencyError(f"calibrate: {len(train)} train archs is too few; use n >= 10")
    everything = train + test
    specs = [ModelSpec.for_arch(tcfg, a) for a in everything]
    shape = shapes_of(target)[0]
    if progress:
        progress(f"calibrate: measuring {len(train)} train + {len(test)} held-out archs at {shape}")
    out = measure_many(specs, target, shapes=[shape], cache=cache, progress=progress)
    measured: list[tuple[Arch, LatencyResult]] = []
    failed: list[str] = []
    for i, a in enumerate(everything):
        r = out[(i, target.backend, shape)]
        if isinstance(r, LatencyResult):
            measured.append((a, r))
        else:
            failed.append(str(r))
    test_ids = {a.arch_id for a in test}
    tr = [(a, r) for a, r in measured if a.arch_id not in test_ids]
    te = [(a, r) for a, r in measured if a.arch_id in test_ids]
    if len(tr) < 5 or not te:
        raise LatencyError(
            f"calibrate: too few archs measured ({len(tr)} train, {len(te)} held-out): "
            + "; ".join(failed[:3])
        )
    meta = {"teacher": family_key(tcfg), "batch_size": shape.batch_size, "seq_len": shape.seq_len}
    held = LatencyPredictor.fit([a for a, _ in tr], [r for _, r in tr], **meta)
    acc = held.evaluate([a for a, _ in te], [r for _, r in te])
    final = LatencyPredictor.fit([a for a, _ in measured], [r for _, r in measured], **meta)
    final.accuracy = acc.__dict__.copy()
    path = None
    if save:
        path = final.save(predictor_path(tcfg, target, cache))
    return Calibration(final, acc, path, tr, te, failed)
