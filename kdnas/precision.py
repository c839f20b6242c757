"""Numeric precision of the training stages: which device and dtype a stage runs in, chosen at run time.

bf16 autocast is used where the hardware has bf16 units (CPU: AMX or AVX-512 BF16; CUDA: compute 8.0+);
elsewhere everything stays fp32. Weights, optimiser state and losses are always fp32.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from kdnas.errors import ConfigError

DTYPES = ("auto", "fp32", "bf16")
"""Values of the `dtype` config keys (`distill.dtype`, `evaluate.dtype`)."""
DtypeName = Literal["auto", "fp32", "bf16"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""/proc/cpuinfo flags of CPU units that compute bf16 matmuls natively (without them bf16 is emulated and slow)."""

_CPUINFO = Path("/proc/cpuinfo")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = _CPUINFO.read_text()
    except OSError:  # not Linux, or /proc not mounted
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16_units() -> list[str]:
    """The bf16 flags of this CPU among `BF16_FLAGS` (e.g. ["amx_bf16", "avx512_bf16"]); [] when it has none
    or the flags cannot be read (non-Linux)."""
    flags = _cpu_flags()
    return [f for f in BF16_FLAGS if f in flags]


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve_device(requested: str = "auto") -> torch.device:
    """`auto` -> cuda when a GPU is visible, else cpu; anything else is taken as given (`cpu`, `cuda:1`).
    Raises ConfigError for cuda on a machine without one."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(requested)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r}: no CUDA GPU is visible here; use cpu (or auto)")
    return dev


def bf16_supported(device: str | torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CPU with `BF16_FLAGS` units or a CUDA GPU with bf16."""
    kind = _device_type(device)
    if kind == "cpu":
        return bool(cpu_bf16_units())
    if kind == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return False


def resolve_dtype(requested: str, device: str | torch.device = "cpu", *, key: str = "dtype") -> torch.dtype:
    """The compute dtype of a stage: `auto` -> bfloat16 where `bf16_supported(device)`, else float32;
    `fp32` -> float32; `bf16` -> bfloat16, with a warning on hardware without bf16 units (it runs, emulated,
    usually slower than fp32). `key` names the config key in messages. Raises ConfigError for other values."""
    if requested not in DTYPES:
        raise ConfigError(f"{key}: {requested!r} must be one of {', '.join(DTYPES)}")
    if requested == "fp32":
        return torch.float32
    native = bf16_supported(device)
    if requested == "auto":
        return torch.bfloat16 if native else torch.float32
    if not native:
        warnings.warn(
            f"{key}: bf16 on a {_device_type(device)} without bf16 units (CPU flags {', '.join(BF16_FLAGS)} "
            "absent) is emulated and usually slower than fp32; use auto or fp32",
            stacklevel=2,
        )
    return torch.bfloat16


def autocast(device: str | torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on `device` for dtype bfloat16 (matmuls and linears run in bf16, weights stay fp32);
    a no-op context for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_type(device), dtype=dtype)


def _to_fp32(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x
    if isinstance(x, tuple):
        items = [_to_fp32(v) for v in x]
        return type(x)(*items) if hasattr(x, "_fields") else tuple(items)
    if isinstance(x, list):
        return [_to_fp32(v) for v in x]
    if isinstance(x, dict):  # HF ModelOutput is an OrderedDict subclass: set its fields in place
        for k in list(x.keys()):
            x[k] = _to_fp32(x[k])
        return x
    return x


@contextlib.contextmanager
def autocast_forward(module: nn.Module, device: str | torch.device, dtype: torch.dtype) -> Iterator[None]:
    """Inside the block, `module`'s forward runs under `autocast(device, dtype)` and its floating outputs come
    back as float32. For a model whose outputs feed losses written in fp32: the model's matmuls run in bf16,
    what is computed from its outputs (projections, losses) stays outside autocast, in fp32. A no-op for
    float32."""
    if dtype == torch.float32:
        yield
        return
    own = module.__dict__.get("forward")
    inner = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        with autocast(device, dtype):
            out = inner(*args, **kwargs)
        return _to_fp32(out)

    module.forward = forward  # type: ignore[method-assign]
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own  # type: ignore[method-assign]


def dtype_name(dtype: torch.dtype) -> str:
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def describe(stage: str, device: str | torch.device, dtype: torch.dtype) -> str:
    """One line for the run log, e.g. `distill: cpu bf16 autocast (amx_bf16, avx512_bf16)` or
    `evaluate: cpu fp32 (no bf16 units)`."""
    kind = _device_type(device)
    if kind == "cpu":
        units = cpu_bf16_units()
        why = ", ".join(units) if units else "no bf16 units"
    elif kind == "cuda" and torch.cuda.is_available():
        why = torch.cuda.get_device_name(torch.device(device))
    else:
        why = kind
    mode = "bf16 autocast" if dtype == torch.bfloat16 else "fp32"
    return f"{stage}: {kind} {mode} ({why})"


_LOGGED: set[str] = set()


def log_choice(logger: logging.Logger, stage: str, device: str | torch.device, dtype: torch.dtype) -> str:
    """Log `describe(stage, device, dtype)` at info the first time this process sees that line (a search
    distils hundreds of candidates; the choice is stated once, not per candidate). Returns the line."""
    line = describe(stage, device, dtype)
    if line not in _LOGGED:
        _LOGGED.add(line)
        logger.info("%s", line)
    return line
