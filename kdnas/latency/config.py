"""Config section `target`: the hardware and shape the student will be served on, and latency budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Names of the registered backends (kdnas/latency/backends.py); `fake` is the test double of kdnas.latency.testing.
BACKENDS = (
    "torch",
    "torch-bf16",
    "onnxruntime",
    "onnxruntime-int8",
    "torch-cuda",
    "torch-cuda-bf16",
    "torch-cuda-fp16",
    "fake",
)

COMPARE_STATISTICS = ("median", "min")
"""What a side-by-side round's speed-up may be taken from (`TargetConfig.compare_statistic`)."""


def _known_backends() -> list[str]:
    """The built-in names plus any added with `kdnas.latency.register_backend` (the registry, not a frozen list)."""
    from kdnas.latency.backends import known_backends

    return list(dict.fromkeys([*BACKENDS, *known_backends()]))


@dataclass
class TargetConfig:
    """Where and how the student will run; latency is measured for exactly this."""

    device: Literal["cpu", "cuda"] = "cpu"
    """Serving device."""
    threads: int = 2
    """Intra-op threads the model may use (pinned in the measuring worker)."""
    batch_size: int = 1
    """Serving batch size."""
    seq_lens: list[int] = field(default_factory=lambda: [128])
    """Sequence lengths to measure; the first one is the search objective."""
    backend: str = "torch"
    """Runtime: torch (fp32), torch-bf16 (served in bfloat16; CPUs with bf16 units only), onnxruntime (fp32, full
    graph optimisation) or onnxruntime-int8 (dynamic quantization); with device cuda: torch (fp32, CUDA events),
    torch-cuda-bf16 or torch-cuda-fp16 (served in that dtype)."""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """torch backend only: `auto` measures eager and sdpa once per model and keeps the faster."""
    budgets_ms: list[float] = field(default_factory=list)
    """Latency budgets in ms; a student is recommended for each."""
    speedups: list[float] = field(default_factory=lambda: [3.0, 7.0])
    """Budgets as speed-up over the teacher on this target (7.0: at least 7x faster)."""
    rel_ci: float = 0.03
    """Stop repeating once the 95% CI of the median is within this relative width."""
    max_time_s: float = 8.0
    """Time cap per measurement (after warm-up)."""
    timeout_s: float = 180.0
    """Kill a measuring worker that finishes no measurement for this long (start-up and imports included)."""
    warmup_s: float = 0.3
    """Untimed forward passes before timing (at least 2, for at least this long)."""
    min_repeats: int = 10
    """Timed forward passes before the stop rule is checked."""
    cache_dir: str | None = None
    """Latency cache and predictors dir (default `<kdnas cache>/latency`)."""
    calibrate_archs: int = 24
    """`kdnas run`: archs to measure to fit the latency predictor (0: use a saved one if any; else >= 10)."""
    teacher_readings: int = 3
    """`kdnas run`: the latency stage times the teacher in this many fresh workers (one before the predictor's
    calibration, the rest after it) and takes the median reading; every budget is a fraction of it. One reading
    is one process's luck: on 2026-12-06 a single one read mpnet-base at 229.7 ms, while the same shape in the
    calibration read 157.9 ms and the teacher timed beside the students about 150 ms, and every budget of that
    search was 45% too loose (its 7x anchor was 5.2x side by side)."""
    compare_rounds: int = 3
    """`kdnas run`: rounds of the side-by-side timing of teacher, baselines and students (each round one fresh
    worker timing all of them; speed-ups come from the same rounds)."""
    compare_slices: int = 4
    """Side-by-side timing: each round visits every model this many times in turn (order alternating), timing
    it for `compare_slice_s` per visit, and a round's speed-up is the median of its visits' ratios, so a slow
    spell of a shared machine hits the teacher and the student alike. 1: one converged measurement per model and
    round. Measured on a 2-core VM (benchmarks/side_by_side.py, teacher and 18 students, 3 rounds): the mean
    per-round CV of the speed-ups was 6.2% with 1, 3.3% with 6 visits, 1.5% with 4 visits and `compare_bracket`
    2, at 2.3x the time of 1."""
    compare_slice_s: float = 0.4
    """Timed seconds per model per visit when `compare_slices` > 1 (at most `max_time_s`)."""
    compare_bracket: int = 2
    """Side-by-side timing: the reference (the teacher) is timed again after every this many models of a visit,
    and a model's ratio is taken against the mean of the reference's readings just before and after it. 0: the
    reference once per visit, so in a visit of 20 models the last is compared with a reading ~10 s older."""
    compare_statistic: str = "median"
    """Side-by-side timing: the pass time a round's speed-up is taken from, `median` or `min` (each model's
    fastest pass, which a neighbour's load can only lengthen)."""
    place_candidates: int = 4
    """`kdnas run`: after the search, this many of the best candidates near each budget are timed again side by
    side with the teacher (and the baseline of an equal-latency budget) in `max(3, compare_rounds)` rounds, and
    the recommendation for the budget is made from those speed-ups, not from the search's single-process
    timings (`kdnas.search.placement`). 0: recommend from the search's own timings."""

    def check(self) -> list[str]:
        out = []
        if self.threads < 1:
            out.append(f"threads: {self.threads} must be >= 1")
        if self.batch_size < 1:
            out.append(f"batch_size: {self.batch_size} must be >= 1")
        if not self.seq_lens or any(s < 1 for s in self.seq_lens):
            out.append(f"seq_lens: {self.seq_lens} must be a non-empty list of positive lengths")
        known = _known_backends()
        if self.backend not in known:
            out.append(f"backend: {self.backend!r} is not one of {', '.join(known)}")
        if any(b <= 0 for b in self.budgets_ms):
            out.append("budgets_ms: every budget must be > 0")
        if any(s <= 1 for s in self.speedups):
            out.append("speedups: every speed-up budget must be > 1 (e.g. 7.0 for 7x faster)")
        if not 0 < self.rel_ci < 1:
            out.append(f"rel_ci: {self.rel_ci} must be in (0, 1)")
        if self.max_time_s <= 0 or self.timeout_s <= 0:
            out.append("max_time_s, timeout_s: must be > 0")
        if self.warmup_s < 0:
            out.append(f"warmup_s: {self.warmup_s} must be >= 0")
        if self.calibrate_archs < 0 or 0 < self.calibrate_archs < 10:
            out.append(f"calibrate_archs: {self.calibrate_archs} must be 0 (no calibration) or >= 10")
        if self.compare_statistic not in COMPARE_STATISTICS:
            out.append(
                f"compare_statistic: {self.compare_statistic!r} is not one of {', '.join(COMPARE_STATISTICS)}"
            )
        if self.compare_slices < 1 or self.compare_slice_s <= 0:
            out.append(
                f"compare_slices: {self.compare_slices} must be >= 1 and compare_slice_s: {self.compare_slice_s} > 0"
            )
        if self.compare_bracket < 0:
            out.append(
                f"compare_bracket: {self.compare_bracket} must be >= 0 (0: the reference once per visit)"
            )
        if self.teacher_readings < 1:
            out.append(f"teacher_readings: {self.teacher_readings} must be >= 1")
        if self.compare_rounds < 1:
            out.append(f"compare_rounds: {self.compare_rounds} must be >= 1")
        if self.place_candidates < 0:
            out.append(
                f"place_candidates: {self.place_candidates} must be >= 0 (0: no side-by-side placement)"
            )
        if self.min_repeats < 3:
            out.append(f"min_repeats: {self.min_repeats} must be >= 3")
        cuda_backends = ("torch-cuda", "torch-cuda-bf16", "torch-cuda-fp16")
        if self.device == "cuda" and self.backend not in ("torch", *cuda_backends, "fake"):
            out.append(
                f"backend: {self.backend!r} runs on cpu only; with device: cuda use torch (fp32), "
                "torch-cuda-bf16 or torch-cuda-fp16"
            )
        if self.device == "cpu" and self.backend in cuda_backends:
            out.append(f"backend: {self.backend} needs device: cuda")
        return out
