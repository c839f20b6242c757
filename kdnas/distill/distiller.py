"""The distiller: a small nn.Module holding the student, the trainable student->teacher projections and the
q/k/v hooks, which turns one batch (plus the teacher's outputs for it) into the weighted KD loss.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdnas.distill import losses as L
from kdnas.distill.config import DistillConfig
from kdnas.distill.mapping import capture_qkv, layer_map
from kdnas.distill.teacher_cache import TeacherInfo, TeacherNeeds, attention_probs_from_qk, base_encoder
from kdnas.distill.terms import FLASH_TERMS, LOSS_TERMS, LossTerm, StepView
from kdnas.errors import DistillError
from kdnas.models.pooling import Pooling, pool, read_pooling

log = logging.getLogger(__name__)


def teacher_pooling(teacher: Any) -> Pooling | None:
    """The teacher's sentence-embedding pooling, read from its sentence-transformers config (modules.json in
    its model dir); None when it has none (a plain HF encoder, or a model built in memory)."""
    path = getattr(teacher, "path", None)
    if path is None:
        model = teacher.model if not isinstance(teacher, nn.Module) and hasattr(teacher, "model") else teacher
        path = getattr(model, "name_or_path", None) or getattr(
            getattr(model, "config", None), "_name_or_path", None
        )
    if not path or not (Path(path) / "modules.json").is_file():
        return None
    return read_pooling(path)


def resolve_pooling(cfg: DistillConfig, teacher_pool: Pooling | None) -> Pooling | None:
    """The pooling the sentence losses use: the teacher's (`auto`) or the one `cfg.pooling` forces."""
    if cfg.pooling != "auto":
        return Pooling(mode=cfg.pooling, normalize=False, source=f"distill.pooling: {cfg.pooling}")
    return teacher_pool


def mlm_head(model: Any) -> Callable[[Tensor], Tensor] | None:
    """The MLM head of an HF masked-LM model as a function hidden [B, S, H] -> logits [B, S, V]; None for a
    base encoder. The head's parameters are frozen (requires_grad=False): it only scores, never learns."""
    if not isinstance(model, nn.Module) and hasattr(model, "model"):  # a `Teacher` from load_teacher
        head = getattr(model, "mlm_head", None)
        if isinstance(head, nn.Module):
            head.requires_grad_(False)
            return head
        model = model.model
    fn: Callable[[Tensor], Tensor] | None = None
    mods: list[nn.Module] = []
    if hasattr(model, "cls") and isinstance(model.cls, nn.Module):  # bert, mobilebert
        mods, fn = [model.cls], model.cls
    elif hasattr(model, "lm_head") and isinstance(model.lm_head, nn.Module):  # roberta, xlm-r, mpnet
        mods, fn = [model.lm_head], model.lm_head
    elif hasattr(model, "vocab_projector"):  # distilbert
        m = model
        mods = [m.vocab_transform, m.vocab_layer_norm, m.vocab_projector]

        def fn(h: Tensor) -> Tensor:
            return m.vocab_projector(m.vocab_layer_norm(m.activation(m.vocab_transform(h))))

    elif hasattr(model, "generator_lm_head"):  # electra
        m = model
        mods = [m.generator_predictions, m.generator_lm_head]

        def fn(h: Tensor) -> Tensor:
            return m.generator_lm_head(m.generator_predictions(h))

    for mod in mods:
        mod.requires_grad_(False)
    return fn


def student_vocab_size(student: nn.Module) -> int | None:
    """Rows of the student's input embedding (None when it has no plain embedding table)."""
    emb = getattr(base_encoder(student), "get_input_embeddings", lambda: None)()
    return int(emb.weight.shape[0]) if isinstance(emb, nn.Embedding) else None


def check_input_map(student: nn.Module, ids: Tensor, input_map: Tensor | None) -> None:
    """DistillError when the student cannot read `ids` [N, S] (teacher ids), through `input_map` if given."""
    rows = student_vocab_size(student)
    top = int(ids.max()) if ids.numel() else 0
    if input_map is None:
        if rows is not None and top >= rows:
            raise DistillError(
                f"the data has token id {top} but the student's embedding has {rows} rows: a student with a "
                "trimmed vocabulary reads the data through input_map (kdnas.space.vocab.VocabTable.input_map)"
            )
        return
    if input_map.dim() != 1 or top >= len(input_map):
        raise DistillError(
            f"input_map covers {len(input_map)} teacher ids but the data has token id {top}; build it for the "
            "teacher's vocabulary"
        )
    if rows is not None and int(input_map.max()) >= rows:
        raise DistillError(
            f"input_map sends ids to row {int(input_map.max())} but the student's embedding has {rows} rows; "
            "use the map of this student's vocabulary"
        )


def student_shape(student: nn.Module) -> tuple[int, int, int]:
    """(layers, hidden width of hidden_states, attention heads) of a student encoder."""
    cfg: Any = base_encoder(student).config
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
    hidden = cfg.dim if cfg.model_type == "distilbert" else cfg.hidden_size
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    return int(layers), int(hidden), int(heads)


class Distiller(nn.Module):
    """Student + projections + loss. `forward(input_ids, attention_mask, teacher_out, variances)` returns
    (weighted loss, {component: loss}).

    Projections are `nn.Linear(Hs, k * Ht)` per student layer (k = 1, or 2 for `uniform+last` where the two
    teacher states are concatenated), plus one for the embedding output and one for logit KD through the
    teacher's MLM head. They train with the student and are saved in its checkpoints.

    `input_map` (LongTensor [teacher vocab], teacher id -> student id) is for a student with a trimmed
    vocabulary: the teacher (and its cache) read the data's own ids, the student reads `input_map[ids]`.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: TeacherInfo,
        cfg: DistillConfig,
        *,
        flash: bool = False,
        teacher_head: Callable[[Tensor], Tensor] | None = None,
        input_map: Tensor | None = None,
        pooling: Pooling | None = None,
    ):
        super().__init__()
        self.student = student
        self.input_map: Tensor | None
        # not persistent: the map is data of the run (vocab.json), not a weight; checkpoints stay the same size
        self.register_buffer("input_map", None if input_map is None else input_map.long(), persistent=False)
        self.cfg = cfg
        self.teacher = teacher
        self.flash = flash
        self.weights = {k: float(w) for k, w in cfg.losses.items() if w > 0}
        self.pooling = resolve_pooling(cfg, pooling)
        sentence = [k for k in self.weights if k in LOSS_TERMS and LOSS_TERMS[k].needs_pooling]
        if sentence and self.pooling is None:
            log.warning(
                "distill.losses %s: the teacher has no sentence-transformers pooling config (modules.json), so "
                "these losses are off; set distill.pooling: mean to pool as most sentence encoders do",
                ", ".join(sentence),
            )
            self.weights = {k: w for k, w in self.weights.items() if k not in sentence}
        if self.pooling is not None and self.pooling.dense is not None and sentence:
            raise DistillError(
                f"the teacher's sentence-transformers config has a Dense module ({self.pooling.dense}) after "
                "pooling, which the sentence losses do not apply yet; drop distill.losses "
                f"{', '.join(sentence)} or set distill.pooling to pool the last hidden state"
            )
        if not self.weights:
            raise DistillError("distill.losses: at least one loss needs a positive weight")
        ls, hs, self.student_heads = student_shape(student)
        self.num_layers = ls
        self.map = layer_map(ls, teacher.num_layers, cfg.mapping)
        ht = teacher.hidden_size
        # a tuple, so the heads (modules of the student/teacher) are not registered twice in the state dict
        self._heads: tuple[Callable[[Tensor], Tensor] | None, Callable[[Tensor], Tensor] | None] = (
            mlm_head(student),
            teacher_head,
        )
        if "logits" in self.weights and teacher_head is None:
            raise DistillError(
                "distill.losses.logits needs a teacher with an MLM head: load it with AutoModelForMaskedLM (or "
                "drop the logits loss)"
            )
        proj: dict[str, nn.Module] = {}
        for term in self.terms(with_flash=flash):
            proj.update(term.projections(self, hs, ht))
        self.proj = nn.ModuleDict(proj)
        self.relation_layers = [ls] if cfg.relation_layers == "last" else list(range(1, ls + 1))

    # ---------------------------------------------------------------------------------------------------------
    @property
    def heads(self) -> tuple[Callable[[Tensor], Tensor] | None, Callable[[Tensor], Tensor] | None]:
        """(the student's MLM head, the teacher's), either None when the model has none."""
        return self._heads

    def terms(self, weights: dict[str, float] | None = None, *, with_flash: bool = False) -> list[LossTerm]:
        """The registered loss terms active under `weights` (default: the configured ones), plus the flash
        phase's terms when `with_flash`."""
        active = set(weights if weights is not None else self.weights) | (
            set(FLASH_TERMS) if with_flash else set()
        )
        unknown = sorted(active - set(LOSS_TERMS))
        if unknown:
            raise DistillError(
                f"distill.losses: no registered loss {', '.join(unknown)} (kdnas.distill.register_loss)"
            )
        return [t for n, t in LOSS_TERMS.items() if n in active]  # registry order: projections built alike

    def needs(self) -> TeacherNeeds:
        """What the teacher must provide for the active losses (and for flash mode)."""
        hidden: set[int] = set()
        qkv: set[int] = set()
        attn: set[int] = set()
        for term in self.terms(with_flash=self.flash):
            n = term.teacher_needs(self)
            hidden |= n.hidden
            qkv |= n.qkv
            attn |= n.attn
        return TeacherNeeds(hidden=tuple(sorted(hidden)), qkv=tuple(sorted(qkv)), attn=tuple(sorted(attn)))

    def student_ids(self, input_ids: Tensor) -> Tensor:
        """The ids the student reads [B, S]: the data's own, or their rows in its trimmed vocabulary."""
        return input_ids if self.input_map is None else self.input_map[input_ids]

    def phase_weights(self, flash_layer: int | None) -> dict[str, float]:
        if flash_layer is None:
            return self.weights
        return {"hidden": self.weights.get("hidden", 1.0), "attention": self.weights.get("attention", 1.0)}

    def teacher_probs(self, teacher_out: dict[str, Tensor], layer: int, mask: Tensor) -> Tensor:
        """The teacher's attention probabilities of `layer` [B, At, S, S], cached or recomputed from q and k."""
        if f"attn.{layer}" in teacher_out:
            return teacher_out[f"attn.{layer}"]
        q, k = teacher_out[f"q.{layer}"], teacher_out[f"k.{layer}"]
        return attention_probs_from_qk(q, k, mask, self.teacher.num_heads)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        teacher_out: dict[str, Tensor],
        variances: dict[str, float],
        *,
        flash_layer: int | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """input_ids, attention_mask: [B, S]; teacher_out: items from the teacher cache for these rows
        (hidden.L [B, S, Ht], q.L/k.L/v.L [B, S, Dt], attn.L [B, At, S, S]); variances: hidden.L -> the
        teacher variance. flash_layer: only that student layer's hidden + attention losses (flash mode)."""
        view = self.student_view(input_ids, attention_mask, teacher_out, variances, flash_layer=flash_layer)
        return self.loss(view, flash_layer=flash_layer)

    def student_view(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        teacher_out: dict[str, Tensor],
        variances: dict[str, float],
        *,
        flash_layer: int | None = None,
    ) -> StepView:
        """The student's forward on one batch as the loss terms read it: its hidden states, and the attentions
        and q/k/v the active terms need. One view serves every distiller of the same student and losses
        (`dataclasses.replace(view, distiller=other, memo={})`: the held-out read-outs share a forward)."""
        terms = self.terms(self.phase_weights(flash_layer))
        layers = [flash_layer] if flash_layer is not None else list(range(1, self.num_layers + 1))
        qkv_layers = sorted({i for t in terms for i in t.student_qkv_layers(self)})
        base = base_encoder(self.student)
        with capture_qkv(base, qkv_layers) as cap:
            out = base(
                input_ids=self.student_ids(input_ids),
                attention_mask=attention_mask,
                output_hidden_states=True,
                output_attentions=any(t.student_attentions for t in terms),
            )
        return StepView(
            distiller=self, mask=attention_mask, hidden=out.hidden_states, attentions=out.attentions, qkv=cap,
            teacher_out=teacher_out, variances=variances, layers=layers,
        )  # fmt: skip

    def loss(self, view: StepView, *, flash_layer: int | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The weighted loss and its components on a `student_view`, through this distiller's projections."""
        weights = self.phase_weights(flash_layer)
        comps = {t.name: t(view) for t in self.terms(weights)}
        return L.combine(comps, weights), comps

    def teacher_embedding(self, last: Tensor, mask: Tensor) -> Tensor:
        """The teacher's sentence embedding [B, Ht] from its last hidden state [B, S, Ht], pooled and
        normalised as its sentence-transformers config says."""
        assert self.pooling is not None
        return pool(last, mask, self.pooling)

    def student_embedding(self, last: Tensor, mask: Tensor) -> Tensor:
        """The student's sentence embedding [B, D]: pooled like the teacher, then the Dense projection (when
        narrower than the teacher), then normalised like the teacher. This is what the export computes."""
        assert self.pooling is not None
        x = pool(last, mask, dataclasses.replace(self.pooling, normalize=False))  # [B, Hs]
        if "sentence" in self.proj:
            x = self.proj["sentence"](x)  # [B, Ht]
        return torch.nn.functional.normalize(x, dim=-1) if self.pooling.normalize else x

    def layer_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by group for flash mode: `emb`, `layer.1` .. `layer.Ls`, `proj.hidden_i`, `rest`."""
        from kdnas.distill.mapping import encoder_layers

        groups: dict[str, list[nn.Parameter]] = {}
        seen: set[int] = set()
        base = base_encoder(self.student)
        for i, block in enumerate(encoder_layers(base), 1):
            ps = [p for p in block.parameters() if p.requires_grad]
            groups[f"layer.{i}"] = ps
            seen |= {id(p) for p in ps}
        emb = getattr(base, "embeddings", None)
        groups["emb"] = [p for p in (emb.parameters() if emb is not None else []) if id(p) not in seen]
        seen |= {id(p) for p in groups["emb"]}
        for name, mod in self.proj.items():
            groups[f"proj.{name}"] = list(mod.parameters())
            seen |= {id(p) for p in groups[f"proj.{name}"]}
        groups["rest"] = [p for p in self.parameters() if id(p) not in seen and p.requires_grad]
        return {k: v for k, v in groups.items() if v}
