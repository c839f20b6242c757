"""The runnable examples of docs/architecture.md and docs/api.md run as written (each in a fresh interpreter, in a
temp dir)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCKS = re.findall(r"```python\n(.*?)```", (DOCS / "architecture.md").read_text(), flags=re.S) + [
    b
    for b in re.findall(r"```python\n(.*?)```", (DOCS / "api.md").read_text(), flags=re.S)
    if b.startswith("# runnable example")
]


def test_the_doc_has_its_examples() -> None:
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_example_runs(i: int, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", BLOCKS[i]], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "KDNAS_CACHE": str(tmp_path / "cache")})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()  # each example prints what it got
