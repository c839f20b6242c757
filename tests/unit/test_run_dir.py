"""The run-dir layout and lifecycle (kdnas.run_dir): which stage a config change reruns from, rewinding."""

from __future__ import annotations

from kdnas import config, pipeline
from kdnas import run_dir as rd


def test_rerun_stage_is_the_first_stage_a_change_reaches() -> None:
    base = config.load("smoke")
    assert rd.rerun_stage(base, config.load("smoke", {"evaluate.lrs": [1e-3]})) == "evaluate"
    assert rd.rerun_stage(base, config.load("smoke", {"export.int8": False})) == "export"
    both = config.load("smoke", {"export.int8": False, "evaluate.baselines": False})
    assert rd.rerun_stage(base, both) == "latency"  # baselines are timed there and give the search budgets
    untimed = config.load("smoke", {"search.baseline_budgets": False})
    off = config.load("smoke", {"search.baseline_budgets": False, "evaluate.baselines": False})
    assert rd.rerun_stage(untimed, off) == "distill"  # no budgets from them: only their distillation goes
    assert rd.rerun_stage(base, untimed) == "latency"
    assert rd.rerun_stage(untimed, config.load("smoke", {"search.baseline_budgets": False,
                                                           "evaluate.baseline_family": True})) == "distill"  # fmt: skip
    assert rd.rerun_stage(base, config.load("smoke", {"search.n_trials": 9})) == "search"
    assert rd.rerun_stage(base, config.load("smoke", {"distill.lr": 0.01})) == "search"  # proxy reads it
    assert rd.rerun_stage(base, config.load("smoke", {"distill.full_tokens": 9000})) == "distill"
    mixed = config.load("smoke", {"search.n_trials": 9, "evaluate.lrs": [1e-3]})
    assert rd.rerun_stage(base, mixed) == "search"
    assert rd.rerun_stage(base, config.load("smoke", {"corpus.seq_len": 64})) is None
    assert rd.rerun_stage(base, config.load("smoke", {"target.threads": 1})) is None
    external = config.load("smoke", {"search.n_trials": 9, "search.storage": "sqlite:////tmp/x.db"})
    assert rd.rerun_stage(base, external) is None
    assert rd.rerun_stage(base, config.load("smoke", {"evaluate.threads": 1})) is None  # resource key


def test_the_stage_order_is_the_pipelines() -> None:
    assert tuple(s.name for s in pipeline.STAGES) == rd.STAGE_NAMES
    assert set(rd.STAGE_OUTPUTS) <= set(rd.STAGE_NAMES) and set(rd.RERUN_FROM.values()) <= set(rd.STAGE_NAMES)


def test_paths_named_by_a_run_dir_stay_inside_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from kdnas.errors import ConfigError

    run = tmp_path / "run"
    (run / "students" / "a").mkdir(parents=True)
    assert rd.inside(run, "students/a", "model_dir") == (run / "students" / "a").resolve()
    assert rd.inside(run, run / "students" / "a", "model_dir") == (run / "students" / "a").resolve()
    (run / "link").symlink_to(tmp_path)  # a symlink out of the run dir is outside too
    for bad in ("../x", "/etc", "link/other"):
        with pytest.raises(ConfigError, match="outside"):
            rd.inside(run, bad, "model_dir")
    assert rd.plain_name("student-7x", "name") == "student-7x"
    for bad in ("..", "a/b", "", "a\\b"):
        with pytest.raises(ConfigError, match="plain name"):
            rd.plain_name(bad, "name")
