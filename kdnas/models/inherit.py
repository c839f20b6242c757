"""Weight inheritance: a student of shape `arch` initialised from a teacher of the same HF family, by choosing
layers and slicing widths to the most important heads, FFN neurons and hidden dims (`docs/models.md`).

`plan_inheritance` decides what to keep (layers, per-layer heads and FFN neurons, global hidden dims);
`inherit_student` builds the student and copies the kept weights. MobileBERT-family students start at random.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdnas.errors import ArchError, ModelError
from kdnas.models.importance import Importance, compute_importance, names_of
from kdnas.models.student import arch_of, build_student
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

LAYER_SELECTIONS = ("uniform", "first", "last")
IMPORTANCES = ("magnitude", "activation")


def select_layers(num_teacher_layers: int, num_student_layers: int, how: str = "uniform") -> list[int]:
    """Teacher layer index for each student layer.

    `uniform`: evenly spaced and always ending at the teacher's last layer (6 -> 3 gives [1, 3, 5]);
    `first`: the bottom layers; `last`: the top layers. A deeper student repeats layers.
    """
    t, s = num_teacher_layers, num_student_layers
    if how == "uniform":
        return [max(0, math.floor((i + 1) * t / s + 0.5) - 1) for i in range(s)]
    if how == "first":
        return [min(i, t - 1) for i in range(s)]
    if how == "last":
        return [max(0, t - s + i) for i in range(s)]
    raise ModelError(f"layer_selection {how!r} is not one of {', '.join(LAYER_SELECTIONS)}")


@dataclass
class InheritancePlan:
    """What a student keeps of its teacher. Index tensors hold teacher indices, in student order."""

    layers: list[int]
    """Teacher layer of each student layer."""
    hidden: torch.Tensor
    """Kept teacher hidden dims [min(H_s, H_t)], shared by embeddings, every layer and the LayerNorms."""
    heads: list[torch.Tensor]
    """Per student layer: kept teacher heads [min(A_s, A_t)] (one global set for MPNet, whose bias is shared)."""
    ffn: list[torch.Tensor]
    """Per student layer: kept teacher FFN neurons [min(F_s, F_t)]."""
    embedding: torch.Tensor | None
    """ELECTRA with a projection: kept teacher embedding dims [min(E_s, E_t)]; None otherwise."""


def _top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest scores, in ascending index order (so a full keep is the identity)."""
    import torch

    k = min(k, scores.numel())
    return torch.sort(torch.topk(scores.float(), k).indices).values


def plan_inheritance(
    teacher_model: PreTrainedModel,
    arch: Arch,
    *,
    layer_selection: str = "uniform",
    importance: str | Importance = "magnitude",
    batches: Sequence[Any] | None = None,
) -> InheritancePlan:
    """Choose the layers and the most important heads, neurons and hidden dims for a student of shape `arch`."""
    teacher = getattr(teacher_model, "base_model", teacher_model)
    t_arch = arch_of(teacher.config)
    layers = select_layers(t_arch.num_layers, arch.num_layers, layer_selection)
    imp = importance if not isinstance(importance, str) else compute_importance(teacher, importance, batches)
    hidden = _top(imp.hidden, arch.hidden_size)
    if teacher.config.model_type == "mpnet":  # one relative-attention bias for all layers: one head set
        shared = _top(imp.heads[layers].sum(0), arch.num_heads)
        heads = [shared for _ in layers]
    else:
        heads = [_top(imp.heads[t], arch.num_heads) for t in layers]
    ffn = [_top(imp.ffn[t], arch.ffn_size) for t in layers]
    embedding = None
    if imp.embedding is not None:
        e_s = min(getattr(teacher.config, "embedding_size", arch.hidden_size), arch.hidden_size)
        embedding = _top(imp.embedding, e_s)
    return InheritancePlan(layers=layers, hidden=hidden, heads=heads, ffn=ffn, embedding=embedding)


# ---------------------------------------------------------------- copying


def _put(dst: torch.Tensor, src: torch.Tensor, rows: Any, cols: Any = None, scale: float = 1.0) -> None:
    """dst[rows_s, cols_s] = src[rows_t, cols_t] * scale, where each of rows/cols is a (student, teacher)
    index pair or None for "all of the smaller size"."""
    import torch

    def pair(ix: Any, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        if ix is None:
            n = min(dst.shape[d], src.shape[d])
            a = torch.arange(n)
            return a, a
        if isinstance(ix, torch.Tensor):
            return torch.arange(len(ix)), ix
        return ix

    rs, rt = pair(rows, 0)
    if dst.dim() == 1:
        dst[rs] = src[rt] * scale if scale != 1.0 else src[rt]
        return
    cs, ct = pair(cols, 1)
    val = src.index_select(0, rt).index_select(1, ct)
    dst[rs[:, None], cs[None, :]] = val * scale if scale != 1.0 else val


def _head_dims(
    w_a: torch.Tensor, w_b: torch.Tensor, head: int, d_t: int, d_s: int, b_cols: bool = False
) -> torch.Tensor:
    """The `min(d_s, d_t)` dims of teacher head `head` to keep, ranked by |w_a row| * |w_b row (or column)|."""
    import torch

    lo = head * d_t
    if d_s >= d_t:
        return torch.arange(lo, lo + d_t)
    a = w_a[lo : lo + d_t].norm(dim=1)
    b = (w_b[:, lo : lo + d_t].norm(dim=0)) if b_cols else w_b[lo : lo + d_t].norm(dim=1)
    return lo + _top(a * b, d_s)


def _copy_layer(
    s: dict[str, torch.Tensor],
    t: dict[str, torch.Tensor],
    sp: str,
    tp: str,
    n: Any,
    plan: InheritancePlan,
    i: int,
    d_t: int,
    d_s: int,
) -> None:
    import torch

    hid = plan.hidden
    q_t, k_t, v_t, o_t = (t[f"{tp}{x}.weight"] for x in (n.q, n.k, n.v, n.o))
    qk_s, qk_t, v_s, v_tt = [], [], [], []
    for p, h in enumerate(plan.heads[i].tolist()):
        qk = _head_dims(q_t, k_t, h, d_t, d_s)
        vv = _head_dims(v_t, o_t, h, d_t, d_s, b_cols=True)
        qk_s.append(torch.arange(p * d_s, p * d_s + len(qk)))
        qk_t.append(qk)
        v_s.append(torch.arange(p * d_s, p * d_s + len(vv)))
        v_tt.append(vv)
    qk_rows = (torch.cat(qk_s), torch.cat(qk_t))
    v_rows = (torch.cat(v_s), torch.cat(v_tt))
    # scores are divided by sqrt(head_dim): rescale q so a narrower head keeps the teacher's logits
    q_scale = math.sqrt(d_s / d_t) if d_s < d_t else 1.0
    _put(s[f"{sp}{n.q}.weight"], q_t, qk_rows, hid, scale=q_scale)
    _put(s[f"{sp}{n.q}.bias"], t[f"{tp}{n.q}.bias"], qk_rows, scale=q_scale)
    _put(s[f"{sp}{n.k}.weight"], k_t, qk_rows, hid)
    _put(s[f"{sp}{n.k}.bias"], t[f"{tp}{n.k}.bias"], qk_rows)
    _put(s[f"{sp}{n.v}.weight"], v_t, v_rows, hid)
    _put(s[f"{sp}{n.v}.bias"], t[f"{tp}{n.v}.bias"], v_rows)
    _put(s[f"{sp}{n.o}.weight"], o_t, hid, v_rows)
    ffn = plan.ffn[i]
    _put(s[f"{sp}{n.ffn_in}.weight"], t[f"{tp}{n.ffn_in}.weight"], ffn, hid)
    _put(s[f"{sp}{n.ffn_in}.bias"], t[f"{tp}{n.ffn_in}.bias"], ffn)
    _put(s[f"{sp}{n.ffn_out}.weight"], t[f"{tp}{n.ffn_out}.weight"], hid, ffn)
    for name in (n.o, n.ffn_out):
        _put(s[f"{sp}{name}.bias"], t[f"{tp}{name}.bias"], hid)
    for ln in (n.attn_ln, n.out_ln):
        _put(s[f"{sp}{ln}.weight"], t[f"{tp}{ln}.weight"], hid)
        _put(s[f"{sp}{ln}.bias"], t[f"{tp}{ln}.bias"], hid)


def _vocab_rows(arch: Arch, v_t: int, vocab_ids: Sequence[int] | None) -> Any:
    import torch

    if vocab_ids is None:
        return None
    ids = torch.as_tensor(list(vocab_ids), dtype=torch.long)
    v_s = arch.vocab_size or v_t
    if len(ids) != v_s:
        raise ArchError(f"vocab_ids has {len(ids)} ids but the arch's vocab_size is {v_s}; they must match")
    if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= v_t):
        raise ArchError(
            f"vocab_ids must be teacher token ids in [0, {v_t}); got {int(ids.min())}..{int(ids.max())}"
        )
    return ids


def remap_token_ids(config: Any, kept: list[int]) -> None:
    """Point the student config's special-token ids at their rows of the trimmed table (None if not kept)."""
    from kdnas.models.vocab import TOKEN_ID_FIELDS

    mapping = {old: new for new, old in enumerate(kept)}
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and mapping.get(pad) != pad:
        raise ArchError(
            f"the trimmed vocabulary moves the pad token id {pad} to {mapping.get(pad)}; keep every special token "
            "(the ids below the pad must stay) so that padding and RoBERTa-style positions are unchanged"
        )
    for key in TOKEN_ID_FIELDS:
        old = getattr(config, key, None)
        if isinstance(old, int):
            setattr(config, key, mapping.get(old))


def _fold_projection(
    s: dict[str, torch.Tensor], t: dict[str, torch.Tensor], n: Any, hid: torch.Tensor, rows: Any
) -> None:
    """ELECTRA teacher with an embedding projection, student without one (E_s == H_s): fold the projection
    into the student's tables and fit the student's LayerNorm scale by least squares on table rows."""
    import torch

    gamma, beta = t[f"{n.emb_ln}.weight"], t[f"{n.emb_ln}.bias"]
    proj_w, proj_b = t[f"{n.proj}.weight"], t[f"{n.proj}.bias"]  # [H_t, E_t], [H_t]
    fold = (proj_w * gamma[None, :])[hid].T  # [E_t, H_s]: x -> P diag(gamma) (centred x)

    def lin(table: torch.Tensor) -> torch.Tensor:
        return (table - table.mean(dim=1, keepdim=True)) @ fold

    for key in (n.word, n.pos, n.type):
        if key is None or f"{key}.weight" not in t:
            continue
        r = rows if key == n.word else None
        _put(s[f"{key}.weight"], lin(t[f"{key}.weight"]), r, None)
    # teacher: h = P diag(g) C x / std(x) + (P beta + b); student: g_s * norm(x_s) + b_s with x_s = P diag(g) C x
    g = torch.Generator().manual_seed(0)
    word, pos = t[f"{n.word}.weight"], t[f"{n.pos}.weight"]
    x = (
        word[torch.randint(0, len(word), (2048,), generator=g)]
        + pos[torch.randint(0, len(pos), (2048,), generator=g)]
    )
    if n.type is not None and f"{n.type}.weight" in t:
        x = x + t[f"{n.type}.weight"][0]
    target = lin(x) / x.var(dim=1, unbiased=False, keepdim=True).add(1e-12).sqrt()  # [N, H_s]
    xs = lin(x)
    norm = (xs - xs.mean(dim=1, keepdim=True)) / xs.var(dim=1, unbiased=False, keepdim=True).add(1e-12).sqrt()
    s[f"{n.emb_ln}.weight"].copy_((norm * target).sum(0) / (norm * norm).sum(0).clamp_min(1e-12))
    s[f"{n.emb_ln}.bias"].copy_((proj_w @ beta + proj_b)[hid])


def _copy_embeddings(
    s: dict[str, torch.Tensor], t: dict[str, torch.Tensor], n: Any, plan: InheritancePlan, rows: Any, cfg: Any
) -> None:
    import torch

    hid = plan.hidden
    t_proj = n.proj is not None and f"{n.proj}.weight" in t
    s_proj = n.proj is not None and f"{n.proj}.weight" in s
    if t_proj and not s_proj:
        _fold_projection(s, t, n, hid, rows)
        return
    if s_proj and not t_proj:  # student wider than an un-projected teacher: project with the identity
        eye = torch.eye(t[f"{n.word}.weight"].shape[1])
        t = {**t, f"{n.proj}.weight": eye, f"{n.proj}.bias": torch.zeros(len(eye))}
    emb = plan.embedding if s_proj and plan.embedding is not None else (None if s_proj else hid)
    _put(s[f"{n.word}.weight"], t[f"{n.word}.weight"], rows, emb)
    if not getattr(cfg, "sinusoidal_pos_embds", False):  # DistilBERT's fixed sinusoids stay the student's own
        _put(s[f"{n.pos}.weight"], t[f"{n.pos}.weight"], None, emb)
    if n.type is not None and f"{n.type}.weight" in s:
        _put(s[f"{n.type}.weight"], t[f"{n.type}.weight"], None, emb)
    _put(s[f"{n.emb_ln}.weight"], t[f"{n.emb_ln}.weight"], emb)
    _put(s[f"{n.emb_ln}.bias"], t[f"{n.emb_ln}.bias"], emb)
    if s_proj:
        _put(s[f"{n.proj}.weight"], t[f"{n.proj}.weight"], hid, emb)
        _put(s[f"{n.proj}.bias"], t[f"{n.proj}.bias"], hid)


def inherit_student(
    teacher_model: PreTrainedModel,
    arch: Arch,
    *,
    layer_selection: str = "uniform",
    importance: str | Importance = "magnitude",
    batches: Sequence[Any] | None = None,
    seed: int = 0,
    vocab_ids: Sequence[int] | None = None,
    attn_implementation: str = "eager",
) -> PreTrainedModel:
    """A student of shape `arch` in the teacher's family, initialised from the teacher's weights.

    Layers come from `select_layers(layer_selection)`. Widths keep the most important heads and FFN neurons
    (per layer) and hidden dims (global), scored by weight `magnitude` or by `activation`s on `batches`
    (dicts or objects with `input_ids` / `attention_mask`). A head narrower than the teacher's keeps its
    highest-magnitude dims; whatever the teacher cannot fill (a wider or deeper student) keeps the student's
    random init from `seed`. `vocab_ids` (teacher token ids, one per student row) picks the rows of a trimmed
    vocabulary (`arch.vocab_size`); without it the first rows are kept. Inheriting the teacher's own arch
    reproduces the teacher exactly. A MobileBERT-family student has no counterpart weights: it starts at random.
    """
    import torch

    if layer_selection not in LAYER_SELECTIONS:
        raise ModelError(f"layer_selection {layer_selection!r} is not one of {', '.join(LAYER_SELECTIONS)}")
    if isinstance(importance, str) and importance not in IMPORTANCES:
        raise ModelError(f"importance {importance!r} is not one of {', '.join(IMPORTANCES)}")
    teacher = getattr(teacher_model, "base_model", teacher_model)
    student = build_student(teacher.config, arch, attn_implementation=attn_implementation, seed=seed)
    if arch.family == "mobilebert":
        return student
    n = names_of(teacher.config.model_type)
    plan = plan_inheritance(
        teacher, arch, layer_selection=layer_selection, importance=importance, batches=batches
    )
    t_arch = arch_of(teacher.config)
    d_t, d_s = t_arch.head_dim, arch.head_dim
    rows = _vocab_rows(arch, teacher.config.vocab_size, vocab_ids)
    if rows is not None:
        remap_token_ids(student.config, rows.tolist())
    with torch.no_grad():
        t = {k: v.detach().float() for k, v in teacher.state_dict().items()}
        s = student.state_dict()
        _copy_embeddings(s, t, n, plan, rows, teacher.config)
        for i, tl in enumerate(plan.layers):
            _copy_layer(s, t, n.layer.format(i), n.layer.format(tl), n, plan, i, d_t, d_s)
        if n.pooler is not None and f"{n.pooler}.weight" in s:
            _put(s[f"{n.pooler}.weight"], t[f"{n.pooler}.weight"], plan.hidden, plan.hidden)
            _put(s[f"{n.pooler}.bias"], t[f"{n.pooler}.bias"], plan.hidden)
        if n.rel_bias is not None:
            _put(s[f"{n.rel_bias}.weight"], t[f"{n.rel_bias}.weight"], None, plan.heads[0])
    return student
