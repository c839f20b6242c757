"""Arch: parsing, stable ids, validation messages."""

from __future__ import annotations

import pytest

from kdnas import Arch
from kdnas.errors import ArchError


def test_parse_short_form_and_id_round_trip() -> None:
    a = Arch.parse("L=4,H=256,A=4,F=1024")
    assert a == Arch(4, 256, 4, 1024)
    assert a.arch_id == "L4-H256-A4-F1024-gelu"
    assert Arch.parse(a.arch_id) == a
    b = Arch.parse("layers=2, hidden=128, heads=2, ffn=512, act=relu, V=5000")
    assert b.arch_id == "L2-H128-A2-F512-relu-V5000"
    assert Arch.parse(b.arch_id) == b
    assert Arch.parse(b.describe()) == b


def test_mobilebert_arch() -> None:
    a = Arch(4, 512, 4, 512, family="mobilebert", bottleneck_size=128, num_ffn_stacked=2)
    assert a.arch_id == "mb-L4-H512-B128-S2-A4-F512-gelu"
    assert Arch.parse(a.arch_id) == a
    assert a.head_dim == 32
    with pytest.raises(ArchError, match="bottleneck_size"):
        Arch(4, 512, 4, 512, family="mobilebert").validate()


def test_hidden_not_divisible_by_heads_names_the_key() -> None:
    with pytest.raises(ArchError, match="hidden_size: 300 is not divisible by num_heads 8"):
        Arch(4, 300, 8, 1200).validate()


@pytest.mark.parametrize(
    "text, msg",
    [
        ("L=4,H=256", "missing"),
        ("L=4,H=256,A=4,F=x", "not an integer"),
        ("L=4,H=256,A=4,F=1024,Q=3", "unknown key"),
        ("L=0,H=256,A=4,F=1024", "positive"),
        ("L=4,H=256,A=4,F=1024,act=tanh", "activation"),
        ("garbage", "cannot parse"),
    ],
)
def test_bad_arch_text(text: str, msg: str) -> None:
    with pytest.raises(ArchError, match=msg):
        Arch.parse(text)


def test_ids_are_stable_and_distinct() -> None:
    archs = {Arch(L, H, A, F) for L in (1, 2) for H in (128, 256) for A in (2, 4) for F in (256, 512)}
    assert len({a.arch_id for a in archs}) == len(archs)
    assert Arch(2, 128, 2, 256).arch_id == "L2-H128-A2-F256-gelu"
