"""Held-out KD loss of a distilled student: the training loss on unseen rows, comparable across architectures.

Uses the projections learned during distillation, or fits least-squares ones on the held-out states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
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


class LeastSquares:
    """The normal equations of every projection's least-squares map, summed over batches (`add`), then solved
    into the projections (`solve`): W = (X^T X + ridge * tr/n I)^-1 X^T Y, with a bias."""

    def __init__(self) -> None:
        self.xtx: dict[str, Tensor] = {}
        self.xty: dict[str, Tensor] = {}

    def add(self, view: StepView, *, per_token: bool = False) -> None:
        """Add one batch's (student input, teacher target) rows of every active term (`LossTerm.fit_pairs`) of
        `view.distiller`."""
        d = view.distiller
        for term in d.terms(with_flash=d.flash):  # the terms whose projections `d` built
            for name, (x, y) in term.fit_pairs(view, per_token=per_token).items():
                if name not in d.proj:
                    raise DistillError(
                        f"loss term {term.name!r}: fit_pairs names {name!r}, which is not one of its "
                        f"projections ({', '.join(d.proj) or 'none'})"
                    )
                x = x.double()  # [N, Hs] (N: real tokens, or sentences)
                x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], 1)  # [N, Hs + 1]
                y = y.double()  # [N, D]
                self.xtx[name] = self.xtx.get(name, 0) + x.T @ x
                self.xty[name] = self.xty.get(name, 0) + x.T @ y

    @torch.no_grad()
    def solve(self, d: Distiller, *, ridge: float = 1e-6) -> None:
        for name in self.xtx:
            lin = d.proj[name]
            if not isinstance(lin, nn.Linear):
                raise DistillError(
                    f"projection {name!r} is a {type(lin).__name__}: a least-squares start needs an nn.Linear; "
                    "return no fit_pairs for it (or set distill.proj_init: random)"
                )
            a = self.xtx[name]
            a = a + torch.eye(len(a), dtype=a.dtype, device=a.device) * ridge * (a.trace() / len(a))
            w = torch.linalg.solve(a, self.xty[name])  # [Hs + 1, D]
            lin.weight.copy_(w[:-1].T.to(lin.weight.dtype))
            lin.bias.copy_(w[-1].to(lin.bias.dtype))


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
    teacher's, over the real tokens of `handle`'s rows (`LeastSquares`). Each active loss term says which rows
    its projections map (`LossTerm.fit_pairs`); one whose term returns none keeps its init.

    rows: which of the handle's rows to fit on (default all). sentence_from_tokens: fit the sentence Dense on
    token pairs (the student's last hidden state -> the teacher's) instead of one pair per sentence. Pooling is
    a mean (or one token), so the token map carries over to the pooled embeddings up to the scale the cosine
    ignores, and it is well posed on a few batches, where a per-sentence fit would have fewer rows than the
    student's width (`distill.proj_init: lstsq` uses it before training). The student runs in eval mode, on the
    device its parameters are on.
    """
    fit = LeastSquares()
    base = base_encoder(d.student)
    dev = next(d.student.parameters()).device
    order = torch.arange(handle.num_rows) if rows is None else rows
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
            fit.add(view, per_token=sentence_from_tokens)
    finally:
        base.train(was_training)
    fit.solve(d, ridge=ridge)


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
    comps: dict[str, dict[str, float]] = {}
    loss = heldout_kd_losses(
        teacher, student, heldout, cfg, readouts={"loss": projections}, teacher_cache=teacher_cache,
        batch_size=batch_size, components=comps, input_map=input_map,
    )["loss"]  # fmt: skip
    if components is not None:
        components.update(comps["loss"])
    return loss


@torch.no_grad()
def heldout_kd_losses(
    teacher: Any,
    student: nn.Module,
    heldout: Any,
    cfg: DistillConfig,
    *,
    readouts: Mapping[str, Distiller | nn.ModuleDict | None],
    teacher_cache: TeacherCache | str | None = None,
    batch_size: int | None = None,
    components: dict[str, dict[str, float]] | None = None,
    input_map: Tensor | None = None,
) -> dict[str, float]:
    """`heldout_kd_loss` through several read-outs of one student at once, by name: each is trained
    projections or None (least-squares ones fitted on `heldout`). One student pass over `heldout` scores every
    trained read-out and sums the normal equations of every fitted one; the fitted ones are scored in a second
    pass (the search's `geomean` read-out: 2 passes, against 3 one read-out at a time). The values are those of
    `heldout_kd_loss` called once per read-out."""
    if not readouts:
        raise DistillError("heldout_kd_losses: no read-out to score (pass e.g. readouts={'fitted': None})")
    info = teacher_info(teacher)
    base_encoder(teacher).eval()
    ids, mask = as_block(heldout)
    check_input_map(student, ids, input_map)
    ds: dict[str, Distiller] = {}
    for name, projections in readouts.items():
        # the throw-away projection init must not move the caller's RNG
        with torch.random.fork_rng(devices=[]):
            d = Distiller(
                student, info, cfg, teacher_head=mlm_head(teacher), input_map=input_map,
                pooling=teacher_pooling(teacher),
            )  # fmt: skip
        if projections is not None:
            proj = projections.proj if isinstance(projections, Distiller) else projections
            missing = set(d.proj) - set(proj)
            if missing:
                raise DistillError(
                    f"the projections given lack {', '.join(sorted(missing))} (trained with other losses or "
                    "mapping?); pass projections=None to fit them on the held-out split"
                )
            for p in d.proj:
                d.proj[p].load_state_dict(proj[p].state_dict())
        ds[name] = d
    first = next(iter(ds.values()))
    bs = batch_size or cfg.batch_size
    if teacher_cache is None:
        handle = ephemeral_teacher(teacher, (ids, mask), first.needs(), batch_size=bs)
    else:
        cache = teacher_cache if isinstance(teacher_cache, TeacherCache) else TeacherCache(teacher_cache)
        handle = cache.prepare(teacher, (ids, mask), first.needs(), batch_size=bs)
    fitted = {n: LeastSquares() for n, p in readouts.items() if p is None and len(ds[n].proj)}
    totals = {n: [0.0, 0.0] for n in ds}
    sums: dict[str, dict[str, float]] = {n: {} for n in ds}
    dev = next(student.parameters()).device
    was_training = student.training
    student.eval()

    def one_pass(score: list[str], fit: dict[str, LeastSquares]) -> None:
        for start in range(0, len(ids), bs):
            rows = torch.arange(start, min(len(ids), start + bs))
            b_ids, b_mask = ids[rows].to(dev), mask[rows].to(dev)
            t_out = {k: v.to(dev) for k, v in handle.fetch(rows).items()}
            view = first.student_view(b_ids, b_mask, t_out, handle.variances)  # one student forward for all
            ntok = float(b_mask.sum())
            for n in score:
                loss, comps = ds[n].loss(dataclasses.replace(view, distiller=ds[n], memo={}))
                totals[n][0] += float(loss) * ntok
                totals[n][1] += ntok
                for k, v in comps.items():
                    sums[n][k] = sums[n].get(k, 0.0) + float(v) * ntok
            for n, lsq in fit.items():
                lsq.add(dataclasses.replace(view, distiller=ds[n], memo={}))

    try:
        one_pass([n for n in ds if n not in fitted], fitted)
        for n, lsq in fitted.items():
            lsq.solve(ds[n])
        if fitted:
            one_pass(list(fitted), {})
    finally:
        student.train(was_training)
    if components is not None:
        components.update({n: {k: v / totals[n][1] for k, v in sums[n].items()} for n in ds})
    return {n: totals[n][0] / totals[n][1] for n in ds}
