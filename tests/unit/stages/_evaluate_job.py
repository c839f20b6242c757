"""The pipeline's evaluate stage in its own process, for the test that SIGKILLs it between two tasks.

    python _evaluate_job.py RUN_DIR [--slow S]

Resumes the run in RUN_DIR (its config.yaml) up to the evaluate stage. `--slow S` sleeps S seconds before every
fine-tuning of a task but the first, so the test can kill the process after exactly one task has been scored.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from kdnas import config, pipeline
from kdnas.evaluate import runner


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--slow", type=float, default=0.0)
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.slow:
        real, calls = runner.finetune, [0]

        def slow(*args: Any, **kw: Any) -> Any:
            calls[0] += 1
            if calls[0] > 1:
                time.sleep(a.slow)
            return real(*args, **kw)

        runner.finetune = slow  # type: ignore[assignment]
    run_dir = Path(a.run_dir)
    pipeline.run(config.load(str(run_dir / "config.yaml")), run_dir=run_dir, resume=True, until="evaluate",
                 progress=False)  # fmt: skip


if __name__ == "__main__":
    main()
