"""Real measurements of a tiny student in workers: torch (eager/sdpa/auto), onnxruntime fp32 and int8; the CLI."""

from __future__ import annotations

import json

import pytest

from kdnas.cli import main
from kdnas.latency.api import measure_many
from kdnas.latency.backends import get_backend, known_backends
from kdnas.latency.config import BACKENDS, TargetConfig
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec
from kdnas.latency.torch_backend import TorchBackend
from kdnas.space.arch import Arch
from kdnas.testing import tiny_config, tiny_teacher

QUICK = dict(threads=1, max_time_s=0.2, warmup_s=0.05, min_repeats=5, rel_ci=0.2, timeout_s=240)


def test_registry_matches_config_names():
    assert set(known_backends()) == set(BACKENDS)
    for name in known_backends():
        assert get_backend(name).name == name


def test_a_registered_backend_is_a_valid_target(monkeypatch):
    from kdnas.latency import backends
    from kdnas.latency.backends import LatencyBackend, register_backend

    class Mine(LatencyBackend):
        name = "mine"

        def measure(self, *a, **k):  # never called here
            raise NotImplementedError

    assert any("'mine' is not one of" in p for p in TargetConfig(backend="mine").check())
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    register_backend("mine", Mine)
    assert TargetConfig(backend="mine").check() == []


def test_torch_auto_picks_an_attention_in_process():
    b = TorchBackend(teacher_config=tiny_config(), threads=1, attn="auto", fingerprint_id="fp")
    b.settings.max_time_s = 0.05
    b.settings.warmup_s = 0.01
    r = b.measure(Arch(1, 32, 2, 64), Shape(1, 16))
    assert r.attn in ("eager", "sdpa") and set(r.extra["attn_screen_ms"]) == {"eager", "sdpa"}
    assert r.median_ms > 0 and r.p90_ms >= r.median_ms >= r.min_ms and r.repeats >= 3
    # the choice is remembered for the model's next shape
    r2 = b.measure(Arch(1, 32, 2, 64), Shape(2, 16))
    assert r2.attn == r.attn and "attn_screen_ms" not in r2.extra
    # a ready module is measured as it is
    assert b.measure(tiny_teacher(), Shape(1, 8)).median_ms > 0


def test_bf16_serving_runs_in_bf16_where_the_cpu_has_the_units_and_refuses_elsewhere(monkeypatch):
    from kdnas import precision
    from kdnas.errors import LatencyError
    from kdnas.latency.torch_backend import TorchBf16Backend

    if precision.cpu_bf16_units():
        b = TorchBf16Backend(teacher_config=tiny_config(), threads=1, attn="eager", fingerprint_id="fp")
        b.settings.max_time_s = 0.05
        b.settings.warmup_s = 0.01
        r = b.measure(Arch(1, 32, 2, 64), Shape(1, 16))
        assert r.backend == "torch-bf16" and r.extra["dtype"] == "bfloat16" and r.median_ms > 0
        built = next(iter(b._built.values()))
        assert (
            next(built.parameters()).dtype.is_floating_point
            and str(next(built.parameters()).dtype) == "torch.bfloat16"
        )
        TorchBf16Backend.check("cpu")
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: [])  # a CPU of this kind without the units
    with pytest.raises(LatencyError, match=r"needs a CPU with bf16 units.*amx_bf16 or avx512_bf16"):
        TorchBf16Backend.check("cpu")


@pytest.mark.filterwarnings("ignore")
def test_real_backends_in_workers(tmp_path):
    spec = ModelSpec.for_arch(tiny_config(), Arch(1, 32, 2, 64))
    t = TargetConfig(attn_implementation="eager", **QUICK)
    shapes = [Shape(1, 16), Shape(2, 32)]
    out = measure_many(
        [spec], t, backends=["torch", "onnxruntime", "onnxruntime-int8"], shapes=shapes, cache=False
    )
    for b in ("torch", "onnxruntime", "onnxruntime-int8"):
        for sh in shapes:
            r = out[(0, b, sh)]
            assert isinstance(r, LatencyResult), r
            assert r.backend == b and r.shape == sh and r.threads == 1 and r.median_ms > 0
    assert out[(0, "torch", shapes[0])].attn == "eager"
    assert "export_s" in out[(0, "onnxruntime", shapes[0])].extra
    # the int8 worker quantized the fp32 export instead of exporting again
    int8 = out[(0, "onnxruntime-int8", shapes[0])].extra
    assert "quantize_s" in int8 and "export_s" not in int8


def test_cli_table_and_json(capsys, tmp_path):
    rc = main(
        [
            "latency",
            "--arch",
            "L=1,H=32,A=2,F=64",
            "--backend",
            "fake",
            "--batch",
            "1,2",
            "--seq",
            "16",
            "--cache-dir",
            str(tmp_path),
            "--json",
        ]
    )
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rc == 0 and [x["shape"] for x in lines] == ["b1/s16", "b2/s16"]
    assert lines[0]["name"] == "L=1,H=32,A=2,F=64" and lines[0]["model"] == "L1-H32-A2-F64-gelu"
    assert (
        main(["latency", "--arch", "L=1,H=32,A=2,F=64", "--backend", "fake", "--cache-dir", str(tmp_path)])
        == 0
    )
    assert "L=1,H=32,A=2,F=64" in capsys.readouterr().out


def test_cli_errors(capsys):
    assert main(["latency", "--arch", "L=1,H=32,A=2,F=64", "--backend", "tensorrt"]) == 2
    assert "unknown latency backend 'tensorrt'" in capsys.readouterr().err
    assert main(["latency"]) == 2
    assert "nothing to measure" in capsys.readouterr().err
    assert main(["latency", "calibrate", "--backend", "fake"]) == 2
    assert "needs --teacher" in capsys.readouterr().err


def test_cli_calibrate_with_a_space(capsys, tmp_path):
    from kdnas.testing import save_tiny_teacher

    save_tiny_teacher(tmp_path / "t")
    argv = [
        "latency",
        "calibrate",
        "--teacher",
        str(tmp_path / "t"),
        "--backend",
        "fake",
        "--n",
        "12",
        "--seq",
        "32",
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main([*argv, "--space", "default"]) == 0
    out = capsys.readouterr().out
    assert "held-out archs" in out and "within ±10%" in out and "saved to" in out
    assert main([*argv, "--space", "no-such-space"]) == 2
    assert "no-such-space" in capsys.readouterr().err
