"""Search: objectives and the KD-NAS reward, strategies (Optuna samplers), multi-fidelity study wiring, results.

Names are imported lazily so `import kdnas.config` (which needs only `kdnas.search.config`) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchConfig": "kdnas.search.config",
    "search": "kdnas.search.entry",
    "run_search": "kdnas.search.study",
    "summarize": "kdnas.search.trials",
    "SearchResult": "kdnas.search.results",
    "TrialRecord": "kdnas.search.results",
    "Recommendation": "kdnas.search.results",
    "kdnas_reward": "kdnas.search.objectives",
    "Budget": "kdnas.search.objectives",
    "resolve_budgets": "kdnas.search.objectives",
    "CandidateEvaluator": "kdnas.search.candidate",
    "CandidateResult": "kdnas.search.candidate",
    "EvaluatorSetup": "kdnas.search.candidate",
    "STRATEGIES": "kdnas.search.samplers",
    "make_sampler": "kdnas.search.samplers",
    "register_strategy": "kdnas.search.samplers",
    "StrategyArgs": "kdnas.search.samplers",
    "SpaceSampler": "kdnas.search.base",
    "KDNASSampler": "kdnas.search.controller",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'kdnas.search' has no attribute {name!r}")
