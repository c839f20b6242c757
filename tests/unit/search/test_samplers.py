"""Every strategy runs on the synthetic evaluator; the KD-NAS controller's reward predictor learns."""

from __future__ import annotations

import numpy as np
import pytest

from kdnas.errors import SearchError
from kdnas.search.config import STRATEGIES, SearchConfig
from kdnas.search.controller import KDNASSampler, RewardPredictor
from kdnas.search.samplers import make_sampler
from kdnas.search.study import run_search
from kdnas.space.spaces import default_space


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_runs(strategy, minilm, fake):
    cfg = SearchConfig(
        strategy=strategy, n_trials=5, episode_size=2, n_startup_trials=2, promote_fraction=0.0
    )
    res = run_search(
        default_space(minilm), fake, cfg, tokens=100, teacher_latency_ms=fake.teacher_latency_ms, seed=1
    )
    assert res.n_evaluated == 5
    done = [r for r in res.records if r.state == "complete"]
    assert len({r.arch.arch_id for r in done}) == 5  # five different archs were distilled
    assert len([c for c in fake.calls if c[1] == "short"]) == 5
    assert res.pareto and res.hypervolume > 0


def test_unknown_strategy(minilm):
    with pytest.raises(SearchError, match=r"unknown search strategy 'evolution'.*kdnas, bo"):
        make_sampler("evolution", space=default_space(minilm), cfg=SearchConfig())


def _synthetic_reward(space, archs):
    # smooth in the encoding: prefers deep, narrow students
    x = space.encode_many(archs)
    return 1.0 + x[:, 0] - 0.8 * x[:, 1] + 0.1 * x[:, 3]


def test_reward_predictor_top_k_beats_random(minilm):
    space = default_space(minilm)
    train = space.sample_many(30, 0)
    pool = space.sample_many(120, 1, exclude={a.arch_id for a in train})
    pred = RewardPredictor(space.encoding_dim, seed=0).fit(
        space.encode_many(train), _synthetic_reward(space, train)
    )
    true = _synthetic_reward(space, pool)
    top = np.argsort(-pred.predict(space.encode_many(pool)))[:10]
    assert true[top].mean() > np.quantile(true, 0.9) - 0.05  # near the best decile
    assert true[top].mean() > true.mean() + 0.3


def test_reward_predictor_tells_poor_archs_apart_when_rewards_span_orders_of_magnitude(minilm):
    # KD-NAS rewards are exp(-kd) x latency factor: proxy losses 0.5-8 span 3 orders of magnitude, and the
    # predictor fits their log, so the poor half of the pool (the fast end) is still ranked by quality
    from scipy.stats import spearmanr

    space = default_space(minilm)
    train = space.sample_many(40, 0)
    pool = space.sample_many(120, 1, exclude={a.arch_id for a in train})

    def reward(archs):
        kd = 8.0 - 7.5 * (_synthetic_reward(space, archs) - 0.2) / 1.9  # in about [0.5, 8]
        return np.exp(-kd)

    y = reward(train)
    assert y.max() / y.min() > 100
    pred = RewardPredictor(space.encoding_dim, seed=0).fit(space.encode_many(train), y)
    got, true = pred.predict(space.encode_many(pool)), reward(pool)
    assert (got > 0).all()  # rewards on the original scale
    poor = true < np.median(true)
    assert spearmanr(got[poor], true[poor]).statistic > 0.6
    # non-positive rewards (another reward attr) are fitted as they are
    lin = RewardPredictor(space.encoding_dim, seed=0).fit(space.encode_many(train), np.log(y))
    assert spearmanr(lin.predict(space.encode_many(pool)), true).statistic > 0.6


def test_kdnas_controller_plans_top_k_and_decays_epsilon(minilm):
    import optuna

    space = default_space(minilm)
    sampler = KDNASSampler(space=space, episode_size=4, pool_factor=8, epsilon=0.5, epsilon_decay=0.5, seed=0)
    study = optuna.create_study(sampler=sampler)
    for _ in range(16):  # four episodes, rewards told as the search does
        t = study.ask()
        arch = space.suggest(t)
        t.set_user_attr("arch_id", arch.arch_id)
        t.set_user_attr("arch", arch.to_dict())
        t.set_user_attr("reward", float(_synthetic_reward(space, [arch])[0]))
        study.tell(t, 0.0)
    eps = sampler.episodes
    assert [e.index for e in eps] == [0, 1, 2, 3]
    assert len(eps[0].random) == 4 and not eps[0].top  # nothing to learn from yet
    assert all(len(e.top) + len(e.random) == 4 for e in eps)
    assert eps[1].epsilon == pytest.approx(0.25) and eps[3].epsilon == pytest.approx(0.0625)
    assert sum(len(e.top) for e in eps[1:]) >= 9  # mostly exploitation once trained
    ids = [t.user_attrs["arch_id"] for t in study.trials]
    assert len(set(ids)) == 16  # never proposes an arch twice
    # each trial says how it was picked, as the episodes planned it (top by predicted reward, then at random)
    why = [t.user_attrs["controller"] for t in study.trials]
    assert [w["episode"] for w in why] == [e.index for e in eps for _ in range(4)]
    assert [w["pick"] for w in why] == [
        p for e in eps for p in ["predicted"] * len(e.top) + ["random"] * len(e.random)
    ]
    assert [w["predicted_reward"] for w in why if w["pick"] == "predicted"] == [
        r for e in eps for r in e.predicted
    ]
    assert all(w["band_ms"] is None for w in why)  # no budgets, no bands
    first = _synthetic_reward(space, [space.arch(t.params) for t in study.trials[:4]]).mean()
    last = _synthetic_reward(space, [space.arch(t.params) for t in study.trials[-4:]]).mean()
    assert last > first


def test_kdnas_controller_first_episode_after_the_anchors_is_random(minilm):
    # anchors (all at the teacher's width) are observations but not an episode: a predictor fitted on them alone
    # has seen no width vary, so the controller explores at random before it exploits
    import optuna

    space = default_space(minilm)
    sampler = KDNASSampler(space=space, episode_size=4, pool_factor=8, epsilon=0.5, epsilon_decay=0.5, seed=0)
    study = optuna.create_study(sampler=sampler)
    wide = [a for a in space.sample_many(400, 3) if a.hidden_size == minilm.hidden_size][:6]
    assert len(wide) == 6
    for a in wide:
        study.enqueue_trial(space.params_of(a), user_attrs={"anchor": True})
    # 6 anchors and 10 trials, in rounds of four asked before they are told, as the search does
    for _ in range(4):
        trials = [study.ask() for _ in range(4)]
        for t in trials:
            arch = space.suggest(t)
            t.set_user_attr("arch_id", arch.arch_id)
            t.set_user_attr("arch", arch.to_dict())
            t.set_user_attr("reward", float(_synthetic_reward(space, [arch])[0]))
        for t in trials:
            study.tell(t, 0.0)
    eps = sampler.episodes
    assert [t.user_attrs.get("anchor", False) for t in study.trials[:6]] == [True] * 6
    assert [e.index for e in eps] == [0, 1, 2]
    assert eps[0].n_observed == 4 and eps[0].random and not eps[0].top  # anchors seen, still all random
    # planned while its first two trials ran: the index moves on, and it exploits from anchors and those two
    assert eps[1].n_observed == 8 and eps[1].top


def test_kdnas_controller_spreads_episodes_over_budget_bands(minilm, fake):
    import optuna

    from kdnas.search.controller import latency_bands

    assert latency_bands([3.0, 9.0, 3.0], 0.1) == [(0.0, pytest.approx(3.3)), (pytest.approx(3.3), 9.9)]
    t_ms = fake.teacher_latency_ms
    budgets = [t_ms / 7, t_ms / 3]
    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    space = space.with_constraints(max_latency_ms=budgets[1] * 1.1)

    def picks(budgets_ms):
        sampler = KDNASSampler(space=space, episode_size=4, epsilon=0.5, seed=0, budgets_ms=budgets_ms)
        study = optuna.create_study(sampler=sampler)
        lat = []
        for _ in range(12):
            t = study.ask()
            arch = space.suggest(t)
            lat.append(fake.predict_latency_ms(arch))
            t.set_user_attr("arch_id", arch.arch_id)
            t.set_user_attr("arch", arch.to_dict())
            # the KD-NAS reward favours fast archs: unbanded, the controller crowds the tightest budget
            t.set_user_attr("reward", 1.0 / lat[-1])
            study.tell(t, 0.0)
        # what each slot was planned for
        bands = [t.user_attrs["controller"]["band_ms"] for t in study.trials]
        assert all(b is None if not budgets_ms else b[0] < x <= b[1] for b, x in zip(bands, lat, strict=True))
        return lat

    banded = picks(budgets)
    loose = [x for x in banded if x > budgets[0] * 1.1]
    assert len(loose) >= 5  # about half of every episode explores the loose budget's band
    assert len([x for x in banded if x <= budgets[0] * 1.1]) >= 5
    assert len([x for x in picks(()) if x > budgets[0] * 1.1]) < len(loose)


def test_budgets_within_the_margin_share_a_band() -> None:
    """The family headline's budgets (ms, 2026-12-07): 3x beside BERT-mini's, TinyBERT's beside the truncated
    teacher's. Six bands, two of them thinner than the margin, become four."""
    from kdnas.search.controller import latency_bands

    bands = latency_bands([2.58, 6.03, 6.63, 8.82, 9.68, 21.5], 0.1)
    assert [round(hi, 3) for _, hi in bands] == [2.838, 7.293, 10.648, 23.65]
    assert [round(lo, 3) for lo, _ in bands] == [0.0, 2.838, 7.293, 10.648]
    assert len(latency_bands([2.58, 6.03, 6.64, 21.5], 0.1)) == 4  # 10.1% apart: bands of their own


def test_every_band_gets_its_turn_when_bands_outnumber_slots(minilm, fake):
    """Six well-spaced budgets, four slots per episode: 12 trials give every band two slots. Rotating by the
    episode index alone gave the tightest band one slot in three episodes and the middle ones three."""
    import optuna

    t_ms = fake.teacher_latency_ms
    budgets = [t_ms / s for s in (12.0, 8.0, 5.0, 3.2, 2.0, 1.25)]
    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    sampler = KDNASSampler(space=space, episode_size=4, epsilon=0.5, seed=0, budgets_ms=budgets)
    assert len(sampler.bands) == 6
    study = optuna.create_study(sampler=sampler)
    counts = [0] * len(sampler.bands)
    for _ in range(12):
        t = study.ask()
        arch = space.suggest(t)
        lat = fake.predict_latency_ms(arch)
        counts[next(i for i, (lo, hi) in enumerate(sampler.bands) if lo < lat <= hi or i == 5)] += 1
        t.set_user_attr("arch_id", arch.arch_id)
        t.set_user_attr("arch", arch.to_dict())
        t.set_user_attr("reward", 1.0 / lat)
        study.tell(t, 0.0)
    assert counts == [2, 2, 2, 2, 2, 2]
    # two budgets (the default run): the rotation is the one before this change, the first slot alternating
    two = KDNASSampler(space=space, episode_size=4, seed=0, budgets_ms=budgets[:2])
    assert [two._band_start(i) % 2 for i in range(4)] == [0, 1, 0, 1]


def test_a_registered_strategy_is_configurable_and_runs(minilm, fake):
    """One factory signature for every strategy: a new one is a `SpaceSampler` with `next_arch` and one
    `register_strategy` call; the config accepts its name, the search runs it like a built-in one."""
    from kdnas.search import samplers
    from kdnas.search.base import SpaceSampler

    class Narrowest(SpaceSampler):  # always the narrowest unseen arch
        def next_arch(self, study, trial):
            seen = samplers.seen_arch_ids(study)
            archs = [a for a in self._space.sample_many(64, self._rng) if a.arch_id not in seen]
            return min(archs, key=lambda a: (a.hidden_size, a.arch_id))

    assert "narrowest" in " ".join(SearchConfig(strategy="narrowest").check())  # unknown until registered
    samplers.register_strategy("narrowest", lambda a: Narrowest(space=a.space, seed=a.seed))
    try:
        cfg = SearchConfig(strategy="narrowest", n_trials=3, episode_size=3, promote_fraction=0.0)
        assert cfg.check() == []
        res = run_search(default_space(minilm), fake, cfg, tokens=100, teacher_latency_ms=fake.teacher_latency_ms,
                         seed=0)  # fmt: skip
        done = [r.arch for r in res.records if r.state == "complete"]
        assert len(done) == 3 and len({a.arch_id for a in done}) == 3
        widths = sorted({a.hidden_size for a in default_space(minilm).sample_many(200, 0)})
        assert all(a.hidden_size <= widths[1] for a in done)  # it chose, not the search
    finally:
        samplers.STRATEGIES.pop("narrowest")


def test_an_ensemble_ranks_by_the_members_mean_less_their_spread(minilm):
    """`search.predictor_ensemble`: member 0 is the single predictor (fitted on every observation with the seed
    the one-predictor controller would draw), the rest fit bootstrap resamples; the score is exp(mean - sd) of
    their log predictions; one member is exactly the single-predictor controller."""
    space = default_space(minilm)
    train = space.sample_many(12, 0)
    pool = space.sample_many(40, 1, exclude={a.arch_id for a in train})
    y = np.exp(-(8.0 - 3.0 * _synthetic_reward(space, train)))
    one = KDNASSampler(space=space, seed=3)
    single, loss1 = one._scores(train, y, pool)
    three = KDNASSampler(space=space, seed=3, ensemble=3)
    got, loss3 = three._scores(train, y, pool)

    rng = np.random.default_rng(3)  # the sampler's generator, replayed by hand: the naive reference
    x, xp, preds = space.encode_many(train), space.encode_many(pool), []
    for m in range(3):
        idx = np.arange(len(train)) if m == 0 else rng.integers(len(train), size=len(train))
        member = RewardPredictor(space.encoding_dim, seed=int(rng.integers(2**31))).fit(x[idx], y[idx])
        preds.append(np.log(member.predict(xp)))
    np.testing.assert_allclose(preds[0], np.log(single), rtol=1e-6)
    want = np.exp(np.mean(preds, axis=0) - np.std(preds, axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert loss1 == loss3 and (got <= np.exp(np.mean(preds, axis=0)) + 1e-12).all()
    assert not np.allclose(preds[1], preds[0])  # the resampled members differ
    with pytest.raises(ValueError, match="ensemble"):
        KDNASSampler(space=space, ensemble=0)
    assert any("predictor_ensemble" in p for p in SearchConfig(predictor_ensemble=0).check())


def test_the_kdnas_strategy_runs_with_an_ensemble(minilm, fake):
    cfg = SearchConfig(
        strategy="kdnas", n_trials=8, episode_size=2, promote_fraction=0.0, predictor_ensemble=4
    )
    sampler = make_sampler("kdnas", space=default_space(minilm), cfg=cfg, seed=0)
    assert isinstance(sampler, KDNASSampler) and sampler.ensemble == 4
    res = run_search(
        default_space(minilm), fake, cfg, tokens=100, teacher_latency_ms=fake.teacher_latency_ms, seed=1
    )
    assert res.n_evaluated == 8
    picks = [r for r in res.records if r.state == "complete"]
    assert len({r.arch.arch_id for r in picks}) == 8
