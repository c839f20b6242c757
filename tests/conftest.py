"""Shared fixtures: integration tests get the real `minilm-l6` teacher and zoo data through the zoo cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests check cache behaviour, not timings: cache measurements even when the CI machine is loaded.
os.environ.setdefault("KDNAS_LATENCY_CACHE_ALWAYS", "1")


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models are far faster on one thread (2 contended threads made a tiny step ~30x slower); latency
    # measurements run in their own worker processes with their own pinned threads and are unaffected.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def zoo_cache() -> Path:
    """The zoo cache dir used by integration tests ($KDNAS_CACHE or the default), fetched once per machine."""
    from kdnas import zoo

    return zoo.cache_dir()


@pytest.fixture(scope="session")
def minilm_dir(zoo_cache: Path) -> Path:
    from kdnas import zoo

    return zoo.fetch("minilm-l6")


@pytest.fixture(scope="session")
def wiki_en_dir(zoo_cache: Path) -> Path:
    from kdnas import zoo

    return zoo.fetch("wiki-vital-en")


@pytest.fixture(scope="session")
def bbc_dir(zoo_cache: Path) -> Path:
    from kdnas import zoo

    return zoo.fetch("bbc-news")
