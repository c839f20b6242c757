"""Importance of a teacher's heads, FFN neurons and hidden dims (from weight magnitude or activations), and the
per-family parameter names that weight inheritance and importance scoring read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdnas.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel


@dataclass(frozen=True)
class FamilyNames:
    """State-dict names of one HF family's base model (without `.weight` / `.bias`)."""

    layer: str
    """Prefix of layer i, with `{}` for i."""
    q: str
    k: str
    v: str
    o: str
    """Attention output projection (its input is the per-head context)."""
    attn_ln: str
    ffn_in: str
    ffn_out: str
    """FFN output projection (its input is the post-activation FFN state)."""
    out_ln: str
    word: str = "embeddings.word_embeddings"
    pos: str = "embeddings.position_embeddings"
    type: str | None = "embeddings.token_type_embeddings"
    emb_ln: str = "embeddings.LayerNorm"
    proj: str | None = None
    """ELECTRA's embedding -> hidden projection (present only when embedding_size != hidden_size)."""
    pooler: str | None = "pooler.dense"
    rel_bias: str | None = None
    """MPNet's relative-attention bias [buckets, heads], shared by all layers."""


_BERT = FamilyNames(
    layer="encoder.layer.{}.",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    attn_ln="attention.output.LayerNorm",
    ffn_in="intermediate.dense",
    ffn_out="output.dense",
    out_ln="output.LayerNorm",
)
NAMES: dict[str, FamilyNames] = {
    "bert": _BERT,
    "roberta": _BERT,
    "xlm-roberta": _BERT,
    "camembert": _BERT,
    "electra": dataclasses.replace(_BERT, proj="embeddings_project", pooler=None),
    "mpnet": dataclasses.replace(
        _BERT,
        q="attention.attn.q",
        k="attention.attn.k",
        v="attention.attn.v",
        o="attention.attn.o",
        attn_ln="attention.LayerNorm",
        type=None,
        rel_bias="encoder.relative_attention_bias",
    ),
    "distilbert": FamilyNames(
        layer="transformer.layer.{}.",
        q="attention.q_lin",
        k="attention.k_lin",
        v="attention.v_lin",
        o="attention.out_lin",
        attn_ln="sa_layer_norm",
        ffn_in="ffn.lin1",
        ffn_out="ffn.lin2",
        out_ln="output_layer_norm",
        type=None,
        pooler=None,
    ),
}


def names_of(model_type: str) -> FamilyNames:
    """Parameter names of family `model_type`; ModelError for a family without weight inheritance."""
    if model_type not in NAMES:
        raise ModelError(
            f"weight inheritance is not available for family {model_type!r}; supported: {', '.join(NAMES)} "
            "(use a random-init student with kdnas.models.student.build_student)"
        )
    return NAMES[model_type]


@dataclass
class Importance:
    """Importance scores of a teacher's units (higher is more important)."""

    hidden: torch.Tensor
    """[H]: one score per hidden dim, over the whole model."""
    heads: torch.Tensor
    """[L, A]: per layer and head."""
    ffn: torch.Tensor
    """[L, F]: per layer and FFN neuron."""
    embedding: torch.Tensor | None = None
    """[E]: ELECTRA's embedding dims when it has a projection; else None."""


def _norm_add(acc: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Add `x` scaled to mean 1, so every tensor has the same say whatever its scale."""
    return acc + x / x.mean().clamp_min(1e-12)


def _dims(config: Any) -> tuple[int, int, int, int]:
    from kdnas.models.student import arch_of

    a = arch_of(config)
    return a.num_layers, a.hidden_size, a.num_heads, a.hidden_size // a.num_heads


def _ln_scale(t: dict[str, torch.Tensor], ln: str) -> torch.Tensor:
    """Expected |output| of a LayerNorm per dim, sqrt(gamma² + beta²) (its normalised input has unit variance)."""
    return (t[f"{ln}.weight"] ** 2 + t[f"{ln}.bias"] ** 2).sqrt()


def magnitude_importance(teacher: PreTrainedModel) -> Importance:
    """Scores from weights alone.

    Heads: |W_q,h|·|W_k,h| + |W_v,h|·|W_o,h| (each term scaled to mean 1 per layer). FFN neurons:
    |W_in row|·|W_out column|. Hidden dims: the expected size of the hidden state in that dim, sqrt(γ² + β²)
    summed over every LayerNorm that writes the residual stream. (Weight row/column norms are a poor proxy
    here: in trained BERTs they are largest for the dims whose activations are smallest.)
    """
    import torch

    n = names_of(teacher.config.model_type)
    L, H, A, d = _dims(teacher.config)
    t = {k: v.detach().float() for k, v in teacher.state_dict().items()}
    heads, ffn = [], []
    hidden = torch.zeros(H)
    for i in range(L):
        p = n.layer.format(i)
        q, k, v, o = (t[f"{p}{x}.weight"] for x in (n.q, n.k, n.v, n.o))
        qk = q.view(A, d, H).flatten(1).norm(dim=1) * k.view(A, d, H).flatten(1).norm(dim=1)
        vo = v.view(A, d, H).flatten(1).norm(dim=1) * o.view(H, A, d).transpose(0, 1).flatten(1).norm(dim=1)
        heads.append(qk / qk.mean().clamp_min(1e-12) + vo / vo.mean().clamp_min(1e-12))
        w_in, w_out = t[f"{p}{n.ffn_in}.weight"], t[f"{p}{n.ffn_out}.weight"]  # [F, H], [H, F]
        ffn.append(w_in.norm(dim=1) * w_out.norm(dim=0))
        for ln in (n.attn_ln, n.out_ln):
            hidden = _norm_add(hidden, _ln_scale(t, p + ln))
    embedding = None
    if n.proj is not None and f"{n.proj}.weight" in t:  # the embedding LayerNorm writes embedding dims
        embedding = _ln_scale(t, n.emb_ln)
    else:
        hidden = _norm_add(hidden, _ln_scale(t, n.emb_ln))
    return Importance(hidden=hidden, heads=torch.stack(heads), ffn=torch.stack(ffn), embedding=embedding)


def _inputs(batch: Any, model_type: str) -> dict[str, Any]:
    get = batch.get if isinstance(batch, dict) else (lambda k: getattr(batch, k, None))
    keys = (
        ("input_ids", "attention_mask")
        if model_type in ("distilbert", "mpnet")
        else (
            "input_ids",
            "attention_mask",
            "token_type_ids",
        )
    )
    out = {k: get(k) for k in keys if get(k) is not None}
    if "input_ids" not in out:
        raise ModelError("importance='activation' needs batches with input_ids (and attention_mask)")
    return out


def activation_importance(teacher: PreTrainedModel, batches: Sequence[Any]) -> Importance:
    """Scores from activations on `batches` (non-padding tokens only): heads by the mean norm of their
    contribution to the attention output, neurons by mean |activation| · |W_out column|, hidden dims by mean
    |hidden state| over all layers (each layer scaled to mean 1)."""
    import torch

    if not batches:
        raise ModelError("importance='activation' needs a few batches of token ids (pass batches=[...])")
    mt = teacher.config.model_type
    n = names_of(mt)
    L, H, A, d = _dims(teacher.config)
    sd = teacher.state_dict()
    o_w = [sd[f"{n.layer.format(i)}{n.o}.weight"].detach().float().view(H, A, d) for i in range(L)]
    out_cols = [sd[f"{n.layer.format(i)}{n.ffn_out}.weight"].detach().float().norm(dim=0) for i in range(L)]
    heads, ffn, hidden = torch.zeros(L, A), torch.zeros(L, out_cols[0].numel()), torch.zeros(H)
    has_proj = n.proj is not None and f"{n.proj}.weight" in sd
    embedding = torch.zeros(sd[f"{n.word}.weight"].shape[1]) if has_proj else None
    captured: dict[str, torch.Tensor] = {}
    valid: list[torch.Tensor] = []

    def grab(key: str) -> Any:
        def hook(_m: Any, args: tuple[Any, ...]) -> None:
            captured[key] = args[0].detach().float()[valid[0]]  # [N, width], padding dropped

        return hook

    handles = []
    for i in range(L):
        p = n.layer.format(i)
        handles.append(teacher.get_submodule(p + n.o).register_forward_pre_hook(grab(f"o{i}")))
        handles.append(teacher.get_submodule(p + n.ffn_out).register_forward_pre_hook(grab(f"f{i}")))
    if has_proj:
        assert n.proj is not None
        handles.append(teacher.get_submodule(n.proj).register_forward_pre_hook(grab("emb")))
    tokens = 0
    try:
        with torch.no_grad():
            for batch in batches:
                inputs = _inputs(batch, mt)
                ids = inputs["input_ids"]
                mask = inputs.get("attention_mask")
                valid[:] = [mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)]
                out = teacher(**inputs, output_hidden_states=True)
                tokens += int(valid[0].sum())
                for i in range(L):
                    ctx = captured[f"o{i}"].view(-1, A, d)  # [N, A, d]
                    heads[i] += torch.einsum("nad,had->nah", ctx, o_w[i]).norm(dim=-1).sum(0)
                    ffn[i] += captured[f"f{i}"].abs().sum(0) * out_cols[i]
                for h in out.hidden_states:
                    m = h.detach().float()[valid[0]].abs().mean(0)  # [H]
                    hidden += m / m.mean().clamp_min(1e-12)
                if embedding is not None:
                    embedding += captured["emb"].abs().sum(0)
    finally:
        for h in handles:
            h.remove()
    tokens = max(tokens, 1)
    return Importance(
        hidden=hidden,
        heads=heads / tokens,
        ffn=ffn / tokens,
        embedding=embedding / tokens if embedding is not None else None,
    )


def compute_importance(
    teacher: PreTrainedModel, how: str = "magnitude", batches: Sequence[Any] | None = None
) -> Importance:
    """Importance of the teacher's units, by `magnitude` (weights) or `activation` (needs `batches`)."""
    base = getattr(teacher, "base_model", teacher)
    if how == "magnitude":
        return magnitude_importance(base)
    if how == "activation":
        return activation_importance(base, batches or [])
    raise ModelError(f"importance {how!r} is not one of magnitude, activation")
