"""The search's candidate evaluator (`kdnas.search.proxy`): a latency reading far off the calibrated predictor is
taken again, and the faster reading is what the search sees."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from kdnas import config
from kdnas.errors import ConfigError
from kdnas.latency import LatencyCache, measure_arch
from kdnas.models.teacher import load_teacher
from kdnas.search.proxy import OUTLIER_FACTOR, ProxyEvaluator
from kdnas.space.arch import Arch
from kdnas.testing import save_tiny_teacher

ARCH = Arch(num_layers=2, hidden_size=32, num_heads=2, ffn_size=64)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_teacher(save_tiny_teacher(tmp_path_factory.mktemp("t") / "teacher", "bert", num_layers=4))


def _evaluator(teacher: Any, tmp_path: Path, predictor: Any) -> ProxyEvaluator:
    cfg = config.load("smoke", {"teacher.name": str(teacher.path), "target.backend": "fake"})
    block = {
        "input_ids": torch.randint(5, 100, (8, 16)),
        "attention_mask": torch.ones(8, 16, dtype=torch.long),
    }
    return ProxyEvaluator(
        cfg=cfg, teacher=teacher, proxy=block, heldout=block, cache_dir=tmp_path / "tc",
        latency_cache=LatencyCache(tmp_path / "lat"), latency_predictor=predictor,
    )  # fmt: skip


def test_a_reading_near_the_predictor_is_kept_and_one_far_off_is_taken_again(
    teacher: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ev = _evaluator(teacher, tmp_path, None)
    truth = measure_arch(teacher.config, ARCH, ev.cfg.target, cache=False).median_ms  # the fake's number
    for predicted in (truth * 1.5, truth / 1.5, truth * 3 * OUTLIER_FACTOR):  # within, or faster: not retaken
        ev.latency_predictor = lambda a, p=predicted: p
        lat, retake = ev.measure_latency(ARCH)
        assert retake is None and lat.median_ms == pytest.approx(truth)

    ev.latency_predictor = lambda a: truth / (3 * OUTLIER_FACTOR)  # the reading looks 6x too slow
    with caplog.at_level(logging.WARNING, logger="kdnas.search.proxy"):
        lat, retake = ev.measure_latency(ARCH)
    assert retake is not None and retake["first_ms"] == pytest.approx(truth)
    assert retake["again_ms"] == pytest.approx(truth)  # the fake is deterministic: the same again
    assert "measured again in a fresh worker" in caplog.text and ARCH.arch_id in caplog.text

    res = ev.evaluate(ARCH, fidelity="short", tokens=256)  # the trial records what was retaken
    assert res.extra["latency_retake"]["predicted_ms"] == pytest.approx(truth / (3 * OUTLIER_FACTOR))


def test_the_faster_of_the_two_readings_is_kept(
    teacher: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kdnas.latency

    ev = _evaluator(teacher, tmp_path, lambda a: 10.0)
    real = measure_arch(teacher.config, ARCH, ev.cfg.target, cache=False)
    readings = [424.0, 9.5]  # a worker that shared the cores with another job, then a quiet one
    caches: list[Any] = []

    def measure(tcfg: Any, arch: Arch, target: Any, *, cache: Any = None) -> Any:
        caches.append(cache)
        return dataclasses.replace(real, median_ms=readings[len(caches) - 1])

    monkeypatch.setattr(kdnas.latency, "measure_arch", measure)
    lat, retake = ev.measure_latency(ARCH)
    assert lat.median_ms == 9.5 and retake == {"first_ms": 424.0, "again_ms": 9.5, "predicted_ms": 10.0}
    assert caches[1] is False  # the retake is timed, never read from the cache that may hold the first


def test_the_proxy_reads_the_student_through_fitted_projections_when_told_so(
    teacher: Any, tmp_path: Path
) -> None:
    """`search.proxy_readout: fitted` scores a candidate's states through least-squares read-outs fitted on the
    held-out split, the best linear map for the hidden-state MSE: lower than through the projections a few proxy
    steps trained (`trained`), most of all at another width than the teacher's; `geomean` (the default) is the
    geometric mean of the two."""
    narrow = Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)  # the teacher is 32 wide
    ev = _evaluator(teacher, tmp_path, None)
    assert ev.cfg.search.proxy_readout == "geomean"
    ev.cfg = dataclasses.replace(ev.cfg, search=dataclasses.replace(ev.cfg.search, proxy_readout="trained"))
    trained = ev.evaluate(narrow, fidelity="short", tokens=256).kd_loss
    ev.cfg = dataclasses.replace(ev.cfg, search=dataclasses.replace(ev.cfg.search, proxy_readout="fitted"))
    fitted = ev.evaluate(narrow, fidelity="short", tokens=256).kd_loss
    assert fitted < trained
    ev.cfg = dataclasses.replace(ev.cfg, search=dataclasses.replace(ev.cfg.search, proxy_readout="geomean"))
    both = ev.evaluate(narrow, fidelity="short", tokens=256)  # the same student again: the seed is fixed
    assert both.extra["heldout_kd_loss_trained"] == pytest.approx(trained)
    assert both.extra["heldout_kd_loss_fitted"] == pytest.approx(fitted)
    assert both.kd_loss == pytest.approx((trained * fitted) ** 0.5) and fitted < both.kd_loss < trained


def test_the_proxy_ranks_by_the_losses_on_token_states_and_keeps_the_full_one(
    teacher: Any, tmp_path: Path
) -> None:
    """`search.proxy_loss: states` (the default) ranks a candidate by the held-out terms on its token states,
    leaving out the sentence-embedding terms, whose read-out differs by width; `full` by the whole objective.
    The trial keeps both, and the per-term values they are summed from."""
    import math

    ev = _evaluator(teacher, tmp_path, None)
    # a teacher with a pooling: the sentence and similarity terms are on, weighing as in the default
    ev.cfg = dataclasses.replace(ev.cfg, distill=dataclasses.replace(ev.cfg.distill, pooling="mean"))
    assert ev.cfg.search.proxy_loss == "states"
    w = ev.cfg.distill.losses
    assert w["sentence"] > 0 and w["hidden"] > 0
    states = ev.evaluate(ARCH, fidelity="short", tokens=256)
    comps = states.extra["heldout_components"]
    assert set(comps) == {"trained", "fitted"} and {"sentence", "similarity", "hidden"} <= set(
        comps["trained"]
    )
    per = {}
    for n, c in comps.items():
        per[n] = sum(w[k] * c[k] for k in c if k not in ("sentence", "similarity") and w.get(k, 0) > 0)
        full_n = sum(w[k] * c[k] for k in c if w.get(k, 0) > 0)
        assert states.extra[f"heldout_kd_loss_{n}"] == pytest.approx(per[n])
        assert full_n > per[n] + 1e-6  # the sentence terms are really left out
    assert states.kd_loss == pytest.approx(math.sqrt(per["trained"] * per["fitted"]))
    assert states.extra["proxy_loss"] == "states"

    ev.cfg = dataclasses.replace(ev.cfg, search=dataclasses.replace(ev.cfg.search, proxy_loss="full"))
    full = ev.evaluate(ARCH, fidelity="short", tokens=256)  # the same student again: the seed is fixed
    assert full.kd_loss == pytest.approx(states.extra["heldout_kd_loss_full"])
    assert full.kd_loss == pytest.approx(full.extra["heldout_kd_loss_full"]) and full.kd_loss > states.kd_loss


def test_a_config_with_only_sentence_losses_must_rank_by_the_full_loss() -> None:
    with pytest.raises(ConfigError, match=r"search\.proxy_loss: 'states' .* only sentence-embedding ones"):
        config.from_dict({"distill": {"losses": {"sentence": 1.0}}})
    cfg = config.from_dict({"distill": {"losses": {"sentence": 1.0}}, "search": {"proxy_loss": "full"}})
    assert cfg.search.proxy_loss == "full"
    with pytest.raises(ConfigError, match=r"search\.proxy_loss: 'bleu' is not one of 'states', 'full'"):
        config.from_dict({"search": {"proxy_loss": "bleu"}})
