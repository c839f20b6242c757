"""A student with a trimmed vocabulary: the teacher (and its cache) read the data's ids, the student its own."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas.distill import DistillConfig, distill, heldout_kd_loss
from kdnas.errors import DistillError
from kdnas.models.inherit import inherit_student
from kdnas.space.arch import Arch
from kdnas.space.vocab import id_map
from kdnas.testing import tiny_batch, tiny_teacher

ARCH = Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32)


def _data(seed: int) -> dict[str, torch.Tensor]:
    b = tiny_batch(24, 12, seed=seed)
    b["input_ids"] = torch.where(b["input_ids"] >= 5, 5 + b["input_ids"] % 40, b["input_ids"])  # ids < 45
    return b


def test_trimmed_student_learns_exactly_like_the_full_one(tmp_path: Path) -> None:
    teacher = tiny_teacher("bert", num_layers=4)
    cfg = DistillConfig(batch_size=8, relation_heads=4, losses={"hidden": 1.0, "relation": 1.0})
    train, held = _data(0), _data(1)
    kept = [*range(45), 100, 150]  # every id the data uses (and two it does not)
    input_map = id_map(kept, teacher.config.vocab_size, unk_id=1)
    full = inherit_student(teacher, ARCH)
    small = inherit_student(teacher, ARCH.replace(vocab_size=len(kept)), vocab_ids=kept)
    assert small.get_input_embeddings().weight.shape == (47, 16)
    cache = tmp_path / "cache"
    r_full = distill(teacher, full, train, cfg, steps=4, teacher_cache=cache, progress=False)
    r_small = distill(
        teacher, small, train, cfg, steps=4, teacher_cache=cache, progress=False, input_map=input_map
    )
    assert len(list(cache.iterdir())) == 1  # one teacher cache entry, keyed on the data's own ids
    assert [h["loss"] for h in r_small.history] == pytest.approx(
        [h["loss"] for h in r_full.history], abs=1e-5
    )
    kd_full = heldout_kd_loss(teacher, full, held, cfg, projections=r_full.distiller)
    kd_small = heldout_kd_loss(teacher, small, held, cfg, projections=r_small.distiller, input_map=input_map)
    assert kd_small == pytest.approx(kd_full, abs=1e-5)
    kd_fit = heldout_kd_loss(teacher, small, held, cfg, input_map=input_map)  # least-squares projections too
    assert kd_fit == pytest.approx(heldout_kd_loss(teacher, full, held, cfg), abs=1e-4)


def test_a_trimmed_student_without_its_map_is_refused() -> None:
    teacher = tiny_teacher("bert", num_layers=2)
    cfg = DistillConfig(batch_size=8, relation_heads=4, losses={"hidden": 1.0})
    small = inherit_student(teacher, ARCH.replace(vocab_size=20), vocab_ids=list(range(20)))
    data = _data(0)
    with pytest.raises(DistillError, match="reads the data through input_map"):
        distill(teacher, small, data, cfg, steps=1, progress=False)
    with pytest.raises(DistillError, match="covers 30 teacher ids but the data has token id 44"):
        distill(
            teacher, small, data, cfg, steps=1, progress=False, input_map=torch.zeros(30, dtype=torch.long)
        )
    with pytest.raises(DistillError, match="sends ids to row 46 but the student's embedding has 20 rows"):
        heldout_kd_loss(teacher, small, data, cfg, input_map=id_map(list(range(47)), 161, unk_id=1))


def test_inherited_token_ids_follow_the_trimmed_table() -> None:
    from kdnas.errors import ArchError

    teacher = tiny_teacher("roberta", num_layers=2)  # pad 1: positions are derived from it
    kept = [0, 1, 2, 3, 4, 50, 60, 70, 80]
    small = inherit_student(teacher, ARCH.replace(vocab_size=9), vocab_ids=kept)
    assert small.config.pad_token_id == 1 and small.config.vocab_size == 9
    full = inherit_student(teacher, ARCH)  # same hidden dims kept; rows follow the kept ids
    assert torch.equal(small.get_input_embeddings().weight, full.get_input_embeddings().weight[kept])
    with pytest.raises(ArchError, match="moves the pad token id 1 to None"):
        inherit_student(teacher, ARCH.replace(vocab_size=9), vocab_ids=[0, 2, 3, 4, 5, 50, 60, 70, 80])
