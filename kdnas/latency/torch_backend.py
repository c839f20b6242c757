"""Eager PyTorch backends: `torch` on cpu (wall clock), `torch-bf16` (the model served in bfloat16 on a CPU with
bf16 units) and `torch-cuda` (CUDA events).

`attn="auto"` times eager and sdpa attention once per model and keeps the faster (sdpa can be many times slower
for small BERTs on CPU); the choice is remembered for the model's other shapes and stored in the result.
"""

from __future__ import annotations

import time
from typing import Any

from kdnas.errors import LatencyError
from kdnas.latency.backends import LatencyBackend
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec
from kdnas.latency.stats import TimingSettings

ATTNS = ("eager", "sdpa")


def make_inputs(vocab_size: int, shape: Shape, device: str = "cpu") -> dict[str, Any]:
    """Random token ids (no padding) and an all-ones attention mask."""
    import torch

    g = torch.Generator().manual_seed(0)
    high = max(2, min(vocab_size, 30_000))
    ids = torch.randint(min(5, high - 1), high, (shape.batch_size, shape.seq_len), generator=g)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


_KEEP_BYTES = 2 * 2**30
"""Weights a torch backend keeps built, oldest dropped first (a side-by-side round of the family headline
visits 11-15 models several times each; a base-size teacher is 0.44 GB in fp32)."""


class TorchBackend(LatencyBackend):
    """Eager PyTorch forward passes under `torch.inference_mode()`, timed with the wall clock."""

    times_static = True

    name = "torch"
    devices = ("cpu",)

    def __init__(self, *, attn: str = "auto", **kw: Any):
        super().__init__(**kw)
        if attn not in ("auto", *ATTNS):
            raise LatencyError(f"attn: {attn!r} is not one of auto, eager, sdpa")
        self.attn = attn
        self._chosen: dict[str, str] = {}  # model key -> attention chosen by `auto`
        # (model key, attn) -> model: the last few kept, so a side-by-side round that visits each model several
        # times builds it once (a calibration over many archs keeps only the recent ones)
        self._built: dict[tuple[str, str], Any] = {}
        self._bytes: dict[tuple[str, str], int] = {}
        self._build_s = 0.0

    dtype: str | None = None
    """Serving dtype the model is cast to (None: as built, fp32)."""

    def _cast(self, model: Any) -> Any:
        if self.dtype is None:
            return model
        import torch

        return model.to(getattr(torch, self.dtype))

    def _model(self, spec: ModelSpec, attn: str) -> Any:
        key = (spec.key, attn)
        self._build_s = 0.0
        if key not in self._built:
            t = time.perf_counter()
            model = spec.build(attn_implementation=attn)
            size = sum(p.numel() * p.element_size() for p in model.parameters())
            while self._built and sum(self._bytes.values()) + size > _KEEP_BYTES:
                old = next(iter(self._built))
                self._built.pop(old)
                self._bytes.pop(old, None)
            self._built[key] = self._cast(model.to(self.device))  # type: ignore[arg-type]
            self._bytes[key] = size
            self._build_s = time.perf_counter() - t
        return self._built[key]

    def _runner(self, model: Any, inputs: dict[str, Any]) -> Any:
        import torch

        def run_once_ms() -> float:
            t = time.perf_counter()
            with torch.inference_mode():
                model(**inputs)
            return (time.perf_counter() - t) * 1e3

        return run_once_ms

    def measure(self, model: Any, shape: Shape) -> LatencyResult:
        spec = self.spec_of(model)
        if spec is None:  # a ready nn.Module: measured as it is
            vocab = int(getattr(getattr(model, "config", None), "vocab_size", 1000))
            m = self._cast(model.eval().to(self.device))
            inputs = make_inputs(vocab, shape, self.device)
            return self.timed(
                self._runner(m, inputs),
                shape,
                label=type(model).__name__,
                attn=getattr(getattr(model, "config", None), "_attn_implementation", None),
            )
        vocab = spec.hf_config().vocab_size
        inputs = make_inputs(vocab, shape, self.device)
        extra: dict[str, Any] = {}
        attn = self.attn
        if attn == "auto":
            attn = self._chosen.get(spec.key) or self._choose(spec, inputs, shape, extra)
            self._chosen[spec.key] = attn
            # the loser is no longer needed
            self._built = {k: v for k, v in self._built.items() if k[0] != spec.key or k[1] == attn}
            self._bytes = {k: v for k, v in self._bytes.items() if k in self._built}
        m = self._model(spec, attn)
        extra["build_s"] = round(self._build_s, 3)
        if self.dtype is not None:
            extra["dtype"] = self.dtype
        return self.timed(self._runner(m, inputs), shape, label=spec.label, attn=attn, extra=extra)

    def _choose(self, spec: ModelSpec, inputs: dict[str, Any], shape: Shape, extra: dict[str, Any]) -> str:
        """Short timing of each attention implementation; the faster median wins."""
        screen = TimingSettings(
            warmup_s=min(self.settings.warmup_s, 0.2),
            min_repeats=5,
            rel_ci=0.1,
            max_time_s=max(0.2, min(1.0, self.settings.max_time_s / 8)),
        )
        medians: dict[str, float] = {}
        for attn in ATTNS:
            try:
                m = self._model(spec, attn)
            except Exception as e:  # a family without sdpa support: keep the other
                extra[f"screen_{attn}_error"] = str(e)[:200]
                continue
            r = self.timed(self._runner(m, inputs), shape, label=spec.label, attn=attn, settings=screen)
            medians[attn] = r.median_ms
        if not medians:
            raise LatencyError(f"{spec.label}: neither eager nor sdpa attention could be built")
        extra["attn_screen_ms"] = {k: round(v, 3) for k, v in medians.items()}
        return min(medians, key=lambda k: medians[k])


class TorchBf16Backend(TorchBackend):
    """Eager PyTorch with the model's weights and activations in bfloat16: what a user who serves in bf16 gets.
    Only on a CPU with bf16 units (AVX-512 BF16 or AMX, detected at run time): elsewhere bf16 is emulated and
    slower than fp32, and a search for that latency would mislead, so the backend refuses."""

    name = "torch-bf16"
    dtype = "bfloat16"

    @classmethod
    def available(cls) -> bool:
        from kdnas.precision import cpu_bf16_units

        return bool(cpu_bf16_units())

    @classmethod
    def check(cls, device: str) -> None:
        if device == "cpu" and not cls.available():
            raise LatencyError(
                "backend 'torch-bf16' needs a CPU with bf16 units (flags amx_bf16 or avx512_bf16); this one has "
                "neither, so bf16 would be emulated: use backend torch (fp32) or onnxruntime-int8"
            )
        super().check(device)


class TorchCudaBackend(TorchBackend):
    """Eager PyTorch on a CUDA GPU, each pass timed with CUDA events (queue time excluded)."""

    name = "torch-cuda"
    devices = ("cuda",)

    def __init__(self, **kw: Any):
        kw.setdefault("device", "cuda")
        super().__init__(**kw)
        if not self.available():
            raise LatencyError(
                "backend torch-cuda: no CUDA GPU is visible to torch; use device cpu or run on a GPU"
            )

    @classmethod
    def available(cls) -> bool:
        try:
            import torch
        except ImportError:
            return False
        return bool(torch.cuda.is_available())

    @classmethod
    def check(cls, device: str) -> None:
        if device != "cuda":
            raise LatencyError("backend torch-cuda needs device cuda")
        if not cls.available():
            raise LatencyError(
                "device cuda: torch sees no CUDA GPU on this machine (torch.cuda.is_available() is False); "
                "measure on a machine with a GPU and a CUDA build of torch, or use device cpu"
            )

    def _runner(self, model: Any, inputs: dict[str, Any]) -> Any:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def run_once_ms() -> float:
            with torch.inference_mode():
                start.record()
                model(**inputs)
                end.record()
            end.synchronize()
            return float(start.elapsed_time(end))

        return run_once_ms


class TorchCudaBf16Backend(TorchCudaBackend):
    """`torch-cuda` with the model's weights and activations in bfloat16 (GPUs of compute 8.0+), CUDA events."""

    name = "torch-cuda-bf16"
    dtype = "bfloat16"

    @classmethod
    def check(cls, device: str) -> None:
        super().check(device)
        import torch

        if not torch.cuda.is_bf16_supported():
            raise LatencyError(
                f"backend 'torch-cuda-bf16': {torch.cuda.get_device_name(0)} has no bf16 support (compute 8.0+ "
                "needed); use torch-cuda-fp16 or torch-cuda"
            )


class TorchCudaFp16Backend(TorchCudaBackend):
    """`torch-cuda` with the model's weights and activations in float16, CUDA events."""

    name = "torch-cuda-fp16"
    dtype = "float16"
