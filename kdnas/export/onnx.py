"""ONNX export of an HF encoder (fp32 via the torch.export-based exporter, int8 by dynamic quantization).

Each ONNX file is checked against the PyTorch model on a few real tokenized sentences (max abs diff, cosine).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas._imports import optional_import
from kdnas.errors import KdnasError

if TYPE_CHECKING:
    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FP32_MAX_ABS = 1e-3
"""An fp32 ONNX file whose output differs from PyTorch by more than this is rejected."""
INT8_MIN_COSINE = 0.98
"""An int8 ONNX file whose mean token cosine to PyTorch is below this gets a warning (int8 is lossy)."""

# Natural sentences of different lengths: the check batch is padded, like real serving traffic.
CHECK_SENTENCES = (
    "The river flows through the old city and into the sea.",
    "Distillation trains a small model to copy a large one.",
    "A new album by the band was the first to top the charts in three countries at once.",
    "Hello!",
    "The election results were announced on Monday after a long count in the northern provinces.",
    "Software for the network was written by a small company.",
)


class ExportError(KdnasError):
    """An export cannot be written (existing dir, failed ONNX conversion, numerics mismatch)."""


@dataclass
class NumericsCheck:
    """How far an ONNX file's `last_hidden_state` is from PyTorch's on the check sentences (real tokens only)."""

    max_abs_diff: float
    """Largest absolute difference over every real (non-padding) token and hidden unit."""
    mean_cosine: float
    """Mean over real tokens of the cosine between the ONNX and PyTorch hidden vectors."""
    passed: bool
    """Whether the threshold for this precision was met."""
    threshold: str
    """The rule applied, e.g. `max_abs_diff < 0.001`."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_names(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The ONNX inputs: what the tokenizer produces and the model's forward accepts, in a fixed order."""
    import inspect

    accepted = set(inspect.signature(model.forward).parameters)
    if not {"input_ids", "attention_mask"} <= accepted:
        raise ExportError(
            f"{type(model).__name__} does not take input_ids and attention_mask; only HF encoders can be exported"
        )
    produced = set(getattr(tokenizer, "model_input_names", ()))
    names = ["input_ids", "attention_mask"]
    if "token_type_ids" in accepted and "token_type_ids" in produced:
        names.append("token_type_ids")
    return names


def check_batch(tokenizer: PreTrainedTokenizerBase, names: list[str]) -> dict[str, np.ndarray]:
    """The check sentences tokenized and padded into one int64 batch with exactly the `names` inputs."""
    import numpy as np

    enc = tokenizer(list(CHECK_SENTENCES), padding=True, truncation=True, max_length=64, return_tensors="np")
    out = {}
    for n in names:
        out[n] = np.asarray(enc[n], dtype=np.int64) if n in enc else np.zeros_like(enc["input_ids"], np.int64)
    return out


def torch_hidden(model: PreTrainedModel, batch: dict[str, np.ndarray]) -> np.ndarray:
    """`last_hidden_state` [batch, seq, hidden] of the PyTorch model on `batch`, as float32 numpy."""
    import torch

    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
    return out.last_hidden_state.float().numpy()


def compare(onnx_out: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(max abs diff, mean cosine) of [B, S, H] outputs over the positions where `mask` [B, S] is 1."""
    import numpy as np

    real = mask.astype(bool)
    a, b = onnx_out[real].astype(np.float64), ref[real].astype(np.float64)  # [tokens, H]
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)
    return float(np.abs(a - b).max()), float(cos.mean())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' progress prints and advisory warnings (they are not actionable for users)."""
    import io
    import sys

    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
        sys.stdout.flush()


SENTENCE_OUTPUT = "sentence_embedding"
"""The second output of a sentence-embedding export's ONNX graph: pooled, Dense-projected and normalised as its
sentence-transformers modules compute it (so ONNX users get the vectors that live in the teacher's space)."""


def sentence_head(pooling: Any, dense: Any = None) -> Any:
    """A torch module (last_hidden_state [B, S, H], attention_mask [B, S]) -> sentence embedding [B, D]: the
    `kdnas.models.pooling.Pooling` over real tokens, then `dense` (an nn.Linear H -> D, e.g.
    `kdnas.evaluate.fidelity.load_dense(dir)`) when there is one, then L2 normalisation when the pooling says so."""
    import dataclasses

    import torch

    from kdnas.models.pooling import pool

    raw = dataclasses.replace(pooling, normalize=False)

    class _Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = dense

        def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            x = pool(hidden, mask, raw)  # [B, H]
            if self.dense is not None:
                x = self.dense(x)  # [B, D]
            return torch.nn.functional.normalize(x, dim=-1) if pooling.normalize else x

    return _Head().eval()


def torch_sentence(model: PreTrainedModel, head: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The sentence embedding [B, D] PyTorch computes on `batch` (the reference of the ONNX output)."""
    import torch

    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
        emb = head(out.last_hidden_state, torch.from_numpy(batch["attention_mask"]))
    return emb.float().numpy()


def export_fp32(
    model: PreTrainedModel, names: list[str], batch: dict[str, np.ndarray], path: Path, *, head: Any = None
) -> int:
    """Write `model` as one ONNX file with dynamic batch and sequence axes; return the opset used. With a
    `head` (`sentence_head`), the graph has a second output, `sentence_embedding`.

    Uses `torch.onnx.export(dynamo=True)` (the torch.export-based exporter). The legacy TorchScript exporter
    traces the attention-mask construction of transformers 5 with the example's shape baked in, so its graph
    is wrong at any other sequence length; the dynamo exporter keeps the shapes symbolic.
    """
    optional_import("onnx", purpose="ONNX export")
    optional_import("onnxscript", purpose="ONNX export")
    import torch
    from torch.export import Dim

    class _Encoder(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module, head: torch.nn.Module | None) -> None:
            super().__init__()
            self.inner = inner
            self.head = head

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor | None = None,
        ) -> Any:
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            hidden = self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
            if self.head is None:
                return hidden
            return hidden, self.head(hidden, attention_mask)

    wrapper = _Encoder(model, head).eval()
    outputs = ["last_hidden_state"] + ([SENTENCE_OUTPUT] if head is not None else [])
    args = tuple(torch.from_numpy(batch[n]) for n in names)
    seq_dim, batch_dim = Dim("sequence"), Dim("batch")
    shapes = {n: {0: batch_dim, 1: seq_dim} for n in names}
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    try:
        with _quiet():
            program = torch.onnx.export(
                wrapper,
                args,
                str(path),
                input_names=names,
                output_names=outputs,
                dynamic_shapes=shapes,
                dynamo=True,
                external_data=n_bytes > 1_800_000_000,  # protobuf's 2 GB limit
                verbose=False,
            )
    except Exception as e:  # the exporter raises many unrelated types; all mean the same to the user
        raise ExportError(
            f"ONNX export of {type(model).__name__} failed ({type(e).__name__}: {str(e).splitlines()[0][:300]}); "
            "export without ONNX (--no-onnx) and convert the HF folder with optimum, or report the model family"
        ) from e
    opset = 0
    if program is not None:
        opset = next((o for d, o in program.model.opset_imports.items() if d in ("", "ai.onnx")), 0)
    return int(opset)


def quantize_int8(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (weights QInt8, activations quantized at run time) of the ONNX file `src`.

    Per-channel weight scales: on all-MiniLM-L6-v2 per-tensor scales give a token cosine of 0.955 to PyTorch,
    per-channel 0.990, at the same file size and speed.
    """
    q = optional_import("onnxruntime.quantization", purpose="int8 ONNX export")
    try:
        with _quiet():
            q.quantize_dynamic(str(src), str(dst), weight_type=q.QuantType.QInt8, per_channel=True)
    except Exception as e:  # onnxruntime raises plain Exceptions from its graph passes
        raise ExportError(
            f"int8 quantization of {src.name} failed ({type(e).__name__}: {e}); export with --no-int8"
        ) from e


def onnx_hidden(
    path: Path, batch: dict[str, np.ndarray], *, threads: int = 1, output: str = "last_hidden_state"
) -> np.ndarray:
    """Run the ONNX file on `batch` with onnxruntime (CPU) and return its `output`."""
    ort = optional_import("onnxruntime", purpose="checking the ONNX export")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in sess.get_inputs()}
    missing = wanted - set(batch)
    if missing:
        raise ExportError(f"{path.name} expects inputs {sorted(missing)} that the tokenizer does not produce")
    return sess.run([output], {k: v for k, v in batch.items() if k in wanted})[0]


def check(
    path: Path,
    ref: np.ndarray,
    batch: dict[str, np.ndarray],
    *,
    int8: bool,
    output: str = "last_hidden_state",
) -> NumericsCheck:
    """Compare an ONNX file's `output` with the PyTorch reference on the check batch (token states over real
    tokens; a sentence embedding [B, D] per sentence)."""
    import numpy as np

    got = onnx_hidden(path, batch, output=output)
    mask = batch["attention_mask"] if ref.ndim == 3 else np.ones(ref.shape[:1], dtype=np.int64)[:, None]
    if ref.ndim == 2:
        got, ref = got[:, None, :], ref[:, None, :]
    max_abs, cos = compare(got, ref, mask)
    if int8:
        return NumericsCheck(max_abs, cos, cos > INT8_MIN_COSINE, f"mean_cosine > {INT8_MIN_COSINE}")
    return NumericsCheck(max_abs, cos, max_abs < FP32_MAX_ABS, f"max_abs_diff < {FP32_MAX_ABS}")
