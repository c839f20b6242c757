"""Timing statistics: the adaptive repeat loop and the order-statistic confidence interval of the median.

Distribution-free on purpose: forward-pass times are skewed (scheduler hiccups), so no normal assumption.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


def median_ci_ranks(n: int, level: float = 0.95) -> tuple[int, int] | None:
    """0-based ranks (lo, hi) of sorted samples bounding the median with >= `level` coverage; None if n too small.

    Exact binomial(n, 1/2) tails for n <= 300, normal approximation above.
    """
    alpha = (1 - level) / 2
    if n <= 300:
        cdf, r = 0.0, 0
        total = 2.0**n
        while True:  # largest r with P(Bin(n, 1/2) <= r - 1) <= alpha
            p_next = math.comb(n, r) / total
            if cdf + p_next > alpha:
                break
            cdf += p_next
            r += 1
        if r == 0:
            return None
        return r - 1, n - r
    half = 1.959963985 * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half) - 1)
    return lo, n - 1 - lo


def median_ci_rel(samples_ms: list[float] | np.ndarray, level: float = 0.95) -> float | None:
    """Relative width (hi - lo) / median of the CI of the median; None when there are too few samples."""
    x = np.sort(np.asarray(samples_ms, dtype=float))
    ranks = median_ci_ranks(len(x), level)
    if ranks is None:
        return None
    med = float(np.median(x))
    return float((x[ranks[1]] - x[ranks[0]]) / med) if med > 0 else None


@dataclass
class TimingSettings:
    """How long and how often to time a forward pass (from the `target` config section)."""

    warmup_s: float = 0.3
    """Untimed passes for at least this long (and at least 2)."""
    min_repeats: int = 10
    """Timed passes before the stop rule is checked."""
    rel_ci: float = 0.03
    """Stop once the 95% CI of the median is this narrow (relative)."""
    max_time_s: float = 8.0
    """Or once this much time went into timed passes (after at least 3)."""
    max_repeats: int = 100_000
    """Hard cap on timed passes."""


def time_loop(run_once_ms: Callable[[], float], settings: TimingSettings) -> tuple[list[float], int]:
    """Warm up, then time `run_once_ms` (returns one pass's ms) until the stop rule; returns (samples, warmups)."""
    t0 = time.perf_counter()
    warm = 0
    while warm < 2 or (time.perf_counter() - t0 < settings.warmup_s and warm < 1000):
        run_once_ms()
        warm += 1
    samples: list[float] = []
    t1 = time.perf_counter()
    while len(samples) < settings.max_repeats:
        samples.append(float(run_once_ms()))
        n = len(samples)
        elapsed = time.perf_counter() - t1
        if elapsed >= settings.max_time_s and n >= 3:
            break
        # checking costs a sort; past 50 samples every 5th pass is plenty
        if n >= settings.min_repeats and (n < 50 or n % 5 == 0):
            ci = median_ci_rel(samples)
            if ci is not None and ci <= settings.rel_ci:
                break
    return samples, warm


def summarize(samples_ms: list[float]) -> dict[str, float | int | None]:
    """median_ms, p90_ms, iqr_ms, min_ms, repeats, ci_rel of timed samples."""
    x = np.asarray(samples_ms, dtype=float)
    p25, med, p75, p90 = np.percentile(x, [25, 50, 75, 90])
    return {
        "median_ms": float(med),
        "p90_ms": float(p90),
        "iqr_ms": float(p75 - p25),
        "min_ms": float(x.min()),
        "repeats": len(x),
        "ci_rel": median_ci_rel(x),
    }
