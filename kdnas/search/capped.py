"""The space a search samples from: the run's caps (params, the loosest budget's latency) applied, unreachable
budgets refused before anything runs, and `search.anchors` (the deepest teacher-width arch fitting each budget)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kdnas.errors import SearchError
from kdnas.search.config import SearchConfig
from kdnas.search.objectives import Budget
from kdnas.space.arch import Arch
from kdnas.space.space import SearchSpace


def anchor_archs(space: SearchSpace, budgets_ms: Sequence[float]) -> list[Arch]:
    """`search.anchors`: per budget (loosest first), the deepest arch at the teacher's hidden size and heads
    with the smallest vocabulary choice whose predicted latency fits the budget, the widest FFN at that depth;
    none without a teacher-family space or a latency predictor."""
    from kdnas.models.student import arch_of

    if space.family != "teacher" or space.teacher_config is None or space.latency_fn is None:
        return []
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
    lat = {a.arch_id: float(space.latency_fn(a)) for a in wide}
    out: list[Arch] = []
    for budget in sorted(budgets_ms, reverse=True):
        fit = [a for a in wide if lat[a.arch_id] <= budget]
        if fit:
            best = max(fit, key=lambda a: (a.num_layers, a.ffn_size))
            if best not in out:
                out.append(best)
    return out


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
