"""The pipeline runner: stages are skipped once done, a failure keeps finished stages, configs are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdnas import config, pipeline
from kdnas.errors import ConfigError, KdnasError


@pytest.fixture
def fake_stages(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls: dict[str, int] = {}

    def make(name: str, fail_once: bool = False) -> pipeline.Stage:
        def run(ctx: pipeline.RunContext) -> dict[str, Any]:
            calls[name] = calls.get(name, 0) + 1
            if fail_once and calls[name] == 1:
                raise KdnasError(f"{name} crashed")
            (ctx.run_dir / f"{name}.out").write_text("x")
            return {"name": name, "seen": sorted(ctx.values)}

        return pipeline.Stage(name, run, name)

    monkeypatch.setattr(pipeline, "STAGES", [make("a"), make("b", fail_once=True), make("c")])
    return calls


def test_failed_stage_keeps_finished_ones_and_resume_continues(
    tmp_path: Path, fake_stages: dict[str, int]
) -> None:
    cfg = config.load("smoke")
    with pytest.raises(KdnasError, match="b crashed"):
        pipeline.run(cfg, run_dir=tmp_path / "r")
    assert (tmp_path / "r" / "stages" / "a.json").exists()
    assert not (tmp_path / "r" / "stages" / "b.json").exists()
    ctx = pipeline.run(cfg, run_dir=tmp_path / "r", resume=True)
    assert fake_stages == {"a": 1, "b": 2, "c": 1}
    assert ctx.values["c"]["seen"] == ["a", "b"]  # earlier summaries are reloaded from the markers


def test_resume_refuses_another_config_and_shows_the_diff(
    tmp_path: Path, fake_stages: dict[str, int]
) -> None:
    pipeline.run(config.load("smoke"), run_dir=tmp_path / "r", until="a")
    other = config.load("smoke", {"distill.lr": 0.01})
    with pytest.raises(ConfigError, match=r"distill\.lr: 0\.001 -> 0\.01"):
        pipeline.run(other, run_dir=tmp_path / "r")


def test_resume_of_an_empty_dir_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to resume"):
        pipeline.run(config.load("smoke"), run_dir=tmp_path / "nothing", resume=True)


def test_atomic_json(tmp_path: Path) -> None:
    p = tmp_path / "x" / "a.json"
    pipeline.write_json_atomic(p, {"a": 1})
    assert p.read_text().strip().startswith("{")
    assert [q.name for q in p.parent.iterdir()] == ["a.json"]
