"""Latency of an exported folder per backend (torch, onnxruntime fp32, onnxruntime int8), one worker each.

Each backend runs in its own subprocess with pinned threads, so torch and onnxruntime never share a process.
Run as `python -m kdnas.export.timing MODEL_DIR BACKEND ...` (the worker); `measure_export` is the caller.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdnas.errors import LatencyError

BACKEND_FILES = {"torch": None, "onnxruntime": "model.onnx", "onnxruntime-int8": "model-int8.onnx"}


@dataclass
class LatencyFigure:
    """One backend's latency on one input shape."""

    backend: str
    """torch, onnxruntime or onnxruntime-int8."""
    median_ms: float
    """Median wall time of one forward pass."""
    p90_ms: float
    """90th percentile wall time."""
    repeats: int
    """Timed forward passes (after warm-up)."""
    batch_size: int
    """Input batch size."""
    seq_len: int
    """Input sequence length (every token real, no padding)."""
    threads: int
    """Intra-op threads the runtime was pinned to."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hardware_fingerprint() -> str:
    """A short description of the CPU this process runs on (model name, logical cores, OS, machine)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu or 'unknown CPU'}, {os.cpu_count()} logical cores, {platform.system()} {platform.machine()}"


def measure_export(
    model_dir: Path,
    backends: list[str],
    *,
    threads: int = 2,
    batch_size: int = 1,
    seq_len: int = 128,
    max_time_s: float = 3.0,
    timeout_s: float = 180.0,
) -> dict[str, LatencyFigure]:
    """Median latency of each backend for `model_dir` (an exported folder), each in a fresh pinned worker."""
    out: dict[str, LatencyFigure] = {}
    for backend in backends:
        if backend not in BACKEND_FILES:
            raise LatencyError(f"unknown backend {backend!r}; one of {', '.join(BACKEND_FILES)}")
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        env["TOKENIZERS_PARALLELISM"] = "false"
        cmd = [
            sys.executable,
            "-m",
            "kdnas.export.timing",
            str(model_dir),
            backend,
            "--threads",
            str(threads),
            "--batch-size",
            str(batch_size),
            "--seq-len",
            str(seq_len),
            "--max-time-s",
            str(max_time_s),
        ]
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=env, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            raise LatencyError(
                f"timing {backend} on {model_dir} took over {timeout_s:.0f} s; raise the timeout"
            ) from None
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            raise LatencyError(f"timing {backend} on {model_dir} failed: {' | '.join(tail)}")
        out[backend] = LatencyFigure(**json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


# --------------------------------------------------------------------------------------------------------------
# worker


def _inputs(names: list[str], vocab_size: int, batch_size: int, seq_len: int) -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    ids = rng.integers(min(1000, vocab_size // 2), vocab_size, size=(batch_size, seq_len), dtype=np.int64)
    feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in names:
        feed["token_type_ids"] = np.zeros_like(ids)
    return feed


def _time(fn: Any, max_time_s: float) -> tuple[float, float, int]:
    import numpy as np

    warm_end = time.perf_counter() + min(1.0, max_time_s / 4)
    fn()
    while time.perf_counter() < warm_end:
        fn()
    times: list[float] = []
    end = time.perf_counter() + max_time_s
    while len(times) < 5 or (time.perf_counter() < end and len(times) < 500):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    arr = np.asarray(times)
    return float(np.median(arr)), float(np.percentile(arr, 90)), len(times)


def _worker(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m kdnas.export.timing")
    p.add_argument("model_dir", type=Path)
    p.add_argument("backend", choices=list(BACKEND_FILES))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--max-time-s", type=float, default=3.0)
    a = p.parse_args(argv)
    cfg = json.loads((a.model_dir / "config.json").read_text())
    vocab = int(cfg["vocab_size"])
    if a.backend == "torch":
        import torch
        from transformers import AutoModel

        torch.set_num_threads(a.threads)
        model = AutoModel.from_pretrained(a.model_dir, attn_implementation="eager").eval()
        import inspect

        names = [
            n
            for n in ("input_ids", "attention_mask", "token_type_ids")
            if n in inspect.signature(model.forward).parameters
        ]
        feed = {k: torch.from_numpy(v) for k, v in _inputs(names, vocab, a.batch_size, a.seq_len).items()}

        def run() -> None:
            with torch.inference_mode():
                model(**feed)
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(
            str(a.model_dir / str(BACKEND_FILES[a.backend])), opts, providers=["CPUExecutionProvider"]
        )
        names = [i.name for i in sess.get_inputs()]
        onnx_feed = _inputs(names, vocab, a.batch_size, a.seq_len)

        def run() -> None:
            sess.run(None, onnx_feed)

    median, p90, n = _time(run, a.max_time_s)
    fig = LatencyFigure(a.backend, round(median, 4), round(p90, 4), n, a.batch_size, a.seq_len, a.threads)
    print(json.dumps(fig.to_dict()))


if __name__ == "__main__":
    _worker()
