"""The measuring worker's side: read a JSON job, pin threads, measure every (model, shape), write JSON lines.

Run by the isolated runner as `python -m kdnas worker latency --job JOB --out OUT` in a fresh process group.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

THREAD_ENV = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def thread_env(threads: int) -> dict[str, str]:
    """Environment that pins every math library's pool to `threads` (must be set before torch is imported)."""
    env = {k: str(threads) for k in THREAD_ENV}
    env.update(
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        PYTHONWARNINGS="ignore",
    )
    return env


def _write(out: Any, record: dict[str, Any]) -> None:
    out.write(json.dumps(record) + "\n")
    out.flush()
    os.fsync(out.fileno())


def run_job(job_path: str | Path, out_path: str | Path) -> int:
    """Measure the job; each finished measurement is one flushed line, so a killed worker loses only the last."""
    t0 = time.perf_counter()
    job = json.loads(Path(job_path).read_text())
    threads = int(job["threads"])
    os.environ.update(thread_env(threads))  # no-op when the runner set them; needed when run by hand
    with open(out_path, "a") as out:
        try:
            import torch

            torch.set_num_threads(threads)
            # Trained weights produce denormal activations that random ones do not (a distilled MiniLM-size
            # student ran 6.0 ms trained vs 4.6 ms random); flushing them to zero is what a CPU deployment
            # should do anyway, and it makes random-weight latency (used in search) match the trained model's.
            torch.set_flush_denormal(True)
            with contextlib.suppress(RuntimeError):  # already set (some import ran a parallel op)
                torch.set_num_interop_threads(1)
            from kdnas.latency.backends import get_backend
            from kdnas.latency.result import Shape
            from kdnas.latency.spec import ModelSpec
            from kdnas.latency.stats import TimingSettings

            cls = get_backend(job["backend"])
            backend = cls(
                threads=threads,
                device=job.get("device", "cpu"),
                settings=TimingSettings(**job.get("settings", {})),
                fingerprint_id=job.get("fingerprint"),
                **job.get("options", {}),
            )
        except Exception as e:
            _write(out, {"event": "fatal", "error": f"{type(e).__name__}: {e}", "type": type(e).__name__})
            return 1
        _write(out, {"event": "ready", "startup_s": round(time.perf_counter() - t0, 3)})
        for i, item in enumerate(job["items"]):
            spec = ModelSpec.from_dict(item["spec"])
            for b, s in item["shapes"]:
                t = time.perf_counter()
                rec: dict[str, Any] = {"item": i, "shape": [b, s]}
                try:
                    r = backend.measure(spec, Shape(b, s))
                    r.extra["worker_s"] = round(time.perf_counter() - t, 3)
                    rec["result"] = r.to_dict()
                except Exception as e:
                    rec["error"] = f"{type(e).__name__}: {e}"
                    rec["type"] = type(e).__name__
                    from kdnas.errors import KdnasError

                    if not isinstance(e, KdnasError):
                        rec["traceback"] = traceback.format_exc()[-2000:]
                _write(out, rec)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_job(sys.argv[1], sys.argv[2]))
