"""Lazy optional imports with an install hint (after optuna's `_imports.py`)."""

from __future__ import annotations

import importlib
from types import ModuleType

from kdnas.errors import MissingExtraError

_EXTRA_OF = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "onnxruntime.quantization": "onnx",
    "onnxscript": "onnx",
    "psycopg": "postgres",
    "optuna_dashboard": "dashboard",
    "sentence_transformers": "st",
    "matplotlib": "plots",
    "matplotlib.pyplot": "plots",
    "plotly": "plots",
    "plotly.graph_objects": "plots",
    "datasets": "datasets",
}


def optional_import(module: str, *, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingExtraError telling which extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = extra or _EXTRA_OF.get(module, module.split(".")[0])
        why = f" (needed for {purpose})" if purpose else ""
        hint = (
            f'pip install -c constraints.txt "kdnas[{extra}]"'
            if extra != "datasets"
            else "pip install datasets"
        )
        raise MissingExtraError(f"the optional package '{module}' is not installed{why}: {hint}") from e


def has_module(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
