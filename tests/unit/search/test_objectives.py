"""The KD-NAS reward, budgets and Optuna constraint values."""

from __future__ import annotations

import math

import pytest

from kdnas.errors import SearchError
from kdnas.search.objectives import (
    constraint_values,
    kdnas_reward,
    objective_values,
    resolve_budgets,
)


def test_reward_formula():
    # R = exp(-kd) * (lat_s / (beta * lat_t)) ** alpha: KD-NAS's (1 - L) with L = 1 - exp(-kd)
    assert kdnas_reward(0.3, 25.0, 100.0, alpha=-0.5, beta=0.25) == pytest.approx(math.exp(-0.3))  # factor 1
    assert kdnas_reward(0.3, 12.5, 100.0, alpha=-0.5, beta=0.25) == pytest.approx(
        math.exp(-0.3) * math.sqrt(2)
    )
    assert kdnas_reward(0.2, 40.0, 80.0, alpha=-1.0, beta=0.5) == pytest.approx(math.exp(-0.2))
    assert kdnas_reward(0.01, 25.0, 100.0) == pytest.approx(1 - 0.01, rel=1e-3)  # 1 - L for small losses
    assert kdnas_reward(0.1, 10, 100) > kdnas_reward(0.1, 20, 100) > kdnas_reward(0.2, 20, 100)


def test_reward_ranks_large_kd_losses_by_quality_not_speed_alone():
    # the twentieth session's family search: a loss-7.2 student at 2.0 ms outscored the loss-4.5 anchor at
    # 2.8 ms while the old floor max(0.01, .) held both quality factors at 0.01
    anchor, tiny = kdnas_reward(4.55, 2.81, 23.2), kdnas_reward(7.21, 1.99, 23.2)
    assert anchor > 10 * tiny > 0
    # each halving of latency is worth 0.35 of KD loss at alpha -0.5
    assert kdnas_reward(5.0, 5.0, 23.2) == pytest.approx(kdnas_reward(5.0 - 0.5 * math.log(2), 10.0, 23.2))
    with pytest.raises(SearchError, match="KD loss"):
        kdnas_reward(float("nan"), 5.0, 23.2)
    with pytest.raises(SearchError, match="KD loss"):
        kdnas_reward(-0.1, 5.0, 23.2)


def test_reward_rejects_bad_parameters():
    with pytest.raises(SearchError, match="negative"):
        kdnas_reward(0.1, 10, 100, alpha=0.5)
    with pytest.raises(SearchError, match="positive"):
        kdnas_reward(0.1, 0.0, 100)


def test_budgets_from_ms_and_speedups():
    b = resolve_budgets(budgets_ms=[5.0], speedups=[2.0, 10.0], teacher_latency_ms=40.0)
    assert [(x.label, x.latency_ms) for x in b] == [("2x", 20.0), ("5 ms", 5.0), ("10x", 4.0)]
    with pytest.raises(SearchError, match="teacher's latency"):
        resolve_budgets(speedups=[2.0])


def test_objective_and_constraint_values():
    assert objective_values(["kd_loss", "params_m"], kd_loss=0.2, latency_ms=3.0, params_m=9.0) == [0.2, 9.0]
    assert constraint_values(latency_ms=3.0, params_m=9.0, max_latency_ms=2.0, max_params_m=10.0) == {
        "latency_ms": 1.0,
        "params_m": -1.0,
    }
    assert constraint_values(latency_ms=3.0, params_m=9.0, max_latency_ms=None, max_params_m=None) == {}
