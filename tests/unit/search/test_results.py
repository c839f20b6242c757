"""Pareto front, hypervolume (against brute force), Kendall tau and recommendations per budget."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kdnas.search.objectives import Budget
from kdnas.search.results import (
    TrialRecord,
    hypervolume_2d,
    kendall_tau,
    nondominated_rank,
    pareto_mask,
    pareto_records,
    recommend,
)
from kdnas.space.arch import Arch


def _brute_pareto(pts):
    return np.array([not any(np.all(q <= p) and np.any(q < p) for q in pts) for p in pts])


def _brute_hv(pts, ref, n=400):
    # exact on a grid of all breakpoints: sum of cells dominated by some point
    xs = np.unique(np.concatenate([pts[:, 0], [ref[0]]]))
    ys = np.unique(np.concatenate([pts[:, 1], [ref[1]]]))
    area = 0.0
    for x0, x1 in itertools.pairwise(xs):
        for y0, y1 in itertools.pairwise(ys):
            if x0 >= ref[0] or y0 >= ref[1]:
                continue
            if any(p[0] <= x0 and p[1] <= y0 for p in pts):
                area += (x1 - x0) * (y1 - y0)
    return area


@pytest.mark.parametrize("seed", range(5))
def test_pareto_and_hypervolume_vs_brute_force(seed):
    rng = np.random.default_rng(seed)
    pts = rng.random((25, 2))
    pts[3] = pts[7]  # duplicates are kept on the front together
    assert (pareto_mask(pts) == _brute_pareto(pts)).all()
    ref = (0.9, 0.95)  # some points lie beyond the reference and add nothing
    assert hypervolume_2d(pts, ref) == pytest.approx(
        _brute_hv(pts[(pts[:, 0] < 0.9) & (pts[:, 1] < 0.95)], ref)
    )
    ranks = nondominated_rank(pts)
    assert (ranks == 0).sum() == pareto_mask(pts).sum()
    assert ranks.min() == 0 and (ranks >= 0).all()


def test_hypervolume_simple_cases():
    assert hypervolume_2d(np.array([[0.5, 0.5]]), (1.0, 1.0)) == pytest.approx(0.25)
    assert hypervolume_2d(np.array([[0.0, 0.5], [0.5, 0.0]]), (1.0, 1.0)) == pytest.approx(0.75)
    assert hypervolume_2d(np.zeros((0, 2)), (1.0, 1.0)) == 0.0


def _rec(n, L, short, lat, long=None, state="complete"):
    return TrialRecord(
        n, state, Arch(L, 64, 2, 128), kd_loss_short=short, kd_loss_long=long, latency_ms=lat, params_m=1.0
    )


def test_recommendation_ranks_by_short_loss_and_long_reorders_the_top():
    recs = [
        _rec(0, 1, 0.60, 1.0),
        _rec(1, 2, 0.40, 2.0),
        _rec(2, 3, 0.35, 3.0, long=0.33),
        _rec(3, 4, 0.30, 3.5),  # best short loss, no long result: wins (a long loss is not comparable)
        _rec(4, 5, 0.10, 9.0, state="failed"),
        _rec(5, 6, 0.70, 0.8, long=0.20),  # promoted, low long loss, but poor on the shared short fidelity
    ]
    out = recommend(recs, [Budget(4.0, "4 ms"), Budget(2.5, "2.5 ms"), Budget(0.5, "0.5 ms")])
    assert out[0].arch.num_layers == 4 and out[0].fidelity == "short" and out[0].kd_loss == 0.30
    assert out[1].arch.num_layers == 2 and out[1].fidelity == "short"
    assert out[2].arch is None and "fastest evaluated arch takes 0.8 ms" in out[2].reason
    # when the best few by short loss all have long results, the long losses order them
    both = [
        _rec(0, 1, 0.40, 1.0, long=0.30),
        _rec(1, 2, 0.38, 1.0, long=0.36),
        _rec(2, 3, 0.39, 1.0, long=0.35),
    ]
    assert recommend(both, [Budget(2.0, "2 ms")])[0].arch.num_layers == 1


def test_pareto_records_and_kendall():
    recs = [
        _rec(0, 1, 0.6, 1.0, 0.55),
        _rec(1, 2, 0.4, 2.0, 0.35),
        _rec(2, 3, 0.5, 3.0, 0.45),
        _rec(3, 4, 0.3, 4.0, 0.31),
    ]
    assert [r.number for r in pareto_records(recs)] == [0, 1, 3]
    tau, n = kendall_tau(recs)
    assert n == 4 and tau == pytest.approx(1.0)
    assert kendall_tau(recs[:2]) == (None, 2)


def _vrec(n, vocab, short, lat, params, long=None):
    return TrialRecord(
        n, "complete", Arch(2, 64, 2, 128, vocab_size=vocab), kd_loss_short=short, kd_loss_long=long,
        latency_ms=lat, params_m=params,
    )  # fmt: skip


def test_equal_kd_loss_goes_to_the_smaller_model():
    full = _vrec(0, None, 1.5, 1.00, 20.0)
    trimmed = _vrec(1, 8000, 1.5 * (1 + 1e-8), 1.01, 6.0)  # same transformer: float noise apart, a bit slower
    worse = _vrec(2, 4000, 1.53, 0.9, 4.0)
    b = [Budget(2.0, "2 ms")]
    assert recommend([full, trimmed, worse], b)[0].arch.vocab_size == 8000
    assert recommend([full, _vrec(1, 8000, 1.51, 1.01, 6.0), worse], b)[0].arch.vocab_size is None
    tol = recommend([full, _vrec(1, 8000, 1.51, 1.01, 6.0), worse], b, tolerance=0.01)
    assert tol[0].arch.vocab_size == 8000  # within 1%: the fewest params; 1.53 is 2% off and stays out
    assert recommend([full, trimmed, worse], b, tolerance=0.05)[0].arch.vocab_size == 4000
    # the long-proxy reorder of the top few ties the same way
    longs = [_vrec(0, None, 1.5, 1.0, 20.0, long=1.2), _vrec(1, 8000, 1.50001, 1.0, 6.0, long=1.2)]
    assert recommend(longs, b)[0].arch.vocab_size == 8000


def test_pareto_front_over_three_objectives():
    full = _vrec(0, None, 1.5, 1.0, 20.0)
    trimmed = _vrec(1, 8000, 1.5, 1.0, 6.0)
    bigger_slower = _vrec(2, None, 1.6, 1.2, 21.0)
    small_slow = _vrec(3, 4000, 1.7, 1.3, 3.0)
    recs = [full, trimmed, bigger_slower, small_slow]
    assert {r.number for r in pareto_records(recs)} == {0, 1}  # 2-D: (kd, latency) ties keep both twins
    three = pareto_records(recs, ["kd_loss", "latency_ms", "params_m"])
    assert {r.number for r in three} == {1, 3}  # params: the trimmed twin dominates the full one


def test_equal_latency_budget_recommends_only_near_the_baselines_latency():
    from kdnas.errors import SearchError
    from kdnas.search.objectives import equal_latency_budgets

    (b,) = equal_latency_budgets({"tinybert-4L-312H": 2.0}, 30.0)
    assert b.label == "=tinybert-4L-312H" and b.speedup == 2.0
    assert b.min_latency_ms == pytest.approx(14.25) and b.latency_ms == pytest.approx(15.75)
    recs = [_rec(0, 1, 0.30, 5.0), _rec(1, 3, 0.40, 14.5), _rec(2, 4, 0.45, 15.5), _rec(3, 6, 0.2, 16.0)]
    # the 1-layer arch has the best loss but sits far below the baseline's latency: not an equal-latency pick
    (out,) = recommend(recs, [b])
    assert out.arch.num_layers == 3
    outside = [_rec(0, 1, 0.30, 5.0), _rec(1, 2, 0.32, 9.0), _rec(2, 6, 0.2, 16.0)]
    (none,) = recommend(outside, [b], empty_band=False)
    assert none.arch is None  # the reason names the band and its nearest archs, not a "fastest" that fits it
    assert none.reason is not None and "band (14.2-15.8 ms)" in none.reason
    assert "under it L2-" in none.reason and "9 ms" in none.reason and "over it L6-" in none.reason
    # by default an empty band takes the best arch under it (a plain budget at its latency), saying so
    (under,) = recommend(outside, [b])
    assert under.arch.num_layers == 1 and under.budget is b and under.latency_ms == 5.0
    assert (
        under.reason is not None
        and under.reason.startswith(none.reason)
        and "best arch under it" in under.reason
    )
    # just under the floor (14.25 ms) with a lower loss than everything inside: it dominates the band's archs
    (dom,) = recommend([*recs, _rec(4, 5, 0.35, 13.9)], [b])
    assert dom.arch.num_layers == 5 and "dominates" in (dom.reason or "")
    # just under but worse, or better but further under than the band's width (1.5 ms): the band's own pick
    (same,) = recommend([*recs, _rec(4, 5, 0.41, 13.9), _rec(5, 2, 0.31, 12.5)], [b])
    assert same.arch.num_layers == 3 and same.reason is None
    (alone,) = recommend([_rec(4, 5, 0.35, 13.9)], [b], empty_band=False)
    assert alone.arch is None  # nothing inside the band: no dominance to claim
    assert (
        recommend([_rec(4, 5, 0.35, 13.9), _rec(5, 6, 0.1, 16.0)], [b])[0].arch.num_layers == 5
    )  # not over it
    with pytest.raises(SearchError, match="speed-up"):
        equal_latency_budgets({"x": 0.0}, 30.0)
