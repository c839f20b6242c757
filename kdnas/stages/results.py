"""Typed results of the stages: what each returns, what its marker (`stages/<name>.json`) stores as `summary`
and what a resumed run reads back for the stages after it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from kdnas.errors import ConfigError

R = TypeVar("R", bound="StageResult")


@dataclass
class StageResult:
    """Base of the stage results. `to_dict()` is JSON-able; fields marked `omit_none` are left out when None
    (as markers written before the types existed had them)."""

    stage: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.metadata.get("omit_none"):
                continue
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls: type[R], d: dict[str, Any]) -> R:
        """Read a marker's summary back; keys this version does not know are ignored, a missing required one is
        an error that says how to redo the stage."""
        fields = dataclasses.fields(cls)
        missing = [
            f.name
            for f in fields
            if f.name not in d
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(
                f"stages/{cls.stage}.json lacks {', '.join(missing)} (written by another kdnas version?): delete "
                f"that marker to run the {cls.stage} stage again"
            )
        names = {f.name for f in fields}
        return cls(**{k: v for k, v in d.items() if k in names})


OMIT_NONE = {"omit_none": True}
"""Field metadata: left out of `to_dict()` when None."""


@dataclass
class FetchResult(StageResult):
    stage: ClassVar[str] = "fetch"
    fetched: dict[str, str] = field(default_factory=dict)
    """Zoo asset name -> its cached path."""


@dataclass
class TeacherResult(StageResult):
    """The teacher's shape and cost (also written as teacher.json)."""

    stage: ClassVar[str] = "inspect"
    teacher: str
    name: str
    family: str
    arch: dict[str, Any]
    arch_id: str
    params: int
    params_non_embedding: int
    gflops: float
    seq_len: int


@dataclass
class DataResult(StageResult):
    """Rows and tokens of each split; the kept vocabulary per `vocab` choice when the space has some."""

    stage: ClassVar[str] = "data"
    proxy: dict[str, int]
    train: dict[str, int]
    heldout: dict[str, int]
    vocab: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)


@dataclass
class LatencyResult(StageResult):
    stage: ClassVar[str] = "latency"
    teacher: dict[str, Any]
    """The teacher's `LatencyResult.to_dict()` on the target."""
    teacher_latency_ms: float
    predictor: Any = None
    """The calibration's summary, "cached", or None."""
    baselines: dict[str, Any] | None = field(default=None, metadata=OMIT_NONE)
    """Per hand-made baseline: speed-up over the teacher side by side, its range over the rounds, median ms."""

    def baseline_speedups(self) -> dict[str, float]:
        return {n: float(v["speedup"]) for n, v in (self.baselines or {}).items() if isinstance(v, dict)}


@dataclass
class SearchOutcome(StageResult):
    stage: ClassVar[str] = "search"
    n_evaluated: int
    hypervolume: float | None
    kendall_tau_short_long: float | None
    pareto: list[str]
    recommendations: list[dict[str, Any]]
    """Per budget (`Recommendation.to_dict()`), placed side by side when `target.place_candidates` > 0."""
    search_recommendations: list[dict[str, Any]] = field(default_factory=list)
    """The search's own, from each candidate's own timing."""
    placed_side_by_side: bool = False
    leader: str | None = None
    """With a shared storage: the run dir of the run that runs the stages after the search."""

    def recommended(self) -> list[dict[str, Any]]:
        return [r for r in self.recommendations if r.get("arch")]


@dataclass
class DistillResult(StageResult):
    """The distilled students and baselines (also written as summary.json); model dirs relative to the run."""

    stage: ClassVar[str] = "distill"
    students: list[dict[str, Any]]
    baselines: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class EvaluateResult(StageResult):
    stage: ClassVar[str] = "evaluate"
    retention: list[dict[str, Any]]
    latency_ms: dict[str, float]
    speedup_range: dict[str, list[float]]
    latency_rounds: int


@dataclass
class ExportResult(StageResult):
    stage: ClassVar[str] = "export"
    exported: list[str] = field(default_factory=list)


@dataclass
class ReportResult(StageResult):
    stage: ClassVar[str] = "report"
    files: dict[str, str] = field(default_factory=dict)
