"""The real candidate evaluator of `kdnas search` (proxy distillation + latency measurement).

Placeholder until the pipeline wiring lands: `kdnas search --fake` runs with the synthetic evaluator instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from kdnas.errors import SearchError

if TYPE_CHECKING:
    from kdnas.config import RunConfig
    from kdnas.search.candidate import EvaluatorSetup


def make_evaluator(cfg: RunConfig, run_dir: Path) -> EvaluatorSetup:
    """The evaluator for a run (teacher loaded, proxy data built, latency engine ready) and the teacher's numbers."""
    raise SearchError(
        "the real search evaluator (proxy distillation + latency on the target) is not wired yet; "
        "run `kdnas search CONFIG --fake` to try the search with the synthetic evaluator"
    )
