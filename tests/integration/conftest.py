"""Integration fixtures: the finished `kdnas run smoke` (one per session: the pipeline tests and the client tests
read the same run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdnas.cli import main


@pytest.fixture(scope="session")
def smoke_run(
    tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path, wiki_en_dir: Path, bbc_dir: Path
) -> Path:
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    assert main(["run", "smoke", "--run-dir", str(run_dir)]) == 0
    return run_dir
