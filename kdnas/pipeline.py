"""`kdnas run`: the whole flow, reading top to bottom, each stage resumable.

Every stage writes its outputs into the run dir and a `stages/<name>.json` marker last; a stage whose marker
exists is skipped, so a killed run resumes where it stopped and loses nothing already finished.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas import config as config_mod
from kdnas.config import RunConfig
from kdnas.errors import ConfigError, KdnasError

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What the stages share: the config, the run dir and the values earlier stages produced."""

    cfg: RunConfig
    run_dir: Path
    values: dict[str, Any] = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        p = self.run_dir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


@dataclass
class Stage:
    name: str
    run: Callable[[RunContext], dict[str, Any]]
    """Does the work and returns a JSON-able summary (stored in the marker)."""
    title: str


class NotBuiltYet(KdnasError):
    """A stage whose engine is not in this version yet."""


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON via a temp file + rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------- stages


def stage_fetch(ctx: RunContext) -> dict[str, Any]:
    """Fetch every zoo asset the config names (teacher, corpus sources, tasks) into the cache."""
    from kdnas import zoo

    names = [ctx.cfg.teacher.name, *ctx.cfg.corpus.sources, *ctx.cfg.evaluate.tasks]
    fetched = {}
    for n in dict.fromkeys(names):
        if n in zoo.ASSETS:
            fetched[n] = str(zoo.fetch(n))
    return {"fetched": fetched}


def stage_inspect(ctx: RunContext) -> dict[str, Any]:
    """Load the teacher and record its shape and cost."""
    from kdnas.models.student import arch_of
    from kdnas.models.teacher import load_teacher
    from kdnas.space.cost import forward_flops, param_count

    teacher = load_teacher(ctx.cfg.teacher.name, attn_implementation=ctx.cfg.teacher.attn_implementation)
    arch = arch_of(teacher.config)
    pc = param_count(arch, teacher.config)
    seq = ctx.cfg.target.seq_lens[0]
    out = {
        "teacher": ctx.cfg.teacher.name,
        "family": teacher.config.model_type,
        "arch": arch.to_dict(),
        "arch_id": arch.arch_id,
        "params": pc.total,
        "params_non_embedding": pc.non_embedding,
        "gflops": forward_flops(
            arch, seq_len=seq, batch_size=ctx.cfg.target.batch_size, teacher_config=teacher.config
        )
        / 1e9,
        "seq_len": seq,
    }
    write_json_atomic(ctx.path("teacher.json"), out)
    return out


def _not_built(what: str) -> Callable[[RunContext], dict[str, Any]]:
    def run(ctx: RunContext) -> dict[str, Any]:
        raise NotBuiltYet(f"the {what} stage is not built yet")

    return run


STAGES: list[Stage] = [
    Stage("fetch", stage_fetch, "fetch assets"),
    Stage("inspect", stage_inspect, "inspect teacher"),
    Stage("search", _not_built("search"), "search"),
    Stage("distill", _not_built("full distillation"), "distill recommended students"),
    Stage("evaluate", _not_built("evaluation"), "evaluate against the teacher"),
    Stage("export", _not_built("export"), "export"),
    Stage("report", _not_built("report"), "report"),
]


# ------------------------------------------------------------------------------------------------- the runner


def prepare_run_dir(cfg: RunConfig, run_dir: Path, *, resume: bool) -> None:
    """Create the run dir with its config, or check that a resumed dir was made by the same config."""
    saved = run_dir / "config.yaml"
    if saved.exists():
        old = config_mod.load(str(saved))
        if old.hash() != cfg.hash():
            changes = "\n".join(f"  {d}" for d in config_mod.diff(old, cfg))
            raise ConfigError(
                f"{run_dir} was made by a different config; use another run dir (--run_dir / --name) or the "
                f"same config. Differences (run dir -> now):\n{changes}"
            )
        return
    if resume:
        raise ConfigError(f"{run_dir}: nothing to resume (no config.yaml there)")
    run_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=".config.yaml.")
    with os.fdopen(fd, "w") as f:
        f.write(cfg.to_yaml())
    os.replace(tmp, saved)


def run(
    cfg: RunConfig, *, run_dir: Path | None = None, resume: bool = False, console: Any = None
) -> RunContext:
    """Run every stage in order; finished stages are skipped. Returns the context with each stage's summary."""
    run_dir = Path(run_dir) if run_dir else cfg.resolved_run_dir
    prepare_run_dir(cfg, run_dir, resume=resume)
    ctx = RunContext(cfg=cfg, run_dir=run_dir)
    say = console.print if console is not None else print
    for i, stage in enumerate(STAGES, 1):
        marker = run_dir / "stages" / f"{stage.name}.json"
        head = f"[{i}/{len(STAGES)}] {stage.title}"
        if marker.exists():
            ctx.values[stage.name] = json.loads(marker.read_text())["summary"]
            say(f"{head}: done earlier (skipped)")
            continue
        t0 = time.perf_counter()
        try:
            summary = stage.run(ctx)
        except NotBuiltYet as e:
            say(f"{head}: {e}; stopping here (finished stages are kept in {run_dir})")
            break
        seconds = time.perf_counter() - t0
        ctx.values[stage.name] = summary
        write_json_atomic(marker, {"stage": stage.name, "seconds": round(seconds, 2), "summary": summary})
        say(f"{head}: done in {seconds:.1f} s")
    return ctx
