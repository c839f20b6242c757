"""A static-embedding peer of the teacher, made the way Model2Vec makes one (Tulkens & van Dongen, 2024).

Every token of the teacher's vocabulary is run through the teacher alone (`[CLS] token [SEP]`) and pooled as the
teacher pools; the resulting vectors are weighted by a SIF weight from a Zipf estimate of each token's
frequency (the vocabulary's order stands in for its rank), optionally reduced by PCA, and stored as one
embedding table. A sentence's embedding is the mean of its tokens' rows, normalised: no transformer at all,
so it is hundreds of times faster than the teacher and shows what a student must beat at the fast end.

The model is built offline from the local teacher in seconds (no `model2vec` install needed) and saved in
Model2Vec's format (`model.safetensors` with an `embeddings` tensor, the teacher's `tokenizer.json`,
`config.json` with `model_type: model2vec`), so `model2vec.StaticModel.from_pretrained(dir)` reads it.

In kdnas it is an encoder like any other: `StaticEncoder` returns the token rows as `last_hidden_state` (the
special tokens' rows are zero, so mean pooling over the teacher's tokenisation gives Model2Vec's direction),
so the suite's fine-tuning, the fidelity figures and the zero-shot pair scores treat it as they treat a student.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdnas.errors import ModelError

STATIC_MODEL_TYPE = "model2vec"
WEIGHTS = "model.safetensors"


@dataclass
class StaticSettings:
    """How the static table is made (Model2Vec's defaults, except that PCA is off by default so the table stays
    in the teacher's space and its cosine to the teacher's embedding is defined)."""

    sif_coefficient: float | None = 1e-4
    """SIF weight a / (a + p(token)) with p from Zipf's law over the vocabulary order; None: no weighting."""
    pca_dims: int | None = None
    """Reduce the table to this many principal components (None: keep the teacher's width)."""
    batch_size: int = 512
    """Tokens per teacher forward pass while building."""


class _Output:
    def __init__(self, last_hidden_state: Tensor) -> None:
        self.last_hidden_state = last_hidden_state

    def __getitem__(self, i: int) -> Tensor:
        if i != 0:
            raise IndexError(i)
        return self.last_hidden_state


class StaticEncoder(nn.Module):
    """An embedding table read as an encoder: `forward(input_ids, attention_mask)` -> `.last_hidden_state`
    [B, S, D] = the table's rows (no context). Mean-pooled, that is Model2Vec's sentence embedding."""

    def __init__(self, weight: Tensor, *, special_ids: list[int] | None = None) -> None:
        super().__init__()
        w = weight.detach().float().clone()
        for i in special_ids or []:
            if 0 <= i < w.shape[0]:
                w[i] = 0.0
        self.embeddings = nn.Embedding.from_pretrained(w, freeze=False)
        self.config = StaticConfig(vocab_size=w.shape[0], hidden_size=w.shape[1])

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, **_: Any) -> _Output:
        return _Output(self.embeddings(input_ids))


@dataclass
class StaticConfig:
    """The few config fields kdnas reads from an encoder (`vocab_size`, `hidden_size`)."""

    vocab_size: int
    hidden_size: int
    model_type: str = STATIC_MODEL_TYPE
    num_hidden_layers: int = 0


def zipf_sif_weights(n: int, coefficient: float) -> Tensor:
    """SIF weights for `n` tokens ranked by their vocabulary order: p_i ∝ 1 / (i + 2) (Zipf), w = a / (a + p)."""
    inv_rank = 1.0 / torch.arange(2, n + 2, dtype=torch.float64)
    p = inv_rank / inv_rank.sum()
    return (coefficient / (coefficient + p)).float()


def _special_ids(tokenizer: Any) -> list[int]:
    ids = getattr(tokenizer, "all_special_ids", None) or []
    return sorted({int(i) for i in ids})


@torch.no_grad()
def build_static_table(
    model: nn.Module, tokenizer: Any, pool_fn: Any, settings: StaticSettings | None = None
) -> Tensor:
    """The static table [V, D] of `model`: each vocabulary id pooled alone between the tokenizer's specials.

    model: an HF encoder (eval mode); tokenizer: its tokenizer; pool_fn(hidden [B, S, H], mask [B, S]) -> [B, H],
    the teacher's pooling without normalisation (normalising happens per sentence at encode time).
    """
    s = settings or StaticSettings()
    vocab = int(model.get_input_embeddings().weight.shape[0])  # type: ignore[operator]
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None:
        cls_id = tokenizer.bos_token_id
    if sep_id is None:
        sep_id = tokenizer.eos_token_id
    pre = [] if cls_id is None else [int(cls_id)]
    post = [] if sep_id is None else [int(sep_id)]
    model.eval()
    rows = []
    for start in range(0, vocab, s.batch_size):
        ids = torch.arange(start, min(vocab, start + s.batch_size))[:, None]  # [B, 1]
        x = torch.cat(
            [torch.full((len(ids), len(pre)), pre[0]) if pre else ids[:, :0], ids,
             torch.full((len(ids), len(post)), post[0]) if post else ids[:, :0]], dim=1,
        )  # fmt: skip
        mask = torch.ones_like(x)
        out = model(input_ids=x, attention_mask=mask)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        rows.append(pool_fn(last.float(), mask))
    table = torch.cat(rows)  # [V, H]
    table = torch.nan_to_num(table)
    if s.pca_dims is not None and s.pca_dims < table.shape[1]:
        centred = table - table.mean(0, keepdim=True)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        table = centred @ v[: s.pca_dims].T
    if s.sif_coefficient is not None:
        # Zipf ranks over the real tokens only: specials and placeholder rows ([unused12]) get no rank (their
        # rows stay, weighted as the rarest token), as Model2Vec leaves them out of the vocabulary it ranks
        skip = set(_special_ids(tokenizer)) | _placeholder_ids(tokenizer, vocab)
        ranked = torch.tensor([i for i in range(vocab) if i not in skip], dtype=torch.long)
        w = torch.full((vocab,), float(zipf_sif_weights(len(ranked) + 1, s.sif_coefficient)[-1]))
        w[ranked] = zipf_sif_weights(len(ranked), s.sif_coefficient)
        table = table * w[:, None]
    return table


_PLACEHOLDER = re.compile(r"^[\[<]unused\d+[\]>]$")


def _placeholder_ids(tokenizer: Any, vocab: int) -> set[int]:
    """Ids of placeholder tokens such as BERT's `[unused0]`: rows no text ever produces."""
    get = getattr(tokenizer, "convert_ids_to_tokens", None)
    if get is None:
        return set()
    return {i for i, t in enumerate(get(list(range(vocab)))) if isinstance(t, str) and _PLACEHOLDER.match(t)}


def save_static(out_dir: str | Path, table: Tensor, tokenizer: Any, *, teacher: str, normalize: bool = True,
                settings: StaticSettings | None = None) -> Path:  # fmt: skip
    """Write the table in Model2Vec's layout (atomically: a temp dir renamed into place). Returns the dir."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({"embeddings": table.contiguous().float()}, str(tmp / WEIGHTS))
    tokenizer.save_pretrained(str(tmp))
    s = settings or StaticSettings()
    cfg = {
        "model_type": STATIC_MODEL_TYPE,
        "architectures": ["StaticModel"],
        "tokenizer_name": teacher,
        "apply_pca": s.pca_dims,
        "sif_coefficient": s.sif_coefficient,
        "hidden_dim": int(table.shape[1]),
        "seq_length": 1000000,
        "normalize": normalize,
        "made_by": "kdnas (Model2Vec recipe)",
    }
    (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def is_static_dir(path: str | Path) -> bool:
    """True for a dir holding a static (Model2Vec-format) model."""
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == STATIC_MODEL_TYPE
    except (OSError, ValueError):
        return False


def static_config(path: str | Path) -> dict[str, Any]:
    """`StaticConfig` fields of a static model dir (the table's shape, read from the safetensors header)."""
    from safetensors import safe_open

    with safe_open(str(Path(path) / WEIGHTS), framework="pt") as f:
        shape = f.get_slice("embeddings").get_shape()
    return {"vocab_size": int(shape[0]), "hidden_size": int(shape[1])}


def static_normalize(path: str | Path) -> bool:
    """Whether the static model in `path` normalises its mean-pooled embedding (its config.json, default yes)."""
    return bool(json.loads((Path(path) / "config.json").read_text()).get("normalize", True))


def load_static(path: str | Path) -> tuple[StaticEncoder, Any, bool]:
    """(encoder, tokenizer, normalize) of a static model dir written by `save_static` or by Model2Vec."""
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    p = Path(path)
    if not is_static_dir(p):
        raise ModelError(f"{p}: not a static model dir (config.json with model_type {STATIC_MODEL_TYPE!r})")
    weights = p / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"{p}: no {WEIGHTS}; the static model is incomplete, make it again")
    tensors = load_file(str(weights))
    if "embeddings" not in tensors:
        raise ModelError(f"{weights}: no 'embeddings' tensor (found {', '.join(tensors) or 'none'})")
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # it reads config.json (model_type model2vec) and warns it is no model type
    try:
        tok = AutoTokenizer.from_pretrained(str(p))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{p}: no usable tokenizer in the dir ({e})") from e
    finally:
        hf_logging.set_verbosity(level)
    return StaticEncoder(tensors["embeddings"], special_ids=_special_ids(tok)), tok, static_normalize(p)


def make_static_peer(teacher: Any, out_dir: str | Path, *, pooling: Any,
                     settings: StaticSettings | None = None) -> Path:  # fmt: skip
    """Build the static peer of a loaded `Teacher` (its model, tokenizer and pooling) into `out_dir`."""
    from kdnas.models.pooling import Pooling, pool

    plain = Pooling(mode=pooling.mode, normalize=False)
    table = build_static_table(teacher.model, teacher.tokenizer, lambda h, m: pool(h, m, plain), settings)
    return save_static(out_dir, table, teacher.tokenizer, teacher=str(getattr(teacher, "name", "teacher")),
                       normalize=bool(pooling.normalize), settings=settings)  # fmt: skip
