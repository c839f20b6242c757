"""kdnas.data: corpus readers, tokenization and packing, deterministic splits, labeled tasks.

Names load lazily, so `import kdnas.data.config` (done by the CLI) does not pull in numpy or torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CorpusConfig": "kdnas.data.config",
    "CorpusSplits": "kdnas.data.corpus",
    "Document": "kdnas.data.corpus",
    "build_corpus": "kdnas.data.corpus",
    "iter_documents": "kdnas.data.corpus",
    "mix_counts": "kdnas.data.corpus",
    "TokenBlock": "kdnas.data.tokenize",
    "corpus_split_of": "kdnas.data.splits",
    "task_split_of": "kdnas.data.splits",
    "unit_hash": "kdnas.data.splits",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kdnas.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
