"""Distillation checkpoints: atomic writes (tmp + rename) and loads that turn corruption into a DistillError.

A checkpoint holds everything exact resume needs: student and projections, optimiser, step, RNG, history.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from kdnas.errors import DistillError

CHECKPOINT = "checkpoint.pt"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: a killed process leaves the previous checkpoint intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    torch.save({"version": VERSION, **state}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint; a truncated or foreign file raises DistillError saying how to recover."""
    path = Path(path)
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
