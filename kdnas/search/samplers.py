"""Search strategies, each an Optuna sampler chosen by name from one registry (`STRATEGIES`): kdnas (the KD-NAS
controller), bo (multi-objective GP), tpe, nsga2 and random (uniform over the valid archs of the space). Every
factory takes one `StrategyArgs`; `register_strategy` adds one.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

from kdnas.errors import SearchError
from kdnas.search.base import SpaceSampler, seen_arch_ids

if TYPE_CHECKING:
    from kdnas.search.config import SearchConfig
    from kdnas.space.arch import Arch
    from kdnas.space.space import SearchSpace

__all__ = [
    "STRATEGIES", "SamplerFactory", "SpaceRandomSampler", "SpaceSampler", "Strategy", "StrategyArgs",
    "known_strategies", "make_sampler", "needs_startup", "register_strategy", "seen_arch_ids",
]  # fmt: skip


class SpaceRandomSampler(SpaceSampler):
    """Uniform over the valid archs of a space (constraints included), avoiding archs already tried. Also the
    independent sampler of the BO strategy, whose start-up draws must be valid archs too."""

    def __init__(self, *, space: SearchSpace, seed: int | None = None, avoid_seen: bool = True):
        super().__init__(space=space, seed=seed)
        self._avoid_seen = avoid_seen

    def next_arch(self, study: Study, trial: FrozenTrial) -> Arch:
        exclude = seen_arch_ids(study) if self._avoid_seen else set()
        archs = self._space.sample_many(1, self._rng, exclude=exclude) or self._space.sample_many(
            1, self._rng
        )
        return archs[0]


@dataclass(frozen=True)
class StrategyArgs:
    """What every strategy factory is given."""

    space: SearchSpace
    cfg: SearchConfig
    seed: int | None = None
    budgets_ms: Sequence[float] = ()
    """The latency budgets recommendations are made for (the kdnas controller spreads its episodes over one
    latency band per budget; the other strategies explore the budget-capped space as a whole)."""
    reward: Callable[[float, float], float] | None = None
    """The search's reward `(kd_loss, latency_ms) -> reward`; a reward-driven strategy (kdnas) scores every
    observed trial with it rather than reading the reward recorded when the trial ran."""


SamplerFactory = Callable[[StrategyArgs], BaseSampler]


@dataclass(frozen=True)
class Strategy:
    factory: SamplerFactory
    needs_startup: bool = False
    """Its own start-up sampling is per-dimension random (it would propose invalid archs): the search enqueues
    `search.n_startup_trials` uniform valid archs first."""


def _kdnas(a: StrategyArgs) -> BaseSampler:
    from kdnas.search.controller import KDNASSampler

    c = a.cfg
    return KDNASSampler(
        space=a.space, episode_size=c.episode_size, pool_factor=c.pool_factor, epsilon=c.epsilon,
        epsilon_decay=c.epsilon_decay, seed=a.seed, budgets_ms=a.budgets_ms, latency_margin=c.latency_margin,
        reward_fn=a.reward, ensemble=c.predictor_ensemble,
    )  # fmt: skip


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


def _bo(a: StrategyArgs) -> BaseSampler:
    # Optuna >= 4.2's GPSampler does multi-objective BO itself (log EHVI; qLogEHVI with running trials) and
    # reads constraints set with trial.set_constraint, which covers AutoDistill's use of BoTorch qNEHVI.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _OneThreadGPSampler(
            seed=a.seed,
            n_startup_trials=a.cfg.n_startup_trials,
            independent_sampler=SpaceRandomSampler(space=a.space, seed=a.seed),
            warn_independent_sampling=False,
        )


def _tpe(a: StrategyArgs) -> BaseSampler:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=a.seed,
            n_startup_trials=a.cfg.n_startup_trials,
            multivariate=True,
            constant_liar=True,  # a round's candidates stay RUNNING until its promotions are done
        )


def _nsga2(a: StrategyArgs) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(population_size=max(4, a.cfg.n_startup_trials), seed=a.seed)


def _random(a: StrategyArgs) -> BaseSampler:
    return SpaceRandomSampler(space=a.space, seed=a.seed)


STRATEGIES: dict[str, Strategy] = {
    "kdnas": Strategy(_kdnas),
    "bo": Strategy(_bo, needs_startup=True),
    "tpe": Strategy(_tpe, needs_startup=True),
    "nsga2": Strategy(_nsga2, needs_startup=True),
    "random": Strategy(_random),
}
"""The registry `search.strategy` names; add one with `register_strategy`."""


def register_strategy(name: str, factory: SamplerFactory, *, needs_startup: bool = False) -> None:
    """Make `search.strategy: name` build its sampler with `factory(StrategyArgs)` (e.g. a `SpaceSampler`
    subclass, or any Optuna sampler)."""
    if not name or not callable(factory):
        raise SearchError(f"register_strategy({name!r}, ...): needs a name and a callable factory")
    STRATEGIES[name] = Strategy(factory, needs_startup=needs_startup)


def known_strategies() -> list[str]:
    return list(STRATEGIES)


def needs_startup(name: str) -> bool:
    s = STRATEGIES.get(name)
    return bool(s and s.needs_startup)


def make_sampler(
    name: str,
    *,
    space: SearchSpace,
    cfg: SearchConfig,
    seed: int | None = None,
    budgets_ms: Sequence[float] = (),
    reward: Callable[[float, float], float] | None = None,
) -> BaseSampler:
    """The Optuna sampler of strategy `name` over `space` (SearchError for an unknown name)."""
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise SearchError(f"unknown search strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return strategy.factory(
        StrategyArgs(space=space, cfg=cfg, seed=seed, budgets_ms=tuple(budgets_ms), reward=reward)
    )
