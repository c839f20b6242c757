"""The stages' contract: explicit inputs (config sections by name, earlier results by stage), typed results that
round-trip through their markers, and old markers that still load."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

import pytest

from kdnas import config, pipeline
from kdnas.config import RunConfig
from kdnas.errors import ConfigError
from kdnas.stages import results as res


@pytest.mark.parametrize("stage", pipeline.STAGES, ids=lambda s: s.name)
def test_a_stage_takes_what_it_declares_and_nothing_else(stage: pipeline.Stage) -> None:
    params = list(inspect.signature(stage.run).parameters.values())
    assert params[0].name == "ctx"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:])
    assert {p.name for p in params[1:]} == set(stage.reads) | set(stage.needs)
    sections = {f.name for f in dataclasses.fields(RunConfig)}
    assert set(stage.reads) <= sections
    earlier = [s.name for s in pipeline.STAGES[: pipeline.STAGES.index(stage)]]
    assert set(stage.needs) <= set(earlier)
    assert stage.result is not None and stage.result.stage == stage.name
    source = inspect.getsource(inspect.getmodule(stage.run))  # type: ignore[arg-type]
    assert "ctx.cfg" not in source  # settings come through the signature, not the context


def test_every_result_round_trips_through_json() -> None:
    samples: list[res.StageResult] = [
        res.FetchResult({"minilm-l6": "/cache/x"}),
        res.DataResult(proxy={"rows": 1, "tokens": 2}, train={"rows": 3, "tokens": 4}, heldout={"rows": 5, "tokens": 6}),
        res.LatencyResult(teacher={"median_ms": 2.0}, teacher_latency_ms=2.0, baselines={"a": {"speedup": 2.5}, "rounds": 3}),
        res.SearchOutcome(n_evaluated=3, hypervolume=None, kendall_tau_short_long=0.5, pareto=["L1"],
                          recommendations=[{"arch": None}, {"arch": {"num_layers": 1}}], leader="/r"),
        res.DistillResult(students=[{"name": "student-3x"}]),
        res.EvaluateResult(retention=[], latency_ms={"teacher": 2.0}, speedup_range={}, latency_rounds=3),
        res.ExportResult(["/r/export/student-3x"]),
        res.ReportResult({"summary": "/r/report/summary.md"}),
    ]  # fmt: skip
    for r in samples:
        back = type(r).from_dict(json.loads(json.dumps(r.to_dict())))
        assert back == r
    data = samples[1].to_dict()
    assert "vocab" not in data  # left out when None, as markers always had it
    lat = samples[2]
    assert isinstance(lat, res.LatencyResult) and lat.baseline_speedups() == {"a": 2.5}
    search = samples[3]
    assert isinstance(search, res.SearchOutcome) and search.recommended() == [{"arch": {"num_layers": 1}}]


def test_an_older_marker_loads_and_a_broken_one_says_which_to_delete() -> None:
    old_search = {"n_evaluated": 4, "hypervolume": 0.1, "kendall_tau_short_long": None, "pareto": [],
                  "recommendations": [], "unknown_later_key": 1}  # fmt: skip
    s = res.SearchOutcome.from_dict(old_search)  # written before placement: defaults for the newer fields
    assert s.placed_side_by_side is False and s.search_recommendations == [] and s.leader is None
    assert res.ReportResult.from_dict({"summary": "/r/report/summary.md"}).files == {}
    with pytest.raises(ConfigError, match=r"stages/distill\.json lacks students.*delete that marker"):
        res.DistillResult.from_dict({"baselines": []})


def test_a_resumed_run_hands_later_stages_the_typed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def first(ctx: Any, *, export: Any) -> res.ExportResult:
        return res.ExportResult([f"onnx={export.onnx}"])

    def second(ctx: Any, *, export: res.ExportResult) -> res.ReportResult:
        seen["input"] = export
        return res.ReportResult({"n": str(len(export.exported))})

    stages = [
        pipeline.Stage("export", first, "one", reads=("export",), result=res.ExportResult),
        pipeline.Stage("report", second, "two", needs=("export",), result=res.ReportResult),
    ]
    monkeypatch.setattr(pipeline, "STAGES", stages)
    cfg = config.load("smoke")
    pipeline.run(cfg, run_dir=tmp_path / "r", until="export")
    assert json.loads((tmp_path / "r" / "stages" / "export.json").read_text())["summary"] == {
        "exported": ["onnx=True"]
    }
    ctx = pipeline.run(cfg, run_dir=tmp_path / "r", resume=True)
    assert seen["input"] == res.ExportResult(["onnx=True"])  # read back from the marker, typed
    assert ctx.values["report"] == res.ReportResult({"n": "1"})


def test_stage_progress_is_a_bar_on_a_terminal_lines_in_a_log_and_nothing_when_quiet(tmp_path: Path) -> None:
    import io

    from rich.console import Console

    from kdnas.stages.context import RunContext

    cfg = config.load("smoke")
    log = io.StringIO()
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, console=Console(file=log, width=100), progress=False)
    with ctx.steps("distill: models", 2) as step:
        step("student-3x distilled")
        step("baseline distilled")
    assert log.getvalue().splitlines() == [
        "    [distill: models 1/2] student-3x distilled",
        "    [distill: models 2/2] baseline distilled",
    ]
    tty = io.StringIO()
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, console=Console(file=tty, width=100, force_terminal=True))
    with ctx.steps("search: candidates distilled", 3) as step:
        step("trial 0  L1-H64-A1-F64  complete")
    out = tty.getvalue()
    assert (
        "search: candidates distilled" in out and "ETA" in out and "trial 0  L1-H64-A1-F64  complete" in out
    )
    quiet = io.StringIO()
    ctx = RunContext(cfg=cfg, run_dir=tmp_path, console=Console(file=quiet), quiet=True)
    with ctx.steps("evaluate", 2) as step:
        step("teacher scored")
    ctx.trial_callback({"number": 1, "arch_id": "L1", "state": "complete"})
    assert quiet.getvalue() == ""


def test_pair_scores_embed_a_model_dir_as_it_embeds(tmp_path: Path) -> None:
    """The evaluate stage's zero-shot pair scores read a student dir's own pooling and Dense; the table lists them."""
    import torch

    from kdnas.models.pooling import Pooling, write_st_config
    from kdnas.stages.context import RunContext
    from kdnas.stages.evaluate import pair_markdown, pair_scores
    from kdnas.testing import tiny_pair_task, tiny_teacher, tiny_tokenizer

    model, tok = tiny_teacher("bert", seed=0), tiny_tokenizer()
    d = tmp_path / "student"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    g = torch.Generator().manual_seed(0)
    w = model.config.hidden_size
    write_st_config(
        d,
        Pooling(mode="mean", normalize=True),
        w,
        dense=(torch.randn(2 * w, w, generator=g), torch.zeros(2 * w)),
    )
    ctx = RunContext(cfg=config.load("smoke"), run_dir=tmp_path / "run")
    scores = pair_scores(ctx, d, [tiny_pair_task("classification")], max_len=32)
    assert scores["same-classification"]["value"] == 1.0

    class R:
        pair_similarity = scores

    table = pair_markdown({"teacher": R(), "student-3x": R()})
    assert "| model | same-classification |" in table and "| student-3x | 1.000 (accuracy) |" in table


def test_pair_scores_and_fidelity_read_a_static_peer_dir(tmp_path: Path) -> None:
    """The static peer (`evaluate.static_peer`) goes through the same pair scores as a student dir."""
    from kdnas.models.pooling import Pooling, pool
    from kdnas.models.static import build_static_table, save_static
    from kdnas.stages.context import RunContext
    from kdnas.stages.evaluate import pair_scores
    from kdnas.testing import tiny_pair_task, tiny_teacher, tiny_tokenizer

    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    table = build_static_table(model, tok, lambda h, m: pool(h, m, Pooling(mode="mean")))
    d = save_static(tmp_path / "peer", table, tok, teacher="tiny")
    ctx = RunContext(cfg=config.load("smoke"), run_dir=tmp_path / "run")
    scores = pair_scores(ctx, d, [tiny_pair_task("classification")], max_len=32)
    assert scores["same-classification"]["value"] == 1.0  # identical texts, identical mean of rows


def test_the_teacher_scores_are_shared_by_runs_that_only_score_other_models(tmp_path: Path) -> None:
    """The teacher's cached scores key on what decides them (teacher, tasks, protocol), not on which other models
    a run scores (baselines, the family, the peer) or how many fidelity passages it encodes."""
    from kdnas.stages.context import RunContext
    from kdnas.stages.evaluate import _teacher_eval_cache
    from kdnas.testing import save_tiny_teacher

    teacher = save_tiny_teacher(tmp_path / "teacher")

    def key(**ev: Any) -> Path:
        cfg = config.from_dict({"teacher": {"name": str(teacher)}, "evaluate": ev})
        ctx = RunContext(cfg=cfg, run_dir=tmp_path / "run")
        return _teacher_eval_cache(ctx, cfg.teacher, cfg.evaluate)

    base = key()
    for same in ({"baselines": True}, {"baseline_family": True}, {"static_peer": False},
                 {"fidelity_passages": 500}, {"student_lrs": [1e-4]}):  # fmt: skip
        assert key(**same) == base, same
    for other in ({"seeds": [0]}, {"max_train_examples": 400}, {"lrs": [1e-4]}):
        assert key(**other) != base, other


def test_a_kept_report_is_rescored_only_on_tasks_it_has_no_current_result_for() -> None:
    """A resumed evaluate stage fine-tunes a model again only on the tasks whose result is missing or was made
    under another pair encoding (results from before the option count as cross); the rest are kept."""
    from kdnas.data.tasks import Task, TaskSplit
    from kdnas.evaluate.finetune import TaskResult
    from kdnas.evaluate.retention import ModelReport
    from kdnas.stages.evaluate import merge_reports, stale_tasks

    sp = TaskSplit(texts=["a"], texts_b=["b"], labels=[0])
    single = Task("topic", "classification", ["x", "y"], *(TaskSplit(["a"], None, [0]),) * 3)
    cross = Task("order", "classification", ["x", "y"], sp, sp, sp)
    bi = Task("same", "classification", ["x", "y"], sp, sp, sp, pair_encoding="bi")

    def res(task: str, enc: str | None, v: float = 0.5) -> TaskResult:
        return TaskResult(
            task, "classification", "accuracy", 1e-4, v, v, 0.0, {}, {}, 1, 1, 1, pair_encoding=enc
        )

    old = ModelReport("m", {"topic": res("topic", None), "order": res("order", None), "same": res("same", None)},
                      fidelity={"mean_cosine": 0.5}, pair_similarity={"same": {"value": 0.8}})  # fmt: skip
    assert stale_tasks(None, [single, cross, bi]) == [single, cross, bi]
    assert stale_tasks(old, [single, cross, bi]) == [bi]  # "order" from before the option: cross, current
    assert stale_tasks(ModelReport("m", {"topic": res("topic", None)}), [single, cross]) == [cross]
    new = merge_reports(ModelReport("m", {"same": res("same", "bi", 0.9)}), old)
    assert stale_tasks(new, [single, cross, bi]) == []
    assert new.results["same"].test_mean == 0.9 and new.results["topic"].test_mean == 0.5
    assert new.fidelity == {"mean_cosine": 0.5} and new.pair_similarity == {"same": {"value": 0.8}}
    assert TaskResult.from_dict(new.results["same"].to_dict()).pair_encoding == "bi"


def test_the_teacher_latency_is_the_median_of_its_readings() -> None:
    """One slow process does not set every budget: the readings of the AMX base run of 2026-12-06 (the first
    read 45% slower than the other two) give the middle one, and every reading is kept beside it."""
    from kdnas.latency.config import TargetConfig
    from kdnas.latency.result import LatencyResult as Timed
    from kdnas.stages.latency import median_reading

    def timed(ms: float) -> Timed:
        return Timed(ms, ms * 1.1, 1.0, 12, 0.03, "torch", "cpu", 2, 1, 128, "fp", model="teacher")

    got = median_reading([timed(229.7), timed(157.9), timed(150.2)])
    assert got.median_ms == 157.9 and got.p90_ms == pytest.approx(157.9 * 1.1)
    assert got.extra["readings_ms"] == [229.7, 157.9, 150.2]
    assert median_reading([timed(229.7), timed(157.9)]).median_ms == 157.9  # even count: the lower middle one
    assert median_reading([timed(3.0)]).median_ms == 3.0
    with pytest.raises(ValueError, match="no readings"):
        median_reading([])
    assert any("teacher_readings" in p for p in TargetConfig(teacher_readings=0).check())
