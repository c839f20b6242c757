"""Corpus readers: documents from text / JSONL / CSV files, zoo assets or `datasets`, read lazily, one
`Document` (key, text, source) at a time; bad input names the file and line."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas.data.splits import task_split_of
from kdnas.errors import DataError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".txt", ".text", ".md")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv", ".tsv")


@dataclass(frozen=True)
class Document:
    """One document: `key` decides its split (zoo: title or relative path; files: the text itself)."""

    key: str
    text: str
    source: str


# ------------------------------------------------------------------------------------------------------------
# reading documents


def iter_documents(
    source: str,
    *,
    text_field: str = "text",
    txt_documents: str = "paragraph",
    cache_dir: str | Path | None = None,
    max_documents: int | None = None,
    exclude_task_eval: bool = True,
) -> Iterator[Document]:
    """Documents of one source, read lazily.

    `source` is a zoo corpus name (`wiki-vital-en`, `bbc-news`, ...), a file (.txt/.md: paragraphs or lines
    per `txt_documents`; .jsonl: `text_field` of each object; .csv/.tsv: the `text_field` column), a dir of
    such files, or `hf:NAME[:CONFIG]:SPLIT` (needs `datasets`). Blank documents are skipped. For zoo sources,
    `exclude_task_eval` drops the documents of the zoo task's dev/test split.
    """
    docs = _iter_source(source, text_field, txt_documents, cache_dir, exclude_task_eval)
    n = 0
    for doc in docs:
        if max_documents is not None and n >= max_documents:
            break
        n += 1
        yield doc
    if n == 0:
        raise DataError(f"{source}: no documents (the source is empty or every document is blank)")


def _iter_source(
    source: str, text_field: str, txt_documents: str, cache_dir: str | Path | None, exclude_task_eval: bool
) -> Iterator[Document]:
    from kdnas import zoo

    if source in zoo.ASSETS:
        yield from _iter_zoo(source, cache_dir, exclude_task_eval)
        return
    if source.startswith("hf:"):
        yield from _iter_hf(source, text_field)
        return
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES
        )
        if not files:
            raise DataError(f"{path}: no .txt, .jsonl or .csv files in this dir")
        for f in files:
            yield from _iter_file(f, text_field, txt_documents)
        return
    if path.is_file():
        yield from _iter_file(path, text_field, txt_documents)
        return
    corpora = [a.name for a in zoo.ASSETS.values() if a.has_role("corpus")]
    raise DataError(
        f"{source}: no such file or dir, and not a zoo corpus ({', '.join(corpora)}); give a .txt, .jsonl or "
        ".csv file, a dir of them, a zoo name, or hf:NAME[:CONFIG]:SPLIT"
    )


def _iter_file(path: Path, text_field: str, txt_documents: str) -> Iterator[Document]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        yield from _iter_jsonl(path, text_field)
    elif suffix in CSV_SUFFIXES:
        yield from _iter_csv(path, text_field, delimiter="\t" if suffix == ".tsv" else ",")
    elif txt_documents == "line":
        src = str(path)
        for _, line in _text_lines(path):
            if line.strip():
                yield Document(line.strip(), line.strip(), src)
    elif txt_documents == "paragraph":
        yield from _iter_paragraphs(path)
    else:
        raise DataError(f"txt_documents: {txt_documents!r} is not 'paragraph' or 'line'")


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) with a clear DataError for binary or non-UTF-8 content."""
    try:
        f = path.open("rb")
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    with f:
        for lineno, raw in enumerate(f, 1):
            yield lineno, _decode_line(path, lineno, raw)


def _decode_line(path: Path, lineno: int, raw: bytes) -> str:
    if b"\x00" in raw:
        raise DataError(
            f"{path}:{lineno}: contains NUL bytes, so this looks like a binary file, not text; give a UTF-8 "
            ".txt, .jsonl or .csv file"
        )
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1}); convert the "
            "file to UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`"
        ) from None
    return line.lstrip("\ufeff") if lineno == 1 else line


def _iter_paragraphs(path: Path) -> Iterator[Document]:
    src, para = str(path), []
    for _, line in _text_lines(path):
        if line.strip():
            para.append(line.strip())
        elif para:
            text = " ".join(para)
            yield Document(text, text, src)
            para = []
    if para:
        text = " ".join(para)
        yield Document(text, text, src)


def _iter_jsonl(path: Path, text_field: str) -> Iterator[Document]:
    src = str(path)
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            hint = (
                " (a JSON array is not JSONL: write one object per line)"
                if lineno == 1 and line.lstrip().startswith("[")
                else ""
            )
            raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}){hint}") from None
        if not isinstance(rec, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object with a {text_field!r} field, got {type(rec).__name__}"
            )
        value: Any = rec
        for part in text_field.split("."):  # `a.b` reaches into nested objects
            if not isinstance(value, dict) or part not in value:
                fields = ", ".join(sorted(rec)) or "none"
                raise DataError(
                    f"{path}:{lineno}: no field {text_field!r} (fields: {fields}); set corpus.text_field"
                )
            value = value[part]
        if value is None:
            continue
        if not isinstance(value, str):
            raise DataError(
                f"{path}:{lineno}: field {text_field!r} is a {type(value).__name__}, expected text"
            )
        if value.strip():
            yield Document(value.strip(), value.strip(), src)


class _LineTracker:
    """Binary lines -> decoded text for csv, with NUL / UTF-8 errors reported at the physical line."""

    def __init__(self, path: Path):
        self.path, self.lineno = path, 0
        self._lines = path.open("rb")

    def lines(self) -> Iterator[str]:
        with self._lines:
            for raw in self._lines:
                self.lineno += 1
                yield _decode_line(self.path, self.lineno, raw)


def _iter_csv(path: Path, column: str, *, delimiter: str) -> Iterator[Document]:
    src = str(path)
    try:
        tracker = _LineTracker(path)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    reader = csv.DictReader(tracker.lines(), delimiter=delimiter)
    try:
        header = reader.fieldnames
        if not header:
            raise DataError(f"{path}: empty CSV (no header row)")
        if column not in header:
            raise DataError(
                f"{path}: no column {column!r} (columns: {', '.join(header)}); set corpus.text_field"
            )
        for row in reader:
            value = row.get(column)
            if value and value.strip():
                yield Document(value.strip(), value.strip(), src)
    except csv.Error as e:
        raise DataError(f"{path}:{tracker.lineno}: not valid CSV ({e})") from None


def _iter_zoo(name: str, cache_dir: str | Path | None, exclude_task_eval: bool) -> Iterator[Document]:
    from kdnas import zoo

    asset = zoo.ASSETS[name]
    if not asset.has_role("corpus"):
        corpora = [a.name for a in zoo.ASSETS.values() if a.has_role("corpus")]
        raise DataError(f"{name}: is a {asset.kind}, not a corpus; zoo corpora: {', '.join(corpora)}")
    root = zoo.fetch(name, cache_dir=cache_dir)
    keep = (lambda key: task_split_of(key) == "train") if exclude_task_eval else (lambda key: True)
    if name.startswith("wiki-vital-"):
        path = root / asset.meta["json"]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(
                f"{path}: cannot read ({e}); fetch it again: kdnas fetch --verify {name}"
            ) from None
        for title, art in data.items():  # the key is the title, as for the task (kdnas.data.tasks)
            text = (art.get("extract") or "").strip() if isinstance(art, dict) else ""
            if text and keep(title):
                yield Document(title, text, name)
    elif name == "bbc-news":
        data_dir = root / asset.meta["data_dir"]
        for f in sorted(data_dir.glob("*/*.txt")):
            key = f.relative_to(data_dir).as_posix()  # as for the task
            if not keep(key):
                continue
            raw = f.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:  # one file of the set is cp1252 (a `£`)
                text = raw.decode("cp1252", errors="replace")
            if text.strip():
                yield Document(key, " ".join(p.strip() for p in text.split("\n") if p.strip()), name)
    else:  # pragma: no cover - a corpus asset added to the zoo without a reader
        raise DataError(f"{name}: kdnas has no reader for this zoo corpus")


def _iter_hf(source: str, text_field: str) -> Iterator[Document]:
    from kdnas._imports import optional_import

    parts = source[3:].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(
            f"{source}: write hf:NAME:SPLIT or hf:NAME:CONFIG:SPLIT (e.g. hf:wikitext:wikitext-2-raw-v1:train)"
        )
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    datasets = optional_import("datasets", purpose=f"the corpus {source}")
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
    except Exception as e:  # datasets raises many types (network, missing config, ...)
        raise DataError(f"{source}: cannot load with datasets ({type(e).__name__}: {e})") from None
    for i, rec in enumerate(ds):
        if text_field not in rec:
            raise DataError(
                f"{source}: record {i} has no field {text_field!r} (fields: {', '.join(rec)}); set corpus.text_field"
            )
        value = rec[text_field]
        if isinstance(value, str) and value.strip():
            yield Document(value.strip(), value.strip(), source)
