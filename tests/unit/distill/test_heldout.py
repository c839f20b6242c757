"""Held-out KD loss: least-squares projections, trained projections, normalisation."""

from __future__ import annotations

import copy

import pytest
import torch

from kdnas.distill import DistillConfig, distill, heldout_kd_loss
from kdnas.errors import DistillError
from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_batch, tiny_teacher

HELDOUT = tiny_batch(12, 12, seed=7)


def test_teacher_copy_scores_zero_with_least_squares_projections() -> None:
    t = tiny_teacher("bert", num_layers=2)
    cfg = DistillConfig(
        mapping="uniform", losses={"hidden": 1.0, "relation": 1.0, "attention": 1.0}, relation_heads=4
    )
    comps: dict[str, float] = {}
    loss = heldout_kd_loss(t, copy.deepcopy(t), HELDOUT, cfg, components=comps)
    assert loss == pytest.approx(0.0, abs=1e-3)
    assert set(comps) == {"hidden", "relation", "attention"}


def test_random_student_is_normalised_near_or_below_one() -> None:
    t = tiny_teacher("bert", num_layers=4)
    s = build_student(t.config, Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32), seed=0)
    cfg = DistillConfig(losses={"hidden": 1.0})
    state = torch.get_rng_state()
    loss = heldout_kd_loss(t, s, tiny_batch(40, 12, seed=3), cfg)
    assert 0.05 < loss <= 1.0  # a least-squares fit with bias never does worse than predicting the mean
    assert torch.equal(state, torch.get_rng_state())


def test_trained_projections_are_used_and_must_match() -> None:
    t = tiny_teacher("bert", num_layers=4)
    s = build_student(t.config, Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32), seed=0)
    cfg = DistillConfig(batch_size=8, losses={"hidden": 1.0, "relation": 1.0}, relation_heads=4)
    res = distill(t, s, tiny_batch(40, 12), cfg, steps=10, progress=False)
    trained = heldout_kd_loss(t, s, HELDOUT, cfg, projections=res.distiller)
    fitted = heldout_kd_loss(t, s, HELDOUT, cfg)
    assert trained != fitted and trained > 0 and fitted > 0
    assert not s.training
    other = DistillConfig(losses={"hidden": 1.0, "embedding": 1.0})
    with pytest.raises(DistillError, match="embedding"):
        heldout_kd_loss(t, s, HELDOUT, other, projections=res.distiller)
