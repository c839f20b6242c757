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
from kdnas.distill.config import SENTENCE_LOSSES, DistillConfig
from kdnas.distill.mapping import capture_qkv, layer_map
from kdnas.distill.teacher_cache import TeacherInfo, TeacherNeeds, attention_probs_from_qk, base_encoder
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
        sentence = [k for k in SENTENCE_LOSSES if k in self.weights]
        if sentence and self.pooling is None:
            log.warning(
                "distill.losses %s: the teacher has no sentence-transformers pooling config (modules.json), so "
                "these losses are off; set distill.pooling: mean to pool as most sentence encoders do",
                ", ".join(sentence),
            )
            self.weights = {k: w for k, w in self.weights.items() if k not in SENTENCE_LOSSES}
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
        if "hidden" in self.weights or flash:
            for i, tl in enumerate(self.map, 1):
                proj[f"hidden_{i}"] = nn.Linear(hs, len(tl) * ht)
        if "embedding" in self.weights:
            proj["embedding"] = nn.Linear(hs, ht)
        if "logits" in self.weights and self._heads[0] is None:
            proj["logits"] = nn.Linear(hs, ht)
        if "sentence" in self.weights and hs != ht:
            # the student's pooled embedding is mapped into the teacher's space by this Dense layer, which the
            # export carries (a sentence-transformers Dense module); at equal width there is none, so what
            # the loss matched is exactly what the exported model outputs
            proj["sentence"] = nn.Linear(hs, ht)
        self.proj = nn.ModuleDict(proj)
        self.relation_layers = [ls] if cfg.relation_layers == "last" else list(range(1, ls + 1))

    # ---------------------------------------------------------------------------------------------------------
    def needs(self) -> TeacherNeeds:
        """What the teacher must provide for the active losses (and for flash mode)."""
        lt = self.teacher.num_layers
        hidden: set[int] = set()
        qkv: set[int] = set()
        attn: set[int] = set()
        if "hidden" in self.weights or self.flash:
            hidden |= {t for tl in self.map for t in tl}
        if "embedding" in self.weights:
            hidden.add(0)
        if "logits" in self.weights or any(k in self.weights for k in SENTENCE_LOSSES):
            hidden.add(lt)
        if "relation" in self.weights:
            qkv |= {t for i in self.relation_layers for t in self.map[i - 1]}
        if "attention" in self.weights or self.flash:
            attn |= {t for tl in self.map for t in tl}
        return TeacherNeeds(hidden=tuple(sorted(hidden)), qkv=tuple(sorted(qkv)), attn=tuple(sorted(attn)))

    def student_ids(self, input_ids: Tensor) -> Tensor:
        """The ids the student reads [B, S]: the data's own, or their rows in its trimmed vocabulary."""
        return input_ids if self.input_map is None else self.input_map[input_ids]

    def phase_weights(self, flash_layer: int | None) -> dict[str, float]:
        if flash_layer is None:
            return self.weights
        return {"hidden": self.weights.get("hidden", 1.0), "attention": self.weights.get("attention", 1.0)}

    def _teacher_probs(self, teacher_out: dict[str, Tensor], layer: int, mask: Tensor) -> Tensor:
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
        weights = self.phase_weights(flash_layer)
        layers = [flash_layer] if flash_layer is not None else list(range(1, self.num_layers + 1))
        mask = attention_mask
        rel_layers = self.relation_layers if "relation" in weights else []
        base = base_encoder(self.student)
        with capture_qkv(base, rel_layers) as cap:
            out = base(
                input_ids=self.student_ids(input_ids),
                attention_mask=mask,
                output_hidden_states=True,
                output_attentions="attention" in weights,
            )
        hs = out.hidden_states  # (Ls + 1) x [B, S, Hs]
        comps: dict[str, Tensor] = {}
        if "hidden" in weights:
            terms = []
            for i in layers:
                tl = self.map[i - 1]
                target = torch.cat([teacher_out[f"hidden.{t}"] for t in tl], -1)  # [B, S, k*Ht]
                var = sum(variances[f"hidden.{t}"] for t in tl) / len(tl)
                terms.append(L.hidden_mse(self.proj[f"hidden_{i}"](hs[i]), target, mask, variance=var))
            comps["hidden"] = torch.stack(terms).mean()
        if "attention" in weights:
            terms = []
            for i in layers:
                for t in self.map[i - 1]:
                    terms.append(
                        L.attention_kl(out.attentions[i - 1], self._teacher_probs(teacher_out, t, mask), mask)
                    )
            comps["attention"] = torch.stack(terms).mean()
        if "relation" in weights:
            terms = []
            for i in rel_layers:
                for t in self.map[i - 1]:
                    t_qkv = [teacher_out[f"{r}.{t}"] for r in "qkv"]
                    terms.append(L.relation_kl(cap[i], t_qkv, mask, heads=self.cfg.relation_heads))
            comps["relation"] = torch.stack(terms).mean()
        if "embedding" in weights:
            pred = self.proj["embedding"](hs[0])
            comps["embedding"] = L.hidden_mse(
                pred, teacher_out["hidden.0"], mask, variance=variances["hidden.0"]
            )
        if "logits" in weights:
            last = teacher_out[f"hidden.{self.teacher.num_layers}"]
            s_head, t_head = self._heads
            assert t_head is not None
            with torch.no_grad():
                t_logits = t_head(last)  # [B, S, V]
            # the student's own MLM head if it has one, else the frozen teacher head on the projected state
            s_logits = s_head(hs[-1]) if s_head is not None else t_head(self.proj["logits"](hs[-1]))
            comps["logits"] = L.logit_kd(s_logits, t_logits, mask, temperature=self.cfg.temperature)
        if any(k in weights for k in SENTENCE_LOSSES):
            t_emb = self.teacher_embedding(teacher_out[f"hidden.{self.teacher.num_layers}"], mask)  # [B, Ht]
            s_emb = self.student_embedding(hs[-1], mask)  # [B, Ht] ([B, Hs] without a Dense at equal width)
            if "sentence" in weights:
                comps["sentence"] = L.sentence_cosine(s_emb, t_emb)
            if "similarity" in weights:
                comps["similarity"] = L.similarity_kl(
                    s_emb, t_emb, temperature=self.cfg.similarity_temperature
                )
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
