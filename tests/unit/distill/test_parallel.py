"""Distillation over several real processes (torchrun, gloo on CPU): the same steps as one process, resume
with another process count, and a distillation SIGKILLed mid-run that resumes with no lost steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

JOB = Path(__file__).with_name("_distill_job.py")


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(tmp: Path, name: str, *args: str, procs: int = 1) -> dict[str, Any]:
    out = tmp / f"{name}.json"
    if procs == 1:
        cmd = [sys.executable, str(JOB), str(out), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
               str(JOB), str(out), *args]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol * max(1.0, abs(y)) for x, y in zip(a, b, strict=True))


def test_two_processes_take_the_same_steps_as_one(tmp_path: Path) -> None:
    one = _run(tmp_path, "one")
    two = _run(tmp_path, "two", procs=2)
    assert two["world"] == 2 and not two["failed"]
    assert two["tokens"] == one["tokens"]  # the same global batch
    assert _close(two["loss"], one["loss"]), (two["loss"], one["loss"])
    assert _close(list(two["weights"].values()), list(one["weights"].values()))


def test_a_run_of_two_processes_resumes_in_one(tmp_path: Path) -> None:
    one = _run(tmp_path, "one")
    run_dir = tmp_path / "run"
    part = _run(tmp_path, "part", "--out-dir", str(run_dir), "--stop-after", "3", procs=2)
    assert len(part["loss"]) == 3
    rest = _run(tmp_path, "rest", "--out-dir", str(run_dir), "--resume")
    assert _close(rest["loss"], one["loss"]) and _close(
        list(rest["weights"].values()), list(one["weights"].values())
    )
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 7))


def test_a_worker_leaves_with_its_code_and_its_output_flushed(tmp_path: Path) -> None:
    """`parallel.leave` skips the interpreter's teardown (where gloo aborted finished runs) but nothing written is
    lost: stdout to a pipe is block-buffered, and a plain os._exit would drop it."""
    log = tmp_path / "worker.log"
    script = (
        "import logging, sys; from kdnas.distill import parallel; "
        "logging.basicConfig(filename=sys.argv[1], level=logging.INFO); logging.info('saved'); "
        "print('done', end=''); parallel.leave(3)"
    )
    buffered = {k: v for k, v in _env().items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.run(
        [sys.executable, "-c", script, str(log)], env=buffered, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 3 and proc.stdout == "done", proc.stderr[-2000:]
    assert "saved" in log.read_text()


def test_grad_accum_must_be_a_multiple_of_the_processes(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"distill.grad_accum is 1, not a multiple of the 2 processes"):
        _run(tmp_path, "bad", "--grad-accum", "1", procs=2)


def test_a_killed_distillation_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    full = _run(tmp_path, "full", "--steps", "8")
    run_dir = tmp_path / "run"
    cmd = [sys.executable, str(JOB), str(tmp_path / "killed.json"), "--steps", "8", "--out-dir", str(run_dir),
           "--slow", "0.5"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    manifest = run_dir / "checkpoint.json"
    deadline = time.monotonic() + 120
    step = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file():
            step = json.loads(manifest.read_text())["checkpoints"][0]["step"]
            if step >= 3:
                break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    kept = json.loads(manifest.read_text())["checkpoints"][0]["step"]
    assert 3 <= kept < 8
    resumed = _run(tmp_path, "resumed", "--steps", "8", "--out-dir", str(run_dir), "--resume")
    assert resumed["loss"] == full["loss"]  # bitwise: no step lost or taken twice
    lines = (run_dir / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == list(range(1, 9))
