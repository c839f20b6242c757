"""Report files from a synthetic ReportData, and loading a run dir written by the search and evaluate modules."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from rich.console import Console

from kdnas.cli import main
from kdnas.report import (
    RecommendationRow,
    ReportData,
    ReportError,
    RetentionEntry,
    load_report_data,
    print_summary,
    write_report,
)
from kdnas.report.tables import summary_markdown

from .conftest import FRONT, synthetic_data


def test_front(report_data: ReportData) -> None:
    front = report_data.front()
    assert [(t.latency_ms, t.kd_loss) for t in front] == FRONT
    assert all(t.state == "complete" for t in front)


def test_front_one_point_per_arch_and_ignores_failed() -> None:
    from kdnas.report import TrialRow

    d = ReportData(trials=[
        TrialRow(0, "complete", "a", 1.0, 0.5), TrialRow(1, "complete", "a", 1.0, 0.5),  # same arch twice
        TrialRow(2, "failed", "b", 0.5, 0.1), TrialRow(3, "complete", "c", 2.0, 0.6),
    ])  # fmt: skip
    assert [t.number for t in d.front()] == [0]


def test_write_report_files(report_data: ReportData, tmp_path: Path) -> None:
    paths = write_report(report_data, tmp_path / "report")
    assert {p.name for p in paths.values()} == {"pareto.png", "pareto.html", "trials.csv", "summary.md",
                                              "suite.png", "suite.html"}  # fmt: skip
    assert paths["suite plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000

    with paths["trials"].open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(report_data.trials)
    on_front = [(float(r["latency_ms"]), float(r["kd_loss"])) for r in rows if r["on_front"] == "1"]
    assert sorted(on_front) == FRONT
    assert {r["state"] for r in rows} == {"complete", "failed", "filtered"}
    assert next(r for r in rows if r["state"] == "failed")["reason"].startswith("RuntimeError")

    md = paths["summary"].read_text()
    assert "![Pareto plot](pareto.png)" in md and "![Suite score against speed-up](suite.png)" in md
    assert "| 7x | 5.14 | `L3-H128-A4-F512-gelu` | 4.5 | 8.0x | 0.3000 | 4.00 |" in md
    for i in range(len(FRONT)):
        assert f"`L{i + 1}-H128-A4-F512-gelu`" in md
    assert "| student-7x | 95.00 (97.9%) | 74.00 (92.5%) | 95.2% | 8.00x | 4.5 |" in md
    assert "60 trials (50 complete, 4 failed, 6 filtered)" in md


def test_html_is_offline(report_data: ReportData, tmp_path: Path) -> None:
    html = write_report(report_data, tmp_path)["interactive plot"].read_text()
    assert not re.search(r"<script[^>]*\bsrc\s*=", html), "no external scripts: the file must work offline"
    assert "<link" not in html
    assert "Plotly.newPlot" in html or "Plotly.react" in html
    assert "L3-H128-A4-F512-gelu" in html and "teacher (minilm-l6)" in html


def test_terminal_summary(report_data: ReportData) -> None:
    con = Console(record=True, width=120)
    print_summary(report_data, con)
    text = con.export_text()
    assert "60 trials" in text and "Recommended students" in text and "Pareto front (5)" in text
    assert "L3-H128-A4-F512-gelu" in text and "8.0x" in text and "95.2%" in text


def test_empty_search_still_reports(tmp_path: Path) -> None:
    d = ReportData(trials=[])
    paths = write_report(d, tmp_path)
    assert "No completed trials." in paths["summary"].read_text()
    with paths["trials"].open() as f:
        assert len(list(csv.DictReader(f))) == 0


def _write_run(run: Path) -> None:
    """A run dir as the pipeline writes it, using the search and evaluation modules' own writers."""
    from kdnas.evaluate.retention import RetentionRow, RetentionTable
    from kdnas.search.objectives import Budget
    from kdnas.search.results import SearchResult, TrialRecord, pareto_records, recommend
    from kdnas.space.arch import Arch

    records = []
    for i, (lat, loss) in enumerate(FRONT):
        records.append(TrialRecord(i, "complete", Arch(i + 1, 128, 4, 512), kd_loss_short=loss, latency_ms=lat,
                                   params_m=1.0 + i))  # fmt: skip
    records.append(TrialRecord(5, "complete", Arch(2, 64, 2, 256), kd_loss_short=0.9, latency_ms=5.0))
    records.append(TrialRecord(6, "failed", Arch(3, 64, 2, 256), reason="boom"))
    records.append(TrialRecord(7, "filtered", Arch(12, 768, 12, 3072), latency_ms=80.0, reason="too slow"))
    budgets = [Budget(12.0, "3x", 3.0), Budget(5.14, "7x", 7.0)]
    front = pareto_records(records)
    result = SearchResult(
        study_name="s", storage="sqlite:///x.db", strategy="kdnas", records=records, pareto=front, hypervolume=3.2,
        reference=(1.0, 36.0), recommendations=recommend(records, budgets), kendall_tau=None, n_promoted=0,
        teacher_latency_ms=36.0,
    )  # fmt: skip
    result.write_json(run / "search.json")
    (run / "teacher.json").write_text(json.dumps({"teacher": "minilm-l6", "params": 22_713_216,
                                                  "arch_id": "L6-H384-A12-F1536-gelu"}))  # fmt: skip
    table = RetentionTable(
        tasks=["bbc-news"], metrics={"bbc-news": "accuracy"}, teacher="teacher",
        rows=[
            RetentionRow("teacher", {"bbc-news": 0.96}, {"bbc-news": 0.0}, {"bbc-news": 1.0}, 1.0, latency_ms=36.0,
                         speedup=1.0),
            RetentionRow("every-other-layer", {"bbc-news": 0.93}, {"bbc-news": 0.0}, {"bbc-news": 0.97}, 0.97,
                         latency_ms=18.0, speedup=2.0),
            RetentionRow("model2vec-static", {"bbc-news": 0.80}, {"bbc-news": 0.0}, {"bbc-news": 0.83}, 0.83,
                         latency_ms=0.1, speedup=360.0, fidelity={"mean_cosine": 0.36, "recall_at_10": 0.30}),
        ],
    )  # fmt: skip
    table.write_json(run / "retention.json")


def test_load_report_data_from_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write_run(run)
    d = load_report_data(run)
    assert len(d.trials) == 8
    assert [(t.latency_ms, t.kd_loss) for t in d.front()] == FRONT
    assert d.teacher is not None and d.teacher.latency_ms == 36.0 and d.teacher.kd_loss == 0.0
    assert d.teacher.name == "teacher (minilm-l6)" and d.teacher.params_m == pytest.approx(22.713216)
    assert [(r.budget_label, r.arch_id) for r in d.recommendations] == [
        ("3x", "L5-H128-A4-F512-gelu"), ("7x", "L3-H128-A4-F512-gelu"),
    ]  # fmt: skip
    assert d.budgets_ms == [12.0, 5.14]
    assert [b.name for b in d.baselines] == ["every-other-layer", "model2vec-static"]
    assert d.baselines[0].latency_ms == 18.0
    assert [(e.model, e.role) for e in d.retention] == [
        ("teacher", "teacher"), ("every-other-layer", "baseline"), ("model2vec-static", "peer"),
    ] and d.tasks == ["bbc-news"]  # fmt: skip
    assert d.retention[2].fidelity == {"mean_cosine": 0.36, "recall_at_10": 0.30}
    assert d.meta["strategy"] == "kdnas" and d.meta["hypervolume"] == 3.2


def test_cli_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _write_run(run)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front (5)" in out and "L3-H128-A4-F512-gelu" in out
    assert {p.name for p in (run / "report").iterdir()} == {
        "pareto.png",
        "pareto.html",
        "trials.csv",
        "summary.md",
        "suite.png",
        "suite.html",
    }


def test_bad_run_dirs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match="no such run dir"):
        load_report_data(tmp_path / "nope")
    (tmp_path / "run").mkdir()
    with pytest.raises(ReportError, match="no search results"):
        load_report_data(tmp_path / "run")
    (tmp_path / "run" / "search.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_report_data(tmp_path / "run")
    assert main(["report", str(tmp_path / "run")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_round_trip_dict() -> None:
    d = synthetic_data(1)
    assert ReportData.from_dict(json.loads(json.dumps(d.to_dict()))) == d


def test_suite_plot_places_every_role_and_draws_the_searched_front(tmp_path: Path) -> None:
    from kdnas.report import RetentionEntry, suite_html, suite_png
    from kdnas.report.suite_plot import searched_front, suite_points

    def row(name: str, role: str, speedup: float | None, score: float) -> RetentionEntry:
        return RetentionEntry(model=name, scores={"a": score / 100, "b": (score + 2) / 100}, retention={},
                              speedup=speedup, role=role)  # fmt: skip

    rows = [row("teacher", "teacher", 1.0, 80), row("s3", "student", 3.0, 74), row("s7", "student", 7.0, 70),
            row("s-bad", "student", 2.5, 60), row("tinybert", "baseline", 2.0, 71), row("m2v", "peer", 300.0, 55),
            row("untimed", "baseline", None, 50)]  # fmt: skip
    d = ReportData(trials=[], retention=rows)
    pts = suite_points(d)
    assert [e.model for e in pts] == [
        "teacher",
        "tinybert",
        "s-bad",
        "s3",
        "s7",
        "m2v",
    ]  # timed ones, by speed
    assert pts[1].suite_avg == pytest.approx(0.72)
    assert [e.model for e in searched_front(pts)] == ["s3", "s7"]  # s-bad: s3 is faster and better
    png = suite_png(d, tmp_path / "suite.png")
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = suite_html(d, tmp_path / "suite.html")
    assert html is not None and "searched front" in html.read_text() and "m2v" in html.read_text()
    assert suite_png(ReportData(trials=[], retention=[rows[-1]]), tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_budgets_read_against_the_final_table(tmp_path: Path) -> None:
    """A student the search chose at 8x that the final table times at 6.5x misses its 7x budget, and the summary,
    the terminal and the report data all say so; one that stays over its budget is `kept`."""
    run = tmp_path / "run"
    _write_run(run)
    table = json.loads((run / "retention.json").read_text())
    teacher_row = table["rows"][0]
    for name, speedup in (("student-7x", 6.5), ("student-3x", 3.1)):
        table["rows"].append({**teacher_row, "model": name, "speedup": speedup, "latency_ms": 36.0 / speedup})
    (run / "retention.json").write_text(json.dumps(table))
    (run / "summary.json").write_text(json.dumps({"students": [
        {"name": "student-7x", "budget_label": "7x"}, {"name": "student-3x", "budget_label": "3x"},
    ]}))  # fmt: skip
    d = load_report_data(run)
    assert [(e.model, e.budget_label) for e in d.retention if e.role == "student"] == [
        ("student-7x", "7x"), ("student-3x", "3x"),
    ]  # fmt: skip
    checks = {c.model: c for c in d.budget_checks()}
    assert set(checks) == {"student-7x", "student-3x"}
    seven = checks["student-7x"]
    assert seven.met is False and seven.chosen_speedup == pytest.approx(36.0 / 4.5)
    assert seven.shortfall == pytest.approx(1 - 6.5 / 7.0)
    assert checks["student-3x"].met is True and checks["student-3x"].shortfall == 0.0
    summary = write_report(d, tmp_path / "out")["summary"].read_text()
    assert "## Budgets in the final timing" in summary
    assert "| student-7x | 7x | 8.00x | 6.50x | >= 7.00x | missed by 7.1% |" in summary
    assert "| student-3x | 3x | 3.27x | 3.10x | >= 3.00x | kept |" in summary
    con = Console(record=True, width=200)
    print_summary(d, con)
    text = con.export_text()
    assert "student-7x: missed by 7.1% of its 7x budget in the final table" in text
    assert "student-3x: " not in text


def test_a_budget_in_ms_is_read_in_ms() -> None:
    d = synthetic_data()
    d.recommendations = [RecommendationRow("12 ms", 12.0, "L5-H128-A4-F512-gelu", 11.0, 0.15, 6.0)]
    d.retention[1].budget_label = "12 ms"
    d.retention[1].latency_ms = 13.2
    (check,) = d.budget_checks()
    assert check.met is False and check.shortfall == pytest.approx(0.1)
    d.retention[1].latency_ms = 11.9
    assert d.budget_checks()[0].met is True


def test_an_equal_latency_budget_is_read_against_its_baseline_in_the_same_table() -> None:
    """A student placed at BERT-mini's latency (chosen at 2.91x beside BERT-mini's 2.86x) is judged against
    BERT-mini's speed-up in the final table, less the band's 5%: at 3.19x there, 2.91x misses by 4.2%; had the
    baseline stayed at 2.95x it would be kept. Without the baseline's row the budget's own speed-up is used."""
    d = synthetic_data()
    ms = 36.0 / 2.86
    d.recommendations = [
        RecommendationRow("=bert-mini", ms * 1.05, "L2-H384-A12-F1536-gelu", 36.0 / 2.91, 3.1, 15.6,
                          budget_speedup=2.86, budget_min_ms=ms * 0.95),
    ]  # fmt: skip
    student = d.retention[1]
    student.model, student.budget_label, student.speedup = "student-at-bert-mini", "=bert-mini", 2.91
    mini = RetentionEntry("bert-mini", {}, {}, None, 36.0 / 3.19, 3.19)
    d.retention.append(mini)
    (check,) = d.budget_checks()
    assert check.reference == "bert-mini" and check.floor == pytest.approx(3.19 / 1.05)
    assert check.met is False and check.shortfall == pytest.approx(1 - 2.91 * 1.05 / 3.19)
    assert "| >= 3.04x (bert-mini in the same table, less the band) | missed by 4.2% |" in summary_markdown(d)
    mini.speedup = 2.95
    assert d.budget_checks()[0].met is True
    d.retention.remove(mini)
    (alone,) = d.budget_checks()
    assert alone.reference is None and alone.floor == pytest.approx(2.86 / 1.05) and alone.met is True
