"""Sentence-pair task files: shared premises across splits, the grouped re-split, rows without a second text."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from kdnas.data.splits import task_split_of
from kdnas.data.tasks import load_task, shared_first_texts
from kdnas.errors import DataError
from kdnas.evaluate.config import EvaluateConfig


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _claims(n_premises: int = 30, per_premise: int = 3) -> list[dict]:
    """Fact-verification style rows: one evidence sentence, several claims, split given per row (leaky)."""
    rows = []
    for p in range(n_premises):
        for c in range(per_premise):
            split = ("train", "dev", "test")[(p + c) % 3]  # the same evidence in every split
            rows.append({"evidence": f"evidence sentence {p}", "claim": f"claim {p}.{c}", "label": c % 2,
                         "split": split})  # fmt: skip
    return rows


def test_shared_premises_are_reported_per_split_pair(tmp_path, caplog):
    path = _jsonl(tmp_path / "claims.jsonl", _claims())
    with caplog.at_level(logging.WARNING):
        t = load_task(path, text_field="evidence", text_b_field="claim")
    shared = shared_first_texts(t)
    assert shared == {("train", "dev"): 30, ("train", "test"): 30, ("dev", "test"): 30}
    assert "train-dev 30, train-test 30, dev-test 30" in caplog.text and "group_by_text" in caplog.text


def test_group_by_text_keeps_each_first_text_in_one_split(tmp_path):
    path = _jsonl(tmp_path / "claims.jsonl", _claims())
    t = load_task(path, text_field="evidence", text_b_field="claim", resplit="group_by_text")
    assert all(n == 0 for n in shared_first_texts(t).values())
    assert len(t.train) + len(t.dev) + len(t.test) == 90
    for s in ("train", "dev", "test"):
        assert {task_split_of(x) for x in t.split(s).texts} == {s}


def test_exact_pairs_in_dev_and_test_point_to_the_resplit(tmp_path):
    rows = _claims()
    rows.append({**rows[1], "split": "test" if rows[1]["split"] == "dev" else "dev"})
    rows.append({**rows[1], "split": "dev" if rows[1]["split"] == "test" else "test"})
    with pytest.raises(DataError, match=r"pair\(s\) are in both dev and test.*resplit: group_by_text"):
        load_task(_jsonl(tmp_path / "c.jsonl", rows), text_field="evidence", text_b_field="claim")
    # the grouped re-split is the fix (the duplicate pair then sits in one split)
    t = load_task(tmp_path / "c.jsonl", text_field="evidence", text_b_field="claim", resplit="group_by_text")
    assert t.is_pair


def test_rows_without_a_second_text_are_dropped_with_a_count(tmp_path, caplog):
    rows = _claims()
    rows[0]["claim"] = ""
    rows[4]["claim"] = None
    path = _jsonl(tmp_path / "c.jsonl", rows)
    with caplog.at_level(logging.WARNING):
        t = load_task(path, text_field="evidence", text_b_field="claim", resplit="group_by_text")
    assert t.dropped == {"empty second text": 2}
    assert "dropped 2 row(s) whose second text (column 'claim')" in caplog.text
    for r in rows:
        r["claim"] = ""
    with pytest.raises(DataError, match="empty second text \\(column 'claim'\\)"):
        load_task(_jsonl(tmp_path / "d.jsonl", rows), text_field="evidence", text_b_field="claim")


def test_regression_and_single_class_errors_name_the_column(tmp_path):
    rows = [{"a": f"x {s} {i}", "b": f"y {i}", "score": 0.5 * i, "split": s}
            for s in ("train", "dev", "test") for i in range(3)]  # fmt: skip
    rows[2]["score"] = "high"
    with pytest.raises(DataError, match=r"regression label 'high' in column 'score'"):
        load_task(_jsonl(tmp_path / "r.jsonl", rows), text_field="a", text_b_field="b", label_field="score",
                  kind="regression")  # fmt: skip
    one = [
        {"a": f"x {s} {i}", "b": "y", "y": 1, "split": s} for s in ("train", "dev", "test") for i in range(3)
    ]
    with pytest.raises(DataError, match=r"one.jsonl: column 'y' has a single class"):
        load_task(_jsonl(tmp_path / "one.jsonl", one), text_field="a", text_b_field="b", label_field="y",
                  label_names=["0", "1"])  # fmt: skip


def test_resplit_and_task_options_are_validated():
    with pytest.raises(DataError, match="resplit"):
        load_task("x.csv", resplit="by_label")  # type: ignore[arg-type]
    cfg = EvaluateConfig(tasks=["a.csv"], task_options={"a.csv": {"resplit": "x", "colour": "red"},
                                                        "b.csv": {}})  # fmt: skip
    problems = cfg.check()
    assert any("task_options.a.csv.resplit: 'x' must be one of none, group_by_text" in p for p in problems)
    assert any("task_options.a.csv.colour: unknown option" in p for p in problems)
    assert any("task_options.b.csv: not a reference in tasks" in p for p in problems)


def test_pair_encoding_is_an_option_of_pair_tasks_only(tmp_path):
    path = _jsonl(tmp_path / "c.jsonl", _claims())
    assert load_task(path, text_field="evidence", text_b_field="claim").pair_encoding == "cross"
    t = load_task(path, text_field="evidence", text_b_field="claim", pair_encoding="bi")
    assert t.pair_encoding == "bi"
    with pytest.raises(DataError, match=r"pair_encoding bi applies to sentence-pair tasks.*text_b_field"):
        load_task(path, text_field="claim", pair_encoding="bi")
    with pytest.raises(DataError, match="pair_encoding: 'siamese' must be one of cross, bi"):
        load_task(path, text_field="evidence", text_b_field="claim", pair_encoding="siamese")  # type: ignore[arg-type]
    cfg = EvaluateConfig(tasks=["a.csv"], task_options={"a.csv": {"pair_encoding": "siamese"}})
    assert any(
        "task_options.a.csv.pair_encoding: 'siamese' must be one of cross, bi" in p for p in cfg.check()
    )
