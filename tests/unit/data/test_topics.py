from __future__ import annotations

import csv
from pathlib import Path

import pytest

from kdnas.data.tasks import Task, TaskSplit, load_task
from kdnas.data.topics import (
    TOPIC_PIVOTS,
    language_of_ref,
    load_zero_shot,
    shared_label_space,
    split_task_ref,
    zero_shot_task,
)
from kdnas.errors import DataError

# The label sets of the zoo topic tasks, as measured on the fetched data (Uncategorized dropped).
EN = ["Arts", "Biology and health sciences", "Everyday life", "Geography", "History", "Mathematics", "People",
      "Philosophy and religion", "Physical sciences", "Society and social sciences", "Technology"]  # fmt: skip
FR = ["Arts et culture", "Géographie", "Histoire", "Mathématiques", "Personnalités", "Philosophie et religion",
      "Santé et médecine", "Science", "Société et sciences sociales", "Technologie", "Vie quotidienne"]  # fmt: skip
ES = ["Antropología, sicología y vida cotidiana", "Artes", "Filosofía y religión", "Geografía", "Historia",
      "Matemáticas", "Personas", "Tecnología"]  # fmt: skip
ANTRO = "Antropología, sicología y vida cotidiana"


def test_topic_maps_cover_exactly_the_zoo_label_sets():
    assert sorted(TOPIC_PIVOTS["wiki-vital-en"]) == EN
    assert sorted(TOPIC_PIVOTS["wiki-vital-fr"]) == FR
    assert sorted(TOPIC_PIVOTS["wiki-vital-es"]) == ES


def test_en_to_fr_is_one_to_one():
    space = shared_label_space("wiki-vital-en", EN, "wiki-vital-fr", FR)
    assert len(space.classes) == 11 and not space.unmapped_source and not space.unmapped_target
    pairs = {c.source_labels: c.target_labels for c in space.classes}
    assert pairs[("Biology and health sciences",)] == ("Santé et médecine",)
    assert pairs[("Physical sciences",)] == ("Science",)
    assert pairs[("Everyday life",)] == ("Vie quotidienne",)
    assert space.names == FR  # classes in the target's label order, named in the target language


def test_en_to_es_merges_and_drops_the_sciences():
    space = shared_label_space("wiki-vital-en", EN, "wiki-vital-es", ES)
    assert space.names == ES and not space.unmapped_target
    assert space.unmapped_source == ["Biology and health sciences", "Physical sciences"]
    antro = space.classes[0]
    assert antro.name == ANTRO and antro.source_labels == ("Everyday life", "Society and social sciences")
    groups = space.source_groups(EN)
    assert groups[0] == [EN.index("Everyday life"), EN.index("Society and social sciences")]
    assert sorted(i for g in groups for i in g) == sorted(
        i for i, n in enumerate(EN) if n not in space.unmapped_source
    )


def test_es_to_en_excludes_target_topics_without_a_source():
    space = shared_label_space("wiki-vital-es", ES, "wiki-vital-en", EN)
    assert space.unmapped_target == ["Biology and health sciences", "Physical sciences"]
    assert len(space.classes) == 8 and not space.unmapped_source
    merged = next(c for c in space.classes if c.source_labels == (ANTRO,))
    assert merged.target_labels == ("Everyday life", "Society and social sciences")
    assert merged.name == "Everyday life / Society and social sciences"
    where = space.target_index(EN)
    assert where[EN.index("Everyday life")] == where[EN.index("Society and social sciences")] is not None
    assert where[EN.index("Physical sciences")] is None


def test_fr_to_es_goes_through_the_pivots():
    space = shared_label_space("wiki-vital-fr", FR, "wiki-vital-es", ES)
    assert len(space.classes) == 8 and space.unmapped_source == ["Santé et médecine", "Science"]
    assert space.classes[0].source_labels == ("Société et sciences sociales", "Vie quotidienne")
    assert "Vie quotidienne" in space.describe()


def test_task_files_map_by_label_name():
    space = shared_label_space("a.csv", ["neg", "pos", "mixed"], "b.csv", ["Pos", "neg", "unsure"])
    assert [(c.source_labels, c.target_labels) for c in space.classes] == [(("pos",), ("Pos",)),
                                                                          (("neg",), ("neg",))]  # fmt: skip
    assert space.unmapped_source == ["mixed"] and space.unmapped_target == ["unsure"]


def test_a_map_covering_fewer_than_two_classes_is_refused():
    with pytest.raises(DataError, match=r"covers 0 target class.*at least 2 classes in common"):
        shared_label_space("bbc-news", ["business", "sports"], "wiki-vital-fr", FR)
    with pytest.raises(DataError, match=r"covers 1 target class.*only 'pos'"):
        shared_label_space("a", ["pos", "neg"], "b", ["pos", "other"])


def test_a_zoo_topic_missing_from_the_map_is_reported():
    with pytest.raises(DataError, match=r"'Sports'.*TOPIC_PIVOTS"):
        shared_label_space("wiki-vital-en", [*EN, "Sports"], "wiki-vital-fr", FR)


def test_split_task_ref():
    assert split_task_ref("wiki-vital-en") is None
    assert split_task_ref(" wiki-vital-en > wiki-vital-fr ") == ("wiki-vital-en", "wiki-vital-fr")
    with pytest.raises(DataError, match="same task"):
        split_task_ref("wiki-vital-en>wiki-vital-en")
    with pytest.raises(DataError, match="one '>'"):
        split_task_ref("a>b>c")
    with pytest.raises(DataError, match="one '>'"):
        split_task_ref("wiki-vital-en>")
    assert language_of_ref("wiki-vital-en>wiki-vital-es") == "es"
    assert language_of_ref("bbc-news") == "en" and language_of_ref("my.csv") is None


def test_an_existing_path_with_a_gt_is_a_plain_task(tmp_path):
    odd = tmp_path / "x>y.csv"
    odd.write_text("text,label\n")
    assert split_task_ref(odd) is None


def _task(name: str, labels: list[str], test_labels: list[int], kind: str = "classification") -> Task:
    sp = TaskSplit(texts=[f"{name} {i}" for i in range(len(test_labels))], texts_b=None, labels=test_labels)
    return Task(name=name, kind=kind, label_names=labels, train=sp, dev=sp, test=sp, language="fr")  # type: ignore[arg-type]


def test_zero_shot_task_maps_test_labels_and_counts_exclusions():
    src = _task("src", ["a", "b", "c"], [0, 1, 2])
    tgt = _task("tgt", ["b", "a", "z"], [0, 1, 2, 2, 1, 0])
    zs = zero_shot_task("src>tgt", src, tgt)
    assert zs.label_names == ["b", "a"] and zs.source_groups == [[1], [0]]
    assert zs.test.labels == [0, 1, 1, 0] and zs.test.texts == ["tgt 0", "tgt 1", "tgt 4", "tgt 5"]
    assert zs.excluded == {"z": 2} and zs.language == "fr" and zs.train is src.train
    assert tgt.test.labels == [0, 1, 2, 2, 1, 0]  # the target task itself is left as it was
    summary = zs.summary()
    assert summary["n_excluded"] == 2 and summary["unmapped_source"] == ["c"]
    assert "2 test examples excluded" in zs.describe()
    zs.dev = src.dev.subset([0])  # e.g. a benchmark capping dev: the source's dev, used for early stopping
    assert len(src.dev) == 1 and zs.dev is src.dev


def test_zero_shot_task_bad_pairs():
    src = _task("src", ["a", "b"], [0, 1])
    with pytest.raises(DataError, match=r"regression.*classification on both sides"):
        zero_shot_task("src>reg", src, _task("reg", [], [0, 1], kind="regression"))
    with pytest.raises(DataError, match="none of the 2 tgt test examples"):
        zero_shot_task("src>tgt", _task("src", ["a", "b", "c"], [0]), _task("tgt", ["a", "b", "z"], [2, 2]))
    pair = _task("pair", ["a", "b"], [0, 1])
    pair.test.texts_b = list(pair.test.texts)
    with pytest.raises(DataError, match="sentence pairs"):
        zero_shot_task("src>pair", src, pair)


def _csv(path: Path, labels: list[str]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "split"])
        for s in ("train", "dev", "test"):
            w.writerows([f"{path.stem} {s} {i} {y}", y, s] for i, y in enumerate(labels))
    return path


def test_load_zero_shot_from_files(tmp_path):
    en = _csv(tmp_path / "en.csv", ["pos", "neg", "pos", "neg"])
    fr = _csv(tmp_path / "fr.csv", ["pos", "neg", "meh"])
    loaded: dict[str, Task] = {}
    zs = load_zero_shot(f"{en}>{fr}", loaded=loaded)
    assert zs.name == "en>fr" and zs.source is loaded[str(en)] and zs.target == "fr"
    assert zs.excluded == {"meh": 1} and len(zs.test) == 2
    with pytest.raises(DataError, match=r"target task .*nope.csv: no such task file"):
        load_zero_shot(f"{en}>{tmp_path / 'nope.csv'}")
    with pytest.raises(DataError, match="zero-shot reference"):
        load_task(f"{en}>{fr}")
