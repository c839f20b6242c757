"""The distillation losses as registered terms: each says what the teacher must provide, which trainable
projections it owns, what it needs from the student's forward pass, and computes its component from one batch.

`Distiller` builds the projections and the teacher's needs from the active terms and sums the components with
`distill.losses` weights. A new loss is one `LossTerm` subclass and one `register_loss` call; its math belongs in
`kdnas.distill.losses` as a pure function with a naive reference test.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from kdnas.distill import losses as L
from kdnas.errors import DistillError

if TYPE_CHECKING:
    from kdnas.distill.distiller import Distiller


@dataclass
class StepView:
    """What a term reads for one batch. Hidden states are `hidden_states` of the student ((Ls + 1) x [B, S, Hs]),
    `teacher_out` the cached teacher arrays (hidden.L [B, S, Ht], q.L / k.L / v.L, attn.L), `layers` the student
    layers of this phase (all of them, or the one flash layer)."""

    distiller: Distiller
    mask: Tensor
    hidden: tuple[Tensor, ...]
    attentions: tuple[Tensor, ...] | None
    qkv: dict[int, Any]
    teacher_out: dict[str, Tensor]
    variances: dict[str, float]
    layers: list[int]
    memo: dict[str, Any] = field(default_factory=dict)
    """Shared between terms of one batch (the sentence embeddings of the sentence and similarity terms)."""


@dataclass(frozen=True)
class Needs:
    """Teacher layers (hidden_states indices; 0 = embeddings) whose hidden states, q/k/v, attention probs a term reads."""

    hidden: frozenset[int] = frozenset()
    qkv: frozenset[int] = frozenset()
    attn: frozenset[int] = frozenset()


class LossTerm(abc.ABC):
    """One distillation loss. The contract:

    - `name` is its key in `distill.losses` (its weight);
    - `teacher_needs(d)`: the teacher arrays it reads (the teacher cache stores exactly the union);
    - `projections(d, hs, ht)`: trainable modules it owns, by name, in `d.proj` (saved in checkpoints);
    - `student_attentions` / `student_qkv_layers(d)`: what the student's forward must return;
    - `__call__(view)`: the component [scalar] for one batch;
    - `fit_pairs(view)`: for each projection it owns, the (student input, teacher target) rows whose
      least-squares map starts that projection (`distill.proj_init: lstsq`) and fits held-out read-outs; a term
      that returns nothing keeps nn.Linear's init.
    """

    name: ClassVar[str] = ""
    student_attentions: ClassVar[bool] = False
    needs_pooling: ClassVar[bool] = False
    """A sentence-embedding loss: off (with a warning) for a teacher without a pooling config."""

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs()

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        return {}

    def student_qkv_layers(self, d: Distiller) -> list[int]:
        return []

    def fit_pairs(self, v: StepView, *, per_token: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        """Projection name -> (x [N, Hs], y [N, D]): N rows of what the projection reads and what it should
        output, from one batch's view. per_token: fit a pooled projection on token pairs (the student's and the
        teacher's states per real token) rather than one pair per sentence, which needs more rows than a batch
        holds to be well posed. Default: none (the projections keep their init)."""
        return {}

    @abc.abstractmethod
    def __call__(self, v: StepView) -> Tensor: ...


LOSS_TERMS: dict[str, LossTerm] = {}
"""The registry `distill.losses` names."""


def register_loss(term: LossTerm) -> LossTerm:
    """Make `distill.losses: {term.name: weight}` use `term`."""
    if not term.name or not callable(term):
        raise DistillError(f"register_loss({term!r}): a LossTerm with a name")
    LOSS_TERMS[term.name] = term
    return term


def known_losses() -> list[str]:
    return list(LOSS_TERMS)


def state_terms(weights: dict[str, float]) -> list[str]:
    """The active terms of `distill.losses` on token states: those that pool no sentence embedding (what
    `search.proxy_loss: states` ranks by)."""
    return [k for k, w in weights.items() if w > 0 and k in LOSS_TERMS and not LOSS_TERMS[k].needs_pooling]


def _real(x: Tensor, mask: Tensor) -> Tensor:
    """[B, S, D] -> [T, D]: the states of the real tokens."""
    return x[mask.bool()]


def _mapped(d: Distiller, layers: list[int] | None = None) -> frozenset[int]:
    return frozenset(t for i, tl in enumerate(d.map, 1) if layers is None or i in layers for t in tl)


class HiddenLoss(LossTerm):
    """Variance-normalised MSE of each student layer's projected state to its mapped teacher state(s)."""

    name = "hidden"

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=_mapped(d))

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        return {f"hidden_{i}": nn.Linear(hs, len(tl) * ht) for i, tl in enumerate(d.map, 1)}

    def __call__(self, v: StepView) -> Tensor:
        import torch

        d, terms = v.distiller, []
        for i in v.layers:
            tl = d.map[i - 1]
            target = torch.cat([v.teacher_out[f"hidden.{t}"] for t in tl], -1)  # [B, S, k*Ht]
            var = sum(v.variances[f"hidden.{t}"] for t in tl) / len(tl)
            terms.append(L.hidden_mse(d.proj[f"hidden_{i}"](v.hidden[i]), target, v.mask, variance=var))
        return torch.stack(terms).mean()

    def fit_pairs(self, v: StepView, *, per_token: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        import torch

        d = v.distiller
        return {
            f"hidden_{i}": (
                _real(v.hidden[i], v.mask),
                _real(torch.cat([v.teacher_out[f"hidden.{t}"] for t in d.map[i - 1]], -1), v.mask),
            )
            for i in v.layers
        }


class AttentionLoss(LossTerm):
    """KL of each student layer's attention distributions to its mapped teacher layer's (TinyBERT)."""

    name = "attention"
    student_attentions = True

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(attn=_mapped(d))

    def __call__(self, v: StepView) -> Tensor:
        import torch

        d, terms = v.distiller, []
        assert v.attentions is not None
        for i in v.layers:
            for t in d.map[i - 1]:
                terms.append(
                    L.attention_kl(v.attentions[i - 1], d.teacher_probs(v.teacher_out, t, v.mask), v.mask)
                )
        return torch.stack(terms).mean()


class RelationLoss(LossTerm):
    """MiniLMv2 self-attention relation KL (q-q, k-k, v-v) on `distill.relation_layers`."""

    name = "relation"

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(qkv=_mapped(d, d.relation_layers))

    def student_qkv_layers(self, d: Distiller) -> list[int]:
        return list(d.relation_layers)

    def __call__(self, v: StepView) -> Tensor:
        import torch

        d, terms = v.distiller, []
        for i in d.relation_layers:
            for t in d.map[i - 1]:
                t_qkv = [v.teacher_out[f"{r}.{t}"] for r in "qkv"]
                terms.append(L.relation_kl(v.qkv[i], t_qkv, v.mask, heads=d.cfg.relation_heads))
        return torch.stack(terms).mean()


class EmbeddingLoss(LossTerm):
    """Variance-normalised MSE of the projected embedding output to the teacher's."""

    name = "embedding"

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=frozenset({0}))

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        return {"embedding": nn.Linear(hs, ht)}

    def __call__(self, v: StepView) -> Tensor:
        pred = v.distiller.proj["embedding"](v.hidden[0])
        return L.hidden_mse(pred, v.teacher_out["hidden.0"], v.mask, variance=v.variances["hidden.0"])

    def fit_pairs(self, v: StepView, *, per_token: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        return {"embedding": (_real(v.hidden[0], v.mask), _real(v.teacher_out["hidden.0"], v.mask))}


class LogitsLoss(LossTerm):
    """Temperature KL of MLM logits: the student's own head, or the frozen teacher head on a projected state."""

    name = "logits"

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=frozenset({d.teacher.num_layers}))

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        return {"logits": nn.Linear(hs, ht)} if d.heads[0] is None else {}

    def __call__(self, v: StepView) -> Tensor:
        import torch

        d = v.distiller
        last = v.teacher_out[f"hidden.{d.teacher.num_layers}"]
        s_head, t_head = d.heads
        assert t_head is not None
        with torch.no_grad():
            t_logits = t_head(last)  # [B, S, V]
        s_logits = s_head(v.hidden[-1]) if s_head is not None else t_head(d.proj["logits"](v.hidden[-1]))
        return L.logit_kd(s_logits, t_logits, v.mask, temperature=d.cfg.temperature)

    def fit_pairs(self, v: StepView, *, per_token: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        d = v.distiller
        if "logits" not in d.proj:  # the student's own head: no projection
            return {}
        last = v.teacher_out[f"hidden.{d.teacher.num_layers}"]
        return {"logits": (_real(v.hidden[-1], v.mask), _real(last, v.mask))}


def _embeddings(v: StepView) -> tuple[Tensor, Tensor]:
    """(student, teacher) sentence embeddings [B, Ht], computed once per batch for both sentence terms."""
    if "emb" not in v.memo:
        d = v.distiller
        t_emb = d.teacher_embedding(v.teacher_out[f"hidden.{d.teacher.num_layers}"], v.mask)  # [B, Ht]
        s_emb = d.student_embedding(v.hidden[-1], v.mask)  # [B, Ht] ([B, Hs] without a Dense at equal width)
        v.memo["emb"] = (s_emb, t_emb)
    return v.memo["emb"]  # type: ignore[no-any-return]


class SentenceLoss(LossTerm):
    """1 - cosine of the pooled sentence embedding (through the export's Dense) to the teacher's."""

    name = "sentence"
    needs_pooling = True

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=frozenset({d.teacher.num_layers}))

    def projections(self, d: Distiller, hs: int, ht: int) -> dict[str, nn.Module]:
        # the student's pooled embedding is mapped into the teacher's space by this Dense layer, which the
        # export carries (a sentence-transformers Dense module); at equal width there is none, so what the loss
        # matched is exactly what the exported model outputs
        return {"sentence": nn.Linear(hs, ht)} if hs != ht else {}

    def __call__(self, v: StepView) -> Tensor:
        return L.sentence_cosine(*_embeddings(v))

    def fit_pairs(self, v: StepView, *, per_token: bool = False) -> dict[str, tuple[Tensor, Tensor]]:
        import dataclasses

        from kdnas.models.pooling import pool

        d = v.distiller
        if "sentence" not in d.proj:  # equal width: no Dense
            return {}
        last = v.teacher_out[f"hidden.{d.teacher.num_layers}"]
        if per_token:  # pooling is a mean (or one token): the token map carries over up to the cosine's scale
            return {"sentence": (_real(v.hidden[-1], v.mask), _real(last, v.mask))}
        assert d.pooling is not None
        x = pool(v.hidden[-1], v.mask, dataclasses.replace(d.pooling, normalize=False))  # [B, Hs], as trained
        return {"sentence": (x, d.teacher_embedding(last, v.mask))}


class SimilarityLoss(LossTerm):
    """KL between the student's and the teacher's in-batch similarity distributions of sentence embeddings."""

    name = "similarity"
    needs_pooling = True

    def teacher_needs(self, d: Distiller) -> Needs:
        return Needs(hidden=frozenset({d.teacher.num_layers}))

    def __call__(self, v: StepView) -> Tensor:
        s_emb, t_emb = _embeddings(v)
        return L.similarity_kl(s_emb, t_emb, temperature=v.distiller.cfg.similarity_temperature)


for _term in (HiddenLoss(), AttentionLoss(), RelationLoss(), EmbeddingLoss(), LogitsLoss(), SentenceLoss(),
              SimilarityLoss()):  # fmt: skip
    register_loss(_term)

FLASH_TERMS = ("hidden", "attention")
"""The terms of a flash (layer-by-layer) phase, whatever `distill.losses` says."""
