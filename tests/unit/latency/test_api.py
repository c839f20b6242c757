"""measure_archs / measure_many through the cache with the fake backend, and bad input caught before any worker."""

from __future__ import annotations

import statistics

import pytest

from kdnas.errors import ArchError, ConfigError, LatencyError, MissingExtraError
from kdnas.latency import api
from kdnas.latency.cache import LatencyCache
from kdnas.latency.config import TargetConfig
from kdnas.latency.fingerprint import fingerprint
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec
from kdnas.space.arch import Arch
from kdnas.testing import tiny_config

A = Arch(2, 64, 2, 128)


def test_measure_archs_fills_and_hits_the_cache(tmp_path):
    cache = LatencyCache(tmp_path)
    t = TargetConfig(backend="fake", seq_lens=[32, 64])
    first = api.measure_archs(tiny_config(), [A, Arch(1, 32, 2, 64)], t, cache=cache)
    assert [r.cached for r in first] == [False, False] and first[0].seq_len == 32
    assert len(cache) == 2
    again = api.measure_archs(tiny_config(), [A], t, cache=cache)
    assert again[0].cached and again[0].median_ms == first[0].median_ms
    # another teacher vocabulary is another model
    other = api.measure_archs(tiny_config(vocab_size=500), [A], t, cache=cache)
    assert not other[0].cached


def test_cache_keys(tmp_path):
    c = LatencyCache(tmp_path / "x.sqlite")
    r = LatencyResult(1.0, 1.1, 0.1, 10, 0.01, "torch", "cpu", 2, 1, 128, "fp")
    c.put("fp", "torch[auto]", "m", r)
    assert c.get("fp", "torch[auto]", "m", 1, 128).cached
    assert c.get("fp", "torch[eager]", "m", 1, 128) is None
    assert c.get("fp", "torch[auto]", "m", 32, 128) is None
    assert c.get("other", "torch[auto]", "m", 1, 128) is None


def test_on_error_return_keeps_going(tmp_path):
    t = TargetConfig(backend="fake")
    specs = [ModelSpec.for_arch(tiny_config(), a) for a in (A, Arch(1, 32, 2, 64))]
    out = api.measure_many(specs, t, cache=False, backend_options={"fail_arch": A.arch_id})
    assert isinstance(out[(0, "fake", Shape(1, 128))], LatencyError)
    assert isinstance(out[(1, "fake", Shape(1, 128))], LatencyResult)


def test_unknown_backend_lists_known():
    with pytest.raises(LatencyError, match=r"unknown latency backend 'onnx'.*known: torch"):
        api.measure_many(
            [ModelSpec.for_arch(tiny_config(), A)], TargetConfig(), backends=["onnx"], cache=False
        )


def test_bad_target_config():
    with pytest.raises(ConfigError, match=r"target\.threads"):
        api.measure_archs(tiny_config(), [A], TargetConfig(threads=0, backend="fake"), cache=False)


def test_missing_onnxruntime_names_the_extra(monkeypatch):
    import kdnas.latency.onnx_backend as ob  # imported before patching: it binds has_package at import

    monkeypatch.setattr(ob, "has_package", lambda m: m != "onnxruntime")
    with pytest.raises(MissingExtraError, match=r"kdnas\[onnx\]"):
        api.measure_archs(tiny_config(), [A], TargetConfig(backend="onnxruntime"), cache=False)


def test_cuda_without_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(LatencyError, match="no CUDA GPU"):
        api.measure_archs(tiny_config(), [A], TargetConfig(device="cuda"), cache=False)
    for backend in ("torch-cuda-bf16", "torch-cuda-fp16"):  # serving dtypes on the GPU: the same check first
        with pytest.raises(LatencyError, match="no CUDA GPU"):
            api.measure_archs(tiny_config(), [A], TargetConfig(device="cuda", backend=backend), cache=False)


def test_gpu_serving_dtypes_need_the_gpu_device():
    from kdnas.latency.backends import get_backend

    assert (
        get_backend("torch-cuda-bf16").dtype == "bfloat16"
        and get_backend("torch-cuda-fp16").dtype == "float16"
    )
    assert any("needs device: cuda" in e for e in TargetConfig(backend="torch-cuda-bf16").check())
    assert not TargetConfig(device="cuda", backend="torch-cuda-fp16").check()


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (gpu_check.sh runs it)"
)
def test_on_a_gpu_each_serving_dtype_times_the_model():
    for backend in ("torch-cuda", "torch-cuda-fp16"):
        target = TargetConfig(device="cuda", backend=backend, max_time_s=1.0)
        (r,) = api.measure_archs(tiny_config(), [A], target, cache=False)
        assert r.median_ms > 0 and r.backend == backend


def test_sequence_longer_than_positions():
    with pytest.raises(LatencyError, match="longer than the model's 128 positions"):
        api.measure_archs(tiny_config(), [A], TargetConfig(backend="fake", seq_lens=[129]), cache=False)
    with pytest.raises(LatencyError, match="126 positions"):  # roberta: 128 - pad_token_id 1 - 1
        api.measure_archs(
            tiny_config("roberta", max_position_embeddings=128),
            [A],
            TargetConfig(backend="fake", seq_lens=[127]),
            cache=False,
        )


def test_arch_that_cannot_be_built_fails_before_workers():
    with pytest.raises(ArchError):
        api.measure_archs(tiny_config(), [Arch(2, 64, 3, 128)], TargetConfig(backend="fake"), cache=False)
    mb = Arch(2, 64, 2, 128, family="mobilebert", bottleneck_size=32, num_ffn_stacked=2)
    with pytest.raises(ArchError, match="BERT-vocabulary"):
        api.measure_archs(tiny_config("roberta"), [mb], TargetConfig(backend="fake"), cache=False)


def test_fingerprint_is_stable_and_keyed_by_threads():
    a, b = fingerprint(2), fingerprint(2)
    assert a.id == b.id and len(a.id) == 12 and a.cores >= 1
    assert fingerprint(1).id != a.id


def test_side_by_side_speedups_are_per_round_ratios(monkeypatch):
    cfg = tiny_config()
    specs = [ModelSpec.for_arch(cfg, a) for a in (Arch(4, 64, 2, 256), Arch(1, 32, 2, 64))]
    # a machine that drifts 2x slower every round: per-round ratios stay exact, raw medians do not
    calls = {"n": 0}
    real = api.measure_many

    def drifting(sp, target, **kw):
        calls["n"] += 1
        out = real(sp, target, **kw)
        return {k: _scaled(v, 2.0 ** calls["n"]) for k, v in out.items()}

    monkeypatch.setattr(api, "measure_many", drifting)
    t = TargetConfig(backend="fake")
    base = [
        r.median_ms for r in api.measure_archs(cfg, [Arch(4, 64, 2, 256), Arch(1, 32, 2, 64)], t, cache=False)
    ]
    sbs = api.measure_side_by_side(specs, t, rounds=3)
    assert calls["n"] == 4 and sbs.rounds == 3  # one measure_archs call, then one worker per round
    assert sbs.speedup[0] == pytest.approx(1.0)
    assert sbs.speedup[1] == pytest.approx(base[0] / base[1])
    lo, hi = sbs.speedup_range[1]
    assert lo == pytest.approx(hi)
    assert sbs.speedup_cv[1] == pytest.approx(0.0, abs=1e-9)  # the drift cancels in the per-round ratios
    assert sbs.median_ms[0] == pytest.approx(
        base[0] / 2 * 8
    )  # the middle round's (x8) of the drifted medians
    with pytest.raises(ConfigError, match="rounds"):
        api.measure_side_by_side(specs, t, rounds=0)
    with pytest.raises(ConfigError, match="reference"):
        api.measure_side_by_side(specs, t, reference=2)


def test_visits_cancel_a_slow_spell_within_a_round(monkeypatch):
    """A machine that slows down during a round (every later timing 1.5x the one before): one converged
    measurement per model puts that drift into the ratio; visiting each model in turn, the ratio of the same
    visit stays exact."""
    cfg = tiny_config()
    archs = (Arch(4, 64, 2, 256), Arch(1, 32, 2, 64))
    specs = [ModelSpec.for_arch(cfg, a) for a in archs]
    t = TargetConfig(backend="fake")
    base = [r.median_ms for r in api.measure_archs(cfg, list(archs), t, cache=False)]  # no drift
    real = api.measure_many
    jobs: list[int] = []

    def drifting(sp, target, **kw):
        jobs.append(len(sp))
        out = real(sp, target, **kw)
        per_visit = len(specs)
        return {
            k: _scaled(v, 1.5 ** (k[0] // per_visit if len(sp) > per_visit else k[0])) for k, v in out.items()
        }

    monkeypatch.setattr(api, "measure_many", drifting)
    sliced = api.measure_side_by_side(specs, t, rounds=2, slices=4, bracket=0)
    assert jobs == [8, 8]  # one worker per round, every model visited 4 times
    assert sliced.speedup[1] == pytest.approx(base[0] / base[1]) and sliced.speedup_cv[1] == pytest.approx(
        0.0
    )
    whole = api.measure_side_by_side(specs, t, rounds=1, slices=1, bracket=0)
    assert whole.speedup[1] == pytest.approx(base[0] / base[1] / 1.5)  # the drift is in the ratio
    assert any("compare_slices" in e for e in TargetConfig(compare_slices=0).check())


def test_the_teacher_read_on_both_sides_cancels_drift_across_a_long_visit(monkeypatch):
    """A machine whose every reading is 10% slower than the one before (a drift that outlasts a visit of many
    models): with the teacher read once per visit, a model far from it in the order takes that drift into its
    ratio; bracketed, each model's ratio is against the mean of the teacher's readings just before and after it,
    and a steady drift cancels (exactly, for groups of one)."""
    cfg = tiny_config()
    archs = [
        Arch(4, 64, 2, 256),
        Arch(1, 32, 2, 64),
        Arch(2, 32, 2, 64),
        Arch(3, 64, 2, 128),
        Arch(1, 64, 2, 64),
    ]
    specs = [ModelSpec.for_arch(cfg, a) for a in archs]
    t = TargetConfig(backend="fake")
    base = [r.median_ms for r in api.measure_archs(cfg, archs, t, cache=False)]
    real = api.measure_many
    jobs: list[int] = []

    def drifting(sp, target, **kw):
        jobs.append(len(sp))
        return {k: _scaled(v, 1.0 + 0.1 * k[0]) for k, v in real(sp, target, **kw).items()}

    monkeypatch.setattr(api, "measure_many", drifting)
    once = api.measure_side_by_side(specs, t, rounds=1, slices=3, bracket=0)
    both = api.measure_side_by_side(specs, t, rounds=1, slices=3, bracket=1)
    assert jobs == [15, 1 + 3 * 8]  # 5 models 3 times; the teacher once more after each of the 4 students
    exact = [base[0] / b for b in base]
    assert both.speedup == pytest.approx(exact)
    off = [abs(s / e - 1) for s, e in zip(once.speedup[1:], exact[1:], strict=True)]
    assert max(off) > 0.1  # the student 4 readings away from the teacher's, 40% later
    assert both.median_ms[0] == pytest.approx(
        statistics.median(base[0] * (1 + 0.1 * p) for p in range(0, 25, 2))
    )
    with pytest.raises(ConfigError, match="bracket"):
        api.measure_side_by_side(specs, t, bracket=-1)
    assert any("compare_bracket" in e for e in TargetConfig(compare_bracket=-1).check())


@pytest.mark.parametrize("bracket", [0, 1, 2, 3, 7])
@pytest.mark.parametrize("reference", [0, 2])
def test_a_round_visits_every_model_in_turn_and_pairs_it_with_the_nearest_reference(bracket, reference):
    n, slices = 6, 3
    seq, refs = api.visit_order(n, reference, slices, bracket, first=1)
    others = [i for i in range(n) if i != reference]
    visits = [i for i in seq if i != reference]
    assert len(visits) == slices * len(others)
    # every visit sees each model once, in reverse every other visit (`first` odd: the first visit)
    for v in range(slices):
        got = visits[v * len(others) : (v + 1) * len(others)]
        assert got == (others[::-1] if (1 + v) % 2 else others)
    assert set(refs) == {p for p, i in enumerate(seq) if i != reference}
    for p, rs in refs.items():
        assert rs and all(seq[q] == reference for q in rs)
        if bracket:  # the readings just before and after the model's group, at most `bracket` models away
            before, after = rs
            assert before < p < after and after - before - 1 <= bracket
            assert reference not in seq[before + 1 : after]


def test_a_round_can_be_read_from_the_fastest_pass(monkeypatch):
    """A neighbour's load lengthens the median of one model in one round, not its fastest pass: read from the
    median the ratios spread, read from the min they stay exact; one measurement holds both readings."""
    from dataclasses import replace

    cfg = tiny_config()
    archs = (Arch(4, 64, 2, 256), Arch(1, 32, 2, 64))
    specs = [ModelSpec.for_arch(cfg, a) for a in archs]
    t = TargetConfig(backend="fake")
    base = api.measure_archs(cfg, list(archs), t, cache=False)
    real = api.measure_many
    rounds = {"n": 0}

    def loaded(sp, target, **kw):
        rounds["n"] += 1
        out = real(sp, target, **kw)
        k = 1.0 + 0.2 * rounds["n"]  # the student's median 1.2x, 1.4x, 1.6x of its unloaded value
        return {
            key: replace(v, median_ms=v.median_ms * k) if sp[key[0]] is specs[1] else v
            for key, v in out.items()
        }

    monkeypatch.setattr(api, "measure_many", loaded)
    sbs = api.measure_side_by_side(specs, t, rounds=3, statistic="min")
    assert sbs.statistic == "min"
    assert sbs.speedup[1] == pytest.approx(base[0].min_ms / base[1].min_ms)
    assert sbs.speedup_cv[1] == pytest.approx(0.0, abs=1e-9)
    by_median = sbs.round_ratios["median"][1]
    assert len(by_median) == 3 and api.ratio_cv(by_median) > 0.1
    assert by_median[0] == pytest.approx(base[0].median_ms / base[1].median_ms / 1.2)
    assert sbs.median_ms[1] == pytest.approx(base[1].median_ms * 1.4)  # still the medians' middle round
    rounds["n"] = 0
    assert api.measure_side_by_side(specs, t, rounds=3).speedup_cv[1] == pytest.approx(
        api.ratio_cv(by_median)
    )
    with pytest.raises(ConfigError, match="statistic"):
        api.measure_side_by_side(specs, t, statistic="mean")
    assert any("compare_statistic" in e for e in TargetConfig(compare_statistic="p50").check())


def _scaled(r, k):
    from dataclasses import replace

    return replace(r, median_ms=r.median_ms * k, min_ms=r.min_ms * k) if isinstance(r, LatencyResult) else r
