from __future__ import annotations

import dataclasses
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


def test_side_by_side_speedups_are_preferred_to_the_ratio_of_medians():
    # rounds with ratios 3, 4 and 5 can have medians of ms whose ratio is neither: the table reports the
    # median of the per-round ratios when it is given (as placement does)
    teacher, student, partial = _reports()
    table = retention_table(teacher, [student, partial], latency_ms={"teacher": 12.0, "student": 2.0},
                            speedup={"teacher": 1.0, "student": 4.0})  # fmt: skip
    assert table.rows[1].speedup == pytest.approx(4.0) and table.rows[1].latency_ms == 2.0
    assert table.rows[2].speedup is None


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


def _zs(task: str, mean: float, lang: str) -> TaskResult:
    src, tgt = task.split(">")
    z = {"source": src, "target": tgt, "classes": {"A": ["a"], "B": ["b", "c"]}, "unmapped_source": ["d"],
         "unmapped_target": ["x"], "excluded": {"x": 3}, "n_excluded": 3}  # fmt: skip
    return dataclasses.replace(_res(task, mean), language=lang, zero_shot=z)


def _multilingual():
    def rep(name, en, bbc, fr, zfr, zes, params):
        return ModelReport(name, {
            "wiki-vital-en": dataclasses.replace(_res("wiki-vital-en", en), language="en"),
            "bbc-news": dataclasses.replace(_res("bbc-news", bbc), language="en"),
            "wiki-vital-fr": dataclasses.replace(_res("wiki-vital-fr", fr), language="fr"),
            "wiki-vital-en>wiki-vital-fr": _zs("wiki-vital-en>wiki-vital-fr", zfr, "fr"),
            "wiki-vital-en>wiki-vital-es": _zs("wiki-vital-en>wiki-vital-es", zes, "es"),
            "mine.csv": _res("mine.csv", bbc),
        }, params=params)  # fmt: skip

    return rep("teacher", 0.8, 0.9, 0.8, 0.6, 0.5, 100), rep("student", 0.72, 0.9, 0.4, 0.3, 0.45, 10)


def test_zero_shot_columns_are_averaged_apart_and_per_language():
    teacher, student = _multilingual()
    table = retention_table(teacher, [student])
    assert table.zero_shot == ["wiki-vital-en>wiki-vital-fr", "wiki-vital-en>wiki-vital-es"]
    assert table.languages == {"wiki-vital-en": "en", "bbc-news": "en", "wiki-vital-fr": "fr",
                               "wiki-vital-en>wiki-vital-fr": "fr", "wiki-vital-en>wiki-vital-es": "es",
                               "mine.csv": "other"}  # fmt: skip
    assert list(table.language_groups()) == ["en", "fr", "es", "other"]
    t, s = table.rows
    assert t.avg_retention == pytest.approx(1.0) and t.zero_shot_retention == pytest.approx(1.0)
    # in-language: en 0.9 and 1.0, fr 0.5, other 1.0 -> mean 0.85; zero-shot: fr 0.5, es 0.9 -> 0.7
    assert s.avg_retention == pytest.approx((0.9 + 1.0 + 0.5 + 1.0) / 4)
    assert s.zero_shot_retention == pytest.approx(0.7)
    assert s.language_retention == {"en": pytest.approx(0.95), "fr": pytest.approx(0.5),
                                    "other": pytest.approx(1.0)}  # fmt: skip
    assert s.language_zero_shot_retention == {"fr": pytest.approx(0.5), "es": pytest.approx(0.9)}
    assert s.language_avg_retention == pytest.approx((0.95 + 0.5) / 2)  # 'other' left out


def test_zero_shot_markdown_has_a_view_per_language(tmp_path):
    teacher, student = _multilingual()
    md = retention_table(teacher, [student]).to_markdown()
    head = md.splitlines()[0]
    assert "| wiki-vital-en>wiki-vital-fr (accuracy, zero-shot) |" in head
    assert head.endswith("| avg retention | zero-shot retention | speed-up | params (M) | params ratio |")
    assert "| model | en | fr | fr zero-shot | es zero-shot | other | avg over languages |" in md
    assert "| student | 95.0% | 50.0% | 50.0% | 90.0% | 100.0% | 72.5% |" in md
    assert "### fr\n\n| model | wiki-vital-fr (accuracy) | wiki-vital-en>wiki-vital-fr (accuracy, zero-shot) " \
           "| retention (fr) | zero-shot retention (fr) |" in md  # fmt: skip
    assert "| student | 40.00 ± 1.00 (50.0%) | 30.00 ± 1.00 (50.0%) | 50.0% | 50.0% |" in md
    assert (
        "### es\n\n| model | wiki-vital-en>wiki-vital-es (accuracy, zero-shot) | zero-shot retention (es) |"
        in md
    )
    assert "wiki-vital-en>wiki-vital-es: 2 wiki-vital-es test examples in 2 shared classes; excluded " \
           "(target label with no source class): x 3; merged: B <- b + c; never predicted (no target class): d." \
           in md  # fmt: skip
    data = json.loads(retention_table(teacher, [student]).write_json(tmp_path / "r.json").read_text())
    assert data["rows"][1]["language_zero_shot_retention"]["es"] == pytest.approx(0.9)


def test_one_language_without_zero_shot_has_no_language_view():
    teacher, student, _ = _reports()
    table = retention_table(teacher, [student])
    assert not table.has_language_view() and "Per language" not in table.to_markdown()
    assert table.rows[1].zero_shot_retention is None and table.rows[1].language_retention == {
        "other": pytest.approx(0.95)
    }


def test_old_results_without_zero_shot_details_are_told_by_name():
    teacher = ModelReport("t", {"a": _res("a", 0.8), "wiki-vital-en>wiki-vital-fr": _res("x", 0.5)})
    table = retention_table(teacher, [])
    assert table.zero_shot == ["wiki-vital-en>wiki-vital-fr"]
    assert table.languages["wiki-vital-en>wiki-vital-fr"] == "fr"


def test_an_embedding_column_is_marked_and_has_no_seed_spread():
    teacher, student, _ = _reports()
    for r in (teacher, student):
        r.results["b"] = dataclasses.replace(r.results["b"], test_std=0.0, pair_encoding="embedding")
    table = retention_table(teacher, [student])
    assert table.embedding == ["b"]
    md = table.to_markdown()
    assert "b (accuracy, embedding cosine)" in md and "| 90.00 (100.0%) |" in md and "72.00 ± 1.00" in md
    assert "b: no fine-tuning; the cosine of the two texts' embeddings" in md
    assert retention_table(*_reports()[:1], [_reports()[1]]).embedding == []
