"""The isolated runner: one fresh worker process per backend, threads pinned, killed on timeout or crash.

torch and onnxruntime in one process fight over threads and slow each other several-fold, and a long-lived
process drifts (allocator state, warm caches of other models); a fresh process per backend avoids both.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdnas.latency.worker import thread_env

log = logging.getLogger(__name__)


@dataclass
class WorkerOutcome:
    """What a worker wrote back: one record per finished (item, shape), and why it stopped early if it did."""

    records: list[dict[str, Any]] = field(default_factory=list)
    """Records in the order written: {"item", "shape", "result" | "error"}."""
    error: str | None = None
    """None when the worker finished; else the crash/timeout reason with the tail of its stderr."""
    startup_s: float | None = None
    """Worker start-up (imports, backend set-up)."""
    wall_s: float = 0.0
    """Worker wall time."""


def _tail(path: Path, n: int = 1500) -> str:
    try:
        data = path.read_bytes()[-n:].decode(errors="replace").strip()
    except OSError:
        return ""
    return data


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def run_worker(
    job: dict[str, Any],
    *,
    timeout_s: float,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    python: str | None = None,
) -> WorkerOutcome:
    """Run `job` in a fresh `kdnas worker latency` process; never blocks longer than `timeout_s` without progress.

    The clock restarts whenever the worker finishes a measurement, so a batch of many archs is fine while a
    single hung or runaway measurement is killed (with its whole process group) after `timeout_s`.
    """
    out = WorkerOutcome()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="kdnas-latency-") as tmp:
        job_path, out_path, err_path = Path(tmp, "job.json"), Path(tmp, "out.jsonl"), Path(tmp, "stderr.txt")
        job_path.write_text(json.dumps(job))
        out_path.touch()
        env = {**os.environ, **thread_env(int(job["threads"]))}
        cmd = [
            python or sys.executable,
            "-m",
            "kdnas",
            "worker",
            "latency",
            "--job",
            str(job_path),
            "--out",
            str(out_path),
        ]
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                cmd,
                stdout=err,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        last_progress = time.monotonic()
        offset = 0
        buf = ""

        def drain() -> None:
            nonlocal offset, buf, last_progress
            with open(out_path) as f:
                f.seek(offset)
                chunk = f.read()
                offset = f.tell()
            buf += chunk
            *lines, buf = buf.split("\n")
            for line in lines:
                if not line.strip():
                    continue
                rec = json.loads(line)
                last_progress = time.monotonic()
                if rec.get("event") == "ready":
                    out.startup_s = rec.get("startup_s")
                elif rec.get("event") == "fatal":
                    out.error = rec["error"]
                else:
                    out.records.append(rec)
                    if on_record:
                        on_record(rec)

        try:
            while True:
                rc = proc.poll()
                drain()
                if rc is not None:
                    if rc != 0 and out.error is None:
                        out.error = f"the worker exited with code {rc}"
                    break
                if time.monotonic() - last_progress > timeout_s:
                    _kill_group(proc)
                    drain()
                    out.error = f"the worker made no progress for {timeout_s:g} s (timeout_s) and was killed"
                    break
                time.sleep(0.05)
        except BaseException:  # Ctrl-C or a bug in on_record: never leave the worker behind
            _kill_group(proc)
            raise
        if out.error:
            tail = _tail(err_path)
            if tail:
                out.error += "; its output ended with:\n" + tail
    out.wall_s = time.monotonic() - t0
    return out
