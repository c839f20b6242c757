"""Layer mappings (uniform, last, KD-NAS uniform+last) and q/k/v capture across families."""

from __future__ import annotations

import pytest
import torch

from kdnas.distill.mapping import capture_qkv, layer_map, qkv_modules
from kdnas.errors import DistillError
from kdnas.testing import tiny_batch, tiny_teacher


def test_uniform_last_and_kdnas() -> None:
    assert layer_map(3, 6, "uniform") == [(2,), (4,), (6,)]
    assert layer_map(3, 6, "last") == [(4,), (5,), (6,)]
    assert layer_map(4, 6, "uniform+last") == [(1, 3), (3, 4), (4, 5), (6, 6)]
    assert layer_map(6, 6, "uniform+last") == [(i, i) for i in range(1, 7)]
    # the formula: floor(i * Lt / Ls) and Lt - Ls + i, for every shape
    for ls in range(1, 7):
        for i, (u, last) in enumerate(layer_map(ls, 6, "uniform+last"), 1):
            assert u == (i * 6) // ls and last == 6 - ls + i


@pytest.mark.parametrize("mapping", ["uniform", "last", "uniform+last"])
def test_student_deeper_than_teacher_is_an_error(mapping: str) -> None:
    with pytest.raises(DistillError, match="at most 4 layers"):
        layer_map(6, 4, mapping)


def test_unknown_mapping() -> None:
    with pytest.raises(DistillError, match="uniform"):
        layer_map(2, 4, "middle")


@pytest.mark.parametrize("family", ["bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra"])
def test_capture_qkv_every_family(family: str) -> None:
    model = tiny_teacher(family)
    b = tiny_batch(2, 8)
    if family in ("roberta", "xlm-roberta", "mpnet"):
        b["input_ids"][b["attention_mask"] == 0] = 1
    with torch.no_grad(), capture_qkv(model, [2]) as cap:
        model(**b)
    q, k, v = cap[2]
    assert q.shape == k.shape == v.shape == (2, 8, 32)
    # the value capture is the value projection of that layer
    assert all(len(m._forward_hooks) == 0 for m in qkv_modules(model, 2))  # hooks removed on exit


def test_capture_qkv_mobilebert_student() -> None:
    from kdnas.models.student import build_student
    from kdnas.space.arch import Arch

    t = tiny_teacher("bert")
    arch = Arch(
        num_layers=2,
        hidden_size=32,
        num_heads=2,
        ffn_size=64,
        family="mobilebert",
        bottleneck_size=16,
        num_ffn_stacked=2,
    )
    s = build_student(t.config, arch)
    with torch.no_grad(), capture_qkv(s, [1, 2]) as cap:
        s(**tiny_batch(2, 8))
    assert cap[1][0].shape == (2, 8, 16)  # q/k/v live in the bottleneck width


def test_missing_layer() -> None:
    with pytest.raises(DistillError, match="does not exist"):
        qkv_modules(tiny_teacher("bert"), 3)
