"""Evaluate one or more encoders on a list of tasks under the shared protocol, and compare them with a teacher.

Used by `kdnas evaluate`, the pipeline's evaluation stage and `benchmarks/evaluate.py`. Zero-shot references
(`SOURCE>TARGET`) share the source's fine-tuning: each source is fine-tuned once per lr x seed, and every such
model is also scored on each of its targets' test sets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.data.tasks import Task, load_task
from kdnas.data.topics import ZeroShotTask, load_zero_shot, split_task_ref
from kdnas.errors import KdnasError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.evaluate.encoder import Encoder
from kdnas.evaluate.finetune import (
    TaskModel,
    TaskResult,
    encode_split,
    finetune,
    predict_logits,
    summarize,
    zero_shot_logits,
)
from kdnas.evaluate.metrics import score
from kdnas.evaluate.retention import ModelReport

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

AnyTask = Task | ZeroShotTask


def load_tasks(
    refs: list[str],
    *,
    cache_dir: str | Path | None = None,
    max_train: int | None = None,
    options: Mapping[str, Mapping[str, str]] | None = None,
) -> list[AnyTask]:
    """Load every task reference up front, so bad input fails before training.

    A reference is a zoo name, a task file / dir, or `SOURCE>TARGET` (zero-shot: a `ZeroShotTask`). Each task
    is loaded once, so a source listed on its own and in zero-shot references is the same `Task` object.
    Repeated references are kept once. `options`: loader keywords of task files by reference
    (`evaluate.task_options`: text_field, text_b_field, label_field, kind, resplit).
    """
    options = options or {}
    loaded: dict[str, Task] = {}
    out: list[AnyTask] = []
    for ref in dict.fromkeys(str(r).strip() for r in refs):
        if split_task_ref(ref) is not None:
            out.append(load_zero_shot(ref, cache_dir=cache_dir, max_train=max_train, loaded=loaded))
            continue
        if ref not in loaded:
            loaded[ref] = load_task(
                ref,
                cache_dir=cache_dir,
                max_train=max_train,
                **dict(options.get(ref, {})),  # type: ignore[arg-type]
            )
        out.append(loaded[ref])
    names = [t.name for t in out]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        from kdnas.errors import DataError

        raise DataError(
            f"tasks: two references load as the same task name {', '.join(clash)} (e.g. two files named alike "
            "in different dirs); rename one file so every result column has its own name"
        )
    return out


@dataclass
class SourcePlan:
    """One source task to fine-tune, whether its own result is reported, and the zero-shot targets it feeds."""

    task: Task
    report: bool = False
    targets: list[ZeroShotTask] = field(default_factory=list)


def plan_sources(tasks: Sequence[AnyTask]) -> list[SourcePlan]:
    """Group the tasks by the task that is fine-tuned: one plan per source, in order of first appearance."""
    plans: dict[str, SourcePlan] = {}
    for t in tasks:
        if isinstance(t, ZeroShotTask):
            plan = plans.setdefault(t.source.name, SourcePlan(t.source))
            plan.targets.append(t)
        else:
            plan = plans.setdefault(t.name, SourcePlan(t))
            plan.report = True
    return list(plans.values())


def transfer_scorer(
    tokenizer: PreTrainedTokenizerBase, zs: ZeroShotTask, cfg: EvaluateConfig
) -> Callable[[TaskModel], dict[str, float]]:
    """Scores a model fine-tuned on `zs.source` on the target test set (tokenized once, here)."""
    data = encode_split(tokenizer, zs.test, "classification", cfg.max_len)
    groups = zs.source_groups

    def run(model: TaskModel) -> dict[str, float]:
        logits = predict_logits(model, data, batch_size=cfg.eval_batch_size)  # [N, K_src]
        pred = zero_shot_logits(logits, groups).argmax(-1)  # [N]
        return score("classification", pred.numpy(), data.labels.numpy(), len(groups))

    return run


def zero_shot_result(zs: ZeroShotTask, source: TaskResult) -> TaskResult:
    """The target's column from the source's runs: the lr chosen on the source dev, target test over seeds."""
    runs = []
    for r in source.runs:
        if zs.name not in r.transfer:
            raise KdnasError(f"{zs.name}: run lr {r.lr} seed {r.seed} of {source.task} was not scored on it")
        runs.append(replace(r, test=r.transfer[zs.name], transfer={}))
    res = summarize(zs, runs)  # type: ignore[arg-type]  # a ZeroShotTask has the name/kind/splits it reads
    assert res.best_lr == source.best_lr  # same dev scores, same choice
    return replace(
        res, n_train=source.n_train, n_dev=source.n_dev, language=zs.language, zero_shot=zs.summary()
    )


def evaluate_encoder(
    encoder: Encoder,
    tasks: Sequence[AnyTask],
    cfg: EvaluateConfig | None = None,
    *,
    on_result: Callable[[ModelReport], None] | None = None,
) -> ModelReport:
    """Run the protocol for `encoder` on each task; results keyed by task name in the order of `tasks`.

    `on_result`, when given, is called after every fine-tuned source task (and its zero-shot targets) with a new
    report holding the results so far: a caller that saves it loses at most the task in progress when the
    process dies (the pipeline's evaluate stage does)."""
    cfg = cfg or EvaluateConfig()
    results: dict[str, TaskResult] = {}
    from kdnas.evaluate.pair_similarity import embedding_result

    arch = None
    try:
        from kdnas.models.student import arch_of

        arch = arch_of(encoder.model.config).describe()
    except KdnasError:  # an encoder family kdnas cannot describe still gets evaluated
        arch = None

    def report() -> ModelReport:
        done = {t.name: results[t.name] for t in tasks if t.name in results}  # in the order of `tasks`
        return ModelReport(name=encoder.name, results=done, params=encoder.params, arch=arch)

    for plan in plan_sources(tasks):
        if plan.report and not plan.targets and plan.task.pair_encoding == "embedding":
            log.info(
                "%s on %s: the cosine of the two embeddings, no fine-tuning", encoder.name, plan.task.name
            )
            results[plan.task.name] = embedding_result(encoder, plan.task, max_len=cfg.max_len)
            if on_result is not None:
                on_result(report())
            continue
        what = plan.task.describe()
        if plan.targets:
            what += f", zero-shot to {', '.join(z.target for z in plan.targets)}"
        log.info("%s on %s", encoder.name, what)
        transfer = {z.name: transfer_scorer(encoder.tokenizer, z, cfg) for z in plan.targets}
        res, _ = finetune(encoder.model, encoder.tokenizer, plan.task, cfg, transfer=transfer or None)
        for z in plan.targets:
            results[z.name] = zero_shot_result(z, res)
        if plan.report:
            results[plan.task.name] = replace(res, runs=[replace(r, transfer={}) for r in res.runs])
        if on_result is not None:
            on_result(report())
    missing = [t.name for t in tasks if t.name not in results]
    assert not missing, f"tasks without a result: {missing}"
    return report()


def config_with(cfg: EvaluateConfig, **changes: Any) -> EvaluateConfig:
    """A copy of `cfg` with `changes` applied (None values are ignored), validated."""
    from kdnas.errors import ConfigError

    new = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    problems = new.check()
    if problems:
        raise ConfigError([f"evaluate.{p}" for p in problems])
    return new


def evaluate(
    model: Any, tasks: Sequence[Any], cfg: EvaluateConfig | None = None, *, name: str | None = None
) -> ModelReport:
    """Fine-tune and score `model` (a saved model dir, or an `Encoder`) on `tasks` (zoo names, task files or dirs,
    `SRC>TGT` zero-shot references, or loaded tasks) under the protocol `cfg` (default `EvaluateConfig()`):
    what `kdnas evaluate MODEL_DIR --tasks ...` runs for one model."""
    from kdnas.evaluate.encoder import load_encoder

    cfg = cfg or EvaluateConfig()
    refs = [t for t in tasks if isinstance(t, str)]
    loaded = load_tasks(refs, max_train=cfg.max_train_examples, options=cfg.task_options) if refs else []
    it = iter(loaded)
    all_tasks = [next(it) if isinstance(t, str) else t for t in tasks]
    enc = model if isinstance(model, Encoder) else load_encoder(str(model), name=name)
    return evaluate_encoder(enc, all_tasks, cfg)
