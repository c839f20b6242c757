"""Teacher cache: round trip against a live teacher, reuse, partial caching under a budget, q/k -> probs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from kdnas.distill.teacher_cache import (
    TeacherCache,
    TeacherNeeds,
    as_block,
    attention_probs_from_qk,
    run_teacher,
    teacher_info,
)
from kdnas.errors import DataError
from kdnas.testing import tiny_batch, tiny_teacher

NEEDS = TeacherNeeds(hidden=(0, 2), qkv=(2,), attn=(1,))


def test_round_trip_matches_live_teacher(tmp_path: Path) -> None:
    t = tiny_teacher("bert")
    block = tiny_batch(10, 12)
    handle = TeacherCache(tmp_path, budget_mb=64).prepare(t, block, NEEDS, batch_size=4)
    assert sorted(handle.items) == ["hidden.0", "hidden.2", "k.1", "k.2", "q.1", "q.2", "v.2"]
    assert handle.cached_rows == 10
    rows = torch.tensor([7, 1, 3])
    got = handle.fetch(rows)
    live = run_teacher(t, block["input_ids"][rows], block["attention_mask"][rows], handle.items)
    for item in handle.items:
        assert got[item].dtype == torch.float32
        assert_close(got[item], live[item], rtol=2e-3, atol=2e-3)  # fp16 storage
    # memory-mapped fp16 files on disk
    arr = np.load(next(tmp_path.glob("*/hidden.2.npy")), mmap_mode="r")
    assert arr.dtype == np.float16 and arr.shape == (10, 12, 32)
    # the normaliser: mean per-dim variance of the teacher states over real tokens
    m = block["attention_mask"].bool()
    h = run_teacher(t, block["input_ids"], block["attention_mask"], ["hidden.2"])["hidden.2"][m]
    assert handle.variances["hidden.2"] == pytest.approx(float(h.var(0, unbiased=False).mean()), rel=1e-4)


def test_reuse_and_extend(tmp_path: Path) -> None:
    t = tiny_teacher("bert")
    block = tiny_batch(6, 8)
    cache = TeacherCache(tmp_path)
    cache.prepare(t, block, TeacherNeeds(hidden=(2,)))
    entry = next(tmp_path.iterdir())
    mtime = (entry / "hidden.2.npy").stat().st_mtime_ns
    handle = cache.prepare(t, block, TeacherNeeds(hidden=(1, 2)))
    assert (entry / "hidden.2.npy").stat().st_mtime_ns == mtime  # reused, not recomputed
    assert (entry / "hidden.1.npy").is_file() and handle.cached_rows == 6
    # another teacher (different weights) or another block gets its own entry
    cache.prepare(tiny_teacher("bert", seed=1), block, TeacherNeeds(hidden=(2,)))
    cache.prepare(t, tiny_batch(6, 8, seed=5), TeacherNeeds(hidden=(2,)))
    assert len(list(tmp_path.iterdir())) == 3


def test_budget_caches_what_fits_and_computes_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    t = tiny_teacher("bert")
    block = tiny_batch(40, 16)
    # one row of hidden.2 is 16*32*2 bytes = 1 KiB; a 0.02 MB budget holds 20 rows
    cache = TeacherCache(tmp_path, budget_mb=0.02)
    handle = cache.prepare(t, block, TeacherNeeds(hidden=(2,)))
    assert handle.cached_rows == 20
    assert "raise distill.teacher_cache_mb" in caplog.text
    rows = torch.tensor([3, 35, 19, 20])
    live = run_teacher(t, block["input_ids"][rows], block["attention_mask"][rows], ["hidden.2"])
    assert_close(handle.fetch(rows)["hidden.2"], live["hidden.2"], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_attention_probs_from_qk_match_eager(family: str) -> None:
    t = tiny_teacher(family)
    b = tiny_batch(3, 10)
    info = teacher_info(t)
    assert info.probs_from_qk
    out = run_teacher(t, b["input_ids"], b["attention_mask"], ["q.2", "k.2", "attn.2"])
    probs = attention_probs_from_qk(out["q.2"], out["k.2"], b["attention_mask"], info.num_heads)
    m = b["attention_mask"].bool()
    assert_close(
        probs.transpose(1, 2)[m], out["attn.2"].transpose(1, 2)[m], rtol=1e-4, atol=1e-5
    )  # real queries


def test_mpnet_caches_probabilities() -> None:
    info = teacher_info(tiny_teacher("mpnet"))
    assert not info.probs_from_qk  # relative position bias
    assert TeacherNeeds(attn=(1,)).items(info) == ["attn.1"]


def test_empty_or_bad_block() -> None:
    with pytest.raises(DataError, match="empty"):
        as_block({"input_ids": torch.zeros(0, 8, dtype=torch.long), "attention_mask": torch.zeros(0, 8)})
    with pytest.raises(DataError, match="TokenBlock"):
        as_block(["a text"] * 3)
    _ids, mask = as_block(torch.ones(2, 3, dtype=torch.long))
    assert mask.sum() == 6


def test_a_full_budget_drops_items_nobody_asks_for_now(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The second student of a run needs other layers than the first: the first one's items, which filled the
    budget, make room (oldest first) instead of leaving the second with no cached rows; items asked for now stay."""
    t = tiny_teacher("bert")
    block = tiny_batch(40, 16)
    # one row of one hidden item is 16*32*2 bytes = 1 KiB: 40 rows of two items is 80 KiB of a 0.1 MB budget
    cache = TeacherCache(tmp_path, budget_mb=0.1)
    first = cache.prepare(t, block, TeacherNeeds(hidden=(1, 2)))
    assert first.cached_rows == 40
    entry = next(tmp_path.iterdir())
    kept_mtime = (entry / "hidden.2.npy").stat().st_mtime_ns
    caplog.set_level("INFO", logger="kdnas.distill.teacher_cache")
    second = cache.prepare(t, block, TeacherNeeds(hidden=(0, 2)))
    assert second.cached_rows == 40  # without making room: 20 rows of hidden.0 at most
    assert not (entry / "hidden.1.npy").exists() and not (entry / "hidden.1.json").exists()
    assert (entry / "hidden.2.npy").stat().st_mtime_ns == kept_mtime  # asked for again: kept, not recomputed
    assert "dropped hidden.1" in caplog.text
    rows = torch.tensor([0, 39])
    live = run_teacher(t, block["input_ids"][rows], block["attention_mask"][rows], ["hidden.0"])
    assert_close(second.fetch(rows)["hidden.0"], live["hidden.0"], rtol=2e-3, atol=2e-3)
    # the first student again: its dropped layer is recomputed, the budget still holds
    again = cache.prepare(t, block, TeacherNeeds(hidden=(1, 2)))
    assert again.cached_rows == 40 and (entry / "hidden.1.npy").is_file()
    assert sum(f.stat().st_size for f in entry.glob("*.npy")) <= 0.1 * 2**20
