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


def test_sentence_dense_fitted_on_tokens_is_the_naive_least_squares_map() -> None:
    import numpy as np

    from kdnas.distill import fit_projections
    from kdnas.distill.distiller import Distiller
    from kdnas.distill.teacher_cache import ephemeral_teacher, teacher_info

    t = tiny_teacher("bert", num_layers=2)
    s = build_student(t.config, Arch(num_layers=1, hidden_size=16, num_heads=2, ffn_size=32), seed=0).eval()
    cfg = DistillConfig(losses={"hidden": 1.0, "sentence": 1.0}, pooling="mean", mapping="uniform")
    d = Distiller(s, teacher_info(t), cfg, pooling=None)
    assert set(d.proj) == {"hidden_1", "sentence"}
    batch = tiny_batch(12, 12, seed=5)
    handle = ephemeral_teacher(t, batch, d.needs(), batch_size=5)
    fit_projections(d, handle, 5, rows=torch.arange(1, 12), sentence_from_tokens=True)

    ids, mask = batch["input_ids"][1:], batch["attention_mask"][1:].bool()
    with torch.no_grad():
        xs = s(input_ids=ids, attention_mask=mask.long()).last_hidden_state[mask].double().numpy()
        ys = t(input_ids=ids, attention_mask=mask.long()).last_hidden_state[mask].double().numpy()
    x1 = np.hstack([xs, np.ones((len(xs), 1))])
    ref, *_ = np.linalg.lstsq(x1, ys, rcond=None)  # [Hs + 1, Ht]
    # LayerNorm outputs make the columns nearly collinear with the bias, so the weights are not unique (and the
    # small ridge moves them): compare the squared error of the fit with the optimum's
    with torch.no_grad():
        got = d.proj["sentence"](torch.from_numpy(xs).float()).double().numpy()
    sse, best, mean = ((got - ys) ** 2).sum(), ((x1 @ ref - ys) ** 2).sum(), ((ys - ys.mean(0)) ** 2).sum()
    assert best <= sse <= 1.01 * best and sse < 0.8 * mean
    assert not s.training  # left as it was


def test_lstsq_init_starts_a_narrow_student_closer_to_the_teacher() -> None:
    t = tiny_teacher("bert", num_layers=4)
    arch = Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)
    data = tiny_batch(64, 12, seed=2)
    first = {}
    for init in ("random", "lstsq"):
        cfg = DistillConfig(
            batch_size=8,
            losses={"hidden": 1.0, "sentence": 1.0},
            pooling="mean",
            proj_init=init,  # type: ignore[arg-type]
        )
        res = distill(t, build_student(t.config, arch, seed=0), data, cfg, steps=1, progress=False)
        first[init] = res.history[0]
    # the step-1 loss is measured before any update: only the projections' start differs
    assert first["lstsq"]["loss_hidden"] < 0.5 * first["random"]["loss_hidden"]
    assert first["lstsq"]["loss_sentence"] < first["random"]["loss_sentence"]
