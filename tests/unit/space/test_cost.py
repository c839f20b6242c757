"""The cost model against the models themselves: exact parameter counts, FLOPs vs torch's FlopCounterMode."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdnas.models.student import build_student
from kdnas.space.arch import Arch
from kdnas.space.cost import (
    ParamCount,
    activation_bytes,
    config_forward_flops,
    config_param_count,
    forward_flops,
    human,
    param_count,
)
from kdnas.testing import tiny_batch, tiny_config

FAMILIES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra")
ARCHS = (
    Arch(3, 48, 6, 80),
    Arch(1, 16, 2, 32, activation="relu"),
    Arch(2, 8, 1, 8),  # ELECTRA: hidden 8 < embedding 16, so no projection
    Arch(2, 64, 4, 128, family="mobilebert", bottleneck_size=32, num_ffn_stacked=3),
)
BERT_VOCAB = ("bert", "distilbert", "electra")


def _cases() -> list[tuple[str, Arch]]:
    return [(f, a) for f in FAMILIES for a in ARCHS if a.family != "mobilebert" or f in BERT_VOCAB]


def _counted_flops(model: torch.nn.Module, x: dict) -> int:
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(**x)
    return int(fc.get_total_flops())


@pytest.mark.parametrize(("family", "arch"), _cases())
def test_param_count_is_exact(family: str, arch: Arch) -> None:
    cfg = tiny_config(family)
    model = build_student(cfg, arch)
    pc = param_count(arch, cfg)
    assert pc.total == sum(p.numel() for p in model.parameters())
    assert pc.total == pc.embedding + pc.non_embedding
    tables = [m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    if family == "mpnet":  # its relative-attention bias is an nn.Embedding too, but counted as non-embedding
        tables = tables[:-1]
    assert pc.embedding == sum(tables)


@pytest.mark.parametrize(("family", "arch"), _cases())
def test_forward_flops_match_flop_counter(family: str, arch: Arch) -> None:
    cfg = tiny_config(family)
    model = build_student(cfg, arch)
    x = tiny_batch(2, 24)
    counted = _counted_flops(model, x)
    exact = forward_flops(arch, seq_len=24, batch_size=2, teacher_config=cfg)
    assert exact == counted
    neutral = forward_flops(arch, seq_len=24, batch_size=2)  # no pooler, no ELECTRA projection
    assert abs(neutral - counted) <= 0.05 * counted


@pytest.mark.parametrize(
    "kw",
    [
        {"trigram_input": True, "embedding_size": 16, "classifier_activation": True},
        {"use_bottleneck": False, "true_hidden_size": 64, "intra_bottleneck_size": 64},
        {"use_bottleneck_attention": True, "normalization_type": "no_norm"},
        {"classifier_activation": False, "num_feedforward_networks": 1},
    ],
)
def test_mobilebert_config_variants(kw: dict) -> None:
    from transformers import AutoModel, MobileBertConfig

    base = {
        "vocab_size": 100,
        "hidden_size": 64,
        "embedding_size": 32,
        "true_hidden_size": 32,
        "intra_bottleneck_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "num_feedforward_networks": 2,
        **kw,
    }
    cfg = MobileBertConfig(**base)
    model = AutoModel.from_config(cfg, attn_implementation="eager")
    assert config_param_count(cfg).total == sum(p.numel() for p in model.parameters())
    x = {"input_ids": torch.randint(0, 100, (2, 20))}
    assert config_forward_flops(cfg, seq_len=20, batch_size=2) == _counted_flops(model, x)


def test_flops_formula_by_hand() -> None:
    # L=2, H=64, F=256, S=32: per layer S(4H² + 2HF) + 2S²H MACs, FLOPs = 2 * MACs
    arch = Arch(2, 64, 4, 256)
    per_layer = 32 * (4 * 64 * 64 + 2 * 64 * 256) + 2 * 32 * 32 * 64
    assert forward_flops(arch, seq_len=32) == 2 * 2 * per_layer
    assert forward_flops(arch, seq_len=32, batch_size=3) == 3 * forward_flops(arch, seq_len=32)


def test_activation_bytes_model() -> None:
    arch = Arch(4, 64, 4, 256)
    # attention phase 4SH + 2AS² vs FFN phase SH + 2SF, plus the S² mask, fp32
    s = 16
    attn, ffn = 4 * s * 64 + 2 * 4 * s * s, s * 64 + 2 * s * 256
    assert activation_bytes(arch, seq_len=s) == 4 * (max(attn, ffn) + s * s)
    s = 512  # long sequences: the attention maps dominate and grow quadratically
    assert activation_bytes(arch, seq_len=s) == 4 * (4 * s * 64 + 2 * 4 * s * s + s * s)
    assert activation_bytes(arch, seq_len=s, batch_size=2, dtype_bytes=2) == activation_bytes(arch, seq_len=s)
    # depth does not add to the inference peak; width does
    assert activation_bytes(arch.replace(num_layers=12), seq_len=64) == activation_bytes(arch, seq_len=64)
    assert activation_bytes(arch.replace(ffn_size=1024), seq_len=64) > activation_bytes(arch, seq_len=64)
    mb = Arch(4, 128, 4, 128, family="mobilebert", bottleneck_size=32, num_ffn_stacked=2)
    assert activation_bytes(mb, seq_len=64) < activation_bytes(arch.replace(hidden_size=128), seq_len=64)


def test_counts_for_bert_base_shape() -> None:
    from transformers import BertConfig

    # bert-base-uncased: 109,482,240 parameters with the pooler
    assert config_param_count(BertConfig()).total == 109_482_240


def test_human_and_param_count_units() -> None:
    assert human(22_713_216) == "22.7M"
    assert human(2.87e9) == "2.87G"
    assert human(512) == "512"
    assert human(123_456_789) == "123M"
    pc = ParamCount(total=22_713_216, embedding=11_917_824, non_embedding=10_795_392)
    assert pc.total_m == pytest.approx(22.713216) and pc.non_embedding_m == pytest.approx(10.795392)
