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


def test_sentence_dense_always_adds_an_identity_dense_at_equal_width(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`sentence_dense: always`: an equal-width student gets a Dense on its pooled embedding, starting as the
    identity (the embedding is unchanged at init), trained by the sentence loss and written as `2_Dense`."""
    import json

    import torch

    from kdnas.models.pooling import Pooling
    from kdnas.stages.distill import _write_sentence_config

    teacher = tiny_teacher("bert", num_layers=4)
    width = teacher.config.hidden_size
    student = build_student(
        teacher.config, Arch(num_layers=2, hidden_size=width, num_heads=2, ffn_size=32), seed=0
    )
    info = teacher_info(teacher)
    pooling = Pooling(mode="mean", normalize=True)
    losses = {"hidden": 1.0, "sentence": 10.0}
    plain = Distiller(student, info, DistillConfig(losses=losses, relation_heads=4), pooling=pooling)
    assert "sentence" not in plain.proj  # the default: matched as it is at equal width
    d = Distiller(
        student,
        info,
        DistillConfig(losses=losses, relation_heads=4, sentence_dense="always"),
        pooling=pooling,
    )
    assert "sentence" in d.proj and d.proj["sentence"].weight.shape == (width, width)
    g = torch.Generator().manual_seed(0)
    last = torch.randn(3, 5, width, generator=g)
    mask = torch.ones(3, 5, dtype=torch.long)
    mask[0, 3:] = 0
    torch.testing.assert_close(d.student_embedding(last, mask), plain.student_embedding(last, mask))
    target = torch.nn.functional.normalize(torch.randn(3, width, generator=g), dim=-1)
    loss = 1 - torch.nn.functional.cosine_similarity(d.student_embedding(last, mask), target).mean()
    loss.backward()
    assert d.proj["sentence"].weight.grad is not None and d.proj["sentence"].weight.grad.abs().sum() > 0
    _write_sentence_config(d, tmp_path)
    modules = json.loads((tmp_path / "modules.json").read_text())
    assert any(str(m["type"]).endswith("Dense") for m in modules)
    _write_sentence_config(plain, tmp_path / "plain")
    modules = json.loads((tmp_path / "plain" / "modules.json").read_text())
    assert not any(str(m["type"]).endswith("Dense") for m in modules)


def test_sentence_dense_is_validated_by_name() -> None:
    from kdnas import config

    with pytest.raises(ConfigError, match="sentence_dense"):
        config.load("smoke", overrides={"distill.sentence_dense": "sometimes"})
