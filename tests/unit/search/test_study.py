"""Study wiring: multi-fidelity promotion, failures, filtering, storage, resume and up-front errors."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from kdnas.errors import ConfigError, SearchError
from kdnas.search.config import SearchConfig
from kdnas.search.objectives import resolve_budgets
from kdnas.search.study import anchor_archs, run_search
from kdnas.space.spaces import default_space

RANDOM = dict(strategy="random", episode_size=4)


def _run(minilm, fake, cfg, **kw):
    kw.setdefault("tokens", 100)
    kw.setdefault("teacher_latency_ms", fake.teacher_latency_ms)
    return run_search(kw.pop("space", None) or default_space(minilm), fake, cfg, **kw)


def test_multi_fidelity_promotes_top_fraction_and_reports_tau(minilm, fake, tmp_path):
    cfg = SearchConfig(
        strategy="random", n_trials=8, episode_size=4, promote_fraction=0.25, long_proxy_factor=3.0
    )
    res = _run(minilm, fake, cfg, run_dir=tmp_path)
    long_calls = [c for c in fake.calls if c[1] == "long"]
    assert len(long_calls) == 2 and all(c[2] == 300 for c in long_calls)  # one per round of 4, 3x tokens
    promoted = [r for r in res.records if r.fidelity == "long"]
    assert len(promoted) == 2 == res.n_promoted
    by_round: dict[int, list] = {}
    for r in res.records:
        by_round.setdefault(r.round, []).append(r)
    for rnd in by_round.values():  # the promoted one is on its round's Pareto front
        (p,) = [r for r in rnd if r.fidelity == "long"]
        assert not any(o.kd_loss_short < p.kd_loss_short and o.latency_ms < p.latency_ms for o in rnd)
    assert res.kendall_tau is None  # fewer than 3 promoted
    saved = json.loads((tmp_path / "search.json").read_text())
    assert saved["n_promoted"] == 2 and saved["kendall_tau_short_long"] is None
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'search.db'}")
    assert study.user_attrs["result"]["hypervolume"] == pytest.approx(res.hypervolume)
    fids = [t.user_attrs["fidelity"] for t in study.trials]
    assert fids.count("long") == 2 and fids.count("short") == 6


def test_kendall_tau_over_promoted(minilm, fake):
    cfg = SearchConfig(strategy="random", n_trials=6, episode_size=2, promote_fraction=0.5)
    res = _run(minilm, fake, cfg)
    assert res.n_promoted == 3
    pairs = sorted((r.kd_loss_short, r.kd_loss_long) for r in res.records if r.fidelity == "long")
    from scipy.stats import kendalltau

    assert res.kendall_tau == pytest.approx(kendalltau(*zip(*pairs)).statistic)


def test_failed_candidates_are_recorded_and_the_search_goes_on(minilm, fake):
    space = default_space(minilm)
    bad = space.sample_many(60, 0)
    fake.fail_on = {a.arch_id for a in bad[:30]}
    fake.nan_on = {a.arch_id for a in bad[30:]}
    res = _run(minilm, fake, SearchConfig(n_trials=8, promote_fraction=0.0, **RANDOM), space=space)
    failed = [r for r in res.records if r.state == "failed"]
    assert failed and res.n_evaluated == 8
    reasons = {r.reason.split(":")[0] for r in failed}
    assert reasons <= {"RuntimeError", "kd_loss is nan (the proxy distillation diverged)"}
    assert any(r.state == "complete" for r in res.records)


def test_all_failing_stops_with_the_reason(minilm, fake):
    fake.fail_on = lambda arch: True
    with pytest.raises(SearchError, match=r"first 4 candidates all failed.*synthetic failure"):
        _run(minilm, fake, SearchConfig(n_trials=8, **RANDOM))


def test_cost_filter_never_distills_ruled_out_archs(minilm, fake):
    budgets = resolve_budgets(speedups=[8.0], teacher_latency_ms=fake.teacher_latency_ms)
    cfg = SearchConfig(strategy="tpe", n_trials=10, n_startup_trials=3, max_params_m=12, promote_fraction=0.0)
    res = _run(minilm, fake, cfg, budgets=budgets, latency_predictor=fake.predict_latency_ms)
    cap = budgets[0].latency_ms * (1 + cfg.latency_margin)
    space = default_space(minilm)
    for arch_id, _, _ in fake.calls:
        arch = next(r.arch for r in res.records if r.arch and r.arch.arch_id == arch_id)
        assert fake.predict_latency_ms(arch) <= cap
        assert space.params_m(arch) <= 12
    filtered = [r for r in res.records if r.state == "filtered"]
    assert all(
        r.reason
        and r.reason.split(":")[0]
        in ("max_latency_ms", "max_params_m", "duplicate of a candidate of the same round")
        for r in filtered
    )
    rec = res.recommendations[0]
    assert rec.arch is not None and rec.latency_ms <= budgets[0].latency_ms


@pytest.mark.parametrize("strategy", ["kdnas", "random", "tpe"])
def test_anchors_are_the_deepest_teacher_width_students_and_go_first(minilm, fake, strategy):
    budgets = resolve_budgets(speedups=[2.0, 6.0], teacher_latency_ms=fake.teacher_latency_ms)
    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    anchors = anchor_archs(space, [b.latency_ms for b in budgets])
    assert len(anchors) == 2
    for arch, budget in zip(anchors, sorted(budgets, key=lambda b: -b.latency_ms)):
        assert (arch.hidden_size, arch.num_heads) == (384, 12)
        assert fake.predict_latency_ms(arch) <= budget.latency_ms
        deeper = arch.replace(num_layers=arch.num_layers + 1)
        assert deeper.num_layers > 6 or fake.predict_latency_ms(deeper) > budget.latency_ms
    cfg = SearchConfig(strategy=strategy, n_trials=4, episode_size=2, anchors=True, n_startup_trials=2)
    _run(minilm, fake, cfg, budgets=budgets, latency_predictor=fake.predict_latency_ms)
    assert [c[0] for c in fake.calls[:2]] == [a.arch_id for a in anchors]
    assert anchor_archs(default_space(minilm), [1.0]) == []  # no latency predictor: no anchors


def test_a_band_is_anchored_at_its_baselines_predicted_latency(minilm, fake):
    """An equal-latency band timed side by side 30% slower than the predictor's units (as on a busy machine):
    anchored by the reference's own prediction, the anchor lands in the band; by the band's ms it would not."""
    from kdnas.search.objectives import equal_latency_budgets
    from kdnas.space.arch import Arch

    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    ref = Arch.parse("L3-H384-A12-F1536-gelu")
    p = fake.predict_latency_ms(ref)
    speedup = {"eol": fake.teacher_latency_ms / (1.3 * p)}
    (band,) = equal_latency_budgets(speedup, fake.teacher_latency_ms, references={"eol": ref.arch_id})
    assert band.reference == ref.arch_id and band.to_dict()["reference"] == ref.arch_id
    (anchor,) = anchor_archs(space, [band])
    assert 0.95 * p <= fake.predict_latency_ms(anchor) <= 1.05 * p
    assert (anchor.hidden_size, anchor.num_heads) == (384, 12) and anchor.num_layers >= 3
    (unref,) = equal_latency_budgets(speedup, fake.teacher_latency_ms)
    (plain,) = anchor_archs(space, [unref])
    assert fake.predict_latency_ms(plain) > 1.05 * p  # in the band's timed ms, the anchor overshoots it


def test_unreachable_budget_names_the_fastest(minilm, fake):
    budgets = resolve_budgets(budgets_ms=[0.05], teacher_latency_ms=fake.teacher_latency_ms)
    with pytest.raises(
        SearchError, match=r"budget 0.05 ms .*cannot be met: the fastest arch in the space, L1-H64"
    ):
        _run(minilm, fake, SearchConfig(**RANDOM), budgets=budgets, latency_predictor=fake.predict_latency_ms)
    assert not fake.calls


def test_bad_inputs_fail_before_any_distillation(minilm, fake, tmp_path):
    with pytest.raises(SearchError, match="cannot open the search storage"):
        _run(minilm, fake, SearchConfig(**RANDOM), storage=f"sqlite:///{tmp_path}/no/such/dir/x.db")
    with pytest.raises(SearchError, match="cannot open the search storage"):
        _run(minilm, fake, SearchConfig(**RANDOM), storage="nosuchdb://x")
    with pytest.raises(ConfigError, match=r"search.strategy: 'evo'"):
        _run(minilm, fake, SearchConfig(strategy="evo"))
    with pytest.raises(SearchError, match=r"max_params_m=0.1 rules out every arch"):
        _run(minilm, fake, SearchConfig(max_params_m=0.1, **RANDOM))
    assert not fake.calls


def test_resume_keeps_completed_trials_and_recovers_running_ones(minilm, fake, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    cfg = SearchConfig(n_trials=6, promote_fraction=0.0, **RANDOM)
    first = _run(minilm, fake, cfg, storage=url, study_name="s")
    assert first.n_evaluated == 6
    # simulate a process killed mid-round: one trial with its short result recorded, one without
    study = optuna.load_study(study_name="s", storage=url)
    space = default_space(minilm)
    a, b = space.sample_many(2, 99, exclude={r.arch.arch_id for r in first.records})
    for arch, short in ((a, True), (b, False)):
        study.enqueue_trial(space.params_of(arch))
        t = study.ask()  # left RUNNING, as a killed process leaves it
        assert space.suggest(t) == arch
        t.set_user_attr("arch_id", arch.arch_id)
        t.set_user_attr("arch", arch.to_dict())
        if short:
            t.set_user_attr("kd_loss_short", 0.42)
            t.set_user_attr("latency_ms", 3.0)
            t.set_user_attr("params_m", 5.0)
    n_calls = len(fake.calls)
    second = _run(
        minilm, fake, SearchConfig(n_trials=10, promote_fraction=0.0, **RANDOM), storage=url, study_name="s"
    )
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    recovered = [t for t in trials if t.user_attrs.get("resumed")]
    assert len(recovered) == 1 and recovered[0].values[0] == 0.42
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) == 1 and "re-queued" in failed[0].user_attrs["fail_reason"]
    # the 6 first completions are kept untouched, 10 distilled in all (the recovered one counts)
    first_ids = [r.arch.arch_id for r in first.records]
    assert [r.arch.arch_id for r in second.records[:6]] == first_ids
    assert second.n_evaluated == 10
    assert len(fake.calls) - n_calls == 3  # 10 - 6 done - 1 recovered


def test_resume_with_other_objectives_is_refused(minilm, fake, tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _run(minilm, fake, SearchConfig(n_trials=2, **RANDOM), storage=url)
    with pytest.raises(SearchError, match="objectives"):
        _run(
            minilm, fake, SearchConfig(n_trials=2, objectives=["kd_loss", "params_m"], **RANDOM), storage=url
        )


def test_three_objectives_and_constraints(minilm, fake):
    budgets = resolve_budgets(speedups=[4.0], teacher_latency_ms=fake.teacher_latency_ms)
    cfg = SearchConfig(
        strategy="nsga2",
        n_trials=6,
        n_startup_trials=2,
        objectives=["kd_loss", "latency_ms", "params_m"],
        max_params_m=20,
        promote_fraction=0.0,
    )
    res = _run(minilm, fake, cfg, budgets=budgets, latency_predictor=fake.predict_latency_ms)
    assert res.n_evaluated == 6


def test_invalid_proposals_are_filtered_with_reason(minilm, fake):
    from kdnas.space.spaces import load_space

    space = load_space("small-explicit", minilm)  # num_heads is searched: many width/heads pairs are invalid
    cfg = SearchConfig(strategy="nsga2", n_trials=8, n_startup_trials=2, promote_fraction=0.0)
    res = _run(minilm, fake, cfg, space=space)
    assert res.n_evaluated == 8
    filtered = [r for r in res.records if r.state == "filtered"]
    assert filtered and all(r.reason for r in filtered)
    assert all(space.contains(r.arch) for r in res.records if r.state == "complete")
    assert {c[0] for c in fake.calls} <= {r.arch.arch_id for r in res.records if r.state == "complete"}


def test_a_plain_budgets_anchors_sit_under_the_margin_and_at_the_edge(minilm, fake):
    """With `search.anchor_margin` a plain budget gets two anchors: the deepest, then widest-FFN, teacher-width
    arch predicted at or under budget x (1 - margin), and the one at the budget's edge (the predictor errs both
    ways; the side-by-side placement keeps the one that fits); without a margin only the edge one."""
    budgets = resolve_budgets(speedups=[3.0], teacher_latency_ms=fake.teacher_latency_ms)
    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    ms = budgets[0].latency_ms
    (edge,) = anchor_archs(space, [ms])
    kept, edge2 = anchor_archs(space, [ms], margin=0.25)
    assert edge2 == edge
    assert fake.predict_latency_ms(kept) <= 0.75 * ms < fake.predict_latency_ms(edge) <= ms
    assert (kept.hidden_size, kept.num_heads) == (384, 12)
    wide = [
        a
        for a in space.enumerate()
        if (a.hidden_size, a.num_heads, a.vocab_size) == (384, 12, kept.vocab_size)
    ]
    under = [a for a in wide if fake.predict_latency_ms(a) <= 0.75 * ms]
    assert (kept.num_layers, kept.ffn_size) == max((a.num_layers, a.ffn_size) for a in under)
    # nothing at the teacher's width fits under the margin: the deepest fitting the budget itself
    fastest = min(fake.predict_latency_ms(a) for a in wide)
    (fallback,) = anchor_archs(space, [fastest * 1.01], margin=0.5)
    assert fake.predict_latency_ms(fallback) <= fastest * 1.01
    # two budgets whose edge and margin anchors coincide: each arch enqueued once
    both = anchor_archs(space, [ms, ms * 1.0001], margin=0.25)
    assert len(both) == len(set(both)) == 2


def test_anchor_margin_is_a_fraction():
    assert any("anchor_margin" in p for p in SearchConfig(anchor_margin=1.0).check())
    assert any("anchor_margin" in p for p in SearchConfig(anchor_margin=-0.1).check())
    assert not any("anchor_margin" in p for p in SearchConfig(anchor_margin=0.0).check())


@pytest.mark.parametrize(
    ("kw", "scale"),
    [
        ({}, 4.4),
        ({"proxy_loss": "full"}, 1.0),
        ({"quality": "recall"}, 1.0),
        ({"reward_loss_scale": 2.0}, 2.0),
    ],
)
def test_the_reward_weighs_the_state_loss_as_the_full_one(minilm, fake, tmp_path, kw, scale):
    """Ranked by the state terms (4.4x smaller than the whole objective), the KD-NAS reward scales the loss back,
    so that a quality gap weighs as much against latency as it did under the full loss; under the full loss, a
    1 - recall quality or an explicit scale it reads that."""
    from kdnas.search.objectives import kdnas_reward

    cfg = SearchConfig(strategy="random", n_trials=3, episode_size=3, promote_fraction=0.0, **kw)
    assert cfg.loss_scale() == scale
    _run(minilm, fake, cfg, run_dir=tmp_path)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'search.db'}")
    done = [t for t in study.trials if "reward" in t.user_attrs]
    assert len(done) == 3
    for t in done:
        kd, ms = t.values[0], t.user_attrs["latency_ms"]
        assert t.user_attrs["reward"] == pytest.approx(kdnas_reward(scale * kd, ms, fake.teacher_latency_ms))
    assert any("reward_loss_scale" in p for p in SearchConfig(reward_loss_scale=0.0).check())


def test_a_resumed_study_is_scored_with_the_current_reward(minilm, fake, tmp_path, monkeypatch):
    """The controller fits its predictor on rewards recomputed from each trial's loss and latency with the search's
    reward of now: resumed under another alpha, the trials run before are not read on the old reward's scale."""
    from kdnas.search import study as study_mod
    from kdnas.search.objectives import kdnas_reward

    made = []

    def capture(*a, **kw):
        made.append(sampler := make_sampler(*a, **kw))
        return sampler

    make_sampler = study_mod.make_sampler
    monkeypatch.setattr(study_mod, "make_sampler", capture)
    first = SearchConfig(strategy="kdnas", n_trials=4, episode_size=4, promote_fraction=0.0, anchors=False)
    _run(minilm, fake, first, run_dir=tmp_path)
    again = SearchConfig(
        strategy="kdnas", n_trials=8, episode_size=4, promote_fraction=0.0, anchors=False, reward_alpha=-1.0
    )
    _run(minilm, fake, again, run_dir=tmp_path)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path / 'search.db'}")
    archs, rewards, _ = made[-1].observations(study)
    assert len(archs) == 8
    by_arch = {t.user_attrs["arch_id"]: t for t in study.trials if "reward" in t.user_attrs}
    scale = again.loss_scale()
    for arch, r in zip(archs, rewards, strict=True):
        a = by_arch[arch.arch_id].user_attrs
        now = kdnas_reward(scale * a["kd_loss_short"], a["latency_ms"], fake.teacher_latency_ms, alpha=-1.0)
        assert r == pytest.approx(now)
    # the first four were recorded under alpha -0.5, and read under -1 now
    old = [t for t in study.trials if t.number < 4]
    assert all(t.user_attrs["reward"] != pytest.approx(r) for t, r in zip(old, rewards[:4], strict=True))


def test_a_one_layer_budget_also_gets_a_deeper_narrower_anchor(minilm, fake):
    """`search.narrow_anchors`: where the only teacher-width arch fitting a plain budget has one layer, the budget
    also gets the deepest arch of 2+ layers at the widest narrower hidden size fitting under the margin, at the
    teacher's head size; a budget a 2-layer teacher-width arch fits gets none, nor does narrow=False."""
    space = default_space(minilm).replace(latency_fn=fake.predict_latency_ms)
    archs = space.enumerate()
    vocab = anchor_archs(space, [1e9])[0].vocab_size
    wide = [a for a in archs if (a.hidden_size, a.num_heads, a.vocab_size) == (384, 12, vocab)]
    two = min(fake.predict_latency_ms(a) for a in wide if a.num_layers == 2)
    ms = two * 0.99  # only 1-layer teacher-width archs fit
    plain = anchor_archs(space, [ms], margin=0.1)
    assert all(a.num_layers == 1 for a in plain)
    with_narrow = anchor_archs(space, [ms], margin=0.1, narrow=True)
    (deeper,) = [a for a in with_narrow if a not in plain]
    assert deeper.num_layers >= 2 and deeper.hidden_size < 384
    assert deeper.hidden_size == deeper.num_heads * 32 and deeper.vocab_size == vocab
    fits = [
        a
        for a in archs
        if a.hidden_size < 384
        and a.num_layers >= 2
        and a.vocab_size == vocab
        and fake.predict_latency_ms(a) <= ms * 0.9
    ]
    assert deeper.hidden_size == max(a.hidden_size for a in fits)
    same = [a for a in fits if (a.hidden_size, a.num_heads) == (deeper.hidden_size, deeper.num_heads)]
    assert (deeper.num_layers, deeper.ffn_size) == max((a.num_layers, a.ffn_size) for a in same)
    # a budget a 2-layer teacher-width arch fits: no narrow anchor
    loose = two * 1.5
    assert anchor_archs(space, [loose], margin=0.1, narrow=True) == anchor_archs(space, [loose], margin=0.1)
