"""The loss registry: the teacher cache holds the union of the active terms' needs, projections come from the
terms, an unknown loss is refused by name (a registered one is accepted)."""

from __future__ import annotations

import pytest

from kdnas.distill import DistillConfig, Distiller, teacher_info
from kdnas.distill.terms import LOSS_TERMS, known_losses
from kdnas.errors import ConfigError
from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_teacher


def test_needs_and_projections_come_from_the_active_terms() -> None:
    teacher = tiny_teacher("bert", num_layers=4)
    student = build_student(
        teacher.config, Arch(num_layers=2, hidden_size=16, num_heads=2, ffn_size=32), seed=0
    )
    info = teacher_info(teacher)
    d = Distiller(student, info, DistillConfig(losses={"hidden": 1.0, "embedding": 1.0}, relation_heads=4))
    assert set(d.proj) == {"hidden_1", "hidden_2", "embedding"}
    needs = d.needs()
    assert 0 in needs.hidden and not needs.qkv and not needs.attn
    r = Distiller(student, info, DistillConfig(losses={"relation": 1.0, "attention": 1.0}, relation_heads=4))
    assert set(r.proj) == set() and r.needs().qkv and r.needs().attn and not r.needs().hidden
    flash = Distiller(student, info, DistillConfig(losses={"relation": 1.0}, relation_heads=4), flash=True)
    assert {"hidden_1", "hidden_2"} <= set(
        flash.proj
    )  # flash phases need hidden + attention whatever the losses


def test_an_unknown_loss_is_refused_with_the_known_ones() -> None:
    assert list(LOSS_TERMS)[:7] == [
        "hidden",
        "attention",
        "relation",
        "embedding",
        "logits",
        "sentence",
        "similarity",
    ]
    with pytest.raises(ConfigError, match=r"losses\.cosine_of_doom: unknown loss; use hidden, attention"):
        from kdnas import config

        config.from_dict({"distill": {"losses": {"cosine_of_doom": 1.0}}})
    assert "hidden" in known_losses()
