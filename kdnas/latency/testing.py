"""Test double: `FakeBackend`, a deterministic latency computed from FLOPs, for testing code that measures.

The search and pipeline tests use it (backend name `fake`) to run without timing anything real. Options make it
misbehave on purpose in the isolated runner: `sleep_s` (slow), `crash` (exit), `hang` (never return).
"""

from __future__ import annotations

import os
import time
from typing import Any

from kdnas.errors import LatencyError
from kdnas.latency.backends import LatencyBackend
from kdnas.latency.features import arch_features
from kdnas.latency.result import LatencyResult, Shape


class FakeBackend(LatencyBackend):
    """Latency = 0.05 ms + 0.02 ms per layer + GFLOP / `gflops_per_s`, times 1 + 0.02 * noise in [-1, 1).

    Deterministic: the same arch and shape always give the same number (the "noise" is a hash of the arch id).
    Runs in-process by default (`isolate = False`); the runner tests pass options to exercise workers.
    """

    name = "fake"
    devices = ("cpu", "cuda")
    isolate = False
    times_static = True

    def __init__(
        self,
        *,
        gflops_per_s: float = 50.0,
        sleep_s: float = 0.0,
        crash: bool = False,
        hang: bool = False,
        fail_arch: str | None = None,
        **kw: Any,
    ):
        super().__init__(**kw)
        self.gflops_per_s = gflops_per_s
        self.sleep_s = sleep_s
        self.crash = crash
        self.hang = hang
        self.fail_arch = fail_arch

    def latency_ms(self, arch: Any, shape: Shape) -> float:
        f = arch_features(arch, batch_size=shape.batch_size, seq_len=shape.seq_len)
        base = 0.05 + 0.02 * f["layers"] + (f["gemm_gflop"] + f["attn_gflop"]) / self.gflops_per_s * 1e3
        noise = (sum(map(ord, arch.arch_id)) % 100) / 50 - 1
        return base * (1 + 0.02 * noise)

    def measure(self, model: Any, shape: Shape) -> LatencyResult:
        spec = self.spec_of(model)
        if spec is None:
            raise LatencyError("the fake backend measures a ModelSpec or an Arch")
        if spec.kind == "static":  # a table lookup: a fixed small time
            return self._result(spec, shape, 0.01)
        arch = spec.get_arch()
        if self.crash:
            os._exit(3)
        if self.hang:
            while True:
                time.sleep(1)
        if self.fail_arch and arch.arch_id == self.fail_arch:
            raise LatencyError(f"fake failure for {arch.arch_id}")
        if self.sleep_s:
            time.sleep(self.sleep_s)
        return self._result(spec, shape, self.latency_ms(arch, shape))

    def _result(self, spec: Any, shape: Shape, ms: float) -> LatencyResult:
        return LatencyResult(
            median_ms=ms,
            p90_ms=ms * 1.05,
            iqr_ms=ms * 0.04,
            min_ms=ms * 0.97,
            repeats=10,
            ci_rel=0.01,
            backend=self.name,
            device=self.device,
            threads=self.threads,
            batch_size=shape.batch_size,
            seq_len=shape.seq_len,
            fingerprint=self.fingerprint_id,
            model=spec.label,
        )
