"""Deterministic splits that never overlap: by a stable hash of each document's key, not by position.

Labeled zoo tasks split by key with `task_split_of` (seed-independent), so a corpus built from the same source
can leave out every task dev/test document ("train split only") whatever seed the run uses.
"""

from __future__ import annotations

import hashlib

TASK_TEST_FRACTION = 0.1
TASK_DEV_FRACTION = 0.1


def unit_hash(key: str, salt: str = "") -> float:
    """A uniform number in [0, 1) from `key` (stable across runs, platforms and Python versions)."""
    h = hashlib.sha1(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def task_split_of(key: str) -> str:
    """`train`, `dev` or `test` for a labeled document of a zoo task (10% test, 10% dev)."""
    u = unit_hash(key, "kdnas-task")
    if u < TASK_TEST_FRACTION:
        return "test"
    if u < TASK_TEST_FRACTION + TASK_DEV_FRACTION:
        return "dev"
    return "train"


def corpus_split_of(key: str, *, seed: int, heldout_fraction: float, proxy_fraction: float) -> str:
    """`heldout`, `proxy` or `train` for a corpus document; seeded, disjoint by construction."""
    u = unit_hash(key, f"kdnas-corpus-{seed}")
    if u < heldout_fraction:
        return "heldout"
    if u < heldout_fraction + proxy_fraction:
        return "proxy"
    return "train"
