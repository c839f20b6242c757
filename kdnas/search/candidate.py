"""The contract between a search and the pipeline: `CandidateEvaluator.evaluate(arch, fidelity=, tokens=)`
returns a `CandidateResult` (proxy KD loss, latency, params) for one candidate arch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

Fidelity = Literal["short", "long"]


@dataclass
class CandidateResult:
    """What one evaluation of a candidate measured."""

    kd_loss: float
    """Normalised held-out proxy KD loss after the proxy distillation (lower is better)."""
    latency_ms: float
    """Median latency on the search target (ms)."""
    params_m: float
    """Parameters in millions (embeddings included)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """JSON-serialisable details (steps, wall time, p90 latency, ...), stored in the trial's user attrs."""


@runtime_checkable
class CandidateEvaluator(Protocol):
    """Distils and measures candidates. Raising (or returning a NaN loss) fails the trial, not the search."""

    def evaluate(self, arch: Arch, *, fidelity: Fidelity, tokens: int) -> CandidateResult:
        """Distil `arch` on `tokens` proxy tokens (`fidelity` short or long) and measure it."""
        ...


@dataclass
class EvaluatorSetup:
    """What `kdnas.search.evaluator.make_evaluator` hands the search: the evaluator and the teacher's numbers."""

    evaluator: CandidateEvaluator
    """Distils and measures candidates."""
    teacher_config: PretrainedConfig
    """The teacher's HF config (the search space is derived from it)."""
    teacher_latency_ms: float
    """The teacher's latency on the target (ms): speed-up budgets and the KD-NAS reward are relative to it."""
    latency_predictor: Callable[[Arch], float] | None = None
    """Predicted latency (ms) of an arch without measuring it: rules out candidates over budget before distillation."""
