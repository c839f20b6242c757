"""Order-statistic CI of the median and the adaptive timing loop."""

from __future__ import annotations

import itertools

import numpy as np

from kdnas.latency.stats import TimingSettings, median_ci_ranks, median_ci_rel, summarize, time_loop


def test_ci_ranks_need_six_samples_and_cover_95_percent():
    assert median_ci_ranks(5) is None
    assert median_ci_ranks(6) == (0, 5)
    rng = np.random.default_rng(0)
    for n in (10, 41, 400):
        lo, hi = median_ci_ranks(n)
        hits = 0
        for _ in range(2000):
            x = np.sort(rng.exponential(size=n))  # true median ln 2
            hits += x[lo] <= np.log(2) <= x[hi]
        assert 0.935 <= hits / 2000 <= 0.995, (n, hits)


def test_ci_rel_shrinks_with_more_samples():
    rng = np.random.default_rng(1)
    small = median_ci_rel(10 + rng.normal(size=20))
    big = median_ci_rel(10 + rng.normal(size=2000))
    assert small is not None and big is not None and big < small


def test_time_loop_stops_when_ci_is_narrow():
    samples, warm = time_loop(
        lambda: 5.0, TimingSettings(warmup_s=0, min_repeats=10, rel_ci=0.03, max_time_s=60)
    )
    assert warm == 2 and len(samples) == 10


def test_time_loop_stops_at_the_time_cap_when_noisy():
    noisy = itertools.cycle([1.0, 10.0, 3.0, 30.0, 0.5])
    s = TimingSettings(warmup_s=0, min_repeats=5, rel_ci=0.001, max_time_s=0.05)
    samples, _ = time_loop(lambda: next(noisy), s)
    assert 3 <= len(samples) < s.max_repeats


def test_summarize():
    s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["median_ms"] == 3.0 and s["min_ms"] == 1.0 and s["repeats"] == 5 and s["ci_rel"] is None
    assert s["p90_ms"] > s["median_ms"] and s["iqr_ms"] == 2.0
