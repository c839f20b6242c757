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


def test_the_key_list_of_docs_config_is_the_explain_output(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/config.md's "Every key" block is `kdnas validate --explain`: a new key or a changed default shows up
    here until the doc is regenerated (the block had drifted once: seq_len 128 and packed rows after both moved)."""
    from kdnas import config
    from kdnas.cli.validate import _explain

    _explain(config.RunConfig, "")
    text = (DOCS / "config.md").read_text()
    block = text.split("## Every key\n\n```\n", 1)[1].split("```", 1)[0]
    assert block.strip() == capsys.readouterr().out.strip(), (
        "regenerate the block with `kdnas validate --explain`"
    )
