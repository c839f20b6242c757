"""`kdnas export` on a model dir and on a run dir (layout: summary.json + students/<name>/model), and timing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdnas.cli import main
from kdnas.export import ExportError
from kdnas.export.run_dir import card_info_from_run, export_run, recommended_students
from kdnas.testing import save_tiny_teacher


def _run_dir(tmp_path: Path, names: list[str]) -> Path:
    run = tmp_path / "run"
    for i, n in enumerate(names):
        save_tiny_teacher(run / "students" / n / "model", seed=i)
    (run / "summary.json").write_text(json.dumps({"students": [
        {"name": n, "budget_label": "7x", "budget_ms": 5.0, "kd_loss": 0.25} for n in names
    ]}))  # fmt: skip
    (run / "teacher.json").write_text(
        json.dumps({"teacher": "minilm-l6", "arch_id": "L6-H384-A12-F1536-gelu"})
    )
    (run / "search.json").write_text(json.dumps({"teacher_latency_ms": 40.0, "trials": []}))
    (run / "retention.json").write_text(json.dumps({
        "tasks": ["bbc-news"], "metrics": {"bbc-news": "accuracy"}, "teacher": "teacher",
        "rows": [
            {"model": "teacher", "scores": {"bbc-news": 0.96}, "retention": {"bbc-news": 1.0}},
            {"model": names[0], "scores": {"bbc-news": 0.90}, "retention": {"bbc-news": 0.9375},
             "fidelity": {"mean_cosine": 0.71, "cka": 0.6, "recall_at_10": 0.55, "passages": 2000}},
            {"model": "model2vec-static", "scores": {"bbc-news": 0.80}, "retention": {"bbc-news": 0.83},
             "speedup": 410.0, "fidelity": {"mean_cosine": 0.356, "cka": 0.32, "recall_at_10": 0.303}},
        ],
    }))  # fmt: skip
    return run


def test_recommended_students_from_summary_and_fallback(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, ["s7x", "s3x"])
    got = recommended_students(run)
    assert [s["name"] for s in got] == ["s7x", "s3x"]
    assert got[0]["model_dir"] == str(run / "students" / "s7x" / "model")
    (run / "summary.json").unlink()
    assert sorted(s["name"] for s in recommended_students(run)) == ["s3x", "s7x"]


def test_card_info_from_run(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, ["s7x"])
    info = card_info_from_run(run, recommended_students(run)[0], None)
    assert info.name == "s7x" and info.teacher == "minilm-l6" and info.budget_ms == 5.0
    assert info.teacher_latency_ms == {"torch": 40.0}
    assert [(s.task, s.student, s.teacher, s.retention) for s in info.scores] == [
        ("bbc-news", 0.90, 0.96, 0.9375)
    ]


def test_export_run_writes_each_student_and_refuses_clash(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, ["s7x", "s3x"])
    out = tmp_path / "exports"
    results = export_run(run, out, onnx=False, int8=False, measure=False)
    assert [r.out_dir for r in results] == [out / "s7x", out / "s3x"]
    card = (out / "s7x" / "README.md").read_text()
    assert "| bbc-news | accuracy | 0.9000 | 0.9600 | 93.8% |" in card
    # its fidelity beside the static peer's (issue 21): what a student must beat at the fast end
    assert "|  | this model | static peer (410x the teacher) |" in card
    assert "| recall@10 of the teacher's neighbours | 0.550 | 0.303 |" in card
    assert "## Embedding fidelity" not in (out / "s3x" / "README.md").read_text()  # no figures of its own
    assert "distilled from **minilm-l6**" in card
    (out / "s7x" / "marker").write_text("x")
    with pytest.raises(ExportError, match="already exist"):
        export_run(run, out, onnx=False, int8=False, measure=False)
    assert (out / "s7x" / "marker").exists()


def test_export_run_with_nothing_to_export(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ExportError, match="no distilled students"):
        export_run(tmp_path / "run", tmp_path / "out")


def test_cli_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = save_tiny_teacher(tmp_path / "m")
    assert main(["export", str(src), "--out", str(tmp_path / "e"), "--no-onnx", "--no-timing"]) == 0
    assert (tmp_path / "e" / "config.json").is_file() and (tmp_path / "e" / "README.md").is_file()
    assert main(["export", str(src), "--out", str(tmp_path / "e"), "--no-onnx", "--no-timing"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (
        main(["export", str(src), "--out", str(tmp_path / "e"), "--no-onnx", "--no-timing", "--overwrite"])
        == 0
    )


def test_cli_bad_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty"), "--out", str(tmp_path / "e")]) == 2
    assert "neither an HF model folder" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]) == 2


def test_export_times_every_backend(tmp_path: Path) -> None:
    """Each backend is timed by kdnas.latency in its own pinned worker; the card shows the figures."""
    from kdnas.export import ModelCardInfo, export_model
    from kdnas.latency import TargetConfig
    from kdnas.testing import tiny_teacher, tiny_tokenizer

    target = TargetConfig(threads=1, seq_lens=[16], max_time_s=0.3, cache_dir=str(tmp_path / "cache"))
    card = ModelCardInfo(teacher_latency_ms={"onnxruntime": 50.0})
    result = export_model(tiny_teacher("bert"), tiny_tokenizer(), tmp_path / "e", target=target, card=card)
    assert list(result.latency) == ["torch", "onnxruntime", "onnxruntime-int8"]
    for backend, r in result.latency.items():
        assert r.backend == backend and 0 < r.median_ms <= r.p90_ms and r.seq_len == 16 and r.threads == 1
    card_text = (tmp_path / "e" / "README.md").read_text()
    ort = result.latency["onnxruntime"]
    assert (
        f"| onnxruntime | {ort.median_ms:.2f} | {ort.p90_ms:.2f} | {50.0 / ort.median_ms:.1f}x (teacher timed apart) |"
        in card_text
    )
    assert "| torch |" in card_text and "n/a" in card_text  # no teacher time for torch, none beside it
    assert ": 1 threads, batch 1, sequence length 16" in card_text
    saved = json.loads((tmp_path / "e" / "export.json").read_text())
    assert saved["latency"]["torch"]["median_ms"] == result.latency["torch"].median_ms


def test_export_times_the_teacher_beside_it_per_backend(tmp_path: Path) -> None:
    """With a teacher on the card, every backend's speed-up is a ratio timed in the same workers, with its
    range over rounds; the card says how it was measured."""
    from kdnas.export import ModelCardInfo, export_model
    from kdnas.latency import TargetConfig
    from kdnas.testing import save_tiny_teacher, tiny_teacher, tiny_tokenizer

    teacher = save_tiny_teacher(tmp_path / "teacher", "bert", num_layers=4)
    target = TargetConfig(
        threads=1, seq_lens=[16], max_time_s=0.3, cache_dir=str(tmp_path / "cache"), compare_rounds=2
    )
    card = ModelCardInfo(teacher=str(teacher))
    result = export_model(tiny_teacher("bert", num_layers=1), tiny_tokenizer(), tmp_path / "e", target=target,
                          card=card, onnx=False, int8=False)  # fmt: skip
    assert set(result.speedups) == {
        "torch"
    }  # the ONNX backends are timed the same way (the smoke run has them)
    for s in result.speedups.values():
        assert s["lo"] <= s["speedup"] <= s["hi"] and s["rounds"] == 2 and s["teacher_ms"] > 0
        assert s["reliable"] == (s["cv"] <= 0.10)
    text = (tmp_path / "e" / "README.md").read_text()
    torch_s = result.speedups["torch"]
    assert f"{torch_s['speedup']:.2f}x ({torch_s['lo']:.2f}-{torch_s['hi']:.2f}x)" in text
    assert "median of per-round ratios to the teacher timed in the same worker, 2 rounds" in text
    saved = json.loads((tmp_path / "e" / "export.json").read_text())
    assert saved["speedups"]["torch"]["speedup"] == result.speedups["torch"]["speedup"]


def test_a_tampered_summary_cannot_point_outside_the_run_dir(tmp_path: Path) -> None:
    from kdnas.errors import ConfigError

    run = _run_dir(tmp_path, ["s7x"])
    summary = json.loads((run / "summary.json").read_text())
    for bad in ("../../elsewhere", str(tmp_path / "outside")):
        summary["students"][0]["model_dir"] = bad
        (run / "summary.json").write_text(json.dumps(summary))
        with pytest.raises(ConfigError, match=r"model_dir of s7x .* outside .*must stay inside"):
            recommended_students(run)
    summary["students"][0] = {"name": "../escape"}
    (run / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"student name '\.\./escape' must be a plain name"):
        export_run(run, tmp_path / "out", measure=False)
    assert not (tmp_path / "escape").exists()


def test_a_runs_exports_are_timed_beside_the_teacher_together(tmp_path: Path) -> None:
    """`export_run` times every student in one side-by-side per backend (the teacher once per visit for all):
    each card and export.json gets its own ratio to the same teacher readings."""
    from kdnas.latency import TargetConfig

    run = _run_dir(tmp_path, ["s7x", "s3x"])
    teacher = save_tiny_teacher(tmp_path / "teacher", "bert", num_layers=4)
    (run / "teacher.json").write_text(json.dumps({"teacher": str(teacher)}))
    target = TargetConfig(threads=1, seq_lens=[16], max_time_s=0.2, cache_dir=str(tmp_path / "cache"),
                          compare_rounds=2, compare_slices=2, compare_slice_s=0.2)  # fmt: skip
    results = export_run(run, tmp_path / "out", onnx=False, int8=False, target=target)
    assert [r.out_dir.name for r in results] == ["s7x", "s3x"]
    a, b = (r.speedups["torch"] for r in results)
    assert a["teacher_ms"] == b["teacher_ms"] > 0  # one measurement of the teacher for both
    assert a["student_ms"] != b["student_ms"]
    for r, s in zip(results, (a, b)):
        assert s["lo"] <= s["speedup"] <= s["hi"] and s["rounds"] == 2
        saved = json.loads((r.out_dir / "export.json").read_text())
        assert saved["speedups"]["torch"] == s and "card_args" not in saved
        text = (r.out_dir / "README.md").read_text()
        assert f"{s['speedup']:.2f}x ({s['lo']:.2f}-{s['hi']:.2f}x)" in text
        assert oct((r.out_dir / "README.md").stat().st_mode & 0o777) == oct(
            (r.out_dir / "config.json").stat().st_mode & 0o777
        )
