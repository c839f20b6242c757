"""One student builder for the search, the final students and `kdnas distill` (kdnas.models.build)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas import config
from kdnas.errors import ArchError
from kdnas.models.build import StudentBuilder
from kdnas.models.teacher import load_teacher
from kdnas.space.arch import Arch
from kdnas.testing import save_tiny_teacher

ARCH = Arch(num_layers=2, hidden_size=32, num_heads=2, ffn_size=64)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return load_teacher(save_tiny_teacher(tmp_path_factory.mktemp("t") / "teacher", "bert", num_layers=4))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_the_search_and_the_final_students_are_built_alike(teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from kdnas.search.proxy import ProxyEvaluator

    cfg = config.load("smoke", {"teacher.name": str(teacher.path)})
    block = {
        "input_ids": torch.randint(5, 100, (8, 16)),
        "attention_mask": torch.ones(8, 16, dtype=torch.long),
    }
    proxy = ProxyEvaluator(cfg=cfg, teacher=teacher, proxy=block, heldout=block, cache_dir=tmp_path / "tc")
    builder = StudentBuilder.from_config(teacher, cfg.distill, seed=cfg.seed, data=block)
    searched, final = proxy.build_student(ARCH), builder.build(ARCH)
    assert _same(searched, final)
    # inherited: the first kept layer starts from a teacher layer's (sliced) weights, not from random ones
    random = StudentBuilder(teacher, init="random", seed=cfg.seed).build(ARCH)
    assert not _same(final, random)
    assert builder.ranking() is builder.ranking()  # one ranking for every student


def test_mobilebert_shapes_are_not_inherited_and_a_trimmed_vocab_needs_its_table(teacher) -> None:  # type: ignore[no-untyped-def]
    mb = Arch(
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        ffn_size=64,
        family="mobilebert",
        bottleneck_size=16,
        num_ffn_stacked=1,
    )
    b = StudentBuilder(teacher, init="inherit", seed=0)
    assert _same(b.build(mb), StudentBuilder(teacher, init="random", seed=0).build(mb))
    with pytest.raises(ArchError, match="no vocabulary table"):
        b.build(ARCH.replace(vocab_size=50))
