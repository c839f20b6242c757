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


def _fake_run(root):  # type: ignore[no-untyped-def]
    """A run dir with the parts `scratch` looks at: a teacher cache, a finished and an unfinished student (real
    checkpoint files), earlier outputs under previous/."""
    from kdnas.distill.checkpoint import save_checkpoint

    (root / rd.CONFIG).parent.mkdir(parents=True)
    (root / rd.CONFIG).write_text("seed: 0\n")
    cache = root / rd.TEACHER_CACHE / "key"
    cache.mkdir(parents=True)
    (cache / "hidden.6.npy").write_bytes(b"\1" * 300_000)
    for name, finished in (("done", True), ("half", False)):
        d = root / rd.STUDENTS / name
        for step in (2, 4):
            save_checkpoint(d, {"step": step, "weights": [1.0] * 1000})
        if finished:
            (d / "model").mkdir()
            (d / "model" / "config.json").write_text("{}")
            (d / "result.json").write_text("{}")
    (root / rd.PREVIOUS / "abc" / rd.STUDENTS).mkdir(parents=True)
    (root / rd.PREVIOUS / "abc" / rd.STUDENTS / "x").write_bytes(b"\1" * 5000)
    return root


def test_scratch_is_what_only_a_resume_reads_and_an_unfinished_stage_keeps_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _fake_run(tmp_path / "r")
    items = rd.scratch(run)
    by = {(i.path.relative_to(run).parts[0], i.path.parent.name): i for i in items}
    cache = next(i for i in items if i.path == run / rd.TEACHER_CACHE)
    assert cache.kept is not None and "distill stage has not finished" in cache.kept  # the stage reads it
    assert cache.bytes >= 300_000
    done = [i for i in items if i.path.parent.name == "done"]
    half = [i for i in items if i.path.parent.name == "half"]
    assert {i.path.name for i in done} == {"checkpoint-000002.pt", "checkpoint-000004.pt", "checkpoint.json"}
    assert all(i.kept is None for i in done) and all(i.kept is not None for i in half) and len(half) == 3
    assert ("previous", "r") not in by and not any(rd.PREVIOUS in i.path.parts for i in items)

    freed = rd.free(items)
    assert freed == sum(i.bytes for i in done) > 0
    assert (run / rd.TEACHER_CACHE / "key" / "hidden.6.npy").is_file()  # kept
    assert not list((run / rd.STUDENTS / "done").glob("checkpoint*"))
    assert (run / rd.STUDENTS / "done" / "model" / "config.json").is_file()  # the model stays
    assert len(list((run / rd.STUDENTS / "half").glob("checkpoint*"))) == 3  # its progress stays

    # --force: the cache of an unfinished distill stage too; --previous: the earlier config's outputs
    rd.free(rd.scratch(run, force=True, previous=True))
    assert not (run / rd.TEACHER_CACHE).exists() and not (run / rd.PREVIOUS / "abc").exists()
    assert len(list((run / rd.STUDENTS / "half").glob("checkpoint*"))) == 3


def test_after_the_distill_stage_every_checkpoint_and_the_cache_may_go(tmp_path) -> None:  # type: ignore[no-untyped-def]
    run = _fake_run(tmp_path / "r")
    rd.marker(run, "distill").parent.mkdir()
    rd.marker(run, "distill").write_text('{"summary": {}}')
    assert all(i.kept is None for i in rd.scratch(run))
    rd.free(rd.scratch(run))
    assert not (run / rd.TEACHER_CACHE).exists() and not list(run.glob("students/*/checkpoint*"))
    assert rd.scratch(run) == []
