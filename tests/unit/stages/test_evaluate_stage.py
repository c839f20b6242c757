"""The evaluate stage keeps every task it has scored: a process killed between two tasks resumes with the next."""

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

from kdnas import config, pipeline

JOB = Path(__file__).with_name("_evaluate_job.py")


def _tiny_run_to_distill(tmp: Path) -> Path:
    """A tiny run (tiny BERT teacher, fake latency, two classification tasks) up to its distill stage."""
    from kdnas.testing import tiny_run_config, write_tiny_task

    tasks = [str(write_tiny_task(tmp / "first.csv", "ab")), str(write_tiny_task(tmp / "second.csv", "abc"))]
    cfg = config.from_dict(
        tiny_run_config(
            tmp, name="evaluate-kill", tasks=tasks, n_trials=1,
            dimensions={"num_layers": [1], "hidden_size": [32], "ffn_ratio": [2]},
            evaluate={"baselines": False, "fidelity_passages": 0},
        )
    )  # fmt: skip
    run = tmp / "run"
    pipeline.run(cfg, run_dir=run, until="distill", progress=False)
    return run


def test_a_killed_evaluation_resumes_at_the_task_it_was_scoring(tmp_path: Path) -> None:
    run = _tiny_run_to_distill(tmp_path)
    teacher_json = run / "evaluate" / "teacher.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(JOB), str(run), "--slow", "120"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None and not teacher_json.is_file():
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)  # sleeping before its second task: the first one's result is on disk
    proc.wait(timeout=30)
    killed = json.loads(teacher_json.read_text())
    assert list(killed["results"]) == ["first"]

    from kdnas.evaluate import runner

    scored: list[tuple[str, str]] = []
    real = runner.finetune

    def counting(model: Any, tokenizer: Any, task: Any, *a: Any, **kw: Any) -> Any:
        scored.append((str(getattr(model.config, "num_hidden_layers", "?")), task.name))
        return real(model, tokenizer, task, *a, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "finetune", counting)
        pipeline.run(config.load(str(run / "config.yaml")), run_dir=run, resume=True, until="evaluate",
                     progress=False)  # fmt: skip
    teacher_layers = str(json.loads((tmp_path / "teacher" / "config.json").read_text())["num_hidden_layers"])
    assert [t for layers, t in scored if layers == teacher_layers] == ["second"]  # "first" was kept
    assert sorted(t for layers, t in scored if layers != teacher_layers) == ["first", "second"]  # the student
    done = json.loads(teacher_json.read_text())
    assert list(done["results"]) == ["first", "second"]
    assert done["results"]["first"] == killed["results"]["first"]
    assert (run / "retention.json").is_file()
