"""Test doubles for searches: a deterministic synthetic `CandidateEvaluator` (loss, latency and params as smooth
functions of the arch, plus per-arch quirks and seeded noise) that can also fail or diverge on request.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdnas.search.candidate import CandidateResult, EvaluatorSetup, Fidelity
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig

MINILM_L6 = Arch(num_layers=6, hidden_size=384, num_heads=12, ffn_size=1536)


def _unit(*key: Any) -> float:
    """A deterministic pseudo-random number in [0, 1) from a key."""
    h = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclass
class FakeEvaluator:
    """A synthetic `CandidateEvaluator`: no model is built, results are deterministic in (arch, fidelity, seed).

    * params_m: embeddings (vocab x hidden) plus 4H^2 + 2HF per layer (bottleneck widths for mobilebert);
    * latency_ms: a FLOPs model at `seq_len` (50 GFLOP/s plus 0.2 ms overhead) with +-`latency_noise` jitter;
    * kd_loss: falls with depth and width relative to the teacher, plus a fixed per-arch quirk and noise; the
      long fidelity lowers it (by ~12%) with its own smaller noise, so short and long ranks agree but not fully.
    """

    teacher: Arch = MINILM_L6
    """The teacher's shape (losses and the reward are relative to it)."""
    vocab_size: int = 30522
    seq_len: int = 128
    noise: float = 0.02
    """Std of the short proxy's evaluation noise on kd_loss."""
    latency_noise: float = 0.02
    seed: int = 0
    fail_on: Collection[str] | Callable[[Arch], bool] = ()
    """Arch ids (or a predicate) whose evaluation raises RuntimeError."""
    nan_on: Collection[str] | Callable[[Arch], bool] = ()
    """Arch ids (or a predicate) whose kd_loss comes back NaN."""
    calls: list[tuple[str, str, int]] = field(default_factory=list)
    """(arch_id, fidelity, tokens) of every call, in order."""
    seconds: float = 0.0
    """Wall time each evaluation takes (a sleep), to try several workers and kill one mid-trial."""

    @classmethod
    def for_teacher(cls, teacher_config: PretrainedConfig, **kw: Any) -> FakeEvaluator:
        from kdnas.models.student import arch_of

        return cls(teacher=arch_of(teacher_config), vocab_size=teacher_config.vocab_size, **kw)

    @staticmethod
    def _hit(which: Collection[str] | Callable[[Arch], bool], arch: Arch) -> bool:
        return which(arch) if callable(which) else arch.arch_id in which

    def params_m(self, arch: Arch) -> float:
        w = arch.bottleneck_size if arch.family == "mobilebert" and arch.bottleneck_size else arch.hidden_size
        stacked = arch.num_ffn_stacked or 1
        per_layer = (
            4 * w * w
            + 2 * w * arch.ffn_size * stacked
            + (2 * arch.hidden_size * w if w != arch.hidden_size else 0)
        )
        return (
            self.vocab_size * min(arch.hidden_size, 128 if arch.family == "mobilebert" else arch.hidden_size)
            + arch.num_layers * per_layer
        ) / 1e6

    def predict_latency_ms(self, arch: Arch) -> float:
        """Noise-free latency: the latency predictor hook of this evaluator."""
        w = arch.bottleneck_size if arch.family == "mobilebert" and arch.bottleneck_size else arch.hidden_size
        stacked = arch.num_ffn_stacked or 1
        per_token = 2 * (4 * w * w + 2 * w * arch.ffn_size * stacked) + 4 * self.seq_len * w
        return 0.2 + arch.num_layers * per_token * self.seq_len / 5e7

    @property
    def teacher_latency_ms(self) -> float:
        return self.predict_latency_ms(self.teacher)

    def true_loss(self, arch: Arch) -> float:
        """The noise-free short-proxy loss (what a perfect proxy would report)."""
        t = self.teacher
        w = arch.bottleneck_size if arch.family == "mobilebert" and arch.bottleneck_size else arch.hidden_size
        depth = min(arch.num_layers / t.num_layers, 1.0)
        width = min(w / t.hidden_size, 1.0)
        ffn = min(arch.ffn_size * (arch.num_ffn_stacked or 1) / t.ffn_size, 1.0)
        quirk = 0.06 * (_unit("quirk", arch.arch_id, self.seed) - 0.5)
        return 0.12 + 0.30 * (1 - depth) ** 1.5 + 0.35 * (1 - width) ** 2 + 0.08 * (1 - ffn) + quirk

    def evaluate(self, arch: Arch, *, fidelity: Fidelity, tokens: int) -> CandidateResult:
        self.calls.append((arch.arch_id, fidelity, tokens))
        if self.seconds > 0:
            time.sleep(self.seconds)
        if self._hit(self.fail_on, arch):
            raise RuntimeError(f"synthetic failure for {arch.arch_id}")
        base = self.true_loss(arch)
        gauss = _gauss(arch.arch_id, fidelity, self.seed)
        # the long proxy trains longer: lower loss, less noise
        loss = 0.88 * base + 0.5 * self.noise * gauss if fidelity == "long" else base + self.noise * gauss
        if self._hit(self.nan_on, arch):
            loss = float("nan")
        jitter = 1 + self.latency_noise * _gauss(arch.arch_id, "latency", self.seed)
        return CandidateResult(
            kd_loss=float(loss),
            latency_ms=self.predict_latency_ms(arch) * jitter,
            params_m=self.params_m(arch),
            extra={"fake": True, "tokens": tokens},
        )

    def setup(self, teacher_config: PretrainedConfig) -> EvaluatorSetup:
        """This evaluator packaged like `kdnas.search.evaluator.make_evaluator` returns the real one."""
        return EvaluatorSetup(self, teacher_config, self.teacher_latency_ms, self.predict_latency_ms)


def _gauss(*key: Any) -> float:
    """A deterministic standard normal draw from a key (Box-Muller on two hashed uniforms)."""
    u1 = max(_unit("g1", *key), 1e-12)
    u2 = _unit("g2", *key)
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)
