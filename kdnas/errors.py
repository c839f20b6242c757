"""Errors that kdnas raises for user mistakes and environment problems.

Every message says what was wrong and what to do about it. `assert` is kept for internal invariants.
"""

from __future__ import annotations


class KdnasError(Exception):
    """Base class: a problem the user can fix (bad config, missing asset, bad data, ...)."""


class ConfigError(KdnasError):
    """A config value is wrong. `problems` lists every problem found, each naming its key."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"invalid config ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):\n{lines}"
        )


class AssetError(KdnasError):
    """A zoo asset, model dir or hub id cannot be found or fetched."""


class ModelError(KdnasError):
    """A model cannot be used as a teacher or student (decoder-only, bad arch, ...)."""


class ArchError(ModelError):
    """An architecture is invalid (e.g. hidden size not divisible by the number of heads)."""


class DataError(KdnasError):
    """A corpus or task file is empty, undecodable, badly labeled or too small."""


class LatencyError(KdnasError):
    """A latency measurement cannot be made (unknown backend, no GPU, worker crash or timeout)."""


class DistillError(KdnasError):
    """A distillation cannot run or cannot resume (bad mapping, corrupt checkpoint, ...)."""


class SearchError(KdnasError):
    """A search cannot run (empty space, unreachable budget, unknown strategy, bad storage)."""


class MissingExtraError(KdnasError):
    """An optional dependency is missing; the message names the extra to install."""
