"""Held-out KD loss: least-squares projections (for kdnas's terms and a registered one), trained projections,
normalisation."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from kdnas.distill import DistillConfig, distill, heldout_kd_loss
from kdnas.distill import losses as L
from kdnas.distill.distiller import Distiller
from kdnas.distill.terms import LOSS_TERMS, LossTerm, Needs, StepView, register_loss
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


class _LastLayer(LossTerm):
    """A term registered outside kdnas: its own projection of the student's last layer to the teacher's."""

    name = "test_last_layer"

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=frozenset({d.teacher.num_layers}))

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        return {self.name: nn.Linear(hs, ht)}

    def _target(self, v: StepView) -> torch.Tensor:
        return v.teacher_out[f"hidden.{v.distiller.teacher.num_layers}"]

    def __call__(self, v: StepView) -> torch.Tensor:
        pred = v.distiller.proj[self.name](v.hidden[-1])
        return L.hidden_mse(pred, self._target(v), v.mask, variance=1.0)

    def fit_pairs(
        self, v: StepView, *, per_token: bool = False
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        m = v.mask.bool()
        return {self.name: (v.hidden[-1][m], self._target(v)[m])}


class _NoFit(_LastLayer):
    name = "test_no_fit"

    def fit_pairs(
        self, v: StepView, *, per_token: bool = False
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return LossTerm.fit_pairs(self, v, per_token=per_token)  # the contract's default: keep the init


class _WrongName(_LastLayer):
    name = "test_wrong_name"

    def fit_pairs(
        self, v: StepView, *, per_token: bool = False
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        return {"hidden_1": super().fit_pairs(v)[self.name]}  # not its own projection here


@pytest.fixture
def registered() -> Iterator[None]:
    terms = [_LastLayer(), _NoFit(), _WrongName()]
    for term in terms:
        register_loss(term)
    yield
    for term in terms:
        LOSS_TERMS.pop(term.name)


def test_a_registered_term_gets_the_least_squares_start_through_its_fit_pairs(registered: None) -> None:
    import numpy as np

    from kdnas.distill import fit_projections
    from kdnas.distill.teacher_cache import ephemeral_teacher, teacher_info

    t = tiny_teacher("bert", num_layers=2)
    s = build_student(t.config, Arch(num_layers=1, hidden_size=16, num_heads=2, ffn_size=32), seed=0).eval()
    cfg = DistillConfig(losses={"test_last_layer": 1.0, "test_no_fit": 1.0})
    d = Distiller(s, teacher_info(t), cfg)
    assert set(d.proj) == {"test_last_layer", "test_no_fit"}
    kept = copy.deepcopy(d.proj["test_no_fit"].state_dict())
    batch = tiny_batch(12, 12, seed=5)
    handle = ephemeral_teacher(t, batch, d.needs(), batch_size=5)
    fit_projections(d, handle, 5)

    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    with torch.no_grad():
        xs = s(input_ids=ids, attention_mask=mask.long()).last_hidden_state[mask].double().numpy()
        ys = t(input_ids=ids, attention_mask=mask.long()).last_hidden_state[mask].double().numpy()
        got = d.proj["test_last_layer"](torch.from_numpy(xs).float()).double().numpy()
    x1 = np.hstack([xs, np.ones((len(xs), 1))])
    ref, *_ = np.linalg.lstsq(x1, ys, rcond=None)
    sse, best = ((got - ys) ** 2).sum(), ((x1 @ ref - ys) ** 2).sum()
    assert best <= sse <= 1.01 * best
    after = d.proj["test_no_fit"].state_dict()
    assert all(torch.equal(kept[k], after[k]) for k in kept)  # no fit pairs: nn.Linear's init stays

    bad = Distiller(s, teacher_info(t), DistillConfig(losses={"test_wrong_name": 1.0}))
    with pytest.raises(DistillError, match=r"'test_wrong_name'.*'hidden_1'"):
        fit_projections(bad, ephemeral_teacher(t, batch, bad.needs(), batch_size=5), 5)


def test_read_outs_scored_together_are_those_scored_one_at_a_time() -> None:
    """The search's geomean read-out scores the trained and the fitted projections of one student: together
    they share one student pass over the held-out rows (2 passes, not 3) and give the same losses and components
    as one read-out at a time, the sentence term (which memoises embeddings per view) included."""
    from kdnas.distill import heldout_kd_losses
    from kdnas.distill.teacher_cache import base_encoder

    t = tiny_teacher("bert", num_layers=4)
    s = build_student(t.config, Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32), seed=0)
    cfg = DistillConfig(
        batch_size=8,
        losses={"hidden": 1.0, "relation": 1.0, "sentence": 1.0},
        relation_heads=4,
        pooling="mean",
    )
    res = distill(t, s, tiny_batch(40, 12), cfg, steps=10, progress=False)
    calls = []
    hook = base_encoder(s).register_forward_hook(lambda *_: calls.append(1))
    try:
        one: dict[str, dict[str, float]] = {"trained": {}, "fitted": {}}
        trained = heldout_kd_loss(t, s, HELDOUT, cfg, projections=res.distiller, components=one["trained"])
        fitted = heldout_kd_loss(t, s, HELDOUT, cfg, components=one["fitted"])
        apart = len(calls)
        calls.clear()
        both: dict[str, dict[str, float]] = {}
        got = heldout_kd_losses(
            t, s, HELDOUT, cfg, readouts={"trained": res.distiller, "fitted": None}, components=both
        )
    finally:
        hook.remove()
    batches = -(-len(HELDOUT["input_ids"]) // cfg.batch_size)
    assert apart == 3 * batches and len(calls) == 2 * batches
    assert got == {"trained": pytest.approx(trained, rel=1e-6), "fitted": pytest.approx(fitted, rel=1e-6)}
    assert trained != pytest.approx(fitted, rel=1e-3)
    assert set(both) == {"trained", "fitted"} and set(both["fitted"]) == {"hidden", "relation", "sentence"}
    for name in both:
        assert both[name] == {k: pytest.approx(v, rel=1e-6) for k, v in one[name].items()}
    with pytest.raises(DistillError, match="no read-out"):
        heldout_kd_losses(t, s, HELDOUT, cfg, readouts={})
