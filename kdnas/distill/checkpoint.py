"""Distillation checkpoints: the last two kept, each checked by its sha256 before it is trusted.

A checkpoint holds everything exact resume needs: student and projections, optimiser, step, history. Layout in
the run's dir:

    checkpoint-000120.pt   checkpoint-000240.pt   checkpoint.json

`checkpoint.json` (written atomically, after the file it names is complete) lists the kept files newest first
with their step and sha256. A file that does not match its checksum (truncated, overwritten, half-copied) is
skipped with a warning and the previous one is used, so a crash or a damaged disk costs at most one
checkpoint interval. A run dir written before this layout (one `checkpoint.pt`) still loads.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from kdnas._io import write_json_atomic
from kdnas.errors import DistillError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"  # the single-file layout of earlier versions (still read)
MANIFEST = "checkpoint.json"
VERSION = 1
KEEP = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _manifest(directory: Path) -> list[dict[str, Any]]:
    path = directory / MANIFEST
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())["checkpoints"]
        return [e for e in entries if isinstance(e, dict) and {"file", "sha256", "step"} <= set(e)]
    except (ValueError, KeyError, TypeError):
        log.warning("%s is unreadable; looking for checkpoint files without it", path)
        return []


def has_checkpoint(directory: str | Path) -> bool:
    """Whether `directory` holds a checkpoint to resume from (either layout)."""
    directory = Path(directory)
    return bool(_manifest(directory)) or (directory / CHECKPOINT).is_file()


def save_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (which has a `step`) as a new checkpoint in `directory` and return its path. The file is
    complete (tmp + rename) before the manifest names it; the oldest beyond the last `KEEP` is removed after."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    step = int(state["step"])
    name = f"checkpoint-{step:06d}.pt"
    path = directory / name
    buf = io.BytesIO()
    torch.save({"version": VERSION, **state}, buf)
    data = buf.getvalue()
    tmp = path.with_name(f"{name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    entry = {"file": name, "step": step, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    kept = [entry, *[e for e in _manifest(directory) if e["file"] != name][: KEEP - 1]]
    write_json_atomic(directory / MANIFEST, {"version": VERSION, "checkpoints": kept})
    names = {e["file"] for e in kept}
    for old in directory.glob("checkpoint-*.pt"):
        if old.name not in names:
            old.unlink(missing_ok=True)
    (directory / CHECKPOINT).unlink(missing_ok=True)  # an earlier layout's file is superseded
    return path


def checkpoint_files(directory: str | Path) -> list[Path]:
    """Every file of the checkpoint layout in `directory` (kept checkpoints, their manifest, an earlier layout's
    file, half-written temporaries): what a finished distillation no longer needs."""
    directory = Path(directory)
    names = ("checkpoint-*.pt", "checkpoint-*.pt.tmp*", CHECKPOINT, MANIFEST)
    return sorted({p for pattern in names for p in directory.glob(pattern) if p.is_file()})


def _read(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        raise DistillError(
            f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {str(e)[:200]}); delete it to start "
            "that run afresh, or use a new output dir"
        ) from None
    if not isinstance(state, dict) or state.get("version") != VERSION:
        raise DistillError(
            f"checkpoint {path} is not a kdnas distillation checkpoint (version {VERSION}); delete it to start "
            "afresh, or use a new output dir"
        )
    return state


def load_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The newest checkpoint in `directory` whose sha256 matches the manifest; a damaged newer one is skipped
    with a warning. Raises DistillError when none is intact, saying how to recover."""
    directory = Path(directory)
    entries = _manifest(directory)
    if not entries:
        legacy = directory / CHECKPOINT
        if legacy.is_file():
            return _read(legacy)
        raise DistillError(f"no checkpoint in {directory}; start the run afresh (without resume)")
    damaged = []
    for e in entries:
        path = directory / e["file"]
        if not path.is_file():
            damaged.append(f"{e['file']} (missing)")
            continue
        if _sha256(path) != e["sha256"]:
            damaged.append(f"{e['file']} (sha256 does not match {MANIFEST}: truncated or overwritten)")
            continue
        if damaged:
            log.warning(
                "checkpoint %s damaged; resuming from the previous one, %s at step %d",
                "; ".join(damaged), e["file"], e["step"],
            )  # fmt: skip
        return _read(path)
    raise DistillError(
        f"no intact checkpoint in {directory}: {'; '.join(damaged)}; delete the dir's checkpoint files to start "
        "that run afresh, or use a new output dir"
    )
