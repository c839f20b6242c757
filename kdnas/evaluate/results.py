"""Results of the fine-tuning protocol: one run (`RunResult`), one task over its runs (`TaskResult`), and how a
task's runs are summarised (the lr chosen on mean dev, test mean / std over seeds at it)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from kdnas.evaluate.metrics import MAIN_METRIC

if TYPE_CHECKING:
    from kdnas.data.tasks import Task


@dataclass
class RunResult:
    """One fine-tuning run (one lr, one seed), scored at its best dev epoch."""

    lr: float
    seed: int
    dev: dict[str, float]
    test: dict[str, float]
    best_epoch: int
    epochs_run: int
    steps: int
    train_s: float
    transfer: dict[str, dict[str, float]] = field(default_factory=dict)
    """Zero-shot reference -> metrics of this run's best dev model on that target's test set."""


@dataclass
class TaskResult:
    """The protocol's outcome on one task: the chosen lr and test mean / std over seeds."""

    task: str
    kind: str
    metric: str
    """Main metric (used to choose the lr): accuracy or spearman."""
    best_lr: float
    dev_mean: float
    test_mean: float
    test_std: float
    test_metrics: dict[str, float]
    """Mean over seeds of every metric at the chosen lr."""
    test_metrics_std: dict[str, float]
    n_train: int
    n_dev: int
    n_test: int
    runs: list[RunResult] = field(default_factory=list)
    language: str | None = None
    """Language of the test texts (None: unknown)."""
    zero_shot: dict[str, Any] | None = None
    """For a zero-shot column: source, target, shared classes, excluded target examples (`ZeroShotTask.summary`)."""
    majority_rate: float | None = None
    """Test accuracy of always answering the train split's most frequent class (classification); a score
    near it means the model learned nothing."""
    test_se: float | None = None
    """Standard error of the main test metric from the test set's size alone (sampling error of the test
    split, apart from the seeds' spread): sqrt(p(1-p)/n) for accuracy, (1-r^2)/sqrt(n-3) for a correlation,
    none for F1 / MCC."""
    pair_encoding: str | None = None
    """A pair task: how it was scored (`Task.pair_encoding`: cross | bi | embedding); None for a single-text task
    (and for pair results from before the option, which were all `cross`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskResult:
        d = dict(d)
        d["runs"] = [RunResult(**r) for r in d.get("runs", [])]
        return cls(**d)


def _std(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def majority_rate(task: Task) -> float | None:
    """Test accuracy of the train split's most frequent class (None for regression)."""
    if task.kind != "classification" or not len(task.test):
        return None
    top = statistics.mode(task.train.labels)
    return sum(1 for y in task.test.labels if y == top) / len(task.test)


def test_standard_error(metric: str, value: float, n: int) -> float | None:
    """Sampling standard error of a test metric from the test size (None where no closed form is used)."""
    if metric == "accuracy" and n > 0:
        return math.sqrt(max(0.0, value * (1 - value)) / n)
    if metric in ("spearman", "pearson") and n > 3:
        return (1 - min(1.0, value * value)) / math.sqrt(n - 3)
    return None


def summarize(task: Task, runs: list[RunResult]) -> TaskResult:
    """Choose the lr by mean dev score over seeds; report test at that lr."""
    metric = getattr(task, "metric", None) or MAIN_METRIC[task.kind]
    lrs = sorted({r.lr for r in runs})
    dev_mean = {lr: statistics.fmean(r.dev[metric] for r in runs if r.lr == lr) for lr in lrs}
    best = max(lrs, key=lambda lr: (dev_mean[lr], -lr))
    chosen = [r for r in runs if r.lr == best]
    names = list(chosen[0].test)
    return TaskResult(
        task=task.name, kind=task.kind, metric=metric, best_lr=best, dev_mean=dev_mean[best],
        test_mean=statistics.fmean(r.test[metric] for r in chosen),
        test_std=_std([r.test[metric] for r in chosen]),
        test_metrics={k: statistics.fmean(r.test[k] for r in chosen) for k in names},
        test_metrics_std={k: _std([r.test[k] for r in chosen]) for k in names},
        n_train=len(task.train), n_dev=len(task.dev), n_test=len(task.test), runs=runs,
        language=getattr(task, "language", None), majority_rate=majority_rate(task),
        test_se=test_standard_error(metric, statistics.fmean(r.test[metric] for r in chosen), len(task.test)),
        pair_encoding=getattr(task, "pair_encoding", "cross") if getattr(task, "is_pair", False) else None,
    )  # fmt: skip


def summarize_fixed(
    task: Task, metric: str, dev: dict[str, float], test: dict[str, float], *, majority: float | None
) -> TaskResult:
    """The result of a task scored without training (`pair_encoding: embedding`): one deterministic score, no
    runs, no lr (`best_lr` 0), no spread over seeds."""
    return TaskResult(
        task=task.name, kind=task.kind, metric=metric, best_lr=0.0, dev_mean=dev[metric], test_mean=test[metric],
        test_std=0.0, test_metrics=dict(test), test_metrics_std={k: 0.0 for k in test}, n_train=len(task.train),
        n_dev=len(task.dev), n_test=len(task.test), language=getattr(task, "language", None),
        majority_rate=majority, test_se=test_standard_error(metric, test[metric], len(task.test)),
        pair_encoding="embedding",
    )  # fmt: skip
