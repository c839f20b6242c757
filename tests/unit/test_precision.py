"""Device and dtype selection: bf16 units read from /proc/cpuinfo, `auto` per device, autocast choice."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from kdnas import precision
from kdnas.errors import ConfigError

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse2 avx2 {extra}
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu vme sse2 avx2 {extra}
"""


@pytest.fixture
def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fake /proc/cpuinfo (write its text in the test); the flag cache is cleared around each test."""
    path = tmp_path / "cpuinfo"
    monkeypatch.setattr(precision, "_CPUINFO", path)
    precision._cpu_flags.cache_clear()
    yield path
    precision._cpu_flags.cache_clear()


def test_units_are_read_from_cpuinfo(cpuinfo: Path) -> None:
    cpuinfo.write_text(CPUINFO.format(extra="avx512f avx512_bf16 amx_tile amx_bf16 amx_int8"))
    assert precision.cpu_bf16_units() == ["amx_bf16", "avx512_bf16"]


def test_no_units_no_file(cpuinfo: Path) -> None:
    cpuinfo.write_text(CPUINFO.format(extra="avx512f"))
    assert precision.cpu_bf16_units() == []
    precision._cpu_flags.cache_clear()
    cpuinfo.unlink()  # non-Linux: no /proc
    assert precision.cpu_bf16_units() == []


def test_auto_is_bf16_only_with_units(cpuinfo: Path) -> None:
    cpuinfo.write_text(CPUINFO.format(extra="avx512_bf16"))
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    precision._cpu_flags.cache_clear()
    cpuinfo.write_text(CPUINFO.format(extra=""))
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    assert precision.resolve_dtype("fp32", "cpu") == torch.float32


def test_bf16_without_units_warns_and_runs(cpuinfo: Path) -> None:
    cpuinfo.write_text(CPUINFO.format(extra=""))
    with pytest.warns(UserWarning, match=r"distill\.dtype: bf16 .* emulated"):
        assert precision.resolve_dtype("bf16", "cpu", key="distill.dtype") == torch.bfloat16


def test_unknown_dtype_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"evaluate\.dtype: 'fp16' must be one of auto, fp32, bf16"):
        precision.resolve_dtype("fp16", "cpu", key="evaluate.dtype")


def test_cuda_follows_the_gpu(cpuinfo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpuinfo.write_text(CPUINFO.format(extra="amx_bf16"))  # the CPU's units do not speak for the GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.resolve_dtype("auto", "cuda") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert precision.resolve_dtype("auto", "mps") == torch.float32


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        precision.resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert precision.resolve_device("auto") == torch.device("cuda")
    assert precision.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_choice() -> None:
    assert isinstance(precision.autocast("cpu", torch.float32), contextlib.nullcontext)
    ctx = precision.autocast("cpu", torch.bfloat16)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cpu" and ctx.fast_dtype == torch.bfloat16
    ctx = precision.autocast(torch.device("cuda", 1), torch.bfloat16)
    assert isinstance(ctx, torch.autocast) and ctx.device == "cuda"
    lin = torch.nn.Linear(8, 4)
    with precision.autocast("cpu", torch.bfloat16):
        assert lin(torch.randn(2, 8)).dtype == torch.bfloat16
    with precision.autocast("cpu", torch.float32):
        assert lin(torch.randn(2, 8)).dtype == torch.float32


def test_autocast_forward_returns_fp32_and_restores_the_module() -> None:
    from kdnas.testing import tiny_batch, tiny_teacher

    model = tiny_teacher("bert", num_layers=2)
    batch = tiny_batch(2, 8)
    with precision.autocast_forward(model, "cpu", torch.bfloat16):
        out = model(**batch, output_hidden_states=True)
        lin = torch.nn.Linear(out.last_hidden_state.shape[-1], 3)
        lin(out.hidden_states[1])  # fp32 outputs feed fp32 modules outside autocast
    assert out.last_hidden_state.dtype == torch.float32 and out["last_hidden_state"] is out.last_hidden_state
    assert all(h.dtype == torch.float32 for h in out.hidden_states)
    assert "forward" not in model.__dict__
    ref = model(**batch).last_hidden_state
    torch.testing.assert_close(out.last_hidden_state, ref, atol=0.1, rtol=0.05)  # bf16 rounding, not a bug
    with precision.autocast_forward(model, "cpu", torch.float32):
        assert "forward" not in model.__dict__


def test_describe_and_log_once(cpuinfo: Path, caplog: pytest.LogCaptureFixture) -> None:
    cpuinfo.write_text(CPUINFO.format(extra="amx_bf16 avx512_bf16"))
    assert (
        precision.describe("distill", "cpu", torch.bfloat16)
        == "distill: cpu bf16 autocast (amx_bf16, avx512_bf16)"
    )
    precision._cpu_flags.cache_clear()
    cpuinfo.write_text(CPUINFO.format(extra=""))
    line = precision.describe("evaluate", "cpu", torch.float32)
    assert line == "evaluate: cpu fp32 (no bf16 units)"
    log = logging.getLogger("kdnas.test_precision")
    precision._LOGGED.discard(line)
    with caplog.at_level(logging.INFO, logger="kdnas.test_precision"):
        precision.log_choice(log, "evaluate", "cpu", torch.float32)
        precision.log_choice(log, "evaluate", "cpu", torch.float32)
    assert [r.getMessage() for r in caplog.records] == [line]


@pytest.mark.filterwarnings("ignore:.*bf16 on a")
def test_finetune_in_bf16_learns_like_fp32() -> None:
    import random

    from kdnas.data.tasks import Task, TaskSplit
    from kdnas.evaluate.config import EvaluateConfig
    from kdnas.evaluate.finetune import finetune
    from kdnas.testing import WORDS, tiny_teacher, tiny_tokenizer

    cues = ("river ocean water island".split(), "music album song film".split())
    splits = {}
    for name, n, seed in (("train", 48, 0), ("dev", 16, 1), ("test", 24, 2)):
        r = random.Random(seed)
        texts = [" ".join(r.sample(WORDS[:20], 3) + r.sample(cues[i % 2], 2)) for i in range(n)]
        splits[name] = TaskSplit(texts=texts, texts_b=None, labels=[i % 2 for i in range(n)])
    task = Task(name="toy", kind="classification", label_names=["wet", "loud"], **splits)
    scores = {}
    for dtype in ("fp32", "bf16"):
        cfg = EvaluateConfig(tasks=["toy"], lrs=[2e-3], seeds=[0], epochs=4, batch_size=8, max_len=16,
                             patience=2, threads=1, warmup_fraction=0.0, dtype=dtype)  # type: ignore[arg-type]  # fmt: skip
        res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, cfg)
        scores[dtype] = res.test_mean
    assert scores["bf16"] >= 0.9 and scores["fp32"] >= 0.9, scores
