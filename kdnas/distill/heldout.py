"""Held-out KD loss of a distilled student: the training loss on unseen rows, comparable across architectures.

Uses the projections learned during distillation, or fits least-squares ones on the held-out states.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from kdnas.distill.config import DistillConfig
from kdnas.distill.distiller import Distiller, check_input_map, mlm_head, teacher_pooling
from kdnas.distill.teacher_cache import (
    CachedTeacher,
    TeacherCache,
    as_block,
    base_encoder,
    ephemeral_teacher,
    teacher_info,
)
from kdnas.errors import DistillError


def _targets(d: Distiller, t_out: dict[str, Tensor], mask: Tensor) -> dict[str, Tensor]:
    """Projection name -> the teacher tensor it maps to ([B, S, D]; [B, 1, D] for the sentence Dense)."""
    out = {}
    for name in d.proj:
        if name.startswith("hidden_"):
            tl = d.map[int(name.split("_")[1]) - 1]
            out[name] = torch.cat([t_out[f"hidden.{t}"] for t in tl], -1)
        elif name == "embedding":
            out[name] = t_out["hidden.0"]
        elif name == "logits":
            out[name] = t_out[f"hidden.{d.teacher.num_layers}"]
        elif name == "sentence":  # per sentence, not per token: [B, 1, Ht]
            out[name] = d.teacher_embedding(t_out[f"hidden.{d.teacher.num_layers}"], mask)[:, None]
    return out


def _inputs(d: Distiller, hs: tuple[Tensor, ...], mask: Tensor) -> dict[str, Tensor]:
    import dataclasses

    from kdnas.models.pooling import pool

    out = {}
    for name in d.proj:
        if name.startswith("hidden_"):
            out[name] = hs[int(name.split("_")[1])]
        elif name == "embedding":
            out[name] = hs[0]
        elif name == "logits":
            out[name] = hs[-1]
        elif name == "sentence":
            assert d.pooling is not None
            out[name] = pool(hs[-1], mask, dataclasses.replace(d.pooling, normalize=False))[:, None]
    return out


@torch.no_grad()
def fit_projections(
    d: Distiller,
    handle: CachedTeacher,
    batch_size: int,
    *,
    ridge: float = 1e-6,
    rows: Tensor | None = None,
    sentence_from_tokens: bool = False,
) -> None:
    """Set every projection of `d` to the least-squares map (with bias) from the student's states to the
    teacher's, over the real tokens of `handle`'s rows: W = (X^T X + ridge * tr/n I)^-1 X^T Y.

    rows: which of the handle's rows to fit on (default all). sentence_from_tokens: fit the sentence Dense on
    token pairs (the student's last hidden state -> the teacher's) instead of one pair per sentence. Pooling is
    a mean (or one token), so the token map carries over to the pooled embeddings up to the scale the cosine
    ignores, and it is well posed on a few batches, where a per-sentence fit would have fewer rows than the
    student's width (`distill.proj_init: lstsq` uses it before training). The student runs in eval mode, on the
    device its parameters are on. The projections of a term registered outside kdnas (`register_loss`) are not
    known here and keep their init.
    """
    xtx: dict[str, Tensor] = {}
    xty: dict[str, Tensor] = {}
    base = base_encoder(d.student)
    dev = next(d.student.parameters()).device
    order = torch.arange(handle.num_rows) if rows is None else rows
    was_training = base.training
    base.eval()
    try:
        for start in range(0, len(order), batch_size):
            sel = order[start : start + batch_size]
            ids, mask = handle.input_ids[sel].to(dev), handle.attention_mask[sel].to(dev)
            t_out = {k: v.to(dev) for k, v in handle.fetch(sel).items()}
            hs = base(
                input_ids=d.student_ids(ids), attention_mask=mask, output_hidden_states=True
            ).hidden_states
            m = mask.bool()
            xs, ys = _inputs(d, hs, mask), _targets(d, t_out, mask)
            if sentence_from_tokens and "sentence" in d.proj:
                xs["sentence"], ys["sentence"] = hs[-1], t_out[f"hidden.{d.teacher.num_layers}"]
            for name in (
                xs.keys() & ys.keys()
            ):  # a registered term's own maps are in neither: they keep their init
                per_sentence = name == "sentence" and not sentence_from_tokens
                rows_m = torch.ones(len(m), 1, dtype=torch.bool, device=dev) if per_sentence else m
                x = xs[name][rows_m].double()  # [T, Hs] (T: real tokens, or sentences for the sentence Dense)
                x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=dev)], 1)  # [T, Hs + 1]
                y = ys[name][rows_m].double()  # [T, D]
                xtx[name] = xtx.get(name, 0) + x.T @ x
                xty[name] = xty.get(name, 0) + x.T @ y
    finally:
        base.train(was_training)
    for name in xtx:
        lin = d.proj[name]
        a = xtx[name]
        a = a + torch.eye(len(a), dtype=a.dtype, device=a.device) * ridge * (a.trace() / len(a))
        w = torch.linalg.solve(a, xty[name])  # [Hs + 1, D]
        assert isinstance(lin, nn.Linear)
        lin.weight.copy_(w[:-1].T.to(lin.weight.dtype))
        lin.bias.copy_(w[-1].to(lin.bias.dtype))


@torch.no_grad()
def heldout_kd_loss(
    teacher: Any,
    student: nn.Module,
    heldout: Any,
    cfg: DistillConfig,
    *,
    projections: Distiller | nn.ModuleDict | None = None,
    teacher_cache: TeacherCache | str | None = None,
    batch_size: int | None = None,
    components: dict[str, float] | None = None,
    input_map: Tensor | None = None,
) -> float:
    """The weighted KD loss of `cfg.losses` on `heldout` (student in eval mode, no dropout), averaged per real
    token. Comparable across students: every term is normalised (docs/distillation.md).

    projections: the distiller (or its `.proj`) trained with the student; None fits least-squares projections
    on `heldout` in closed form (the best linear read-out, so the loss measures what the student's states
    contain rather than how well a projection was trained). components: filled with per-component values.
    input_map: for a student with a trimmed vocabulary, teacher id -> student id (see `Distiller`); the
    teacher cache stays keyed on the held-out block's own ids.
    """
    info = teacher_info(teacher)
    base_encoder(teacher).eval()
    ids, mask = as_block(heldout)
    check_input_map(student, ids, input_map)
    with torch.random.fork_rng(devices=[]):  # the throw-away projection init must not move the caller's RNG
        d = Distiller(
            student, info, cfg, teacher_head=mlm_head(teacher), input_map=input_map,
            pooling=teacher_pooling(teacher),
        )  # fmt: skip
    bs = batch_size or cfg.batch_size
    if teacher_cache is None:
        handle = ephemeral_teacher(teacher, (ids, mask), d.needs(), batch_size=bs)
    else:
        cache = teacher_cache if isinstance(teacher_cache, TeacherCache) else TeacherCache(teacher_cache)
        handle = cache.prepare(teacher, (ids, mask), d.needs(), batch_size=bs)
    was_training = student.training
    student.eval()
    try:
        if projections is not None:
            proj = projections.proj if isinstance(projections, Distiller) else projections
            missing = set(d.proj) - set(proj)
            if missing:
                raise DistillError(
                    f"the projections given lack {', '.join(sorted(missing))} (trained with other losses or "
                    "mapping?); pass projections=None to fit them on the held-out split"
                )
            for name in d.proj:
                d.proj[name].load_state_dict(proj[name].state_dict())
        elif len(d.proj):
            fit_projections(d, handle, bs)
        total, count = 0.0, 0.0
        sums: dict[str, float] = {}
        for start in range(0, len(ids), bs):
            rows = torch.arange(start, min(len(ids), start + bs))
            loss, comps = d(ids[rows], mask[rows], handle.fetch(rows), handle.variances)
            ntok = float(mask[rows].sum())
            total += float(loss) * ntok
            count += ntok
            for k, v in comps.items():
                sums[k] = sums.get(k, 0.0) + float(v) * ntok
    finally:
        student.train(was_training)
    if components is not None:
        components.update({k: v / count for k, v in sums.items()})
    return total / count
