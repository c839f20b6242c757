"""What a latency measurement returns: `Shape` (batch, sequence length) and `LatencyResult`.

Plain dataclasses that travel as JSON between the measuring worker, the cache and the caller.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Shape:
    """An input shape: `batch_size` sequences of `seq_len` real tokens (no padding)."""

    batch_size: int
    """Sequences per forward pass."""
    seq_len: int
    """Tokens per sequence."""

    def __str__(self) -> str:
        return f"b{self.batch_size}/s{self.seq_len}"


@dataclass
class LatencyResult:
    """Latency of one model, one backend, one shape on one machine (times of one forward pass)."""

    median_ms: float
    """Median wall time of a forward pass."""
    p90_ms: float
    """90th percentile."""
    iqr_ms: float
    """Inter-quartile range (p75 - p25), a robust spread."""
    repeats: int
    """Timed forward passes (after warm-up)."""
    ci_rel: float | None
    """Relative width of the 95% order-statistic CI of the median; None when too few repeats for one."""
    backend: str
    """Backend name (torch, onnxruntime, onnxruntime-int8, torch-cuda, fake)."""
    device: str
    """cpu or cuda."""
    threads: int
    """Intra-op threads the worker was pinned to."""
    batch_size: int
    """Input batch size."""
    seq_len: int
    """Input sequence length."""
    fingerprint: str
    """Id of the machine + library versions + threads (kdnas.latency.fingerprint)."""
    model: str = ""
    """What was measured: an arch id, or a config/dir id."""
    attn: str | None = None
    """torch backends: the attention implementation measured (eager or sdpa)."""
    min_ms: float = 0.0
    """Fastest forward pass."""
    timestamp: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    """When it was measured."""
    cached: bool = False
    """True when this came from the on-disk cache rather than a fresh measurement."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Backend details (attention screening times, export seconds, ...)."""

    @property
    def shape(self) -> Shape:
        return Shape(self.batch_size, self.seq_len)

    @property
    def tokens_per_s(self) -> float:
        return self.batch_size * self.seq_len / (self.median_ms / 1e3)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
