"""Distillation losses as pure functions: hidden-state MSE, attention KL, MiniLMv2 relations, logit KD, and
the sentence-embedding losses (cosine to the teacher's pooled embedding, in-batch similarity structure).

Every loss is masked by `attention_mask` and normalised so held-out values compare across students (see
docs/distillation.md): MSE losses are divided by the teacher states' variance, KL losses are nats per token.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from kdnas.errors import DistillError

_EPS = 1e-12


def _token_weights(mask: Tensor) -> tuple[Tensor, Tensor]:
    """mask [B, S] (1 = real token) -> (float mask [B, S], number of real tokens as a >= 1 scalar)."""
    m = mask.to(torch.float32)
    return m, m.sum().clamp_min(1.0)


def hidden_mse(pred: Tensor, target: Tensor, mask: Tensor, *, variance: Tensor | float) -> Tensor:
    """Masked MSE between projected student states and teacher states, over the teacher variance.

    pred, target: [B, S, D] (the student state already projected to the teacher width D).
    mask: [B, S], 1 for real tokens. variance: scalar, the mean over the D dims of the teacher states'
    per-dim variance, so that predicting each dim's mean gives 1.0.
    Returns a scalar: mean over real tokens and dims of (pred - target)^2, divided by `variance`.
    """
    m, n = _token_weights(mask)
    se = (pred.float() - target.float()).pow(2).mean(-1)  # [B, S]
    return (se * m).sum() / n / torch.as_tensor(variance, dtype=torch.float32).clamp_min(_EPS)


def _masked_kl_rows(
    t_probs: Tensor, s_logp: Tensor, key_mask: Tensor | None, t_logp: Tensor | None = None
) -> Tensor:
    """KL(t || s) of each row over the last dim, counting only keys where key_mask is 1 (None: all keys).

    t_probs, s_logp (and t_logp, log t_probs when known): [..., S_q, S_k]; key_mask: broadcastable to them.
    Returns [..., S_q].
    """
    t = t_probs.float()
    if t_logp is None:
        t_logp = torch.log(t.clamp_min(_EPS))
    kl = t * (t_logp - s_logp.float())
    if key_mask is not None:
        kl = kl * key_mask
    return kl.sum(-1)


def attention_kl(student_probs: Tensor, teacher_probs: Tensor, mask: Tensor) -> Tensor:
    """KL(teacher attention || student attention), nats per (head, query token).

    student_probs: [B, As, S, S], teacher_probs: [B, At, S, S] (softmax over the last dim, padded keys ~0).
    mask: [B, S]. With As == At each head is matched to its teacher head (TinyBERT/MobileBERT); otherwise
    both are averaged over heads first and the head-mean distributions are matched.
    Returns a scalar: mean over heads and real query tokens of sum over real keys of t * (log t - log s).
    """
    if student_probs.shape[1] != teacher_probs.shape[1]:
        student_probs = student_probs.mean(1, keepdim=True)  # [B, 1, S, S]
        teacher_probs = teacher_probs.mean(1, keepdim=True)
    m, n = _token_weights(mask)
    key_mask = None if bool(mask.all()) else m[:, None, None, :]  # [B, 1, 1, S]
    s_logp = torch.log(student_probs.float().clamp_min(_EPS))
    kl = _masked_kl_rows(teacher_probs, s_logp, key_mask)  # [B, A, S]
    return (kl.mean(1) * m).sum() / n


def split_heads(x: Tensor, heads: int) -> list[Tensor]:
    """[B, S, D] -> `heads` chunks [B, S, ~D/heads] (near-equal sizes when D is not divisible)."""
    if x.shape[-1] < heads:
        raise DistillError(
            f"relation_heads={heads} exceeds the attention width {x.shape[-1]}; lower distill.relation_heads "
            f"to at most {x.shape[-1]}"
        )
    return list(torch.tensor_split(x, heads, dim=-1))


def relation_logits(x: Tensor, mask: Tensor, heads: int) -> Tensor:
    """Self-relation scores of MiniLMv2: per relation head, x_h x_h^T / sqrt(d_h), padded keys masked.

    x: [B, S, D], mask: [B, S]. Returns log-probabilities [B, heads, S, S] (log-softmax over keys). When D is
    not divisible by `heads`, the heads are near-equal contiguous chunks, each scaled by its own width.
    """
    b, s, d = x.shape
    x = x.float()
    if d % heads == 0:  # one batched matmul
        xh = x.view(b, s, heads, d // heads).transpose(1, 2)  # [B, R, S, dh]
        scores = (xh * (d // heads) ** -0.5) @ xh.transpose(-1, -2)  # [B, R, S, S]
    else:
        chunks = split_heads(x, heads)
        scores = torch.stack([(c * c.shape[-1] ** -0.5) @ c.transpose(-1, -2) for c in chunks], 1)
    if not bool(mask.all()):
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return F.log_softmax(scores, dim=-1)


def relation_kl(
    student_qkv: Sequence[Tensor], teacher_qkv: Sequence[Tensor], mask: Tensor, *, heads: int
) -> Tensor:
    """MiniLMv2 self-attention relation distillation: KL between teacher and student Q-Q, K-K, V-V relations.

    student_qkv: (q, k, v), each [B, S, Ds]; teacher_qkv: (q, k, v), each [B, S, Dt]; widths and head counts
    of the two models are free, both are re-split into `heads` relation heads. mask: [B, S].
    Returns a scalar in nats per token: mean over the relations given, the relation heads and real query
    tokens of KL(teacher relation row || student relation row).
    """
    if len(student_qkv) != len(teacher_qkv) or not student_qkv:
        raise ValueError("relation_kl needs the same non-empty list of relations for teacher and student")
    m, n = _token_weights(mask)
    key_mask = None if bool(mask.all()) else m[:, None, None, :]
    total = torch.zeros((), dtype=torch.float32, device=mask.device)
    for xs, xt in zip(student_qkv, teacher_qkv):
        s_logp = relation_logits(xs, mask, heads)  # [B, R, S, S]
        with torch.no_grad():
            t_logp = relation_logits(xt, mask, heads)
            t_p = t_logp.exp()
            if key_mask is not None:  # masked keys: 0 * (-inf) must not turn into nan
                t_logp = t_logp.masked_fill(key_mask == 0, 0.0)
        kl = _masked_kl_rows(t_p, s_logp, key_mask, t_logp)  # [B, R, S]
        total = total + (kl.mean(1) * m).sum() / n
    return total / len(student_qkv)


def logit_kd(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor, *, temperature: float = 1.0
) -> Tensor:
    """Hinton logit distillation of MLM predictions: T^2 * KL(softmax(t/T) || softmax(s/T)), per token.

    student_logits, teacher_logits: [B, S, V]; mask: [B, S]. Returns a scalar: mean over real tokens
    (nats per token times T^2, the usual gradient scale).
    """
    m, n = _token_weights(mask)
    t = temperature
    s_logp = F.log_softmax(student_logits.float() / t, -1)
    t_logp = F.log_softmax(teacher_logits.float() / t, -1)
    kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # [B, S]
    return (kl * m).sum() / n * t * t


def sentence_cosine(student: Tensor, teacher: Tensor) -> Tensor:
    """1 - cosine between each student and teacher sentence embedding, mean over the batch.

    student, teacher: [B, D] pooled embeddings in the same space (the student's already projected to the
    teacher's width when it is narrower). Returns a scalar in [0, 2]; 0 when every pair points the same way.
    Unit vectors make this half the squared distance, so it is the MSE of normalised embeddings as well.
    """
    cos = F.cosine_similarity(student.float(), teacher.float(), dim=-1, eps=1e-8)  # [B]
    return (1.0 - cos).mean()


def similarity_kl(student: Tensor, teacher: Tensor, *, temperature: float = 0.05) -> Tensor:
    """In-batch similarity structure: KL(softmax(cos_t / T) || softmax(cos_s / T)) per row, mean over rows.

    student: [B, Ds], teacher: [B, Dt] (widths may differ: only the B x B cosine matrices are compared).
    Row i is the distribution over the other B - 1 embeddings (the diagonal, always 1, is left out), so a
    student that ranks its neighbours as the teacher does scores ~0 whatever its own width. Nats per row.
    """
    b = student.shape[0]
    if b < 2:
        return student.float().sum() * 0.0  # no neighbours to compare; keeps the graph
    s = F.normalize(student.float(), dim=-1, eps=1e-8)
    t = F.normalize(teacher.float(), dim=-1, eps=1e-8)
    off = ~torch.eye(b, dtype=torch.bool, device=s.device)  # [B, B]
    s_logits = (s @ s.T / temperature)[off].view(b, b - 1)  # [B, B-1]
    t_logits = (t @ t.T / temperature)[off].view(b, b - 1)
    t_logp = F.log_softmax(t_logits, -1)
    kl = (t_logp.exp() * (t_logp - F.log_softmax(s_logits, -1))).sum(-1)  # [B]
    return kl.mean()


def combine(components: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """Weighted sum of loss components; `weights` names the components (a missing one is an internal bug)."""
    total: Tensor | None = None
    for name, w in weights.items():
        if w == 0:
            continue
        term = components[name] * w
        total = term if total is None else total + term
    assert total is not None, "no active loss"
    return total
