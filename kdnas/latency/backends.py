"""The `LatencyBackend` contract and the registry that picks a backend by name (never by import path).

Concrete backends live in torch_backend.py, onnx_backend.py and testing.py; they load on first use.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from kdnas.errors import LatencyError, MissingExtraError
from kdnas.latency.fingerprint import fingerprint
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec
from kdnas.latency.stats import TimingSettings, summarize, time_loop


class LatencyBackend(ABC):
    """A way to run a model and time its forward pass. The contract:

    - `name` is the registry name; `devices` the devices it runs on; `extra` the pip extra it needs (or None).
    - `available()` says, without side effects, whether its packages (and device) are present here.
    - `measure(model, shape)` builds/loads the model (a `ModelSpec`, an `Arch` with `teacher_config` given to
      the constructor, or a ready `torch.nn.Module`), warms it up, times forward passes with `time_loop` and
      returns one `LatencyResult`. It runs in the current process: the isolated runner
      (kdnas.latency.runner) calls it inside a fresh worker with pinned threads. It may keep state between
      calls (a built model, an exported ONNX file) to measure several shapes of one model cheaply.
    - Errors the user can fix raise KdnasError subclasses (LatencyError, ArchError, MissingExtraError).
    - `isolate = False` marks a backend whose numbers do not depend on the process (the fake), which
      `measure_archs` then runs in-process.
    - `times_static` marks a backend that can time a static embedding table (a `ModelSpec` of kind `static`);
      the others raise LatencyError for one.
    """

    name: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    extra: ClassVar[str | None] = None
    isolate: ClassVar[bool] = True
    times_static: ClassVar[bool] = False

    def __init__(
        self,
        *,
        threads: int = 1,
        device: str = "cpu",
        settings: TimingSettings | None = None,
        teacher_config: Any = None,
        fingerprint_id: str | None = None,
        **options: Any,
    ):
        if device not in self.devices:
            raise LatencyError(f"backend {self.name!r} runs on {', '.join(self.devices)}, not {device!r}")
        self.threads = threads
        self.device = device
        self.settings = settings or TimingSettings()
        self.teacher_config = teacher_config
        self._fingerprint_id = fingerprint_id
        self.options = options

    @classmethod
    def available(cls) -> bool:
        """True when the packages (and device) this backend needs are present."""
        return True

    @classmethod
    def check(cls, device: str) -> None:
        """Raise a clear KdnasError when this backend cannot run on `device` here (called before any worker)."""
        if device not in cls.devices:
            raise LatencyError(
                f"backend {cls.name!r} runs on {', '.join(cls.devices)}, not device {device!r}"
            )
        if not cls.available():
            if cls.extra:
                raise MissingExtraError(
                    f"backend {cls.name!r} needs the '{cls.extra}' extra: pip install -c constraints.txt "
                    f'"kdnas[{cls.extra}]"'
                )
            raise LatencyError(f"backend {cls.name!r} cannot run on this machine")

    @abstractmethod
    def measure(self, model: Any, shape: Shape) -> LatencyResult:
        """Time one forward pass of `model` on `shape` (see the class contract)."""

    # helpers for subclasses -----------------------------------------------------------------------------------
    @property
    def fingerprint_id(self) -> str:
        if self._fingerprint_id is None:
            self._fingerprint_id = fingerprint(self.threads, self.device).id
        return self._fingerprint_id

    def spec_of(self, model: Any) -> ModelSpec | None:
        """`model` as a ModelSpec (an Arch needs `teacher_config`); None for a ready nn.Module."""
        from kdnas.space.arch import Arch

        if isinstance(model, ModelSpec):
            return model
        if isinstance(model, Arch):
            if self.teacher_config is None:
                raise LatencyError(
                    "measuring an Arch needs the backend's teacher_config (the student's family)"
                )
            return ModelSpec.for_arch(self.teacher_config, model)
        return None

    def timed(
        self,
        run_once_ms: Callable[[], float],
        shape: Shape,
        *,
        label: str,
        attn: str | None = None,
        settings: TimingSettings | None = None,
        extra: dict[str, Any] | None = None,
    ) -> LatencyResult:
        """Run the timing loop and wrap the samples into a LatencyResult."""
        samples, warm = time_loop(run_once_ms, settings or self.settings)
        s = summarize(samples)
        return LatencyResult(
            median_ms=float(s["median_ms"] or 0),
            p90_ms=float(s["p90_ms"] or 0),
            iqr_ms=float(s["iqr_ms"] or 0),
            min_ms=float(s["min_ms"] or 0),
            repeats=int(s["repeats"] or 0),
            ci_rel=s["ci_rel"],
            backend=self.name,
            device=self.device,
            threads=self.threads,
            batch_size=shape.batch_size,
            seq_len=shape.seq_len,
            fingerprint=self.fingerprint_id,
            model=label,
            attn=attn,
            extra={"warmup": warm, **(extra or {})},
        )


# --------------------------------------------------------------------------------------------------------------
# registry: name -> "module:Class", imported on first use so `kdnas --help` never pays for torch/onnxruntime

_REGISTRY: dict[str, str | type[LatencyBackend]] = {
    "torch": "kdnas.latency.torch_backend:TorchBackend",
    "torch-cuda": "kdnas.latency.torch_backend:TorchCudaBackend",
    "torch-bf16": "kdnas.latency.torch_backend:TorchBf16Backend",
    "torch-cuda-bf16": "kdnas.latency.torch_backend:TorchCudaBf16Backend",
    "torch-cuda-fp16": "kdnas.latency.torch_backend:TorchCudaFp16Backend",
    "onnxruntime": "kdnas.latency.onnx_backend:OnnxRuntimeBackend",
    "onnxruntime-int8": "kdnas.latency.onnx_backend:OnnxRuntimeInt8Backend",
    "fake": "kdnas.latency.testing:FakeBackend",
}


def known_backends() -> list[str]:
    return list(_REGISTRY)


def register_backend(name: str, cls: type[LatencyBackend]) -> None:
    """Add a backend in-process (for isolated runs the worker must be able to import it too: see docs)."""
    if not (isinstance(cls, type) and issubclass(cls, LatencyBackend)):
        raise TypeError("a backend must subclass kdnas.latency.LatencyBackend")
    _REGISTRY[name] = cls


def get_backend(name: str) -> type[LatencyBackend]:
    """The backend class registered as `name`; unknown names raise LatencyError listing the known ones."""
    entry = _REGISTRY.get(name)
    if entry is None:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise LatencyError(f"unknown latency backend {name!r}{hint}; known: {', '.join(_REGISTRY)}")
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(module), attr)
        assert isinstance(entry, type)
        _REGISTRY[name] = entry
    return entry


def has_package(module: str) -> bool:
    """Whether `module` is installed, without importing it (importing onnxruntime here would start its threads)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
