"""Hardware fingerprint: CPU model, cores, ISA flags, GPU, library versions and threads -> a short stable id.

A latency number is only valid for the fingerprint it was measured on; the cache and predictors are keyed by it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import metadata

# ISA features that change which kernels torch / onnxruntime pick (and so latency).
ISA_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "sve2",
    "bf16",
    "i8mm",
)
LIBRARIES = ("torch", "onnxruntime", "transformers", "onnx", "numpy")


@dataclass(frozen=True)
class Fingerprint:
    """What a latency figure depends on besides the model and the shape."""

    cpu: str
    """CPU model name."""
    cores: int
    """Logical CPUs this process may run on."""
    isa: tuple[str, ...]
    """The subset of ISA_FLAGS the CPU has."""
    machine: str
    """Architecture (x86_64, aarch64)."""
    gpu: str | None
    """GPU name for device cuda, else None."""
    versions: dict[str, str] = field(default_factory=dict)
    """Versions of the libraries in LIBRARIES (missing ones left out)."""
    threads: int = 1
    """Intra-op threads measurements are pinned to."""
    device: str = "cpu"
    """cpu or cuda."""

    @property
    def id(self) -> str:
        """12 hex chars, stable across runs and processes for the same machine, libraries and threads."""
        d = asdict(self)
        d["isa"] = list(self.isa)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def describe(self) -> str:
        gpu = f", {self.gpu}" if self.gpu else ""
        return (
            f"{self.cpu} ({self.cores} cpus, {'/'.join(self.isa) or 'no flags'}){gpu}, {self.threads} threads"
        )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["id"] = self.id
        return d


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set[str]()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and name in (
                    "",
                    platform.machine(),
                    platform.processor(),
                ):
                    name = val.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    return name, flags


def _version(lib: str) -> str | None:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def _machine() -> tuple[str, int, tuple[str, ...], str, tuple[tuple[str, str], ...]]:
    name, flags = _cpuinfo()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    isa = tuple(f for f in ISA_FLAGS if f in flags)
    versions = tuple((lib, v) for lib in LIBRARIES if (v := _version(lib)))
    return name, cores, isa, platform.machine(), versions


def gpu_name() -> str | None:
    """Name of CUDA device 0, or None without a usable GPU (imports torch)."""
    import torch

    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def fingerprint(threads: int, device: str = "cpu") -> Fingerprint:
    """This machine's fingerprint for measurements pinned to `threads` on `device`."""
    name, cores, isa, machine, versions = _machine()
    return Fingerprint(
        cpu=name,
        cores=cores,
        isa=isa,
        machine=machine,
        gpu=gpu_name() if device == "cuda" else None,
        versions=dict(versions),
        threads=threads,
        device=device,
    )
