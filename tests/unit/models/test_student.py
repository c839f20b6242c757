"""Students as configs of the teacher's family: round trip, family-specific fields, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdnas.errors import ArchError, ModelError
from kdnas.models.student import arch_of, build_student, student_config
from kdnas.space.arch import Arch
from kdnas.testing import tiny_config

FAMILIES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra")


@pytest.mark.parametrize("family", FAMILIES)
def test_student_config_round_trips_and_loads_with_automodel(tmp_path: Path, family: str) -> None:
    from transformers import AutoModel

    teacher_cfg = tiny_config(family)
    arch = Arch(3, 24, 2, 40, activation="relu")
    cfg = student_config(teacher_cfg, arch)
    assert cfg.model_type == family
    assert arch_of(cfg) == arch
    assert cfg.vocab_size == teacher_cfg.vocab_size
    assert cfg.max_position_embeddings == teacher_cfg.max_position_embeddings
    model = build_student(teacher_cfg, arch, seed=0)
    model.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path)  # no kdnas needed to load a student
    assert type(again) is type(model) and arch_of(again.config) == arch


def test_teacher_arch_of_tiny_config() -> None:
    assert arch_of(tiny_config("distilbert")) == Arch(2, 32, 4, 64)


def test_electra_embedding_size_never_exceeds_hidden() -> None:
    cfg = student_config(tiny_config("electra"), Arch(1, 8, 1, 16))
    assert cfg.embedding_size == 8
    assert student_config(tiny_config("electra"), Arch(1, 64, 4, 16)).embedding_size == 16


def test_vocab_size_override() -> None:
    assert student_config(tiny_config("bert"), Arch(1, 16, 2, 16, vocab_size=100)).vocab_size == 100


def test_mobilebert_student_needs_bert_vocab() -> None:
    arch = Arch(2, 64, 4, 64, family="mobilebert", bottleneck_size=32, num_ffn_stacked=2)
    cfg = student_config(tiny_config("bert"), arch)
    assert cfg.model_type == "mobilebert" and arch_of(cfg) == arch
    with pytest.raises(ArchError, match="BERT-vocabulary"):
        student_config(tiny_config("roberta"), arch)


def test_invalid_arch_and_family() -> None:
    with pytest.raises(ArchError, match="divisible"):
        student_config(tiny_config("bert"), Arch(1, 30, 4, 16))
    from transformers import AutoConfig

    with pytest.raises(ModelError, match="not supported"):
        student_config(AutoConfig.for_model("deberta-v2"), Arch(1, 16, 2, 16))
