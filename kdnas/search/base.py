"""`SpaceSampler`: the base of kdnas's own Optuna samplers, which propose whole architectures of a `SearchSpace`.

A subclass says only which arch comes next (`next_arch`); the base turns it into Optuna's two sampling paths
(relative: the whole arch at once; independent: a per-trial plan, so the parameters of one trial still form one
valid arch even when a wrapping sampler asks for them one by one), falls back to Optuna's random sampler for
parameters outside the space, and reseeds in worker processes.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from kdnas.space.arch import Arch
    from kdnas.space.space import SearchSpace


def seen_arch_ids(study: Study) -> set[str]:
    """Arch ids of every trial so far (any state), from the `arch_id` user attr the search sets."""
    return {t.user_attrs["arch_id"] for t in study.get_trials(deepcopy=False) if "arch_id" in t.user_attrs}


class SpaceSampler(BaseSampler, abc.ABC):
    def __init__(self, *, space: SearchSpace, seed: int | None = None):
        self._space = space
        self._seed = seed
        self._rng = np.random.default_rng(seed)
        self._fallback = optuna.samplers.RandomSampler(seed=seed)
        self._plans: dict[int, dict[str, Any]] = {}

    @abc.abstractmethod
    def next_arch(self, study: Study, trial: FrozenTrial) -> Arch:
        """The arch trial `trial` evaluates."""

    def reseed_rng(self) -> None:
        self._rng = np.random.default_rng()
        self._fallback.reseed_rng()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.distributions()

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        params = self._space.params_of(self.next_arch(study, trial))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if param_name in self._space.distributions():
            plan = self._plans.get(trial.number)
            if plan is None:
                plan = self._plans[trial.number] = self._space.params_of(self.next_arch(study, trial))
            if param_name in plan and param_distribution._contains(
                param_distribution.to_internal_repr(plan[param_name])
            ):
                return plan[param_name]
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        self._plans.pop(trial.number, None)
