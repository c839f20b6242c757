"""Label-free fidelity of a student to its teacher, on passages neither was trained on.

Three figures, all computed from one forward pass of each model over the held-out passages (seconds):

- **mean cosine**: the average cosine between the student's sentence embedding (the teacher's pooling, then the
  student's Dense projection when it has one) and the teacher's. 1.0 means a drop-in replacement: the student can
  query a vector index the teacher built.
- **linear CKA** of the last hidden states over all real tokens (Kornblith et al. 2019): how much of the
  teacher's representational geometry the student keeps, invariant to rotation and scale, so it is defined even
  when the widths differ and no projection exists.
- **recall@10**: for each passage, the share of the teacher's 10 nearest neighbours (cosine, the passage itself
  excluded) that are also among the student's 10 nearest: retrieval agreement.

They need no labels, so they work on a user's own corpus too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdnas.errors import ModelError
from kdnas.models.pooling import Pooling, load_dense_weights, pool


@dataclass
class FidelityResult:
    mean_cosine: float | None
    cka: float
    recall_at_10: float
    passages: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def encode(
    model: nn.Module,
    ids: Tensor,
    mask: Tensor,
    pooling: Pooling,
    *,
    dense: nn.Module | None = None,
    input_map: Tensor | None = None,
    batch_size: int = 64,
    tokens: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Sentence embeddings [N, D] of `model` on `ids`/`mask` [N, S] (pooled, Dense, normalised as `pooling`
    says) and, when `tokens`, the last hidden states of every real token [T, H] (for CKA).

    Rows are run in order of length, each batch cut to its longest row (right padding: the same result as the
    full width, a fraction of the work on short passages); embeddings come back in the rows' order, tokens in
    the length order, which is the same for every model given the same `mask`."""
    model.eval()
    embs, toks = [], []
    plain = Pooling(mode=pooling.mode, normalize=False)
    lengths = mask.sum(1)
    order = torch.argsort(lengths, stable=True)
    right_padded = bool((mask.cumsum(1).eq(lengths[:, None]) | mask.bool()).all())
    for i in range(0, len(ids), batch_size):
        rows = order[i : i + batch_size]
        b_ids, b_mask = ids[rows], mask[rows]
        if right_padded:
            width = max(1, int(lengths[rows].max()))
            b_ids, b_mask = b_ids[:, :width], b_mask[:, :width]
        x = b_ids if input_map is None else input_map[b_ids]
        out = model(input_ids=x, attention_mask=b_mask)
        last = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        last = last.float()
        e = pool(last, b_mask, plain)
        if dense is not None:
            e = dense(e)
        if pooling.normalize:
            e = nn.functional.normalize(e, dim=-1)
        embs.append(e)
        if tokens:
            toks.append(last[b_mask.bool()])
    out = torch.empty_like(torch.cat(embs))
    out[order] = torch.cat(embs)
    return out, (torch.cat(toks) if tokens else None)


def linear_cka(x: Tensor, y: Tensor) -> float:
    """Linear CKA between representations x [N, Dx] and y [N, Dy] of the same N items."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same items: {x.shape[0]} vs {y.shape[0]} rows")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    # ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), computed in the feature dimensions (cheap for many tokens)
    num = (y.T @ x).pow(2).sum()
    den = (x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()
    return float(num / den) if float(den) > 0 else 0.0


def _knn(e: Tensor, k: int) -> Tensor:
    e = nn.functional.normalize(e.float(), dim=-1)
    sim = e @ e.T
    sim.fill_diagonal_(-float("inf"))
    return sim.topk(k, dim=-1).indices


def recall_at_k(student: Tensor, teacher: Tensor, k: int = 10) -> float:
    """Mean over passages of |student's k nearest ∩ teacher's k nearest| / k (cosine, self excluded)."""
    n = student.shape[0]
    if n <= k:
        raise ValueError(f"recall@{k} needs more than {k} passages, got {n}")
    s, t = _knn(student, k), _knn(teacher, k)
    hits = (s[:, :, None] == t[:, None, :]).any(-1).float().sum(-1)
    return float(hits.mean() / k)


def embedding_fidelity(
    teacher: nn.Module,
    student: nn.Module,
    ids: Tensor,
    mask: Tensor,
    *,
    pooling: Pooling,
    student_dense: nn.Module | None = None,
    student_input_map: Tensor | None = None,
    k: int = 10,
    batch_size: int = 64,
    cka_tokens: int = 20_000,
    teacher_out: tuple[Tensor, Tensor] | None = None,
) -> FidelityResult:
    """Fidelity of `student` to `teacher` on the held-out passages `ids`/`mask` (teacher token ids; the student
    reads `student_input_map[ids]` when its vocabulary is trimmed). The mean cosine is left out (None) when the
    embeddings are of different widths and the student has no Dense projection into the teacher's space.
    teacher_out: the teacher's `encode(..., tokens=True)` on the same passages, to reuse across students."""
    t0 = time.perf_counter()
    if teacher_out is None:
        teacher_out = teacher_encoding(teacher, ids, mask, pooling, batch_size=batch_size)
    te, tt = teacher_out
    se, st = encode(
        student, ids, mask, pooling, dense=student_dense, input_map=student_input_map, batch_size=batch_size,
        tokens=True,
    )  # fmt: skip
    assert tt is not None and st is not None
    cos = None
    if se.shape[-1] == te.shape[-1]:
        cos = float(nn.functional.cosine_similarity(se, te, dim=-1).mean())
    if len(tt) > cka_tokens:  # an even subsample of the tokens keeps CKA at seconds on large held-out splits
        idx = torch.linspace(0, len(tt) - 1, cka_tokens).long()
        tt, st = tt[idx], st[idx]
    return FidelityResult(
        mean_cosine=cos,
        cka=linear_cka(st, tt),
        recall_at_10=recall_at_k(se, te, k),
        passages=len(ids),
        seconds=round(time.perf_counter() - t0, 2),
    )


def teacher_encoding(
    teacher: nn.Module, ids: Tensor, mask: Tensor, pooling: Pooling, *, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """(embeddings [N, D], token states [T, H]) of the teacher on the passages: what `embedding_fidelity`
    compares each student with, computed once per run."""
    te, tt = encode(teacher, ids, mask, pooling, batch_size=batch_size, tokens=True)
    assert tt is not None
    return te, tt


def load_dense(model_dir: str | Path) -> nn.Linear | None:
    """The Dense projection of an exported student's sentence-transformers folder as an nn.Linear."""
    wb = load_dense_weights(model_dir)
    if wb is None:
        return None
    w, b = wb
    if w.ndim != 2 or b.shape != (w.shape[0],):
        raise ModelError(
            f"{model_dir}: the Dense module's weights have shapes {tuple(w.shape)}, {tuple(b.shape)}"
        )
    lin = nn.Linear(int(w.shape[1]), int(w.shape[0]))
    lin.weight.data.copy_(w)
    lin.bias.data.copy_(b)
    return lin.eval()


def embedding_parts(model_dir: str | Path | None) -> tuple[Pooling, nn.Linear | None]:
    """How the model saved in `model_dir` embeds a text for a user: its own sentence-transformers pooling (mean
    pooling when it has none; a static table's mean, normalised as it was made) and its Dense (None without one).
    `model_dir` None (a model built in memory): mean pooling, no Dense."""
    from kdnas.models.pooling import read_pooling
    from kdnas.models.static import is_static_dir, static_normalize

    if model_dir is None:
        return Pooling(mode="mean", source="default: mean pooling"), None
    if is_static_dir(model_dir):
        return Pooling(
            mode="mean", normalize=static_normalize(model_dir), source=f"{model_dir} (static)"
        ), None
    pooling = read_pooling(model_dir) or Pooling(mode="mean", source="default: mean pooling")
    return pooling, load_dense(model_dir)


def load_embedder(model_dir: str | Path) -> tuple[nn.Module, Any, Pooling, nn.Linear | None]:
    """(model, tokenizer, pooling, Dense) of a saved model dir, embedding as it embeds for a user
    (`embedding_parts`)."""
    from transformers import AutoModel, AutoTokenizer

    from kdnas.models.static import is_static_dir, load_static

    if is_static_dir(model_dir):
        model, tok, _ = load_static(model_dir)
    else:
        model = AutoModel.from_pretrained(model_dir, attn_implementation="eager").eval()
        tok = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tok, *embedding_parts(model_dir)
