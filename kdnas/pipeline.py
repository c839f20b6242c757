"""`kdnas run`: the whole flow as a list of stages, each resumable.

A stage is a function of explicit inputs (`kdnas.stages`): the run's shared objects (`RunContext`), the config
sections it `reads` and the typed results of the earlier stages it `needs`; it returns its own typed result.
Every stage writes its outputs into the run dir and a `stages/<name>.json` marker last (the result as
`summary`); a stage whose marker exists is skipped and its result read back, so a killed run resumes where it
stopped and loses nothing already finished.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas._io import write_json_atomic
from kdnas.config import RunConfig
from kdnas.errors import ConfigError, KdnasError
from kdnas.stages import results as res
from kdnas.stages.context import RunContext
from kdnas.stages.distill import distill
from kdnas.stages.evaluate import evaluate
from kdnas.stages.finish import export, report
from kdnas.stages.latency import latency
from kdnas.stages.prepare import data, fetch, inspect
from kdnas.stages.search import search

__all__ = ["STAGES", "NotBuiltYet", "RunContext", "Stage", "run", "write_json_atomic"]


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[..., Any]
    """`run(ctx, **{section: cfg.<section> for reads}, **{stage: result for needs})` does the work and returns
    a `StageResult` (or a JSON-able dict), stored in the marker."""
    title: str
    reads: tuple[str, ...] = ()
    """The `RunConfig` sections the stage reads, passed by name."""
    needs: tuple[str, ...] = ()
    """The earlier stages whose results it takes, passed by stage name."""
    result: type[res.StageResult] | None = None
    """The type of its result (read back from the marker of a finished stage); None: a plain dict."""
    frees_scratch: bool = False
    """No later stage reads the teacher cache it filled (nor the checkpoints of the models it finished): they are
    deleted once it has finished (`run_dir.scratch`), unless `distill.keep_teacher_cache`."""

    def inputs(self, cfg: RunConfig, done: dict[str, Any]) -> dict[str, Any]:
        return {**{s: getattr(cfg, s) for s in self.reads}, **{n: done[n] for n in self.needs}}

    def load(self, summary: dict[str, Any]) -> Any:
        return self.result.from_dict(summary) if self.result is not None else summary


class NotBuiltYet(KdnasError):
    """A stage whose engine is not in this version yet."""


STAGES: list[Stage] = [
    Stage("fetch", fetch, "fetch assets", reads=("teacher", "corpus", "evaluate"), result=res.FetchResult),
    Stage("inspect", inspect, "inspect the teacher", reads=("teacher", "target"), result=res.TeacherResult),
    Stage("data", data, "tokenize and split the corpus", result=res.DataResult),
    Stage(
        "latency",
        latency,
        "measure the teacher, calibrate the latency predictor",
        reads=("target", "evaluate", "search"),
        result=res.LatencyResult,
    ),
    Stage(
        "search",
        search,
        "search student architectures",
        reads=("search", "target", "distill", "evaluate"),
        needs=("latency",),
        result=res.SearchOutcome,
        frees_scratch=True,  # its cache is the proxy split's; the distill stage distils on the train split
    ),
    Stage(
        "distill",
        distill,
        "distil the recommended students and baselines",
        reads=("distill", "evaluate"),
        needs=("search", "latency"),
        result=res.DistillResult,
        frees_scratch=True,
    ),
    Stage(
        "evaluate",
        evaluate,
        "evaluate against the teacher",
        reads=("evaluate", "target", "teacher"),
        needs=("distill",),
        result=res.EvaluateResult,
    ),
    Stage("export", export, "export", reads=("export", "target"), result=res.ExportResult),
    Stage("report", report, "report", result=res.ReportResult),
]
assert tuple(s.name for s in STAGES) == rd.STAGE_NAMES  # the run dir's markers and rewinds follow this order


# ------------------------------------------------------------------------------------------------- the runner


rerun_stage = rd.rerun_stage
prepare_run_dir = rd.prepare


def run(
    cfg: RunConfig,
    *,
    run_dir: Path | None = None,
    resume: bool = False,
    console: Any = None,
    progress: bool = True,
    until: str | None = None,
    role: str | None = None,
    quiet: bool = False,
) -> RunContext:
    """Run every stage in order (up to and including `until`); finished stages are skipped. Returns the
    context with each stage's result in `values`. `role`: see `RunContext.role`. `progress`: bars (a terminal),
    else one line per step; `quiet`: neither, only the stage lines."""
    run_dir = (Path(run_dir) if run_dir else cfg.resolved_run_dir).resolve()
    if cfg.evaluate.task_distill:
        raise ConfigError(
            "evaluate.task_distill: not part of `kdnas run` yet; run it per model with "
            "`kdnas evaluate MODEL_DIR --teacher T --task-distill`"
        )
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per saved shard drowns the run's own progress lines
    ctx = RunContext(
        cfg=cfg, run_dir=run_dir, console=console, progress=progress and not quiet, quiet=quiet, role=role
    )
    say = ctx.say
    rd.prepare(cfg, run_dir, resume=resume, say=say)
    for i, stage in enumerate(STAGES, 1):
        marker = rd.marker(run_dir, stage.name)
        head = f"[{i}/{len(STAGES)}] {stage.title}"
        if marker.exists():
            ctx.values[stage.name] = stage.load(json.loads(marker.read_text())["summary"])
            say(f"{head}: done earlier (skipped)")
            if until == stage.name:
                break
            continue
        t0 = time.perf_counter()
        try:
            result = stage.run(ctx, **stage.inputs(cfg, ctx.values))
        except NotBuiltYet as e:
            say(f"{head}: {e}; stopping here (finished stages are kept in {run_dir})")
            break
        seconds = time.perf_counter() - t0
        ctx.values[stage.name] = result
        summary = result.to_dict() if isinstance(result, res.StageResult) else result
        write_json_atomic(marker, {"stage": stage.name, "seconds": round(seconds, 2), "summary": summary})
        say(f"{head}: done in {seconds:.1f} s")
        if stage.frees_scratch and not cfg.distill.keep_teacher_cache:
            _free_scratch(run_dir, say)  # the run's disk peaks at one stage's cache, not the sum
        if until == stage.name:
            break
    return ctx


def _free_scratch(run_dir: Path, say: Callable[[str], None]) -> None:
    """After a stage that `frees_scratch`: its teacher cache and the finished models' checkpoints (`run_dir.scratch`;
    `force`: whatever stage comes next fills its own cache); a kill before this leaves them for `kdnas clean`."""
    items = [s for s in rd.scratch(run_dir, force=True) if s.kept is None]
    if items:
        models = {s.path.parent for s in items if s.path.name != rd.TEACHER_CACHE}
        what = ["the teacher cache"] if any(s.path.name == rd.TEACHER_CACHE for s in items) else []
        what += [f"the training checkpoints of {len(models)} distilled model(s)"] if models else []
        freed = rd.free(items)
        say(
            f"  freed {rd.size_text(freed)}: {' and '.join(what)} (distill.keep_teacher_cache: true keeps them "
            "for a rerun after a config change)"
        )
