"""kdnas.run / kdnas.read_run: overrides as keyword arguments, clear errors (the full run: integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

import kdnas
from kdnas.api import _overrides
from kdnas.errors import ConfigError


def test_overrides_take_dotted_or_double_underscore_keys() -> None:
    assert _overrides({"search__n_trials": 8, "evaluate.seeds": [0]}) == {
        "search.n_trials": 8,
        "evaluate.seeds": [0],
    }
    with pytest.raises(ConfigError, match=r"section\.key"):
        _overrides({"n_trials": 8})


def test_a_bad_override_is_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"search\.n_trials"):
        kdnas.run("smoke", run_dir=tmp_path / "r", search__n_trials=0)
    assert not (tmp_path / "r").exists()


def test_read_run_refuses_a_dir_that_is_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a kdnas run dir"):
        kdnas.read_run(tmp_path)
    with pytest.raises(AttributeError):
        kdnas.no_such_thing  # noqa: B018
