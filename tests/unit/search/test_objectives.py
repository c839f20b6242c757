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
    reward_loss,
)


def test_reward_formula():
    # R = max(0.01, 1 - L) * (lat_s / (beta * lat_t)) ** alpha
    assert kdnas_reward(0.3, 25.0, 100.0, alpha=-0.5, beta=0.25) == pytest.approx(
        0.7
    )  # at the target: factor 1
    assert kdnas_reward(0.3, 12.5, 100.0, alpha=-0.5, beta=0.25) == pytest.approx(0.7 * math.sqrt(2))
    assert kdnas_reward(0.2, 40.0, 80.0, alpha=-1.0, beta=0.5) == pytest.approx(0.8)
    assert kdnas_reward(1.7, 25.0, 100.0) == pytest.approx(0.01)  # floor
    assert kdnas_reward(0.1, 10, 100) > kdnas_reward(0.1, 20, 100) > kdnas_reward(0.2, 20, 100)


def test_reward_loss_keeps_large_kd_losses_apart():
    assert reward_loss(0.0) == 0.0
    assert reward_loss(0.01) == pytest.approx(0.01, rel=0.01)  # = the loss for small losses
    good, bad = kdnas_reward(reward_loss(1.6), 5.0, 25.0), kdnas_reward(reward_loss(2.7), 5.0, 25.0)
    assert good > 2.5 * bad > 0.01  # neither hits the floor: quality still counts
    with pytest.raises(SearchError):
        reward_loss(float("nan"))


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
