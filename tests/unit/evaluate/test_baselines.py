from __future__ import annotations

import pytest
import torch

from kdnas.errors import ModelError
from kdnas.evaluate.baselines import (
    EVERY_OTHER_LAYER,
    TINYBERT,
    baseline_archs,
    every_other_layer,
    truncate_layers,
)
from kdnas.models.student import arch_of, build_student
from kdnas.testing import tiny_batch, tiny_teacher


@pytest.mark.parametrize("family", ["bert", "roberta", "mpnet", "distilbert", "electra"])
def test_every_other_layer_copies_layers_0_2_4(family):
    teacher = tiny_teacher(family, num_layers=5)
    student = every_other_layer(teacher)
    assert arch_of(student.config).num_layers == 3
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for k, v in s_sd.items():
        src = k
        for new, old in ((2, 4), (1, 2)):
            src = src.replace(f"layer.{new}.", f"layer.{old}.")
        torch.testing.assert_close(v, t_sd[src])
    b = tiny_batch(2, 8, vocab_size=100)
    b["input_ids"].clamp_(min=5)
    with torch.no_grad():
        ht = teacher(**b, output_hidden_states=True).hidden_states
        hs = student(**b, output_hidden_states=True).hidden_states
    torch.testing.assert_close(hs[1], ht[1])  # student layer 0 is teacher layer 0 on the same input


def test_truncate_layers_custom_and_bad_selection():
    teacher = tiny_teacher(num_layers=4)
    s = truncate_layers(teacher, [1, 3])
    torch.testing.assert_close(
        s.state_dict()["encoder.layer.0.attention.self.query.weight"],
        teacher.state_dict()["encoder.layer.1.attention.self.query.weight"],
    )
    for bad in ([], [4], [0, 0]):
        with pytest.raises(ModelError, match="layer indices"):
            truncate_layers(teacher, bad)


def test_baseline_archs_shapes():
    teacher = tiny_teacher(num_layers=6)
    archs = baseline_archs(teacher.config)
    assert archs[EVERY_OTHER_LAYER].num_layers == 3 and archs[EVERY_OTHER_LAYER].hidden_size == 32
    tb = archs[TINYBERT]
    assert (tb.num_layers, tb.hidden_size, tb.num_heads, tb.ffn_size) == (4, 312, 12, 1200)
    m = build_student(teacher.config, tb)
    assert arch_of(m.config).describe() == tb.describe()


def test_baseline_family_has_every_published_shape():
    from kdnas.evaluate.baselines import BERT_MINI, BERT_SMALL, MINILM_L3, SHAPES

    teacher = tiny_teacher(num_layers=6)
    fam = baseline_archs(teacher.config, family=True)
    assert set(fam) == {EVERY_OTHER_LAYER, *SHAPES}
    assert (fam[MINILM_L3].num_layers, fam[MINILM_L3].hidden_size) == (3, 384)
    assert (fam[BERT_MINI].num_layers, fam[BERT_MINI].hidden_size, fam[BERT_MINI].num_heads) == (4, 256, 4)
    assert (fam[BERT_SMALL].hidden_size, fam[BERT_SMALL].ffn_size) == (512, 2048)
    assert set(baseline_archs(teacher.config)) == {EVERY_OTHER_LAYER, TINYBERT}


def test_a_family_shape_that_is_the_every_other_layer_arch_is_not_scored_twice():
    """MiniLM-L3-H384 of a 6-layer, 384-wide, 12-head teacher with FFN 1536 (minilm-l6) is the every-other-layer
    arch: distilled from the same init it was the same model (the same held-out KD loss to the last digit)."""
    from kdnas.evaluate.baselines import MINILM_L3, SHAPES

    teacher = tiny_teacher(num_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536)
    fam = baseline_archs(teacher.config, family=True)
    assert MINILM_L3 not in fam and set(fam) == {EVERY_OTHER_LAYER, *SHAPES} - {MINILM_L3}


def test_a_shape_deeper_than_the_teacher_is_left_out():
    """TinyBERT's 4 layers of a 2-layer teacher: the layer-wise losses would match its layers to teacher layers
    that do not exist (the distillation stopped with a mapping error)."""
    from kdnas.evaluate.baselines import MINILM_L3

    assert set(baseline_archs(tiny_teacher(num_layers=2).config)) == {EVERY_OTHER_LAYER}
    three = tiny_teacher(num_layers=3).config
    assert set(baseline_archs(three, family=True)) == {EVERY_OTHER_LAYER, MINILM_L3}
