from __future__ import annotations

import json

import pytest

from kdnas.evaluate.finetune import TaskResult
from kdnas.evaluate.retention import ModelReport, retention, retention_table


def _res(task: str, mean: float, std: float = 0.01) -> TaskResult:
    return TaskResult(task=task, kind="classification", metric="accuracy", best_lr=1e-4, dev_mean=mean,
                      test_mean=mean, test_std=std, test_metrics={"accuracy": mean},
                      test_metrics_std={"accuracy": std}, n_train=10, n_dev=2, n_test=2)  # fmt: skip


def _reports():
    teacher = ModelReport("teacher", {"a": _res("a", 0.80), "b": _res("b", 0.90)}, params=22_000_000)
    student = ModelReport("student", {"a": _res("a", 0.72), "b": _res("b", 0.90)}, params=5_500_000)
    partial = ModelReport("partial", {"a": _res("a", 0.40)}, params=11_000_000)
    return teacher, student, partial


def test_retention_math():
    teacher, student, partial = _reports()
    table = retention_table(teacher, [student, partial], latency_ms={"teacher": 12.0, "student": 3.0})
    t, s, p = table.rows
    assert t.model == "teacher" and t.avg_retention == pytest.approx(1.0) and t.speedup == pytest.approx(1.0)
    assert s.retention == {"a": pytest.approx(0.9), "b": pytest.approx(1.0)}
    assert s.avg_retention == pytest.approx(0.95)
    assert s.speedup == pytest.approx(4.0) and s.latency_ms == 3.0
    assert s.params_ratio == pytest.approx(0.25)
    assert p.retention == {"a": pytest.approx(0.5)} and p.avg_retention == pytest.approx(0.5)
    assert p.speedup is None and p.params_ratio == pytest.approx(0.5)
    assert table.metrics == {"a": "accuracy", "b": "accuracy"}
    assert retention(0.5, 0.0) is None


def test_speedups_need_the_teacher_latency():
    teacher, student, _ = _reports()
    table = retention_table(teacher, [student], latency_ms={"student": 3.0})
    assert table.rows[1].speedup is None and "No latency for the teacher" in table.notes[0]


def test_json_and_markdown(tmp_path):
    teacher, student, partial = _reports()
    table = retention_table(teacher, [student, partial], latency_ms={"teacher": 12.0, "student": 3.0})
    data = json.loads(table.write_json(tmp_path / "r.json").read_text())
    assert data["rows"][1]["avg_retention"] == pytest.approx(0.95) and data["tasks"] == ["a", "b"]
    md = table.write_markdown(tmp_path / "r.md").read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| model | a (accuracy) | b (accuracy) | avg retention | speed-up")
    assert "| student | 72.00 ± 1.00 (90.0%) | 90.00 ± 1.00 (100.0%) | 95.0% | 4.00x | 5.5 | 0.250 |" in md
    assert "| partial | 40.00 ± 1.00 (50.0%) | – | 50.0% | – | 11.0 | 0.500 |" in md
    assert ModelReport.from_dict(json.loads(json.dumps(student.to_dict()))) == student
