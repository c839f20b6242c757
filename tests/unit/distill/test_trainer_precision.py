"""Distillation in bf16 and fp32: both finish with finite losses, bf16 tracks fp32, and the dtype is part of a
run's identity (a resume in another dtype is refused; the teacher cache keeps one entry per dtype)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas import precision
from kdnas.distill import DistillConfig, TeacherCache, distill
from kdnas.errors import DistillError
from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_batch, tiny_teacher

ARCH = Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)
BLOCK = tiny_batch(24, 12)


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return tiny_teacher("bert", num_layers=4)


# bf16 is emulated (slowly, but correctly) on CPUs without bf16 units: these tests run on any CPU
pytestmark = pytest.mark.filterwarnings("ignore:.*bf16 on a")


def _cfg(dtype: str, **kw: object) -> DistillConfig:
    return DistillConfig(
        # random projections: "it learns" below needs room to learn in 6 steps (a least-squares start is
        # already the best read-out of the tiny random student)
        batch_size=8, relation_heads=4, checkpoint_every=2, dtype=dtype, proj_init="random",  # type: ignore[arg-type]
        losses={"hidden": 1.0, "relation": 1.0, "attention": 1.0}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def _run(teacher: torch.nn.Module, dtype: str, **kw: object):  # type: ignore[no-untyped-def]
    return distill(
        teacher,
        build_student(teacher.config, ARCH, seed=0),
        BLOCK,
        _cfg(dtype),
        steps=6,
        progress=False,
        **kw,
    )


def test_bf16_and_fp32_both_train_and_agree(teacher: torch.nn.Module) -> None:
    fp32, bf16 = _run(teacher, "fp32"), _run(teacher, "bf16")
    for res in (fp32, bf16):
        assert not res.failed and res.steps == 6
        assert all(torch.isfinite(torch.tensor(e["loss"])) for e in res.history)
    assert bf16.history[0]["loss"] == pytest.approx(fp32.history[0]["loss"], rel=0.05)
    assert bf16.final_loss == pytest.approx(fp32.final_loss, rel=0.1)
    assert bf16.final_loss < bf16.history[0]["loss"]  # it learns
    # the student is back to its own forward and fp32 weights
    student = bf16.distiller.student  # type: ignore[union-attr]
    assert "forward" not in student.__dict__
    assert all(p.dtype == torch.float32 for p in student.parameters())


def test_auto_follows_the_cpu(teacher: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    with_units = _run(teacher, "bf16")
    monkeypatch.setattr(precision, "cpu_bf16_units", lambda: ["amx_bf16"])
    assert _run(teacher, "auto").history == with_units.history
    monkeypatch.setattr(precision, "cpu_bf16_units", list)
    assert _run(teacher, "auto").history == _run(teacher, "fp32").history


def test_resume_in_another_dtype_is_refused(teacher: torch.nn.Module, tmp_path: Path) -> None:
    part = _run(teacher, "fp32", out_dir=tmp_path, stop_after_steps=3)
    assert part.steps == 3
    with pytest.raises(DistillError, match="compute dtype"):
        _run(teacher, "bf16", out_dir=tmp_path, resume=True)
    resumed = _run(teacher, "fp32", out_dir=tmp_path, resume=True)
    assert resumed.history == _run(teacher, "fp32").history


def test_teacher_cache_keeps_an_entry_per_dtype(teacher: torch.nn.Module, tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path)
    _run(teacher, "fp32", teacher_cache=cache)
    _run(teacher, "bf16", teacher_cache=cache)
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 2 and entries[1] == entries[0] + "-bf16"
    meta = (tmp_path / entries[1] / "hidden.2.json").read_text()
    assert '"dtype": "bf16"' in meta


def test_a_gpu_asked_for_on_a_machine_without_one_is_a_clear_error(
    teacher: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kdnas.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        distill(
            teacher, build_student(teacher.config, ARCH, seed=0), BLOCK, _cfg("fp32", device="cuda"), steps=1
        )
    # auto is the CPU here, and the same run as naming it
    assert _run_on(teacher, "auto").history == _run_on(teacher, "cpu").history


def test_device_is_checked_in_the_config() -> None:
    assert any("device" in e for e in DistillConfig(device="gpu").check())
    assert not DistillConfig(device="cuda:1").check()


def _run_on(teacher: torch.nn.Module, device: str):  # type: ignore[no-untyped-def]
    student = build_student(teacher.config, ARCH, seed=0)
    return distill(teacher, student, BLOCK, _cfg("fp32", device=device), steps=4, progress=False)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)"
)
def test_on_a_gpu_distillation_matches_the_cpu_and_hands_the_models_back(teacher: torch.nn.Module) -> None:
    cpu, gpu = _run_on(teacher, "cpu"), _run_on(teacher, "cuda")
    assert gpu.steps == cpu.steps and not gpu.failed
    for a, b in zip(cpu.history, gpu.history, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)  # float noise (other kernels), not other maths
    assert all(p.device.type == "cpu" for p in gpu.distiller.parameters())  # type: ignore[union-attr]
    assert all(p.device.type == "cpu" for p in teacher.parameters())
