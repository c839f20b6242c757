"""A teacher reference (zoo name, local dir or hub id) -> what `from_pretrained` takes."""

from __future__ import annotations

from pathlib import Path

from kdnas.errors import AssetError
from kdnas.zoo.catalogue import ASSETS
from kdnas.zoo.store import fetch


def resolve_model_ref(
    ref: str | Path, *, cache_dir: str | Path | None = None, progress: bool = True
) -> Path | str:
    """A teacher reference -> something `from_pretrained` takes.

    A zoo teacher name -> its fetched dir (fetched now if needed); an existing local dir -> that Path;
    anything else is returned unchanged as a hub id string (loading it needs network access to the hub).
    """
    s = str(ref)
    if s in ASSETS:
        asset = ASSETS[s]
        if asset.kind != "teacher":
            teachers = ", ".join(a.name for a in ASSETS.values() if a.kind == "teacher")
            raise AssetError(f"{s!r} is a {asset.kind} in the zoo, not a teacher; zoo teachers: {teachers}")
        return fetch(s, cache_dir=cache_dir, progress=progress)
    path = Path(s).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise AssetError(
            f"{s}: is a file; a teacher is a model dir (with config.json), a zoo name or a hub id"
        )
    if isinstance(ref, Path) or s.startswith((".", "/", "~")) or s.endswith("/") or s.count("/") > 1:
        raise AssetError(
            f"{s}: no such model dir; give a local HF model dir, a zoo teacher "
            f"({', '.join(a.name for a in ASSETS.values() if a.kind == 'teacher')}) or a hub id"
        )
    return s
