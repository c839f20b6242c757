"""Search strategies, each an Optuna sampler chosen by name: kdnas (the KD-NAS controller), bo (multi-objective
GP), tpe, nsga2 and random (uniform over the valid archs of the space).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from kdnas.errors import SearchError

if TYPE_CHECKING:
    from kdnas.search.config import SearchConfig
    from kdnas.space.space import SearchSpace

# Strategies whose own start-up sampling is per-dimension random (it would propose invalid archs): the search
# enqueues `n_startup_trials` uniform valid archs for them instead.
NEEDS_STARTUP = ("bo", "tpe", "nsga2")


def seen_arch_ids(study: Study) -> set[str]:
    """Arch ids of every trial so far (any state), from the `arch_id` user attr the search sets."""
    return {t.user_attrs["arch_id"] for t in study.get_trials(deepcopy=False) if "arch_id" in t.user_attrs}


class SpaceRandomSampler(BaseSampler):
    """Uniform over the valid archs of a space (constraints included), avoiding archs already tried.

    Usable as a relative sampler (whole arch at once) and as an independent one (a per-trial plan, so the
    dimensions of one trial still form one valid arch).
    """

    def __init__(self, *, space: SearchSpace, seed: int | None = None, avoid_seen: bool = True):
        self._space = space
        self._rng = np.random.default_rng(seed)
        self._avoid_seen = avoid_seen
        self._plans: dict[int, dict[str, Any]] = {}
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._fallback.reseed_rng()

    def draw(self, study: Study) -> dict[str, Any]:
        exclude = seen_arch_ids(study) if self._avoid_seen else set()
        archs = self._space.sample_many(1, self._rng, exclude=exclude) or self._space.sample_many(
            1, self._rng
        )
        return self._space.params_of(archs[0])

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.distributions()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        params = self.draw(study)
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        plan = self._plans.get(trial.number)
        if plan is None:
            plan = self._plans[trial.number] = self.draw(study)
        if param_name in plan and param_distribution._contains(
            param_distribution.to_internal_repr(plan[param_name])
        ):
            return plan[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._plans.pop(trial.number, None)


SamplerFactory = Callable[..., BaseSampler]


def _kdnas(
    space: SearchSpace, cfg: SearchConfig, seed: int | None, budgets_ms: Sequence[float] = ()
) -> BaseSampler:
    from kdnas.search.controller import KDNASSampler

    return KDNASSampler(
        space=space,
        episode_size=cfg.episode_size,
        pool_factor=cfg.pool_factor,
        epsilon=cfg.epsilon,
        epsilon_decay=cfg.epsilon_decay,
        seed=seed,
        budgets_ms=budgets_ms,
        latency_margin=cfg.latency_margin,
    )


class _OneThreadGPSampler(optuna.samplers.GPSampler):
    """GPSampler whose small GP fits run on one torch thread (more threads only spin on CPUs shared with work)."""

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        import torch

        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return super().sample_relative(study, trial, search_space)
        finally:
            torch.set_num_threads(n)


def _bo(space: SearchSpace, cfg: SearchConfig, seed: int | None) -> BaseSampler:
    # Optuna >= 4.2's GPSampler does multi-objective BO itself (log EHVI; qLogEHVI with running trials) and
    # reads constraints set with trial.set_constraint, which covers AutoDistill's use of BoTorch qNEHVI.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _OneThreadGPSampler(
            seed=seed,
            n_startup_trials=cfg.n_startup_trials,
            independent_sampler=SpaceRandomSampler(space=space, seed=seed),
            warn_independent_sampling=False,
        )


def _tpe(space: SearchSpace, cfg: SearchConfig, seed: int | None) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=cfg.n_startup_trials,
            multivariate=True,
            constant_liar=True,  # a round's candidates stay RUNNING until its promotions are done
        )


def _nsga2(space: SearchSpace, cfg: SearchConfig, seed: int | None) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=max(4, cfg.n_startup_trials), seed=seed)


def _random(space: SearchSpace, cfg: SearchConfig, seed: int | None) -> BaseSampler:
    return SpaceRandomSampler(space=space, seed=seed)


STRATEGIES: dict[str, SamplerFactory] = {
    "kdnas": _kdnas,
    "bo": _bo,
    "tpe": _tpe,
    "nsga2": _nsga2,
    "random": _random,
}


def make_sampler(
    name: str,
    *,
    space: SearchSpace,
    cfg: SearchConfig,
    seed: int | None = None,
    budgets_ms: Sequence[float] = (),
) -> BaseSampler:
    """The Optuna sampler of strategy `name` over `space` (SearchError for an unknown name).

    `budgets_ms` (the latency budgets recommendations are made for) spread the kdnas controller's episodes
    over one latency band per budget; the other strategies explore the (budget-capped) space as a whole.
    """
    factory = STRATEGIES.get(name)
    if factory is None:
        raise SearchError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "kdnas":
        return _kdnas(space, cfg, seed, budgets_ms)
    return factory(space, cfg, seed)
