"""The Python API of a whole run: `kdnas.run(config, **overrides) -> RunResult`, `kdnas.read_run(run_dir)`.

What `kdnas run` does, for a notebook or a script: the same stages, the same run dir (resumable), and what they
wrote read back as one typed result.

    import kdnas
    result = kdnas.run("smoke", run_dir="runs/nb", **{"search.n_trials": 6})
    result.students["student-3x"].export_dir, result.retention["rows"][0]["scores"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas import run_dir as rd
from kdnas.errors import ConfigError


@dataclass
class StudentResult:
    """One recommended student of a run."""

    name: str
    arch_id: str
    budget: str
    """The latency budget it was recommended for (e.g. `7x`, `=tinybert-4L-312H`)."""
    model_dir: Path
    """The distilled HF folder (`students/<name>/model`)."""
    export_dir: Path | None
    """The exported folder (HF + ONNX + sentence-transformers + card), None before the export stage."""
    latency_ms: float | None = None
    speedup: float | None = None
    avg_retention: float | None = None
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a finished (or partly finished) run dir holds."""

    run_dir: Path
    stage_seconds: dict[str, float]
    """Stage -> seconds of its first complete run; a stage not run yet is absent."""
    students: dict[str, StudentResult]
    retention: dict[str, Any] | None
    """retention.json: tasks, metrics, and one row per model (teacher, baselines, students) with scores, stds,
    retention, latency, speed-up and fidelity; None before evaluation."""
    pareto: list[str]
    """Arch ids of the search's Pareto front (proxy KD loss vs latency)."""

    @property
    def finished(self) -> bool:
        return "report" in self.stage_seconds


def _overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """`search__n_trials=8` or `**{"search.n_trials": 8}` -> {"search.n_trials": 8}."""
    out = {}
    for k, v in kw.items():
        key = k.replace("__", ".")
        if "." not in key:
            raise ConfigError(
                f"{k}: overrides are section.key (e.g. search__n_trials=8 or **{{'search.n_trials': 8}})"
            )
        out[key] = v
    return out


def run(
    config: str | Path | None = None,
    *,
    run_dir: str | Path | None = None,
    resume: bool | None = None,
    progress: bool = False,
    **overrides: Any,
) -> RunResult:
    """Run the whole pipeline on `config` (a recipe name, a YAML path, or None for the embedded default) with
    `overrides` applied, into `run_dir` (default: the config's). `resume=None` resumes a run dir that already
    holds a run (finished stages are skipped) and starts a new one otherwise."""
    from kdnas import config as config_mod
    from kdnas import pipeline

    cfg = config_mod.load(None if config is None else str(config), _overrides(overrides))
    d = Path(run_dir) if run_dir is not None else cfg.resolved_run_dir
    if resume is None:
        resume = (d / rd.CONFIG).exists()
    pipeline.run(cfg, run_dir=d, resume=resume, progress=progress)
    return read_run(d)


def read_run(run_dir: str | Path) -> RunResult:
    """What the stages of `run_dir` wrote, as a RunResult (ConfigError when it is not a kdnas run dir)."""
    d = Path(run_dir)
    if not (d / rd.CONFIG).is_file():
        raise ConfigError(f"{d}: not a kdnas run dir (no config.yaml); pass the --run-dir of a `kdnas run`")
    stages = {
        p.stem: float(json.loads(p.read_text())["seconds"]) for p in sorted((d / rd.STAGES).glob("*.json"))
    }
    table = None
    rows: dict[str, Any] = {}
    if (d / rd.RETENTION).is_file():
        table = json.loads((d / rd.RETENTION).read_text())
        rows = {r["model"]: r for r in table["rows"]}
    students: dict[str, StudentResult] = {}
    if (d / rd.SUMMARY).is_file():
        for s in json.loads((d / rd.SUMMARY).read_text())["students"]:
            r = rows.get(s["name"], {})
            export = d / rd.EXPORT / s["name"]
            given = s.get("model_dir") or Path(rd.STUDENTS) / s["name"] / "model"
            model_dir = rd.inside(d, given, f"{d / rd.SUMMARY}: model_dir of {s['name']}")
            students[s["name"]] = StudentResult(
                name=s["name"],
                arch_id=s.get("arch_id", ""),
                budget=str(s.get("budget_label", "")),
                model_dir=model_dir,
                export_dir=export if export.is_dir() else None,
                latency_ms=r.get("latency_ms"),
                speedup=r.get("speedup"),
                avg_retention=r.get("avg_retention"),
                scores=dict(r.get("scores", {})),
            )
    pareto = []
    if (d / rd.SEARCH).is_file():
        pareto = [p.get("arch_id", "") for p in json.loads((d / rd.SEARCH).read_text()).get("pareto", [])]
    return RunResult(run_dir=d, stage_seconds=stages, students=students, retention=table, pareto=pareto)
