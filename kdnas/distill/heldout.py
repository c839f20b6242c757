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
from kdnas.distill.terms import StepView
from kdnas.errors import DistillError


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
    teacher's, over the real tokens of `handle`'s rows: W = (X^T X + ridge * tr/n I)^-1 X^T Y. Each active loss
    term says which rows its projections map (`LossTerm.fit_pairs`); one whose term returns none keeps its init.

    rows: which of the handle's rows to fit on (default all). sentence_from_tokens: fit the sentence Dense on
    token pairs (the student's last hidden state -> the teacher's) instead of one pair per sentence. Pooling is
    a mean (or one token), so the token map carries over to the pooled embeddings up to the scale the cosine
    ignores, and it is well posed on a few batches, where a per-sentence fit would have fewer rows than the
    student's width (`distill.proj_init: lstsq` uses it before training). The student runs in eval mode, on the
    device its parameters are on.
    """
    xtx: dict[str, Tensor] = {}
    xty: dict[str, Tensor] = {}
    base = base_encoder(d.student)
    dev = next(d.student.parameters()).device
    order = torch.arange(handle.num_rows) if rows is None else rows
    terms = d.terms(with_flash=d.flash)  # the terms whose projections `d` built
    layers = list(range(1, d.num_layers + 1))
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
            view = StepView(
                distiller=d, mask=mask, hidden=hs, attentions=None, qkv={}, teacher_out=t_out,
                variances=handle.variances, layers=layers,
            )  # fmt: skip
            for term in terms:
                for name, (x, y) in term.fit_pairs(view, per_token=sentence_from_tokens).items():
                    if name not in d.proj:
                        raise DistillError(
                            f"loss term {term.name!r}: fit_pairs names {name!r}, which is not one of its "
                            f"projections ({', '.join(d.proj) or 'none'})"
                        )
                    x = x.double()  # [N, Hs] (N: real tokens, or sentences)
                    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=dev)], 1)  # [N, Hs + 1]
                    y = y.double()  # [N, D]
                    xtx[name] = xtx.get(name, 0) + x.T @ x
                    xty[name] = xty.get(name, 0) + x.T @ y
    finally:
        base.train(was_training)
    for name in xtx:
        lin = d.proj[name]
        if not isinstance(lin, nn.Linear):
            raise DistillError(
                f"projection {name!r} is a {type(lin).__name__}: a least-squares start needs an nn.Linear; "
                "return no fit_pairs for it (or set distill.proj_init: random)"
            )
        a = xtx[name]
        a = a + torch.eye(len(a), dtype=a.dtype, device=a.device) * ridge * (a.trace() / len(a))
        w = torch.linalg.solve(a, xty[name])  # [Hs + 1, D]
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
