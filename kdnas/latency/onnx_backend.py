"""onnxruntime backends: `onnxruntime` (fp32, ORT_ENABLE_ALL) and `onnxruntime-int8` (dynamic int8 weights).

The model is exported once per worker with the torch.export-based exporter (dynamic batch and sequence axes)
and reused for every shape; the int8 graph is `quantize_dynamic` of that file. A model dir that already holds
model.onnx / model-int8.onnx (written by `kdnas export`) is measured from those files as they are.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from kdnas.errors import LatencyError
from kdnas.latency.backends import LatencyBackend, has_package
from kdnas.latency.result import LatencyResult, Shape
from kdnas.latency.spec import ModelSpec

log = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask")


class _Encoder:
    """Wraps an HF encoder so the exported graph takes (input_ids, attention_mask) -> last_hidden_state."""

    def __new__(cls, model: Any) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self, m: Any):
                super().__init__()
                self.m = m

            def forward(self, input_ids: Any, attention_mask: Any) -> Any:
                return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

        return Wrapped(model).eval()


def export_onnx(model: Any, path: Path, *, max_seq_len: int = 512) -> float:
    """Export an HF encoder to `path` with dynamic batch and sequence axes; returns seconds taken.

    torch 2.13's default (dynamo) exporter is used: the legacy TorchScript tracer bakes transformers 5's
    attention-mask construction into constants, and that graph is wrong at other sequence lengths.
    """
    import torch

    t = time.perf_counter()
    wrapped = _Encoder(model)
    seq = min(16, max_seq_len)
    ids = torch.randint(5, 100, (2, seq))
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    seq_dim = torch.export.Dim("seq", min=2, max=max(3, max_seq_len))
    shapes = {"input_ids": {0: batch_dim, 1: seq_dim}, "attention_mask": {0: batch_dim, 1: seq_dim}}
    quiet = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
            warnings.simplefilter("ignore")
            logging.getLogger("torch").setLevel(logging.ERROR)
            torch.onnx.export(
                wrapped,
                (ids, torch.ones_like(ids)),
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=["last_hidden_state"],
                dynamic_shapes=shapes,
                dynamo=True,
                optimize=True,
                verbose=False,
                external_data=False,
            )
    except Exception as e:
        raise LatencyError(f"ONNX export failed: {type(e).__name__}: {str(e)[:500]}") from e
    return time.perf_counter() - t


def quantize_int8(src: Path, dst: Path) -> float:
    """Dynamic int8 quantization (QInt8 weights, activations quantized at run time); returns seconds taken."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t = time.perf_counter()
    logging.getLogger().setLevel(logging.ERROR)  # "please run pre-processing" advice on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return time.perf_counter() - t


class OnnxRuntimeBackend(LatencyBackend):
    """onnxruntime CPU execution, fp32, full graph optimisation, pinned intra-op threads, sequential."""

    name = "onnxruntime"
    devices = ("cpu",)
    extra = "onnx"
    file_name = "model.onnx"

    def __init__(self, *, workdir: str | None = None, **kw: Any):
        super().__init__(**kw)
        self._tmp = tempfile.TemporaryDirectory(prefix="kdnas-onnx-") if workdir is None else None
        self.workdir = Path(workdir) if workdir else Path(self._tmp.name)  # type: ignore[union-attr]
        self._sessions: dict[str, tuple[Any, dict[str, Any]]] = {}

    @classmethod
    def available(cls) -> bool:
        return has_package("onnxruntime") and has_package("onnx") and has_package("onnxscript")

    # the graph -------------------------------------------------------------------------------------------------
    def _fp32(self, spec: ModelSpec, info: dict[str, Any]) -> Path:
        if spec.kind == "static":
            raise LatencyError(
                f"{spec.label}: a static embedding model is a table lookup, not a graph; time it with a torch "
                "backend (target.backend: torch)"
            )
        if spec.kind == "dir" and (Path(spec.path or "") / "model.onnx").is_file():
            return Path(spec.path or "") / "model.onnx"
        out = self.workdir / f"{_safe(spec.key)}.onnx"
        if not out.is_file():  # another backend's worker of this call may have exported it already
            import torch

            # export needs no speed; one thread keeps torch's pool from spinning beside onnxruntime's
            torch.set_num_threads(1)
            model = spec.build(attn_implementation="eager")
            from kdnas.latency.spec import max_positions

            tmp = out.with_suffix(".tmp.onnx")
            info["export_s"] = round(
                export_onnx(model, tmp, max_seq_len=max_positions(model.config) or 512), 2
            )
            tmp.replace(out)
            del model
        return out

    def graph(self, spec: ModelSpec, info: dict[str, Any]) -> Path:
        return self._fp32(spec, info)

    def _session(self, spec: ModelSpec, info: dict[str, Any]) -> Any:
        if spec.key in self._sessions:
            return self._sessions[spec.key]
        import onnxruntime as ort

        path = self.graph(spec, info)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise LatencyError(f"onnxruntime cannot load {path.name}: {str(e)[:400]}") from e
        self._sessions = {spec.key: (sess, dict(info))}
        return self._sessions[spec.key]

    def measure(self, model: Any, shape: Shape) -> LatencyResult:
        import numpy as np

        spec = self.spec_of(model)
        if spec is None:
            raise LatencyError(f"backend {self.name}: give a ModelSpec or an Arch, not a ready module")
        sess, info = self._session(spec, {})
        vocab = spec.hf_config().vocab_size
        rng = np.random.default_rng(0)
        ids = rng.integers(5, max(6, min(vocab, 30_000)), (shape.batch_size, shape.seq_len), dtype=np.int64)
        feeds_all = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
        names = [i.name for i in sess.get_inputs()]
        missing = [n for n in names if n not in feeds_all]
        if missing:
            raise LatencyError(f"{spec.label}: the ONNX graph wants inputs {missing} that kdnas cannot fill")
        feeds = {n: feeds_all[n] for n in names}
        first_output = [sess.get_outputs()[0].name]

        def run_once_ms() -> float:
            t = time.perf_counter()
            sess.run(first_output, feeds)
            return (time.perf_counter() - t) * 1e3

        return self.timed(run_once_ms, shape, label=spec.label, extra=info)


class OnnxRuntimeInt8Backend(OnnxRuntimeBackend):
    """The fp32 graph with int8 weights (onnxruntime.quantization.quantize_dynamic, QInt8)."""

    name = "onnxruntime-int8"
    file_name = "model-int8.onnx"

    def graph(self, spec: ModelSpec, info: dict[str, Any]) -> Path:
        if spec.kind == "dir" and (Path(spec.path or "") / "model-int8.onnx").is_file():
            return Path(spec.path or "") / "model-int8.onnx"
        out = self.workdir / f"{_safe(spec.key)}-int8.onnx"
        if not out.is_file():
            src = self._fp32(spec, info)
            tmp = out.with_suffix(".tmp.onnx")
            info["quantize_s"] = round(quantize_int8(src, tmp), 2)
            tmp.replace(out)
        return out


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in key)
