"""The KD-NAS controller as an Optuna sampler: a small MLP learns the reward from the arch encoding after each
episode; each episode takes the top-k of a large random pool by predicted reward and fills the rest at random.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from kdnas.search.base import SpaceSampler, seen_arch_ids
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from kdnas.space.space import SearchSpace


def latency_bands(budgets_ms: Sequence[float], margin: float) -> list[tuple[float, float]]:
    """(low, high] predicted-latency band of each budget, tightest first: from the next tighter budget (x (1 +
    margin)) to this one x (1 + margin). Budgets within `margin` of the next tighter one share its band: theirs
    alone would be thinner than the margin and hold almost no arch (a family headline places a baseline's budget
    at 6.63 ms beside the 3x budget at 6.03 ms), and a slot given to an empty band is a slot taken from the
    others."""
    out: list[tuple[float, float]] = []
    lo, prev = 0.0, -math.inf
    for b in sorted(set(budgets_ms)):
        if out and b <= prev * (1 + margin):
            out[-1] = (out[-1][0], b * (1 + margin))
        else:
            out.append((lo, b * (1 + margin)))
        lo, prev = b * (1 + margin), b
    return out


class RewardPredictor:
    """An MLP `encoding -> reward`, retrained from scratch on every observation (there are few; it is cheap).

    Positive rewards are fitted in log space (the KD-NAS reward is `exp(-kd_loss)` times a power of latency, so
    its log is linear in both, and rewards spanning orders of magnitude do not leave the poor archs
    indistinguishable near zero); rewards are standardised before fitting; `predict` returns rewards on the
    original scale.
    """

    def __init__(
        self,
        dim: int,
        *,
        hidden_size: int = 32,
        steps: int = 200,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ):
        self.dim, self.hidden_size, self.steps, self.lr, self.weight_decay = (
            dim,
            hidden_size,
            steps,
            lr,
            weight_decay,
        )
        self.seed = seed
        self._net: Any = None
        self._mean, self._std = 0.0, 1.0
        self._log = False
        self.train_loss: float | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> RewardPredictor:
        """Fit on `x` [N, dim] (the arch encodings) and `y` [N] (observed rewards)."""
        import torch

        with _one_thread(torch):  # a tiny net: more threads only spin (and fight other work for cores)
            return self._fit(torch, x, y)

    def _fit(self, torch: Any, x: np.ndarray, y: np.ndarray) -> RewardPredictor:
        gen = torch.Generator().manual_seed(self.seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(self.dim, self.hidden_size),
            torch.nn.Tanh(),
            torch.nn.Linear(self.hidden_size, self.hidden_size),
            torch.nn.Tanh(),
            torch.nn.Linear(self.hidden_size, 1),
        )
        with torch.no_grad():
            for p in net.parameters():  # seeded init without touching the global torch RNG
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 / math.sqrt(p.shape[-1])))
        y = np.asarray(y, dtype=np.float64)
        self._log = bool(np.all(y > 0))
        if self._log:
            y = np.log(y)
        self._mean = float(np.mean(y))
        self._std = float(np.std(y)) or 1.0
        xt = torch.as_tensor(x, dtype=torch.float32)  # [N, dim]
        yt = torch.as_tensor((y - self._mean) / self._std, dtype=torch.float32)  # [N]
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(net(xt).squeeze(-1), yt)
            loss.backward()
            opt.step()
        self.train_loss = float(loss.item())
        self._net = net.eval()
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted rewards [N] for encodings `x` [N, dim]."""
        import torch

        if self._net is None:
            raise RuntimeError("RewardPredictor.predict before fit")
        with torch.no_grad(), _one_thread(torch):
            out = self._net(torch.as_tensor(x, dtype=torch.float32)).squeeze(-1).numpy()
        out = out.astype(np.float64) * self._std + self._mean
        return np.exp(out) if self._log else out


@contextlib.contextmanager
def _one_thread(torch: Any) -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@dataclass
class Episode:
    """What the controller decided for one episode (kept for reports and tests)."""

    index: int
    epsilon: float
    n_observed: int
    top: list[str] = field(default_factory=list)
    """Arch ids taken by predicted reward."""
    random: list[str] = field(default_factory=list)
    """Arch ids filled at random."""
    predicted: list[float] = field(default_factory=list)
    """Predicted rewards of `top`."""
    train_loss: float | None = None


class KDNASSampler(SpaceSampler):
    """KD-NAS controller over a `SearchSpace`.

    Episode e (after the first, all random): fit the reward predictor on every completed trial's reward (its
    short proxy loss and latency scored by `reward_fn`, the search's current reward; without one, the trial's
    `reward` user attr), sample `pool_factor * episode_size` unseen valid archs, take the top `episode_size - n_random` by
    predicted reward and fill `n_random` at random, where `n_random` is `epsilon * epsilon_decay**e *
    episode_size` (stochastically rounded). Each trial takes the next arch of the current episode's plan.

    With latency `budgets_ms` (and a space whose `latency_fn` predicts latency), every slot of an episode
    belongs to one budget's band, (next tighter budget, budget x (1 + margin)], in turn: the reward favours
    fast archs, and without bands a multi-budget search spends all its trials at the tightest budget and
    recommends nothing fitted to the loose ones.
    """

    def __init__(
        self,
        *,
        space: SearchSpace,
        episode_size: int = 4,
        pool_factor: int = 8,
        epsilon: float = 0.5,
        epsilon_decay: float = 0.7,
        reward_attr: str = "reward",
        reward_fn: Callable[[float, float], float] | None = None,
        hidden_size: int = 32,
        train_steps: int = 200,
        seed: int | None = None,
        budgets_ms: Sequence[float] = (),
        latency_margin: float = 0.1,
        ensemble: int = 1,
    ):
        if episode_size < 1 or pool_factor < 1 or ensemble < 1:
            raise ValueError("episode_size, pool_factor and ensemble must be >= 1")
        super().__init__(space=space, seed=seed)
        self.bands = latency_bands(budgets_ms, latency_margin) if space.latency_fn is not None else []
        self.episode_size, self.pool_factor = episode_size, pool_factor
        self.epsilon, self.epsilon_decay = epsilon, epsilon_decay
        self.reward_attr = reward_attr
        self.reward_fn = reward_fn
        self.hidden_size, self.train_steps = hidden_size, train_steps
        self.ensemble = ensemble
        self._queue: list[tuple[Arch, dict[str, Any]]] = []  # planned archs, each with how it was picked
        self.episodes: list[Episode] = []

    def observations(self, study: Study) -> tuple[list[Arch], np.ndarray, int]:
        """(archs, rewards, how many of them are anchors) of the completed trials that carry a reward."""
        archs, rewards, n_anchors = [], [], 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            # the recorded reward is the one of the search that ran the trial; a study resumed under another
            # reward (alpha, beta, loss scale, formula) would otherwise mix two scales in one fit
            r: float | None
            if self.reward_fn is not None and "kd_loss_short" in a and "latency_ms" in a:
                r = self.reward_fn(float(a["kd_loss_short"]), float(a["latency_ms"]))
            else:
                r = a.get(self.reward_attr)
            if r is None or "arch" not in t.user_attrs or not math.isfinite(r):
                continue
            archs.append(Arch.from_dict(t.user_attrs["arch"]))
            rewards.append(float(r))
            n_anchors += bool(t.user_attrs.get("anchor"))
        return archs, np.asarray(rewards, dtype=np.float64), n_anchors

    def plan_episode(self, study: Study) -> Episode:
        archs, rewards, n_anchors = self.observations(study)
        # Episodes count the controller's own observations, not the anchors (`search.anchors`): the anchors are all
        # at the teacher's width, so a predictor fitted on them alone has seen no width vary and extrapolates at
        # will (in the twenty-first session's family search it predicted 0.37 for L6-H64-A2-F256, above every
        # anchor's reward, and the trial scored 0.0011). So the controller explores at random until it has seen
        # one of its own trials. The index is also at least the number of episodes this sampler planned: the
        # search asks a round of trials before it tells them, so an episode is often planned before the one
        # before it has finished, and counting finished trials alone gave the same index (all random) twice.
        n_own = len(archs) - n_anchors
        index = max(n_own // self.episode_size, len(self.episodes))
        eps = self.epsilon * self.epsilon_decay**index
        seen = seen_arch_ids(study) | {a.arch_id for a, _ in self._queue}
        k = self.episode_size
        ep = Episode(index=index, epsilon=eps, n_observed=len(archs))
        if n_own == 0 or len(archs) < 2 or len(set(rewards.tolist())) < 2:
            n_random = k
        else:
            frac = eps * k
            n_random = int(frac) + int(self._rng.random() < frac - int(frac))
        bands = (
            [self.bands[(self._band_start(index) + j) % len(self.bands)] for j in range(k)]
            if self.bands
            else [None] * k
        )
        n_pool = self.pool_factor * k * max(1, len(self.bands))
        pool = self._space.sample_many(n_pool, self._rng, exclude=seen)
        lat = (
            [float(self._space.latency_fn(a)) for a in pool] if self.bands and self._space.latency_fn else []
        )
        scores = None
        if n_random < k and pool:
            scores, ep.train_loss = self._scores(archs, rewards, pool)
        taken: set[int] = set()
        chosen: list[tuple[Arch, dict[str, Any]]] = []
        fill: list[tuple[Arch, dict[str, Any]]] = []
        for j in range(k):  # the first k - n_random slots by predicted reward, the rest at random
            free = [i for i in range(len(pool)) if i not in taken]
            band = bands[j]
            if band is not None:
                inside = [i for i in free if band[0] < lat[i] <= band[1]]
                free = inside or free  # an empty band: any arch rather than none
            if not free:
                break
            why = {"episode": index, "band_ms": None if band is None else list(band)}
            if scores is not None and j < k - n_random:
                i = max(free, key=lambda i: scores[i])
                ep.predicted.append(float(scores[i]))
                chosen.append((pool[i], {**why, "pick": "predicted", "predicted_reward": float(scores[i])}))
            else:
                i = free[int(self._rng.integers(len(free)))]
                fill.append((pool[i], {**why, "pick": "random"}))
            taken.add(i)
        ep.top = [a.arch_id for a, _ in chosen]
        ep.random = [a.arch_id for a, _ in fill]
        self._queue.extend(chosen + fill)
        self.episodes.append(ep)
        return ep

    def _scores(
        self, archs: list[Arch], rewards: np.ndarray, pool: list[Arch]
    ) -> tuple[np.ndarray, float | None]:
        """Predicted reward of every `pool` arch, and the (first) predictor's training loss.

        With `ensemble` > 1, the first member is fitted on every observation, the others on bootstrap resamples
        (each with its own seed), and an arch's score is the members' mean minus their standard deviation, in log
        space where every reward is positive: an arch only one member rates high, typically one far from
        anything observed, is not taken on that member's extrapolation.
        """
        x, xp = self._space.encode_many(archs), self._space.encode_many(pool)
        preds: list[np.ndarray] = []
        loss: float | None = None
        for m in range(self.ensemble):
            idx = np.arange(len(archs)) if m == 0 else self._rng.integers(len(archs), size=len(archs))
            pred = RewardPredictor(
                self._space.encoding_dim,
                hidden_size=self.hidden_size,
                steps=self.train_steps,
                seed=int(self._rng.integers(2**31)),
            ).fit(x[idx], rewards[idx])
            preds.append(pred.predict(xp))
            if m == 0:
                loss = pred.train_loss
        if len(preds) == 1:
            return preds[0], loss
        p = np.stack(preds)  # [members, pool]
        if np.all(p > 0):
            logs = np.log(p)
            return np.exp(logs.mean(axis=0) - logs.std(axis=0)), loss
        return p.mean(axis=0) - p.std(axis=0), loss

    def _band_start(self, index: int) -> int:
        """The band of episode `index`'s first slot. Episodes continue the rotation where the one before stopped,
        so that with more bands than slots every band gets its turn (from the episode index alone, six bands and
        four slots never reached the tightest band in three episodes). Where an episode covers every band a whole
        number of times it would start at the same band each time, so the start also moves on by one band per
        episode: the first slot, the one that exploits the predictor most, goes to each band in turn."""
        k, n = self.episode_size, len(self.bands)
        return index * k + (index if k % n == 0 else 0)

    def next_arch(self, study: Study, trial: FrozenTrial) -> Arch:
        """The next arch of the current episode's plan (a new episode is planned when it is used up). The trial's
        `controller` user attr says how it was picked: its episode, its band (ms) and `predicted` (with the
        predicted reward) or `random`, so a search can be read afterwards (which slots went where, and why)."""
        if not self._queue:
            self.plan_episode(study)
        if not self._queue:  # every arch of the space has been tried: repeat one
            self._queue.extend((a, {"pick": "repeat"}) for a in self._space.sample_many(1, self._rng))
        arch, why = self._queue.pop(0)
        study._storage.set_trial_user_attr(trial._trial_id, "controller", why)
        return arch
