"""One search = one Optuna study: candidates proposed by the strategy, filtered by the cheap cost hooks, given a
short proxy distillation, the best of each round promoted to a long one; resumable from any Optuna storage.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from kdnas import run_dir as rd
from kdnas.errors import ArchError, ConfigError, SearchError
from kdnas.search.base import seen_arch_ids
from kdnas.search.candidate import CandidateEvaluator, CandidateResult, Fidelity
from kdnas.search.capped import anchor_archs, prepare_space
from kdnas.search.config import SearchConfig
from kdnas.search.objectives import Budget, constraint_values, kdnas_reward, objective_values
from kdnas.search.results import (
    SearchResult,
    TrialRecord,
    nondominated_rank,
)
from kdnas.search.samplers import make_sampler, needs_startup
from kdnas.search.trials import (
    is_evaluated,
    progress,
    quota_slot,
    retried_numbers,
    summarize,
    trial_record,
)
from kdnas.search.workers import (
    LEADER_ATTR,
    Heartbeat,
    check_hardware,
    check_role,
    fail_stale,
    is_shared_url,
    open_shared_storage,
    open_storage,
    quiet_optuna,
    redact,
    run_identity,
    storage_url,
)
from kdnas.space.arch import Arch
from kdnas.space.space import SearchSpace

log = logging.getLogger(__name__)
TrialCallback = Callable[[TrialRecord], None]
RESULT_FILE = rd.SEARCH


def _evaluate(
    evaluator: CandidateEvaluator, arch: Arch, fidelity: Fidelity, tokens: int
) -> tuple[CandidateResult | None, str | None]:
    """Run one evaluation; a failure becomes a reason string (the search goes on)."""
    try:
        res = evaluator.evaluate(arch, fidelity=fidelity, tokens=tokens)
    except MemoryError:
        return None, "out of memory (MemoryError)"
    except Exception as e:  # any candidate failure is recorded on its trial; the study continues
        name = type(e).__name__
        if "OutOfMemory" in name or "out of memory" in str(e).lower():
            return None, f"out of memory: {name}: {e}"
        return None, f"{name}: {e}"
    if res.kd_loss is None or not math.isfinite(res.kd_loss):
        return None, f"kd_loss is {res.kd_loss} (the proxy distillation diverged)"
    if not (math.isfinite(res.latency_ms) and res.latency_ms > 0):
        return None, f"latency_ms is {res.latency_ms} (the latency measurement failed)"
    return res, None


def search_reward(cfg: SearchConfig, teacher_latency_ms: float) -> Callable[[float, float], float]:
    """The KD-NAS reward of this search, `(kd_loss, latency_ms) -> reward`: its loss scale, alpha and beta."""
    scale, alpha, beta = cfg.loss_scale(), cfg.reward_alpha, cfg.reward_beta

    def reward(kd_loss: float, latency_ms: float) -> float:
        return kdnas_reward(kd_loss * scale, latency_ms, teacher_latency_ms, alpha=alpha, beta=beta)

    return reward


@dataclass
class _Pending:
    trial: optuna.Trial
    arch: Arch
    result: CandidateResult
    reward: float


class _Search:
    """The state of one `run_search` call (kept in a class so the round logic reads top to bottom)."""

    def __init__(
        self,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        space: SearchSpace,
        evaluator: CandidateEvaluator,
        cfg: SearchConfig,
        *,
        tokens: int,
        teacher_latency_ms: float,
        max_latency_ms: float | None,
        callback: TrialCallback | None,
        seed: int = 0,
    ):
        self.study, self.storage, self.space, self.evaluator, self.cfg = study, storage, space, evaluator, cfg
        self.tokens, self.teacher_latency_ms = tokens, teacher_latency_ms
        self.reward = search_reward(cfg, teacher_latency_ms)  # (kd_loss, latency_ms) -> the KD-NAS reward
        self.max_latency_ms = max_latency_ms
        self.max_params_m = space.constraints.max_params_m
        self.callback = callback
        self.session_evaluated = 0
        self.rng = np.random.default_rng(seed)
        self.session_ok = 0
        self.last_failure: str | None = None
        self.heartbeat = Heartbeat(storage)
        self.shared = self.heartbeat.enabled
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def filter(self, trial: optuna.Trial, reason: str, *, fallback: bool = True) -> None:
        """Rule `trial` out (PRUNED, with why) before any distillation; queue a random unseen arch after it."""
        trial.set_user_attr("filtered_reason", reason)
        self.study.tell(trial, state=TrialState.PRUNED)
        self._notify(trial._trial_id)
        if fallback:
            self.enqueue_fallback(trial.number)

    def _notify(self, trial_id: int) -> None:
        """After a trial is told: stop its heartbeat, show it to the callback."""
        self.heartbeat.release(trial_id)
        if self.callback is None:
            return
        rec = trial_record(self.storage.get_trial(trial_id))
        if rec is not None:
            self.callback(rec)

    def values(self, kd_loss: float, latency_ms: float, params_m: float) -> list[float]:
        return objective_values(
            self.cfg.objectives, kd_loss=kd_loss, latency_ms=latency_ms, params_m=params_m
        )

    def complete(self, trial: optuna.Trial, latency_ms: float, params_m: float, kd_loss: float) -> None:
        cons = constraint_values(
            latency_ms=latency_ms,
            params_m=params_m,
            max_latency_ms=self.max_latency_ms,
            max_params_m=self.max_params_m,
        )
        for k, v in cons.items():
            trial.set_constraint(k, v)
        self.study.tell(trial, self.values(kd_loss, latency_ms, params_m))
        self._notify(trial._trial_id)

    def resume(self) -> None:
        """Trials left RUNNING by a killed process: complete those whose short proxy finished, re-queue the rest.

        On a shared storage (heartbeats) only the trials of dead workers: those whose heartbeat is stale."""
        if self.shared:
            fail_stale(self.study)
            return
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            a = t.user_attrs
            trial = optuna.Trial(self.study, t._trial_id)
            if all(k in a for k in ("kd_loss_short", "latency_ms", "params_m")):
                trial.set_user_attr("resumed", True)
                self.complete(trial, a["latency_ms"], a["params_m"], a["kd_loss_short"])
                log.info("resumed trial %d (%s) from its recorded short proxy", t.number, a.get("arch_id"))
                continue
            trial.set_user_attr(
                "fail_reason", "interrupted before its short proxy distillation finished; re-queued"
            )
            self.study.tell(trial, state=TrialState.FAIL)
            if t.params:
                self.study.enqueue_trial(dict(t.params), user_attrs={"requeued_from": t.number})
                log.info("re-queued interrupted trial %d (%s)", t.number, a.get("arch_id"))

    def enqueue_fallback(self, number: int) -> None:
        """After a proposal that was ruled out or already evaluated, queue a uniform random unseen valid arch.

        Model-based samplers learn nothing from a pruned trial and tend to propose the same point again; this
        bounds the waste to one proposal per distilled candidate.
        """
        if self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return
        archs = self.space.sample_many(1, self.rng, exclude=seen_arch_ids(self.study))
        if archs:
            self.study.enqueue_trial(self.space.params_of(archs[0]), user_attrs={"fallback_for": number})

    def enqueue_anchors(self, archs: Sequence[Arch]) -> None:
        """Queue `archs` first (once per study: not if tried or already waiting)."""
        seen = seen_arch_ids(self.study)
        waiting = [
            t.system_attrs.get("fixed_params")
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        ]
        for arch in archs:
            params = self.space.params_of(arch)
            if arch.arch_id not in seen and params not in waiting:
                self.study.enqueue_trial(params, user_attrs={"anchor": True})
                log.info("anchor candidate %s queued first", arch.arch_id)

    def enqueue_startup(self, seed: int) -> None:
        trials = self.study.get_trials(deepcopy=False)
        have = sum(is_evaluated(t) for t in trials) + sum(t.state == TrialState.WAITING for t in trials)
        need = self.cfg.n_startup_trials - have
        if need <= 0:
            return
        rng = np.random.default_rng(seed)
        for arch in self.space.sample_many(need, rng, exclude=seen_arch_ids(self.study)):
            self.study.enqueue_trial(self.space.params_of(arch), user_attrs={"startup": True})

    def run(self, n_trials: int) -> str | None:
        """Evaluate until `n_trials` candidates have been distilled; returns why it stopped early, if it did."""
        try:
            return self._run(n_trials)
        finally:
            self.heartbeat.close()

    def _others_running(self, n_trials: int) -> bool:
        """Shared storage: is the study's quota reached only with trials other workers are still running? Then
        wait for them (a dead worker's trial is completed or re-queued once its heartbeat is stale)."""
        while True:
            fail_stale(self.study)
            done, running = progress(self.study.get_trials(deepcopy=False))
            if done >= n_trials or done + running < n_trials:
                return done < n_trials
            time.sleep(max(1.0, self.heartbeat.interval / 2))

    def _run(self, n_trials: int) -> str | None:
        trials = self.study.get_trials(deepcopy=False)
        evaluated = sum(progress(trials))
        done = {
            t.user_attrs["arch_id"]: t
            for t in trials
            if t.state == TrialState.COMPLETE
            and "duplicate_of" not in t.user_attrs
            and "arch_id" in t.user_attrs
        }
        rounds = [t.user_attrs.get("round", -1) for t in trials]
        round_idx = max(rounds, default=-1) + 1
        max_proposals = 20 * n_trials + 100
        proposals = 0
        total = self.space.size() if self.space.enumerable() else None
        while evaluated < n_trials or (self.shared and self._others_running(n_trials)):
            if self.shared:
                evaluated = sum(progress(self.study.get_trials(deepcopy=False)))
                if evaluated >= n_trials:
                    continue
            k = min(self.cfg.episode_size, n_trials - evaluated)
            pending: list[_Pending] = []
            in_round: set[str] = set()
            n_round = 0
            stop: str | None = None
            while n_round < k:
                if total is not None and len(done) + len(in_round) >= total:
                    stop = f"every arch of the space ({total}) has been evaluated"
                    break
                if proposals >= max_proposals:
                    stop = (
                        f"the strategy proposed {proposals} candidates that were ruled out or already "
                        "evaluated; stopping early (relax the constraints or enlarge the space)"
                    )
                    break
                proposals += 1
                if self.shared:
                    fail_stale(self.study)
                    if sum(progress(self.study.get_trials(deepcopy=False))) >= n_trials:
                        break  # other workers took the rest of the quota
                with quiet_optuna():
                    trial = self.study.ask()
                self.heartbeat.hold(trial._trial_id)
                trial.set_user_attr("round", round_idx)
                if self.shared:
                    trial.set_user_attr("worker", self.worker)
                try:
                    arch = self.space.suggest(trial)
                except (ArchError, ValueError) as e:
                    self.filter(trial, f"cannot build an arch: {e}")
                    continue
                trial.set_user_attr("arch_id", arch.arch_id)
                trial.set_user_attr("arch", arch.to_dict())
                why = self.space.violations(arch)
                if why:
                    self.filter(trial, "; ".join(why))
                    continue
                if self.shared:  # what the other workers have finished or are distilling now
                    busy = self._refresh(done, trial.number)
                    if arch.arch_id in busy:
                        self.filter(trial, "being distilled by another worker")
                        continue
                if arch.arch_id in done:  # the sampler learns the known values again; no distillation
                    src = done[arch.arch_id]
                    trial.set_user_attr("duplicate_of", src.number)
                    for key in (
                        "kd_loss_short",
                        "kd_loss_long",
                        "latency_ms",
                        "params_m",
                        "reward",
                        "fidelity",
                    ):
                        if key in src.user_attrs:
                            trial.set_user_attr(key, src.user_attrs[key])
                    sa = src.user_attrs
                    self.complete(trial, sa["latency_ms"], sa["params_m"], sa["kd_loss_short"])
                    self.enqueue_fallback(trial.number)
                    continue
                if arch.arch_id in in_round:
                    self.filter(trial, "duplicate of a candidate of the same round")
                    continue
                trial.set_user_attr("claimed", True)
                if self.shared and not self._within_quota(trial, n_trials):
                    self.filter(trial, "the study's n_trials were taken by other workers", fallback=False)
                    break
                in_round.add(arch.arch_id)
                n_round += 1
                evaluated += 1
                self.session_evaluated += 1
                res, err = _evaluate(self.evaluator, arch, "short", self.tokens)
                trial.set_user_attr("evaluated", True)
                if res is None:
                    self.last_failure = err
                    trial.set_user_attr("fail_reason", err)
                    self.study.tell(trial, state=TrialState.FAIL)
                    self._notify(trial._trial_id)
                    log.warning("trial %d (%s) failed: %s", trial.number, arch.arch_id, err)
                    if self.session_ok == 0 and self.session_evaluated >= max(3, self.cfg.episode_size):
                        raise SearchError(
                            f"the first {self.session_evaluated} candidates all failed; the last with: {err}. "
                            "Fix that before searching (failed trials are kept in the study)"
                        )
                    continue
                self.session_ok += 1
                reward = self.reward(res.kd_loss, res.latency_ms)
                for key, v in (
                    ("kd_loss_short", res.kd_loss),
                    ("latency_ms", res.latency_ms),
                    ("params_m", res.params_m),
                    ("reward", reward),
                    ("tokens_short", self.tokens),
                    ("fidelity", "short"),
                    ("extra_short", res.extra),
                ):
                    trial.set_user_attr(key, v)
                pending.append(_Pending(trial, arch, res, reward))
            self.promote(pending)
            for p in pending:
                self.complete(p.trial, p.result.latency_ms, p.result.params_m, p.result.kd_loss)
                done[p.arch.arch_id] = self.storage.get_trial(p.trial._trial_id)
            round_idx += 1
            if stop:
                return stop
        return None

    def _within_quota(self, trial: optuna.Trial, n_trials: int) -> bool:
        """Shared storage, after `trial` is claimed: is it one of the study's first `n_trials` candidates?

        Candidates are ordered by their slot (the trial number, or the original number of a dead worker's trial
        run again), which the database hands out atomically. Candidates with a lower slot that are still being
        set up (RUNNING, not yet claimed or filtered) are waited for, so two workers claiming the last slot at
        once cannot both win."""
        mine = quota_slot(self.storage.get_trial(trial._trial_id))
        while True:
            fail_stale(self.study)
            trials = self.study.get_trials(deepcopy=False)
            retried = retried_numbers(trials)
            taken, unsure = set(), 0
            for t in trials:
                slot = quota_slot(t)
                if t.number == trial.number or slot >= mine:
                    continue
                if t.state == TrialState.RUNNING:
                    if t.user_attrs.get("claimed"):
                        taken.add(slot)
                    else:
                        unsure += 1  # being set up: may yet take a slot below mine
                elif is_evaluated(t) and t.number not in retried:
                    taken.add(slot)
            if len(taken) >= n_trials:
                return False
            if len(taken) + unsure < n_trials:
                return True
            time.sleep(0.2)

    def _refresh(self, done: dict[str, FrozenTrial], number: int) -> set[str]:
        """Add the other workers' finished candidates to `done`; the arch ids they are distilling now."""
        busy = set()
        for t in self.study.get_trials(deepcopy=False):
            aid = t.user_attrs.get("arch_id")
            if aid is None or t.number == number:
                continue
            if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs:
                done.setdefault(aid, t)
            elif t.state == TrialState.RUNNING and t.user_attrs.get("claimed"):
                busy.add(aid)
        return busy

    def promote(self, pending: list[_Pending]) -> None:
        """Successive halving: the best `promote_fraction` of the round (Pareto rank, then reward) get a long proxy."""
        if self.cfg.promote_fraction <= 0 or not pending:
            return
        n = math.ceil(self.cfg.promote_fraction * len(pending))
        # the study's objectives (CandidateResult has a field of each name)
        ranks = nondominated_rank(
            np.array([[getattr(p.result, o) for o in self.cfg.objectives] for p in pending])
        )
        order = sorted(range(len(pending)), key=lambda i: (ranks[i], -pending[i].reward))
        long_tokens = round(self.tokens * self.cfg.long_proxy_factor)
        for i in order[:n]:
            p = pending[i]
            res, err = _evaluate(self.evaluator, p.arch, "long", long_tokens)
            if res is None:
                p.trial.set_user_attr("long_fail_reason", err)
                log.warning("long proxy of trial %d (%s) failed: %s", p.trial.number, p.arch.arch_id, err)
                continue
            p.trial.set_user_attr("kd_loss_long", res.kd_loss)
            p.trial.set_user_attr("tokens_long", long_tokens)
            p.trial.set_user_attr("reward_long", self.reward(res.kd_loss, p.result.latency_ms))
            p.trial.set_user_attr("fidelity", "long")
            p.trial.set_user_attr("extra_long", res.extra)


def run_search(
    space: SearchSpace,
    evaluator: CandidateEvaluator,
    cfg: SearchConfig,
    *,
    tokens: int,
    teacher_latency_ms: float,
    budgets: Sequence[Budget] = (),
    storage: str | None = None,
    study_name: str = "search",
    run_dir: str | Path | None = None,
    n_trials: int | None = None,
    seed: int = 0,
    latency_predictor: Callable[[Arch], float] | None = None,
    callback: TrialCallback | None = None,
    hardware: str | None = None,
    role: str | None = None,
) -> SearchResult:
    """Search `space` with strategy `cfg.strategy`, distilling candidates through `evaluator`.

    `tokens`: proxy tokens of the short proxy distillation. `n_trials` (default `cfg.n_trials`) counts
    distilled candidates over the whole study, so a resumed search only runs what is left. Storage: `storage`,
    else `cfg.storage`, else SQLite in `run_dir`, else in memory. Results go to `run_dir/search.json` and the
    study's user attr `result`. `callback` sees every finished trial (filtered and failed ones included).
    A server database (PostgreSQL, MySQL: not SQLite) is shared: other workers may run the same study at the
    same time (heartbeats, `kdnas.search.workers`); an SQLite study has one worker at a time. `hardware`: the
    target's fingerprint, recorded on the study; a study measured on other hardware is refused. `role`
    (`kdnas run` on a shared study, `kdnas.search.workers.check_role`): lead, take-over or join; the leader
    is in `result.extra["leader"]`.
    """
    problems = cfg.check()
    if problems:
        raise ConfigError([f"search.{p}" for p in problems])
    if tokens < 1:
        raise SearchError(f"proxy tokens {tokens} must be >= 1")
    if not teacher_latency_ms > 0:
        raise SearchError(
            f"teacher latency {teacher_latency_ms} ms must be > 0 (measure the teacher on the target)"
        )
    n_trials = cfg.n_trials if n_trials is None else n_trials
    space, max_latency_ms = prepare_space(space, cfg, budgets, latency_predictor)
    url = storage_url(cfg, storage, run_dir)
    shared = bool(url and is_shared_url(url) and cfg.heartbeat_interval > 0)
    if shared:  # workers with one seed would propose the same archs in the same order
        seed += 1000 * (os.getpid() % 100_000 + 1)
    # the controller re-scores every observed trial with this search's reward, so a study resumed under another
    # reward (its alpha, beta, loss scale or formula) is read consistently, not as a mix of two
    sampler = make_sampler(
        cfg.strategy,
        space=space,
        cfg=cfg,
        seed=seed,
        budgets_ms=[b.latency_ms for b in budgets],
        reward=search_reward(cfg, teacher_latency_ms),
    )
    if shared:
        assert url is not None
        store = open_shared_storage(url, heartbeat_interval=cfg.heartbeat_interval, grace_period=cfg.grace_period,
                                    max_retry=cfg.max_retry, objectives=list(cfg.objectives))  # fmt: skip
    else:
        store = open_storage(url)
    try:
        study = optuna.create_study(
            storage=store,
            study_name=study_name,
            sampler=sampler,
            load_if_exists=True,
            directions=["minimize"] * len(cfg.objectives),
        )
    except ValueError as e:
        raise SearchError(f"study {study_name!r} in {redact(url)} cannot be used: {e}") from None
    check_hardware(study, hardware, redact(url))
    leader = check_role(study, role, run_identity(run_dir or "."), redact(url)) if shared and role else None
    prev = study.user_attrs.get("objectives")
    if len(study.directions) != len(cfg.objectives) or (prev is not None and prev != list(cfg.objectives)):
        raise SearchError(
            f"study {study_name!r} in {redact(url)} was created with objectives {prev or len(study.directions)}, not "
            f"{list(cfg.objectives)}: use the same objectives to resume, or a new study name"
        )
    study.set_user_attr("objectives", list(cfg.objectives))
    # how a candidate's loss is measured: losses under two settings do not compare (a study from before a key was
    # recorded measured it the old way)
    for key, legacy, how in (
        ("quality", "kd_loss", "measured its candidates' quality as {!r}"),
        ("proxy_readout", "trained", "read its candidates' held-out KD loss with the {!r} read-out"),
        ("proxy_loss", "full", "ranked its candidates by the {!r} held-out KD loss"),
    ):
        if key == "proxy_loss" and cfg.quality != "kd_loss":
            continue  # a 1 - recall / 1 - cosine quality does not read the KD loss
        want = getattr(cfg, key)
        had = study.user_attrs.get(key, legacy if study.trials else want)
        if had != want:
            raise SearchError(
                f"study {study_name!r} in {redact(url)} {how.format(had)}, not {want!r} (search.{key}): the losses "
                f"would not compare; resume with search.{key}: {had} or use a new study name"
            )
        study.set_user_attr(key, want)
    if study.metric_names != list(cfg.objectives):
        with quiet_optuna():  # set_metric_names is marked experimental; optuna-dashboard shows the names
            study.set_metric_names(list(cfg.objectives))
    study.set_user_attr("space", space.to_dict())
    study.set_user_attr("teacher_latency_ms", teacher_latency_ms)
    study.set_user_attr("proxy_tokens", tokens)
    study.set_user_attr("strategies", sorted({*study.user_attrs.get("strategies", []), cfg.strategy}))
    search = _Search(
        study,
        store,
        space,
        evaluator,
        cfg,
        tokens=tokens,
        teacher_latency_ms=teacher_latency_ms,
        max_latency_ms=max_latency_ms,
        callback=callback,
        seed=seed + 1,
    )
    search.resume()
    if cfg.anchors:
        search.enqueue_anchors(
            anchor_archs(space, budgets, margin=cfg.anchor_margin, narrow=cfg.narrow_anchors)
        )
    if needs_startup(cfg.strategy):
        search.enqueue_startup(seed)
    stopped = search.run(n_trials)
    if stopped:
        log.warning("search stopped early: %s", stopped)
    result = summarize(
        study, cfg.strategy, teacher_latency_ms, budgets, storage=redact(url), stopped=stopped,
        tolerance=cfg.kd_loss_tolerance,
    )  # fmt: skip
    if shared and role:
        result.extra["leader"] = study.user_attrs.get(LEADER_ATTR, leader)
    summary = result.to_dict()
    summary.pop("trials")
    study.set_user_attr("result", summary)
    if run_dir is not None:
        result.write_json(Path(run_dir) / RESULT_FILE)
    return result
