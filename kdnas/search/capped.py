"""The space a search samples from: the run's caps (params, the loosest budget's latency) applied, unreachable
budgets refused before anything runs, and `search.anchors` (the deepest teacher-width arch fitting each budget)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kdnas.errors import KdnasError, SearchError
from kdnas.search.config import SearchConfig
from kdnas.search.objectives import Budget
from kdnas.space.arch import Arch
from kdnas.space.space import SearchSpace


def anchor_archs(
    space: SearchSpace, budgets: Sequence[Budget | float], margin: float = 0.0, narrow: bool = False
) -> list[Arch]:
    """`search.anchors`: per budget (loosest first), the deepest arch at the teacher's hidden size and heads
    with the smallest vocabulary choice whose predicted latency fits the budget, the widest FFN at that depth;
    none without a teacher-family space or a latency predictor.

    `margin` (`search.anchor_margin`) gives a plain budget a second anchor that fraction under the budget by the
    predictor, so a prediction that much too low still lands an anchor inside it; the deepest one fitting the
    budget itself stays beside it, for a prediction that is too high (one run's 3x anchor under the margin was
    timed at 4.0x beside the teacher, using two thirds of its budget). The side-by-side placement then keeps
    whichever really fits. Where nothing at the teacher's width fits under the margin, the one anchor is the
    deepest fitting the budget itself.

    An equal-latency budget with a `reference` (the baseline's arch) is anchored in predicted units: the band
    is the reference's predicted latency scaled by the budget's own band (e.g. 0.95x-1.05x), and the anchor is
    the deepest (then widest-FFN) teacher-width arch predicted inside it, else the deepest one predicted under
    its top. The predictor and the side-by-side timing the band comes from disagree by 20% and more on a busy
    machine; in one unit, the anchor lands in the band it is meant for.

    `narrow` (`search.narrow_anchors`): where the only teacher-width arch fitting a plain budget has one layer,
    that budget also gets the deepest arch one width down that fits it deeper (the widest hidden size under the
    teacher's where some arch of two or more layers fits under the margin, at the teacher's head size where the
    space has it, then the widest FFN): at the fast end a second layer is worth more than width.
    """
    from kdnas.models.student import arch_of

    if space.family != "teacher" or space.teacher_config is None or space.latency_fn is None:
        return []
    predict = space.latency_fn
    t = arch_of(space.teacher_config)
    full = int(space.teacher_config.vocab_size)
    sizes = [space.vocab_size_of(c) for c in space.vocab_choices]
    smallest = min(sizes, key=lambda v: full if v is None else v)
    archs = _every_or_sampled(space)
    wide = [
        a
        for a in archs
        if a.hidden_size == t.hidden_size and a.num_heads == t.num_heads and a.vocab_size == smallest
    ]
    lat = {a.arch_id: float(predict(a)) for a in wide}
    bands = [_band(b, predict) for b in budgets]
    out: list[Arch] = []
    for lo, hi in sorted(bands, key=lambda b: -b[1]):
        fit = [a for a in wide if lat[a.arch_id] <= hi]
        inside = [a for a in fit if lat[a.arch_id] >= lo]
        if lo == 0.0 and margin > 0:  # a plain budget: aim under it by the margin where anything fits there
            inside = [a for a in fit if lat[a.arch_id] <= hi * (1 - margin)]
        pool = inside or fit
        if not pool:
            continue
        deepest = [max(pool, key=lambda a: (a.num_layers, a.ffn_size))]
        if lo == 0.0 and margin > 0:  # and the one at the budget's edge: the predictor errs both ways
            deepest.append(max(fit, key=lambda a: (a.num_layers, a.ffn_size)))
        if narrow and lo == 0.0 and max(a.num_layers for a in pool) == 1:
            deeper = _narrow_anchor(archs, predict, t, smallest, hi * (1 - margin))
            if deeper is not None:
                deepest.append(deeper)
        out.extend(a for a in dict.fromkeys(deepest) if a not in out)
    return out


def _narrow_anchor(
    archs: Sequence[Arch], predict: Callable[[Arch], float], teacher: Arch, vocab: int | None, ms: float
) -> Arch | None:
    """The deepest arch of two or more layers predicted at or under `ms` at the widest hidden size under the
    teacher's that has one: the teacher's head size where that width has it, the widest FFN at that depth."""
    head = teacher.hidden_size // teacher.num_heads
    fit = [
        a
        for a in archs
        if a.hidden_size < teacher.hidden_size
        and a.vocab_size == vocab
        and a.num_layers >= 2
        and float(predict(a)) <= ms
    ]
    if not fit:
        return None
    width = max(a.hidden_size for a in fit)
    at = [a for a in fit if a.hidden_size == width]
    same_head = [a for a in at if a.hidden_size == a.num_heads * head]
    return max(same_head or at, key=lambda a: (a.num_layers, a.ffn_size))


def _band(budget: Budget | float, predict: Callable[[Arch], float]) -> tuple[float, float]:
    """(low, high) predicted latency an anchor for `budget` should have (low 0 for a plain budget)."""
    if not isinstance(budget, Budget):
        return 0.0, float(budget)
    if budget.reference is None or budget.min_latency_ms is None:
        return budget.min_latency_ms or 0.0, budget.latency_ms
    centre = (budget.latency_ms + budget.min_latency_ms) / 2
    try:
        ref = float(predict(Arch.parse(budget.reference)))
    except (KdnasError, ValueError, KeyError):  # a reference the predictor cannot price: the band as timed
        return budget.min_latency_ms, budget.latency_ms
    return ref * budget.min_latency_ms / centre, ref * budget.latency_ms / centre


def _every_or_sampled(space: SearchSpace, n: int = 2000) -> list[Arch]:
    """Every arch of an enumerable space, else `n` sampled ones (seeded)."""
    return space.enumerate() if space.enumerable() else space.sample_many(n, 0)


def _fastest(space: SearchSpace, predict: Callable[[Arch], float]) -> tuple[Arch, float]:
    archs = _every_or_sampled(space)
    if not archs:
        space.check_nonempty()
    lat = [float(predict(a)) for a in archs]
    i = int(np.argmin(lat))
    return archs[i], lat[i]


def prepare_space(
    space: SearchSpace,
    cfg: SearchConfig,
    budgets: Sequence[Budget],
    latency_predictor: Callable[[Arch], float] | None,
) -> tuple[SearchSpace, float | None]:
    """The space with the run's caps applied, and the latency constraint for the samplers.

    Raises SearchError before anything runs for an unreachable budget (naming the fastest arch) or a space
    that the constraints leave empty (naming the constraint).
    """
    if cfg.max_params_m is not None:
        cur = space.constraints.max_params_m
        space = space.with_constraints(max_params_m=min(cur, cfg.max_params_m) if cur else cfg.max_params_m)
    predict = latency_predictor or space.latency_fn
    if predict is not None:
        space = space.replace(latency_fn=predict)
    elif space.constraints.max_latency_ms is not None:
        raise SearchError(
            f"the space's max_latency_ms ({space.constraints.max_latency_ms} ms) needs a latency predictor; "
            "none is available for this target, so drop the constraint or use latency budgets"
        )
    budgets = sorted(budgets, key=lambda b: -b.latency_ms)
    if budgets and predict is not None:
        arch, fastest = _fastest(space.with_constraints(max_latency_ms=None), predict)
        for b in budgets:
            if fastest > b.latency_ms * (1 + cfg.latency_margin):
                raise SearchError(
                    f"latency budget {b.label} ({b.latency_ms:.3g} ms) cannot be met: the fastest arch in the "
                    f"space, {arch.arch_id}, is predicted at {fastest:.3g} ms. Loosen the budget or add smaller "
                    "archs to the space (fewer layers, narrower widths)"
                )
        cap = budgets[0].latency_ms * (1 + cfg.latency_margin)
        cur_lat = space.constraints.max_latency_ms
        space = space.with_constraints(max_latency_ms=min(cur_lat, cap) if cur_lat else cap)
    space.check_nonempty()
    return space, (budgets[0].latency_ms if budgets else None)
