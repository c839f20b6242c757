"""The stages of `kdnas run`, one module per step, each a function of explicit inputs.

A stage is `stage(ctx, *, <config sections it reads>, <earlier stages' results it needs>) -> <typed result>`:
`ctx` (`RunContext`) gives the heavy objects built once from the run's config (teacher, corpus splits, search
space, student builder); everything else a stage reads is in its signature. `kdnas.pipeline.STAGES` lists them in
order with what each reads and needs; the results (`kdnas.stages.results`) are what the stage markers store.

- `prepare`: fetch, inspect, data (tokenised splits, vocabulary choices)
- `latency`: the teacher on the target, the predictor, the baselines' side-by-side speed-ups
- `search`: the study, then placement of the candidates by side-by-side speed-ups
- `distill`: full distillation of the recommended students and the baselines
- `evaluate`: fine-tuning on the suite, fidelity, side-by-side latency, retention table
- `finish`: export and report
"""

from kdnas.stages.context import RunContext
from kdnas.stages.results import (
    DataResult,
    DistillResult,
    EvaluateResult,
    ExportResult,
    FetchResult,
    LatencyResult,
    ReportResult,
    SearchOutcome,
    StageResult,
    TeacherResult,
)

__all__ = [
    "DataResult",
    "DistillResult",
    "EvaluateResult",
    "ExportResult",
    "FetchResult",
    "LatencyResult",
    "ReportResult",
    "RunContext",
    "SearchOutcome",
    "StageResult",
    "TeacherResult",
]
