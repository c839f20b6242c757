"""kdnas: find the best small student architecture for a transformer encoder and distill it from a teacher.

The public API is re-exported here; heavy modules (torch, transformers) load on first use.
"""

from __future__ import annotations

from kdnas.errors import (
    ArchError,
    AssetError,
    ConfigError,
    DataError,
    DistillError,
    KdnasError,
    LatencyError,
    MissingExtraError,
    ModelError,
    SearchError,
)
from kdnas.space.arch import Arch


def __getattr__(name: str) -> object:  # `kdnas.run` and friends without importing torch at `import kdnas`
    if name in ("run", "read_run", "RunResult", "StudentResult"):
        from kdnas import api

        return getattr(api, name)
    raise AttributeError(f"module 'kdnas' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Arch",
    "ArchError",
    "AssetError",
    "ConfigError",
    "DataError",
    "DistillError",
    "KdnasError",
    "LatencyError",
    "MissingExtraError",
    "ModelError",
    "RunResult",
    "SearchError",
    "StudentResult",
    "__version__",
    "read_run",
    "run",
]
