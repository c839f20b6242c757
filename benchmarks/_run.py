"""Shared by the end-to-end benchmarks: run (or resume) a pipeline run dir and read back what its stages wrote."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdnas import pipeline
from kdnas.config import RunConfig


@dataclass
class FinishedRun:
    """The files of a finished run dir the benchmark tables are printed from."""

    wall_s: float
    """Seconds this invocation took (0-ish when every stage was done earlier)."""
    stage_s: dict[str, float]
    """Stage -> seconds of its first, complete run."""
    table: dict[str, Any]
    """retention.json."""
    students: dict[str, dict[str, Any]]
    """summary.json's students by name."""
    evaluate: dict[str, Any]
    """The evaluate stage's summary (latency, per-round speed-up ranges)."""


def run_and_read(cfg: RunConfig, run_dir: Path) -> FinishedRun:
    t0 = time.perf_counter()
    pipeline.run(
        cfg, run_dir=run_dir, resume=(run_dir / "config.yaml").exists(), progress=sys.stderr.isatty()
    )
    wall = time.perf_counter() - t0
    stages = {
        p.stem: json.loads(p.read_text())["seconds"] for p in sorted((run_dir / "stages").glob("*.json"))
    }
    summary = json.loads((run_dir / "summary.json").read_text())
    return FinishedRun(
        wall_s=wall,
        stage_s=stages,
        table=json.loads((run_dir / "retention.json").read_text()),
        students={s["name"]: s for s in summary["students"]},
        evaluate=json.loads((run_dir / "stages" / "evaluate.json").read_text()).get("summary", {}),
    )
