"""`kdnas inspect` on a tiny local teacher: the table, the side-by-side student, JSON, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.space.cost import config_param_count, human
from kdnas.testing import save_tiny_teacher


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_teacher(tmp_path_factory.mktemp("tiny") / "bert")


def test_inspect_prints_shape_and_cost(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoConfig

    assert main(["inspect", str(tiny_dir), "--seq-len", "64"]) == 0
    out = capsys.readouterr().out
    total = config_param_count(AutoConfig.from_pretrained(tiny_dir)).total
    for needle in (
        "family          bert",
        "layers          2",
        "hidden          32",
        "heads           4",
        "FFN             64",
        f"vocab           {AutoConfig.from_pretrained(tiny_dir).vocab_size}",
        "max positions   128",
        "GFLOPs",
        f"params          {human(total)}",
        "non-embedding",
        "activation MB",
        "seq_len 64",
    ):
        assert needle in out, needle


def test_inspect_with_arch_shows_ratios(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_dir), "--arch", "L=1,H=16,A=2,F=32"]) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student" in out and "ratio" in out
    layers = next(line for line in out.splitlines() if line.startswith("layers"))
    assert layers.split() == ["layers", "2", "1", "0.5"]
    assert "L2-H32-A4-F64-gelu  ->  L1-H16-A2-F32-gelu" in out


def test_inspect_json(tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tiny_dir), "--json", "--arch", "L1-H16-A2-F32-gelu"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["layers"] == 2 and d["student"]["layers"] == 1 and d["student"]["params"] < d["params"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--arch", "L=1,H=30,A=4,F=8"], "divisible"),
        (["--seq-len", "0"], "--seq-len"),
        (["--seq-len", "4096"], "positions"),
    ],
)
def test_inspect_bad_input(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str], args: list, needle: str
) -> None:
    assert main(["inspect", str(tiny_dir), *args]) == 2
    assert needle in capsys.readouterr().err


def test_inspect_offline_hub_id(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["inspect", "someone/not-cached-encoder"]) == 2
    assert "cannot be reached" in capsys.readouterr().err
