"""Token rows for distillation: `TokenBlock` (ids + attention mask, in RAM or memory-mapped) and the row builders.

`packed` rows concatenate documents and cut them into full `seq_len` rows; `sentence` rows hold whole
sentences of one document each, right-padded. Rows stream to raw int32 files, so corpora larger than RAM work.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from kdnas.errors import DataError

if TYPE_CHECKING:
    import torch

ID_DTYPE = np.int32
"""On-disk dtype of token ids (every tokenizer vocabulary fits)."""


class TokenBlock:
    """Rows of token ids `input_ids` [N, S] and `attention_mask` [N, S] (1 = real token, 0 = right padding).

    Built from tensors (`TokenBlock(input_ids, attention_mask)`) or from arrays that may be memory-mapped
    (`TokenBlock.from_arrays(ids, lengths)`); in the latter case the LongTensor properties materialise on first
    use, while `batches`, `subset` and indexing only read the rows they need.
    """

    def __init__(self, input_ids: Any, attention_mask: Any | None = None):
        import torch

        ids = torch.as_tensor(input_ids).long()
        if ids.dim() != 2:
            raise DataError(f"TokenBlock input_ids must be [N, S], got shape {tuple(ids.shape)}")
        mask = torch.ones_like(ids) if attention_mask is None else torch.as_tensor(attention_mask).long()
        if mask.shape != ids.shape:
            raise DataError(f"attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(ids.shape)}")
        self._ids: Any = ids
        self._mask: Any = mask
        self._lengths: np.ndarray | None = None

    @classmethod
    def from_arrays(cls, ids: np.ndarray, lengths: np.ndarray) -> TokenBlock:
        """Rows `ids` [N, S] (int array, possibly a memmap) whose first `lengths[i]` tokens are real."""
        if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
            raise DataError(f"ids {ids.shape} and lengths {lengths.shape} do not describe [N, S] rows")
        block = cls.__new__(cls)
        block._ids, block._mask, block._lengths = ids, None, np.asarray(lengths, dtype=np.int64)
        return block

    # ---- tensors --------------------------------------------------------------------------------------------

    @property
    def input_ids(self) -> torch.Tensor:
        """LongTensor [N, S]."""
        import torch

        if not isinstance(self._ids, torch.Tensor):
            self._ids = torch.from_numpy(np.asarray(self._ids, dtype=np.int64))
        return self._ids

    @property
    def attention_mask(self) -> torch.Tensor:
        """LongTensor [N, S]: 1 for real tokens, 0 for padding."""
        if self._mask is None:
            assert self._lengths is not None
            self._mask = _mask_from_lengths(self._lengths, self.seq_len)
        return self._mask

    # ---- sizes ----------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self._ids.shape[1])

    @property
    def lengths(self) -> np.ndarray:
        """Real (non-pad) tokens per row, int64 [N]."""
        if self._lengths is None:
            self._lengths = self.attention_mask.sum(dim=1).numpy().astype(np.int64)
        return self._lengths

    @property
    def num_tokens(self) -> int:
        """Real (non-pad) tokens in the block."""
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"TokenBlock(rows={len(self)}, seq_len={self.seq_len}, tokens={self.num_tokens})"

    # ---- views ----------------------------------------------------------------------------------------------

    def subset(self, n: int) -> TokenBlock:
        """The first `n` rows (rows are shuffled at build time, so this is a seeded sample; nested in n)."""
        if n < 0 or n > len(self):
            raise DataError(f"asked for {n} rows but the block has {len(self)}; lower the budget or add text")
        return self._take(slice(0, n))

    def subset_tokens(self, num_tokens: int) -> TokenBlock:
        """The shortest prefix of rows holding at least `num_tokens` real tokens (all rows if too few)."""
        cum = np.cumsum(self.lengths)
        n = int(np.searchsorted(cum, num_tokens, side="left")) + 1
        return self._take(slice(0, min(n, len(self))))

    def __getitem__(self, idx: int | slice | Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """A batch dict {input_ids, attention_mask} of LongTensors [n, S] for the given rows."""
        sub = self._take(idx if not isinstance(idx, int) else slice(idx, idx + 1))
        return {"input_ids": sub.input_ids, "attention_mask": sub.attention_mask}

    def batches(
        self, batch_size: int, seed: int | None = 0, *, drop_last: bool = False, trim_padding: bool = False
    ) -> Iterator[dict[str, torch.Tensor]]:
        """Batches {input_ids, attention_mask} [B, S], rows shuffled by `seed` (None: in order).

        `trim_padding` cuts each batch to its longest row (sentence mode runs faster; shapes then vary).
        """
        if batch_size < 1:
            raise DataError(f"batch_size {batch_size} must be >= 1")
        n = len(self)
        order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if drop_last and len(idx) < batch_size:
                return
            batch = self[np.sort(idx) if seed is None else idx]
            if trim_padding:
                width = int(batch["attention_mask"].sum(dim=1).max())
                batch = {k: v[:, :width] for k, v in batch.items()}
            yield batch

    def _take(self, idx: Any) -> TokenBlock:
        import torch

        if self._lengths is not None and not isinstance(self._ids, torch.Tensor):
            ids = self._ids[idx] if isinstance(idx, slice) else self._ids[np.asarray(idx)]
            return TokenBlock.from_arrays(ids, self._lengths[idx])
        t_idx = idx if isinstance(idx, slice) else torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return TokenBlock(self.input_ids[t_idx], self.attention_mask[t_idx])


def _mask_from_lengths(lengths: np.ndarray, seq_len: int) -> torch.Tensor:
    import torch

    lens = torch.from_numpy(np.asarray(lengths, dtype=np.int64))
    return (torch.arange(seq_len)[None, :] < lens[:, None]).long()


# ------------------------------------------------------------------------------------------------------------
# tokenizer facts


@dataclass(frozen=True)
class Specials:
    """Special token ids a tokenizer uses for a single sequence (None where it has none)."""

    cls: int | None
    sep: int | None
    pad: int

    @property
    def count(self) -> int:
        return (self.cls is not None) + (self.sep is not None)


def specials_of(tokenizer: Any) -> Specials:
    """[CLS]/[SEP]/[PAD] ids (RoBERTa-style <s>, </s>, <pad> alike; bos/eos as fallback, pad 0 if none)."""
    cls = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    return Specials(cls=cls, sep=sep, pad=0 if pad is None else int(pad))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A hash of everything that changes token ids: vocabulary, normaliser, pre-tokeniser, special tokens."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # truncation / padding are call-time state that tokenizing itself changes
        spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        h.update(json.dumps(spec, sort_keys=True).encode())
    else:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    h.update(json.dumps(list(specials_of(tokenizer).__dict__.values())).encode())
    return h.hexdigest()[:16]


def encode(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """Token ids of each text without special tokens (no truncation: rows are cut later)."""
    if not texts:
        return []
    out = tokenizer(
        texts,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    return [list(x) for x in out["input_ids"]]


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Split at sentence-final punctuation followed by space, and at line breaks (good enough to group rows)."""
    return [s for s in (p.strip() for p in _SENTENCE_END.split(text)) if s]


# ------------------------------------------------------------------------------------------------------------
# row builders


class RowWriter:
    """Appends rows of `seq_len` token ids (int32) to a raw file and keeps their real lengths."""

    def __init__(self, path: Path, seq_len: int, pad: int, *, buffer_rows: int = 1024):
        self.path, self.seq_len, self.pad = path, seq_len, pad
        self._f: BinaryIO = path.open("wb")
        self._buf: list[list[int]] = []
        self._lengths: list[int] = []
        self._buffer_rows = buffer_rows
        self.rows = 0

    def add(self, row: list[int]) -> None:
        assert 0 < len(row) <= self.seq_len, (len(row), self.seq_len)
        self._lengths.append(len(row))
        self._buf.append(row + [self.pad] * (self.seq_len - len(row)))
        self.rows += 1
        if len(self._buf) >= self._buffer_rows:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._f.write(np.asarray(self._buf, dtype=ID_DTYPE).tobytes())
            self._buf = []

    def close(self) -> np.ndarray:
        """Flush; return the row lengths (int32 [rows])."""
        self._flush()
        self._f.close()
        return np.asarray(self._lengths, dtype=np.int32)

    def memmap(self) -> np.ndarray:
        """The written rows as a read-only memmap [rows, seq_len] (after close)."""
        if self.rows == 0:
            return np.zeros((0, self.seq_len), dtype=ID_DTYPE)
        return np.memmap(self.path, dtype=ID_DTYPE, mode="r", shape=(self.rows, self.seq_len))


class RowBuilder:
    """Turns documents into rows on a RowWriter; `finish` flushes what is left at the end of a split."""

    def __init__(self, writer: RowWriter, specials: Specials):
        self.writer, self.sp = writer, specials
        self.body = writer.seq_len - specials.count
        if self.body < 1:
            raise DataError(f"seq_len {writer.seq_len} leaves no room for text after special tokens")
        self.dropped_tokens = 0

    def add(self, ids: list[int]) -> None:
        """One document's token ids (no special tokens)."""
        self.add_sentences([ids])

    def add_sentences(self, sentences: list[list[int]]) -> None:
        """One document given as the token ids of its sentences."""
        raise NotImplementedError

    def finish(self) -> None:
        pass


class PackedRows(RowBuilder):
    """Concatenate documents, each followed by [SEP], and emit full rows `[CLS] body [SEP]`.

    The incomplete tail (fewer than a full row of tokens) is dropped at `finish`.
    """

    def __init__(self, writer: RowWriter, specials: Specials):
        super().__init__(writer, specials)
        self._stream: list[int] = []

    def add_sentences(self, sentences: list[list[int]]) -> None:
        self.add([t for s in sentences for t in s])

    def add(self, ids: list[int]) -> None:
        if not ids:
            return
        self._stream.extend(ids)
        if self.sp.sep is not None:
            self._stream.append(self.sp.sep)
        while len(self._stream) >= self.body:
            chunk, self._stream = self._stream[: self.body], self._stream[self.body :]
            self.writer.add(_wrap(chunk, self.sp))

    def finish(self) -> None:
        self.dropped_tokens += len(self._stream)
        self._stream = []


class SentenceRows(RowBuilder):
    """One document per row; a document longer than a row is cut between sentences (a longer sentence is cut).
    With `max_sentences`, a row also ends after that many sentences (rows of one or two sentences: what a
    sentence-embedding model is used on)."""

    def __init__(self, writer: RowWriter, specials: Specials, max_sentences: int | None = None):
        super().__init__(writer, specials)
        self.max_sentences = max_sentences

    def add_sentences(self, sentences: list[list[int]]) -> None:
        row: list[int] = []
        count = 0
        for sent in sentences:
            while len(sent) > self.body:  # a sentence longer than a row fills rows of its own
                if row:
                    self.writer.add(_wrap(row, self.sp))
                    row, count = [], 0
                self.writer.add(_wrap(sent[: self.body], self.sp))
                sent = sent[self.body :]
            if row and (
                len(row) + len(sent) > self.body or (self.max_sentences and count >= self.max_sentences)
            ):
                self.writer.add(_wrap(row, self.sp))
                row, count = [], 0
            if sent:
                row = row + sent
                count += 1
        if row:
            self.writer.add(_wrap(row, self.sp))


def _wrap(body: list[int], sp: Specials) -> list[int]:
    return ([sp.cls] if sp.cls is not None else []) + body + ([sp.sep] if sp.sep is not None else [])


def load_block(directory: Path, split: str) -> TokenBlock:
    """A memory-mapped TokenBlock from `<split>.ids.npy` and `<split>.lengths.npy` in `directory`."""
    ids = np.load(directory / f"{split}.ids.npy", mmap_mode="r")
    lengths = np.load(directory / f"{split}.lengths.npy")
    return TokenBlock.from_arrays(ids, lengths)


def open_block(directory: Path, split: str, rows: int, seq_len: int) -> np.memmap:
    """A writable memory-mapped `<split>.ids.npy` [rows, seq_len] (int32) to fill in chunks."""
    return np.lib.format.open_memmap(
        directory / f"{split}.ids.npy", mode="w+", dtype=ID_DTYPE, shape=(rows, seq_len)
    )
