"""Retention tables: per task and on average, student score / teacher score, speed-up and params ratio.

Scores come from the fine-tuning protocol (`TaskResult`); latencies are passed in (model name -> latency_ms).
Written as JSON and as a Markdown table.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kdnas.errors import KdnasError
from kdnas.evaluate.finetune import TaskResult


@dataclass
class ModelReport:
    """One model's results under the protocol, task name -> result."""

    name: str
    results: dict[str, TaskResult]
    params: int | None = None
    arch: str | None = None
    """Shape of the encoder (Arch.describe()), if known."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params, "arch": self.arch,
                "results": {k: v.to_dict() for k, v in self.results.items()}}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelReport:
        return cls(name=d["name"], params=d.get("params"), arch=d.get("arch"),
                   results={k: TaskResult.from_dict(v) for k, v in d["results"].items()})  # fmt: skip


@dataclass
class RetentionRow:
    """A model's scores next to the teacher's."""

    model: str
    scores: dict[str, float]
    """Task -> test score (main metric, mean over seeds)."""
    stds: dict[str, float]
    """Task -> std over seeds."""
    retention: dict[str, float | None]
    """Task -> score / teacher score (None where the teacher scored <= 0)."""
    avg_retention: float | None
    params: int | None = None
    params_ratio: float | None = None
    """params / teacher params."""
    latency_ms: float | None = None
    speedup: float | None = None
    """teacher latency / this model's latency."""


@dataclass
class RetentionTable:
    """Teacher first, then every other model, on the same tasks."""

    tasks: list[str]
    metrics: dict[str, str]
    """Task -> main metric name."""
    rows: list[RetentionRow]
    teacher: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write_json(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return p

    def to_markdown(self) -> str:
        head = ["model", *(f"{t} ({self.metrics[t]})" for t in self.tasks), "avg retention", "speed-up",
                "params (M)", "params ratio"]  # fmt: skip
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.model]
            for t in self.tasks:
                cell = f"{100 * r.scores[t]:.2f} ± {100 * r.stds[t]:.2f}" if t in r.scores else "–"
                ret = r.retention.get(t)
                if ret is not None and r.model != self.teacher:
                    cell += f" ({100 * ret:.1f}%)"
                cells.append(cell)
            cells.append(_fmt(r.avg_retention, "{:.1%}"))
            cells.append(_fmt(r.speedup, "{:.2f}x"))
            cells.append(_fmt(None if r.params is None else r.params / 1e6, "{:.1f}"))
            cells.append(_fmt(r.params_ratio, "{:.3f}"))
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Scores: test, main metric x 100, mean ± std over seeds at the lr chosen on dev; "
                     "(x%) = retention of the teacher's score.")  # fmt: skip
        lines.extend(self.notes)
        return "\n".join(lines) + "\n"

    def write_markdown(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(self.to_markdown())
        return p


def _fmt(v: float | None, f: str) -> str:
    return "–" if v is None else f.format(v)


def retention(score: float, teacher_score: float) -> float | None:
    """score / teacher_score; None where the teacher's score is not positive (ratio meaningless)."""
    return score / teacher_score if teacher_score > 0 else None


def retention_table(
    teacher: ModelReport,
    models: list[ModelReport],
    *,
    latency_ms: dict[str, float] | None = None,
) -> RetentionTable:
    """Compare every model with the teacher on the teacher's tasks.

    latency_ms: model name -> latency (e.g. from `kdnas.latency` on the configured target); the teacher's entry
    is needed for speed-ups. Tasks a model lacks are left out of its average.
    """
    tasks = list(teacher.results)
    if not tasks:
        raise KdnasError(f"{teacher.name}: no task results to compare against")
    lat = latency_ms or {}
    t_lat = lat.get(teacher.name)
    rows = []
    for m in [teacher, *models]:
        scores = {t: m.results[t].test_mean for t in tasks if t in m.results}
        stds = {t: m.results[t].test_std for t in tasks if t in m.results}
        ret = {t: retention(scores[t], teacher.results[t].test_mean) for t in scores}
        vals = [v for v in ret.values() if v is not None]
        m_lat = lat.get(m.name)
        rows.append(RetentionRow(
            model=m.name, scores=scores, stds=stds, retention=ret,
            avg_retention=statistics.fmean(vals) if vals else None,
            params=m.params,
            params_ratio=m.params / teacher.params if m.params and teacher.params else None,
            latency_ms=m_lat,
            speedup=t_lat / m_lat if t_lat and m_lat else None,
        ))  # fmt: skip
    notes = []
    if lat and t_lat is None:
        notes.append(f"No latency for the teacher {teacher.name!r}: speed-ups left out.")
    return RetentionTable(tasks=tasks, metrics={t: teacher.results[t].metric for t in tasks}, rows=rows,
                          teacher=teacher.name, notes=notes)  # fmt: skip
