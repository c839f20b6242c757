"""LatencyPredictor fit/predict/save/load, designs, and calibrate() end to end on the fake backend."""

from __future__ import annotations

import numpy as np
import pytest

from kdnas.errors import LatencyError
from kdnas.latency.cache import LatencyCache
from kdnas.latency.calibrate import calibrate, load_predictor
from kdnas.latency.config import TargetConfig
from kdnas.latency.predictor import LatencyPredictor, accuracy, default_archs, design, space_filling
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.testing import FakeBackend
from kdnas.space.arch import Arch
from kdnas.testing import tiny_config


def _teacher():
    return tiny_config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)


def _measure(archs, shape=None):
    shape = shape or Shape(1, 64)
    fake = FakeBackend(teacher_config=_teacher(), fingerprint_id="fp")
    return [fake.measure(a, shape) for a in archs]


def test_default_archs_are_valid_and_span_the_teacher():
    archs = default_archs(_teacher(), 30, seed=0)
    assert len(archs) == 30 and len({a.arch_id for a in archs}) == 30
    for a in archs:
        a.validate()
        assert 1 <= a.num_layers <= 4 and a.hidden_size % 64 == 0 and a.hidden_size <= 256
        assert 32 <= a.hidden_size // a.num_heads <= 128 and a.hidden_size <= a.ffn_size <= 4 * a.hidden_size
    assert {a.num_layers for a in archs} == {1, 2, 3, 4}


def test_design_from_sampler_list_and_bad_space():
    pool = default_archs(_teacher(), 40, seed=1)
    assert len(design(pool, 10)) == 10
    assert len(design(lambda rng: pool[int(rng.integers(len(pool)))], 10)) == 10
    with pytest.raises(LatencyError, match="default"):
        design("nope", 5, teacher_config=_teacher())


def test_space_filling_keeps_extremes():
    pool = [Arch(L, 64, 1, 128) for L in range(1, 13)]
    for seed in range(5):
        picked = {a.num_layers for a in space_filling(pool, 3, seed=seed)}
        assert (
            len(picked) == 3 and ({1, 12} & picked) and max(picked) - min(picked) >= 6
        )  # spread, not clumped


def test_fit_predicts_fake_latency_and_roundtrips(tmp_path):
    archs = default_archs(_teacher(), 40, seed=0)
    results = _measure(archs)
    p = LatencyPredictor.fit(archs[:30], results[:30])
    acc = p.evaluate(archs[30:], results[30:])
    assert acc.within_10pct >= 0.9 and acc.spearman > 0.9
    assert all(w >= 0 for w in p.weights.values())
    q = LatencyPredictor.load(p.save(tmp_path / "p.json"))
    assert q.predict_ms(archs[0]) == pytest.approx(p.predict_ms(archs[0]))
    # other shapes: longer sequences cost more
    assert p.predict_ms(archs[0], seq_len=128) > p.predict_ms(archs[0])


def test_fit_needs_matching_inputs():
    with pytest.raises(LatencyError):
        LatencyPredictor.fit([Arch(1, 32, 1, 64)], [])


def test_accuracy_metrics():
    a = accuracy([1.0, 2.0, 3.3], [1.0, 2.0, 3.0])
    assert a.within_10pct == 1.0 and a.spearman == pytest.approx(1.0) and a.mape == pytest.approx(0.1 / 3)


def test_load_rejects_garbage(tmp_path):
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(LatencyError, match="calibrate"):
        LatencyPredictor.load(tmp_path / "p.json")


def test_calibrate_on_fake_saves_a_findable_predictor(tmp_path):
    cache = LatencyCache(tmp_path)
    t = TargetConfig(backend="fake", seq_lens=[64])
    cal = calibrate(_teacher(), "default", t, n=24, cache=cache)
    assert cal.accuracy.n >= 3 and cal.accuracy.within_10pct >= 0.9
    assert cal.path is not None and cal.path.parent == tmp_path / "predictors"
    again = load_predictor(_teacher(), t, cache=cache)
    assert again is not None and again.accuracy["n"] == cal.accuracy.n
    assert isinstance(cal.train[0][1], LatencyResult)
    assert np.isfinite(again.predict_ms(Arch(2, 128, 2, 256)))


def test_calibration_summary_and_config_check(tmp_path):
    cal = calibrate(_teacher(), "default", TargetConfig(backend="fake"), n=12, cache=LatencyCache(tmp_path))
    d = cal.to_dict()
    assert d["n_train"] + d["n_test"] == 12 and d["path"].endswith(".json") and d["accuracy"]["mape"] >= 0
    assert TargetConfig(calibrate_archs=5).check() == [
        "calibrate_archs: 5 must be 0 (no calibration) or >= 10"
    ]
