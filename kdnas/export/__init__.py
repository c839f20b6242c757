"""Export of a distilled student: HF folder, ONNX fp32 / int8 (checked and timed) and a model card.

`export_model` exports one model; `export_run` exports the recommended students of a `kdnas run` dir.
"""

from kdnas.export.card import ModelCardInfo, TaskScore
from kdnas.export.exporter import ExportResult, export_model, param_counts
from kdnas.export.onnx import ExportError, NumericsCheck

__all__ = [
    "ExportError",
    "ExportResult",
    "ModelCardInfo",
    "NumericsCheck",
    "TaskScore",
    "export_model",
    "param_counts",
]
