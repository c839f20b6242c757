"""The trials of a search study read back: a `TrialRecord` per trial, the `SearchResult` of a study, and what
counts as distilled in a study shared by several workers (a dead worker's trial run again counts once, by its copy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from kdnas.search.objectives import Budget
from kdnas.search.results import (
    SearchResult,
    TrialRecord,
    default_reference,
    hypervolume_2d,
    kendall_tau,
    pareto_records,
    recommend,
)
from kdnas.space.arch import Arch


def trial_record(t: FrozenTrial) -> TrialRecord | None:
    """The TrialRecord of one trial of a search study (None for a waiting trial)."""
    if t.state == TrialState.WAITING:
        return None
    a = t.user_attrs
    state = {
        TrialState.RUNNING: "running",
        TrialState.PRUNED: "filtered",
        TrialState.FAIL: "failed",
        TrialState.COMPLETE: "duplicate" if "duplicate_of" in a else "complete",
    }[t.state]
    return TrialRecord(
        number=t.number,
        state=state,
        arch=Arch(**a["arch"]) if "arch" in a else None,  # filtered archs may be invalid: no validation
        kd_loss_short=a.get("kd_loss_short"),
        kd_loss_long=a.get("kd_loss_long"),
        latency_ms=a.get("latency_ms"),
        params_m=a.get("params_m"),
        reward=a.get("reward"),
        reason=a.get("fail_reason") or a.get("filtered_reason") or a.get("long_fail_reason"),
        round=a.get("round"),
        evaluated=is_evaluated(t),
    )


def read_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of a search study as a TrialRecord (waiting trials left out)."""
    return [r for t in study.get_trials(deepcopy=False) if (r := trial_record(t)) is not None]


def is_evaluated(t: FrozenTrial) -> bool:
    """Did this trial cost a distillation (completed or failed once evaluated)?"""
    if t.state == TrialState.COMPLETE:
        return "duplicate_of" not in t.user_attrs
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("evaluated"))


def quota_slot(t: FrozenTrial) -> int:
    """A candidate's place in a shared study's quota: its number, or the first number of the trial it re-runs."""
    return int(t.system_attrs.get("failed_trial", t.number))


def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of dead workers' trials that were completed or re-queued as a later trial (which counts instead)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def progress(trials: Sequence[FrozenTrial]) -> tuple[int, int]:
    """(distilled candidates, candidates being distilled now by some worker) of a study's trials; a dead
    worker's trial that was run again counts once, by its copy."""
    retried = retried_numbers(trials)
    done = sum(is_evaluated(t) and t.number not in retried for t in trials)
    running = sum(t.state == TrialState.RUNNING and bool(t.user_attrs.get("claimed")) for t in trials)
    return done, running


def summarize(
    study: optuna.Study,
    strategy: str,
    teacher_latency_ms: float,
    budgets: Sequence[Budget],
    *,
    storage: str = "memory",
    stopped: str | None = None,
    reference: tuple[float, float] | None = None,
    tolerance: float = 0.0,
) -> SearchResult:
    """The SearchResult of a study (also usable on a study opened later, e.g. from optuna-dashboard's storage).

    The Pareto front is over the study's objectives (kd_loss, latency_ms and params_m when it is one); the
    hypervolume is always the (KD loss, latency) area of that front, comparable across 2- and 3-objective runs.
    `tolerance`: see `recommend` (ties in KD loss go to the smaller model).
    """
    records = read_records(study)
    objectives = list(study.user_attrs.get("objectives") or ["kd_loss", "latency_ms"])
    front = pareto_records(records, objectives)
    ref = reference or default_reference(teacher_latency_ms)
    hv = hypervolume_2d(np.array([[r.kd_loss_short, r.latency_ms] for r in front], dtype=np.float64), ref)
    tau, n_promoted = kendall_tau(records)
    extra: dict[str, Any] = {"budgets": [b.to_dict() for b in budgets], "objectives": objectives}
    return SearchResult(
        study_name=study.study_name,
        storage=storage,
        strategy=strategy,
        records=records,
        pareto=front,
        hypervolume=hv,
        reference=ref,
        recommendations=recommend(records, budgets, tolerance=tolerance),
        kendall_tau=tau,
        n_promoted=n_promoted,
        teacher_latency_ms=teacher_latency_ms,
        stopped_reason=stopped,
        extra=extra,
    )
