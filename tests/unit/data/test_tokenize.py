"""TokenBlock views and batches, and the packed / sentence row builders (tiny tokenizer, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kdnas.data.tokenize import (
    PackedRows,
    RowWriter,
    SentenceRows,
    Specials,
    TokenBlock,
    specials_of,
    split_sentences,
    tokenizer_fingerprint,
)
from kdnas.errors import DataError
from kdnas.testing import tiny_tokenizer

SP = Specials(cls=2, sep=3, pad=0)


def _block(n: int = 10, s: int = 6) -> TokenBlock:
    ids = np.arange(n * s, dtype=np.int32).reshape(n, s) + 10
    lengths = np.array([s - (i % 3) for i in range(n)])
    for i, n_real in enumerate(lengths):
        ids[i, n_real:] = 0
    return TokenBlock.from_arrays(ids, lengths)


def test_block_from_arrays_matches_tensors() -> None:
    b = _block()
    assert len(b) == 10 and b.seq_len == 6
    assert b.input_ids.dtype == torch.long and b.attention_mask.dtype == torch.long
    assert b.attention_mask[1].tolist() == [1, 1, 1, 1, 1, 0]
    assert b.num_tokens == int(b.attention_mask.sum())
    t = TokenBlock(b.input_ids, b.attention_mask)
    assert t.num_tokens == b.num_tokens
    assert torch.equal(t[3:5]["input_ids"], b[3:5]["input_ids"])
    assert TokenBlock(torch.ones(2, 4, dtype=torch.long)).num_tokens == 8  # no mask: all real


def test_block_rejects_bad_shapes() -> None:
    with pytest.raises(DataError, match=r"\[N, S\]"):
        TokenBlock(torch.ones(4, dtype=torch.long))
    with pytest.raises(DataError, match="attention_mask shape"):
        TokenBlock(torch.ones(2, 4), torch.ones(2, 3))


def test_subset_and_subset_tokens() -> None:
    b = _block()
    assert len(b.subset(4)) == 4
    assert torch.equal(b.subset(4).input_ids, b.input_ids[:4])
    with pytest.raises(DataError, match="asked for 11 rows"):
        b.subset(11)
    lens = b.lengths
    sub = b.subset_tokens(int(lens[:3].sum()))
    assert len(sub) == 3
    assert len(b.subset_tokens(int(lens[:3].sum()) + 1)) == 4
    assert len(b.subset_tokens(10**9)) == len(b)


def test_batches_cover_every_row_once_and_are_seeded() -> None:
    b = _block(n=11)
    rows = [r for batch in b.batches(4, seed=0) for r in batch["input_ids"].tolist()]
    assert sorted(map(tuple, rows)) == sorted(map(tuple, b.input_ids.tolist()))
    again = [r for batch in b.batches(4, seed=0) for r in batch["input_ids"].tolist()]
    other = [r for batch in b.batches(4, seed=1) for r in batch["input_ids"].tolist()]
    assert rows == again and rows != other
    in_order = [r for batch in b.batches(4, seed=None) for r in batch["input_ids"].tolist()]
    assert in_order == b.input_ids.tolist()
    assert [len(x["input_ids"]) for x in b.batches(4, seed=0, drop_last=True)] == [4, 4]
    trimmed = next(b.batches(3, seed=None, trim_padding=True))  # lengths 6, 5, 4 -> width 6
    assert trimmed["input_ids"].shape == (3, 6)
    picked = b[np.array([1, 2])]
    assert picked["attention_mask"].sum(1).tolist() == [5, 4]


def _write(tmp_path: Path, seq_len: int) -> RowWriter:
    return RowWriter(tmp_path / "rows.bin", seq_len, SP.pad, buffer_rows=2)


def test_packed_rows_are_full_and_wrapped(tmp_path: Path) -> None:
    w = _write(tmp_path, 6)
    p = PackedRows(w, SP)
    docs = [[10, 11, 12], [20, 21], [30, 31, 32, 33, 34], [40]]
    for d in docs:
        p.add(d)
    p.finish()
    lengths = w.close()
    rows = w.memmap()
    stream = [t for d in docs for t in [*d, SP.sep]]  # 15 tokens -> 3 rows of 4, 3 dropped
    assert rows.shape == (3, 6) and lengths.tolist() == [6, 6, 6]
    for i, row in enumerate(rows.tolist()):
        assert row[0] == SP.cls and row[-1] == SP.sep
        assert row[1:-1] == stream[4 * i : 4 * i + 4]
    assert p.dropped_tokens == 3


def test_sentence_rows_group_whole_sentences_and_pad(tmp_path: Path) -> None:
    w = _write(tmp_path, 6)  # body 4
    s = SentenceRows(w, SP)
    s.add_sentences([[10, 11], [12], [13, 14]])  # 2+1 fit, then 2
    s.add_sentences([[20, 21, 22, 23, 24, 25]])  # longer than a row: cut
    s.add([30])
    lengths = w.close()
    rows = w.memmap().tolist()
    assert rows == [
        [2, 10, 11, 12, 3, 0],
        [2, 13, 14, 3, 0, 0],
        [2, 20, 21, 22, 23, 3],
        [2, 24, 25, 3, 0, 0],
        [2, 30, 3, 0, 0, 0],
    ]
    assert lengths.tolist() == [5, 4, 6, 4, 3]


def test_sentence_rows_with_max_sentences_end_a_row_after_that_many(tmp_path: Path) -> None:
    w = _write(tmp_path, 8)  # body 6
    s = SentenceRows(w, SP, max_sentences=2)
    s.add_sentences([[10], [11], [12, 13], [14, 15, 16, 17, 18], [19]])  # 1+1 | 2 (then 5 does not fit) | 5+1
    s.add_sentences([[20, 21, 22, 23, 24, 25, 26, 27]])  # longer than a row: cut, each piece a row
    w.close()
    assert w.memmap().tolist() == [
        [2, 10, 11, 3, 0, 0, 0, 0],
        [2, 12, 13, 3, 0, 0, 0, 0],
        [2, 14, 15, 16, 17, 18, 19, 3],
        [2, 20, 21, 22, 23, 24, 25, 3],
        [2, 26, 27, 3, 0, 0, 0, 0],
    ]


def test_max_sentences_is_checked() -> None:
    from kdnas.data.config import CorpusConfig

    assert CorpusConfig(mode="sentence", max_sentences=2).check() == []
    assert "must be >= 1" in CorpusConfig(mode="sentence", max_sentences=0).check()[0]
    assert "mode: sentence only" in CorpusConfig(mode="packed", max_sentences=2).check()[0]


def test_row_builders_need_room(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no room"):
        PackedRows(RowWriter(tmp_path / "x.bin", 2, 0), SP)


def test_specials_and_fingerprint() -> None:
    tok = tiny_tokenizer()
    sp = specials_of(tok)
    assert (sp.cls, sp.sep, sp.pad) == (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id)
    fp = tokenizer_fingerprint(tok)
    tok("the city " * 200, truncation=True, max_length=8)  # call-time truncation must not change it
    assert tokenizer_fingerprint(tok) == fp
    tok2 = tiny_tokenizer()
    tok2.add_tokens(["newword"])
    assert tokenizer_fingerprint(tok2) != fp


def test_split_sentences() -> None:
    assert split_sentences("One two. Three four! Five?\nSix") == ["One two.", "Three four!", "Five?", "Six"]
    assert split_sentences("  ") == []
