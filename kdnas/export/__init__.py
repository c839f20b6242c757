"""Export of a distilled student: HF folder, ONNX fp32 / int8 (checked and timed) and a model card.

`export(source, out)` exports a run dir's recommended students or one model folder (`kdnas export`);
`export_model` exports an in-memory model.
"""

from kdnas.export.card import ModelCardInfo, TaskScore
from kdnas.export.exporter import ExportResult, export_model, param_counts
from kdnas.export.onnx import ExportError, NumericsCheck
from kdnas.export.run_dir import export, export_model_dir, export_run

__all__ = [
    "ExportError",
    "ExportResult",
    "ModelCardInfo",
    "NumericsCheck",
    "TaskScore",
    "export",
    "export_model",
    "export_model_dir",
    "export_run",
    "param_counts",
]
