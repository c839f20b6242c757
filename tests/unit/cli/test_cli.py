"""The CLI shell: help, validate, overrides, error exit codes."""

from __future__ import annotations

import pytest

from kdnas.cli import COMMANDS, main, split_overrides


def test_help_lists_every_stage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_run_help_names_every_shipped_recipe(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("base", "default", "multilingual", "smoke"):
        assert name in out.split("shipped recipe", 1)[1].split("Override", 1)[0]


def test_split_overrides() -> None:
    rest, ov = split_overrides(
        ["run", "smoke", "--search.n_trials", "8", "--distill.lr=0.1", "--resume", "x"]
    )
    assert rest == ["run", "smoke", "--resume", "x"]
    assert ov == ["--search.n_trials", "8", "--distill.lr=0.1"]


def test_validate_ok_and_bad(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "smoke", "--search.n_trials", "8"]) == 0
    assert "ok: smoke is valid" in capsys.readouterr().out
    assert main(["validate", "smoke", "--search.n_trials", "0", "--target.backend", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "search.n_trials: 0 must be >= 1" in err and "target.backend" in err


def test_overrides_rejected_where_they_do_not_apply() -> None:
    with pytest.raises(SystemExit):
        main(["fetch", "--list", "--search.n_trials", "3"])
