"""`kdnas run smoke` end to end on the real minilm-l6 teacher and zoo data (about 3 min on 2 cores)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdnas.cli import main

pytestmark = pytest.mark.integration


def test_smoke_run_writes_every_stage(smoke_run: Path) -> None:
    for stage in ("fetch", "inspect", "data", "latency", "search", "distill", "evaluate", "export", "report"):
        assert (smoke_run / "stages" / f"{stage}.json").exists(), stage
    teacher = json.loads((smoke_run / "teacher.json").read_text())
    assert teacher["params"] == 22_713_216
    search = json.loads((smoke_run / "search.json").read_text())
    assert search["counts"]["complete"] >= 1
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert summary["students"], "a student is recommended for the 3x budget"
    # the recommendations were placed by speed-ups timed beside the teacher, and each student is its budget's
    placement = json.loads((smoke_run / "placement.json").read_text())
    placed = {
        r["budget"]["label"]: r["arch_id"]
        for r in json.loads((smoke_run / "recommendations.json").read_text())
    }
    for label, b in placement["budgets"].items():
        assert b["chosen"] == placed[label]
        assert all(c["speedup"] > 0 and c["search_latency_ms"] > 0 for c in b["candidates"])
    assert {s["arch_id"] for s in summary["students"]} == {a for a in placed.values() if a}
    rows = {r["model"]: r for r in json.loads((smoke_run / "retention.json").read_text())["rows"]}
    assert {"teacher", "every-other-layer", "tinybert-4L-312H"} <= set(rows)
    for s in summary["students"]:
        r = rows[s["name"]]
        assert r["speedup"] > 1.0 and 0.0 < r["avg_retention"] <= 1.5
        export = smoke_run / "export" / s["name"]
        for f in ("config.json", "model.safetensors", "model.onnx", "model-int8.onnx", "README.md"):
            assert (export / f).exists(), f
    # the static-embedding peer of the teacher (evaluate.static_peer, on by default): a row like a student's,
    # faster than any student (a table lookup), with its fidelity and suite scores
    peer = rows["model2vec-static"]
    assert peer["speedup"] > max(rows[s["name"]]["speedup"] for s in summary["students"])
    assert 0 < peer["fidelity"]["recall_at_10"] <= 1 and 0 < peer["fidelity"]["mean_cosine"] < 1
    assert 0.0 < peer["avg_retention"] <= 1.5
    assert (smoke_run / "peers" / "model2vec-static" / "model.safetensors").is_file()
    for f in ("pareto.png", "pareto.html", "trials.csv", "summary.md"):
        assert (smoke_run / "report" / f).exists(), f
    # nothing after the distill stage reads the teacher cache or the finished models' checkpoints: freed then
    assert not (smoke_run / "teacher_cache").exists()
    assert not [*smoke_run.glob("students/*/checkpoint*"), *smoke_run.glob("baselines/*/checkpoint*")]


def test_rerun_skips_finished_stages(smoke_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--resume", str(smoke_run)]) == 0
    out = capsys.readouterr().out
    assert out.count("done earlier (skipped)") == 9


def test_resume_with_a_different_config_is_refused(
    smoke_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "smoke", "--run-dir", str(smoke_run), "--search.n_trials", "5"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "search.n_trials: 4 -> 5" in err
