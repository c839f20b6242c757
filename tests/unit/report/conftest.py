"""A synthetic search (60 trials with a known front) for the report tests."""

from __future__ import annotations

import random

import pytest

from kdnas.report import RecommendationRow, RefPoint, ReportData, RetentionEntry, TrialRow

# Hand-placed Pareto-optimal trials: (latency_ms, kd_loss); every other complete trial is dominated by one.
FRONT = [(2.0, 0.60), (3.0, 0.42), (4.5, 0.30), (7.0, 0.22), (11.0, 0.15)]


def synthetic_data(seed: int = 0) -> ReportData:
    rng = random.Random(seed)
    trials: list[TrialRow] = []
    for i, (lat, loss) in enumerate(FRONT):
        trials.append(TrialRow(i, "complete", f"L{i + 1}-H128-A4-F512-gelu", lat, loss, params_m=2.0 + i))
    n = len(trials)
    while len(trials) < 50:  # dominated: above-right of some front point
        lat, loss = rng.choice(FRONT)
        trials.append(TrialRow(n, "complete", f"arch-{n}", lat * rng.uniform(1.05, 2.0), loss + rng.uniform(0.02, 0.4),
                               params_m=rng.uniform(1, 20)))  # fmt: skip
        n += 1
    for _ in range(6):
        trials.append(
            TrialRow(n, "filtered", f"arch-{n}", rng.uniform(30, 60), None, reason="over the param budget")
        )
        n += 1
    for _ in range(4):
        trials.append(TrialRow(n, "failed", f"arch-{n}", None, None, reason="RuntimeError: out of memory"))
        n += 1
    recs = [
        RecommendationRow("3x", 12.0, FRONT[4] and "L5-H128-A4-F512-gelu", 11.0, 0.15, 6.0, trial=4),
        RecommendationRow("7x", 5.14, "L3-H128-A4-F512-gelu", 4.5, 0.30, 4.0, trial=2),
    ]
    return ReportData(
        trials=trials,
        teacher=RefPoint("teacher (minilm-l6)", 36.0, 0.0, 22.7, "L6-H384-A12-F1536-gelu"),
        baselines=[RefPoint("every-other-layer", 18.5, 0.19, 15.0), RefPoint("tinybert-4L", 6.1, None, 11.0)],
        budgets_ms=[12.0, 5.14],
        recommendations=recs,
        retention=[
            RetentionEntry(
                "teacher", {"bbc-news": 0.97, "wiki": 0.80}, {"bbc-news": 1.0, "wiki": 1.0}, 1.0, 36.0, 1.0
            ),
            RetentionEntry(
                "student-7x",
                {"bbc-news": 0.95, "wiki": 0.74},
                {"bbc-news": 0.979, "wiki": 0.925},
                0.952,
                4.5,
                8.0,
            ),
        ],
        tasks=["bbc-news", "wiki"],
        title="kdnas run synthetic",
        meta={"strategy": "kdnas", "hypervolume": 21.5},
    )


@pytest.fixture
def report_data() -> ReportData:
    return synthetic_data()
