"""The isolated runner with the fake backend: results, a per-arch failure, a crash, a hang, retries."""

from __future__ import annotations

import time

from kdnas.latency.api import _run_backend
from kdnas.latency.config import TargetConfig
from kdnas.latency.result import Shape
from kdnas.latency.runner import run_worker
from kdnas.latency.spec import ModelSpec
from kdnas.latency.testing import FakeBackend
from kdnas.space.arch import Arch
from kdnas.testing import tiny_config

ARCHS = [Arch(1, 32, 2, 64), Arch(2, 64, 2, 128)]


def _job(**options):
    cfg = tiny_config()
    return {
        "backend": "fake",
        "device": "cpu",
        "threads": 1,
        "fingerprint": "test",
        "options": options,
        "settings": {},
        "items": [
            {"spec": ModelSpec.for_arch(cfg, a).to_dict(), "shapes": [[1, 16], [2, 16]]} for a in ARCHS
        ],
    }


def test_worker_measures_every_item_and_shape_and_reports_per_arch_errors():
    out = run_worker(_job(fail_arch=ARCHS[1].arch_id), timeout_s=120)
    assert out.error is None and out.startup_s is not None
    assert [(r["item"], r["shape"]) for r in out.records] == [
        (0, [1, 16]),
        (0, [2, 16]),
        (1, [1, 16]),
        (1, [2, 16]),
    ]
    ok = [r for r in out.records if "result" in r]
    assert len(ok) == 2 and ok[0]["result"]["backend"] == "fake" and ok[0]["result"]["fingerprint"] == "test"
    expected = FakeBackend().latency_ms(ARCHS[0], Shape(1, 16))
    assert abs(ok[0]["result"]["median_ms"] - expected) < 1e-9
    bad = [r for r in out.records if "error" in r]
    assert "fake failure" in bad[0]["error"] and bad[0]["type"] == "LatencyError"


def test_worker_crash_is_reported_not_raised():
    out = run_worker(_job(crash=True), timeout_s=120)
    assert out.records == [] and "exited with code 3" in out.error


def test_hung_worker_is_killed_at_the_timeout():
    t = time.monotonic()
    out = run_worker(_job(hang=True), timeout_s=2)
    assert "no progress for 2 s" in out.error
    assert time.monotonic() - t < 60


def test_crashing_model_is_blamed_and_the_rest_retried_in_a_fresh_worker():
    cfg = tiny_config()
    specs = [ModelSpec.for_arch(cfg, a) for a in ARCHS]

    class Isolated(FakeBackend):  # same registry name, run through workers
        isolate = True

    target = TargetConfig(backend="fake", threads=1, timeout_s=120)
    res = _run_backend(Isolated, specs, {0: [Shape(1, 8)], 1: [Shape(1, 8)]}, target, "test", {"crash": True})
    assert set(res) == {(0, Shape(1, 8)), (1, Shape(1, 8))}
    assert all("exited with code 3" in str(e) for e in res.values())
