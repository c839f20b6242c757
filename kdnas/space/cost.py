"""Cost model of an arch (after nanoGPT's `get_num_params` / `estimate_mfu`): exact parameter counts, matmul
FLOPs at a sequence length, and a peak inference activation-memory estimate, for every supported family.

Formulas (H hidden, F FFN, A heads, L layers, S sequence length, V vocab, P positions, T token types):

* params per BERT-style layer: 4(H² + H) attention + 2HF + F + H FFN + 4H two LayerNorms = 4H² + 9H + 2HF + F.
  Embedding tables V·E + P·E + T·E (E = H except ELECTRA's `embedding_size`), embedding LayerNorm 2E,
  ELECTRA projection E·H + H when E != H, MPNet relative-attention bias 32·A, pooler H² + H where AutoModel
  has one (BERT, RoBERTa, XLM-R, CamemBERT, MPNet, and MobileBERT with `classifier_activation`).
  `embedding` counts the lookup tables only (word, position, token type); everything else is `non_embedding`.
* FLOPs = 2 × multiply-accumulates of every matmul: per layer S(4H² + 2HF) for the projections and FFN, plus
  2S²H for attention scores (QKᵀ) and context (PV). Embedding lookups cost nothing; softmax, GELU, LayerNorm and
  residual adds are not counted (as in `torch.utils.flop_counter`). The pooler (H² on one token) and ELECTRA's
  embedding projection (S·E·H) are counted only when the teacher config is given.
* activation bytes (inference, no autograd, one layer alive at a time): the larger of the attention phase
  (layer input + Q, K, V: 4SH, scores and probabilities: 2AS²) and the FFN phase (attention output SH,
  pre- and post-activation 2SF), plus the additive attention mask S², times batch and dtype bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

_POOLER_FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert", "mpnet")


@dataclass(frozen=True)
class ParamCount:
    """Parameter count of a model, split into lookup tables and the rest."""

    total: int
    """All parameters, as `sum(p.numel() for p in AutoModel...parameters())`."""
    embedding: int
    """Word, position and token-type embedding tables (lookups, no FLOPs)."""
    non_embedding: int
    """Everything else: layers, LayerNorms, projections, pooler."""

    @property
    def total_m(self) -> float:
        return self.total / 1e6

    @property
    def embedding_m(self) -> float:
        return self.embedding / 1e6

    @property
    def non_embedding_m(self) -> float:
        return self.non_embedding / 1e6


def human(n: float, unit: str = "") -> str:
    """`22713216` -> `22.7M`; `2.87e9` -> `2.87G`."""
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.3g}{suffix}{unit}" if v < 100 else f"{v:.0f}{suffix}{unit}"
    return f"{n:g}{unit}"


# ---------------------------------------------------------------- shapes of a config


def _get(c: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(c, n, None)
        if v is not None:
            return v
    return default


@dataclass(frozen=True)
class _Shape:
    """Every number the cost formulas need, read from an HF config (or assumed from an arch alone)."""

    model_type: str
    layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    token_types: int
    embedding: int  # width of the word embedding table
    pooler: bool
    rel_buckets: int = 0  # MPNet's relative attention bias
    # MobileBERT only
    true_hidden: int = 0
    intra_bottleneck: int = 0
    num_ffn: int = 1
    trigram: bool = False
    use_bottleneck: bool = True
    kq_shared: bool = True
    bottleneck_attention: bool = False


def _shape_of_config(c: PretrainedConfig) -> _Shape:
    mt = str(c.model_type)
    layers = int(_get(c, "num_hidden_layers", "n_layers"))
    hidden = int(_get(c, "hidden_size", "dim"))
    heads = int(_get(c, "num_attention_heads", "n_heads"))
    ffn = int(_get(c, "intermediate_size", "hidden_dim"))
    vocab = int(c.vocab_size)
    positions = int(_get(c, "max_position_embeddings", default=512))
    types = 0 if mt in ("mpnet", "distilbert") else int(_get(c, "type_vocab_size", default=2))
    if mt == "mobilebert":
        return _Shape(
            model_type=mt,
            layers=layers,
            hidden=hidden,
            heads=heads,
            ffn=ffn,
            vocab=vocab,
            positions=positions,
            token_types=types,
            embedding=int(c.embedding_size),
            pooler=bool(_get(c, "classifier_activation", default=True)),
            true_hidden=int(c.true_hidden_size),
            intra_bottleneck=int(c.intra_bottleneck_size),
            num_ffn=int(c.num_feedforward_networks),
            trigram=bool(c.trigram_input),
            use_bottleneck=bool(c.use_bottleneck),
            kq_shared=bool(c.key_query_shared_bottleneck),
            bottleneck_attention=bool(c.use_bottleneck_attention),
        )
    embedding = int(_get(c, "embedding_size", default=hidden)) if mt == "electra" else hidden
    return _Shape(
        model_type=mt,
        layers=layers,
        hidden=hidden,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        positions=positions,
        token_types=types,
        embedding=embedding,
        pooler=mt in _POOLER_FAMILIES,
        rel_buckets=int(_get(c, "relative_attention_num_buckets", default=32)) if mt == "mpnet" else 0,
    )


def _shape(arch: Arch, teacher_config: PretrainedConfig | None) -> _Shape:
    """The student's shape: exact with the teacher config, else a BERT-style encoder without pooler."""
    if teacher_config is not None:
        from kdnas.models.student import student_config

        return _shape_of_config(student_config(teacher_config, arch))
    arch.validate()
    if arch.family == "mobilebert":
        assert arch.bottleneck_size is not None and arch.num_ffn_stacked is not None
        return _Shape(
            model_type="mobilebert",
            layers=arch.num_layers,
            hidden=arch.hidden_size,
            heads=arch.num_heads,
            ffn=arch.ffn_size,
            vocab=arch.vocab_size or 30522,
            positions=512,
            token_types=2,
            embedding=min(128, arch.hidden_size),  # as kdnas.models.student.student_config
            pooler=False,
            true_hidden=arch.bottleneck_size,
            intra_bottleneck=arch.bottleneck_size,
            num_ffn=arch.num_ffn_stacked,
        )
    return _Shape(
        model_type="bert",
        layers=arch.num_layers,
        hidden=arch.hidden_size,
        heads=arch.num_heads,
        ffn=arch.ffn_size,
        vocab=arch.vocab_size or 30522,
        positions=512,
        token_types=2,
        embedding=arch.hidden_size,
        pooler=False,
    )


# ---------------------------------------------------------------- parameters


def _params(s: _Shape) -> ParamCount:
    H, F = s.hidden, s.ffn
    if s.model_type == "mobilebert":
        tables = s.vocab * s.embedding + s.positions * H + s.token_types * H
        other = s.embedding * (3 if s.trigram else 1) * H + H + 2 * H  # transformation + LayerNorm
        Bt, Bi = s.true_hidden, s.intra_bottleneck
        v_in = Bt if s.bottleneck_attention else H
        layer = 2 * (Bt * Bt + Bt) + (v_in * Bt + Bt)  # q, k, v
        layer += Bt * Bt + Bt + 2 * Bt  # attention output dense + norm
        layer += Bt * F + F + F * Bt + Bt + 2 * Bt  # intermediate + output dense + norm
        if s.use_bottleneck:
            layer += Bt * H + H + 2 * H  # output bottleneck back to H
            layer += H * Bi + Bi + 2 * Bi  # input bottleneck
            if s.kq_shared:
                layer += H * Bi + Bi + 2 * Bi  # shared query/key bottleneck
        layer += (s.num_ffn - 1) * (Bt * F + F + F * Bt + Bt + 2 * Bt)  # stacked FFNs
        other += s.layers * layer + (H * H + H if s.pooler else 0)
        return ParamCount(total=tables + other, embedding=tables, non_embedding=other)
    E = s.embedding
    tables = (s.vocab + s.positions + s.token_types) * E
    other = 2 * E + (E * H + H if E != H else 0)
    other += s.layers * (4 * H * H + 9 * H + 2 * H * F + F)
    other += s.rel_buckets * s.heads
    other += H * H + H if s.pooler else 0
    return ParamCount(total=tables + other, embedding=tables, non_embedding=other)


def param_count(arch: Arch, teacher_config: PretrainedConfig) -> ParamCount:
    """Exact parameters of `build_student(teacher_config, arch)` (AutoModel, pooler included where it has one)."""
    return _params(_shape(arch, teacher_config))


def config_param_count(config: PretrainedConfig) -> ParamCount:
    """Exact parameters of `AutoModel.from_config(config)` (e.g. of a teacher, as loaded)."""
    return _params(_shape_of_config(config))


# ---------------------------------------------------------------- FLOPs


def _macs(s: _Shape, seq_len: int) -> int:
    S, H, F = seq_len, s.hidden, s.ffn
    if s.model_type == "mobilebert":
        Bt, Bi = s.true_hidden, s.intra_bottleneck
        macs = S * s.embedding * (3 if s.trigram else 1) * H if s.trigram or s.embedding != H else 0
        v_in = Bt if s.bottleneck_attention else H
        layer = 0
        if s.use_bottleneck:
            layer += S * H * Bi * (2 if s.kq_shared and not s.bottleneck_attention else 1)
            layer += S * Bt * H  # output bottleneck
        layer += 2 * S * Bt * Bt + S * v_in * Bt  # q, k, v
        layer += 2 * S * S * Bt  # scores + context
        layer += S * Bt * Bt  # attention output
        layer += s.num_ffn * 2 * S * Bt * F  # every FFN (the stacked ones and the final one)
        return macs + s.layers * layer + (H * H if s.pooler else 0)
    E = s.embedding
    macs = S * E * H if E != H else 0
    macs += s.layers * (S * (4 * H * H + 2 * H * F) + 2 * S * S * H)
    return macs + (H * H if s.pooler else 0)


def forward_flops(
    arch: Arch, *, seq_len: int, batch_size: int = 1, teacher_config: PretrainedConfig | None = None
) -> int:
    """Matmul FLOPs (2 × MACs) of one forward pass over `batch_size` sequences of `seq_len` tokens.

    Without `teacher_config`: the encoder layers only (family-neutral). With it: exactly what the student's
    AutoModel runs, i.e. also ELECTRA's embedding projection and the pooler (which runs on one token).
    """
    return 2 * batch_size * _macs(_shape(arch, teacher_config), seq_len)


def config_forward_flops(config: PretrainedConfig, *, seq_len: int, batch_size: int = 1) -> int:
    """Matmul FLOPs of one forward pass of `AutoModel.from_config(config)` (e.g. of a teacher)."""
    return 2 * batch_size * _macs(_shape_of_config(config), seq_len)


# ---------------------------------------------------------------- activation memory


def _act_elems(s: _Shape, seq_len: int) -> int:
    S, H, F, A = seq_len, s.hidden, s.ffn, s.heads
    if s.model_type == "mobilebert":
        Bt, Bi = s.true_hidden, s.intra_bottleneck
        kq = Bi if s.kq_shared else 0
        attn = S * H + S * Bi + S * kq + 3 * S * Bt + 2 * A * S * S
        ffn = S * H + S * Bt + 2 * S * F
        return max(attn, ffn) + S * S
    attn = 4 * S * H + 2 * A * S * S
    ffn = S * H + 2 * S * F
    return max(attn, ffn) + S * S


def activation_bytes(
    arch: Arch,
    *,
    seq_len: int,
    batch_size: int = 1,
    dtype_bytes: int = 4,
    teacher_config: PretrainedConfig | None = None,
) -> int:
    """Estimated peak activation memory of one inference forward pass (no autograd, hidden states not kept).

    The model is in the module docstring: the larger of a layer's attention and FFN phases, plus the mask.
    Training keeps every layer's activations instead and needs roughly `num_layers` times more.
    """
    return batch_size * dtype_bytes * _act_elems(_shape(arch, teacher_config), seq_len)


def config_activation_bytes(
    config: PretrainedConfig, *, seq_len: int, batch_size: int = 1, dtype_bytes: int = 4
) -> int:
    """`activation_bytes` of `AutoModel.from_config(config)` (e.g. of a teacher)."""
    return batch_size * dtype_bytes * _act_elems(_shape_of_config(config), seq_len)
