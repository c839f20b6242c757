"""The kdnas cache dir (`$KDNAS_CACHE`, else `~/.cache/kdnas`), shared by the zoo, the latency cache, the
teacher-score cache and the tokenised corpora."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The kdnas cache root: `$KDNAS_CACHE`, else `~/.cache/kdnas`."""
    env = os.environ.get("KDNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdnas"


def cache_root(cache: str | Path | None = None) -> Path:
    """`cache` when given, else the kdnas cache dir."""
    return Path(cache).expanduser() if cache is not None else cache_dir()
