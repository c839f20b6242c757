"""Shared fixtures: integration tests get the real `minilm-l6` teacher and zoo data through the zoo cache."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tests check cache behaviour, not timings: cache measurements even when the CI machine is loaded, and so into a
# latency cache of this test session's own (subprocesses inherit it): readings taken beside other work, shared
# through the user's cache, once made every later smoke run on the machine time its students at 160+ ms.
os.environ.setdefault("KDNAS_LATENCY_CACHE_ALWAYS", "1")
_LATENCY_CACHE = tempfile.mkdtemp(prefix="kdnas-test-latency-")
os.environ["KDNAS_LATENCY_CACHE"] = _LATENCY_CACHE


def pytest_configure(config: pytest.Config) -> None:
    # Tiny models are far faster on one thread (2 contended threads made a tiny step ~30x slower); latency
    # measurements run in their own worker processes with their own pinned threads and are unaffected.
    import torch

    torch.set_num_threads(1)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_LATENCY_CACHE, ignore_errors=True)


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
