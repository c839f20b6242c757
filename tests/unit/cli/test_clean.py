"""`kdnas clean`: frees a run dir's teacher cache and finished checkpoints, drops old latency readings."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from kdnas import run_dir as rd
from kdnas.cli import main
from kdnas.latency.cache import LatencyCache
from kdnas.latency.result import LatencyResult


def _run_dir(root: Path, *, distilled: bool) -> Path:
    (root / rd.TEACHER_CACHE / "k").mkdir(parents=True)
    (root / rd.TEACHER_CACHE / "k" / "hidden.6.npy").write_bytes(b"\1" * (1 << 20))
    (root / rd.CONFIG).write_text("seed: 0\n")
    if distilled:
        rd.marker(root, "distill").parent.mkdir()
        rd.marker(root, "distill").write_text('{"summary": {}}')
    return root


def test_clean_lists_then_frees_and_keeps_what_an_unfinished_run_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _run_dir(tmp_path / "done", distilled=True)
    busy = _run_dir(tmp_path / "busy", distilled=False)
    assert main(["clean", str(done), str(busy), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would free 1.0 MiB" in out and "kept: the distill stage has not finished" in out
    assert (done / rd.TEACHER_CACHE).exists()  # a dry run deletes nothing

    assert main(["clean", str(done), str(busy)]) == 0
    out = capsys.readouterr().out
    assert "freed 1.0 MiB in 2 run dirs" in out
    assert not (done / rd.TEACHER_CACHE).exists() and (busy / rd.TEACHER_CACHE).exists()
    assert (done / rd.CONFIG).is_file()
    assert main(["clean", str(busy), "--force"]) == 0
    assert not (busy / rd.TEACHER_CACHE).exists()
    assert main(["clean", str(done)]) == 0
    assert "nothing to free" in capsys.readouterr().out


def test_clean_refuses_a_dir_that_is_not_a_run_before_deleting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = _run_dir(tmp_path / "done", distilled=True)
    assert main(["clean", str(done), str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope is not a kdnas run dir (no config.yaml" in err
    assert (done / rd.TEACHER_CACHE).exists()
    assert main(["clean"]) == 2
    assert "nothing to clean" in capsys.readouterr().err
    assert main(["clean", str(done), "--older-than", "3"]) == 2
    assert "--older-than applies to --latency only" in capsys.readouterr().err


def test_clean_latency_drops_only_readings_older_than_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cache = LatencyCache(tmp_path / "lat")
    for i, model in enumerate(("old", "new")):
        r = LatencyResult(1.0 + i, 1.1, 0.1, 10, 0.01, "torch", "cpu", 2, 1, 128, "fp")
        cache.put("fp", "torch", model, r)
    with sqlite3.connect(cache.path) as db:  # cached ten days ago
        db.execute("UPDATE results SET created = ? WHERE model = 'old'", (time.time() - 10 * 86400,))
    args = ["clean", "--latency", "--cache-dir", str(tmp_path / "lat")]
    assert main([*args, "--older-than", "5", "--dry-run"]) == 0
    assert "would drop 1 reading cached more than 5 days ago (2 in it)" in capsys.readouterr().out
    assert len(cache) == 2
    assert main([*args, "--older-than", "5"]) == 0
    assert "dropped 1 reading cached more than 5 days ago (1 left)" in capsys.readouterr().out
    assert (
        cache.get("fp", "torch", "old", 1, 128) is None
        and cache.get("fp", "torch", "new", 1, 128) is not None
    )
    assert main(args) == 0
    assert "dropped 1 reading (0 left)" in capsys.readouterr().out
