"""The real minilm-l6 teacher: loading, `kdnas inspect`, cost model vs FlopCounterMode, weight inheritance."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from kdnas.models.inherit import inherit_student, plan_inheritance
from kdnas.models.student import arch_of, build_student
from kdnas.models.teacher import Teacher, load_teacher
from kdnas.space.arch import Arch
from kdnas.space.cost import config_param_count, forward_flops, param_count

pytestmark = pytest.mark.integration

TEXTS = [
    "The river flows through the old city and into the ocean.",
    "A new album by the band was the first to top the music market.",
    "Software for the computer network was written by a small company in the north of the country.",
    "In the election the party of the president won a large share of the vote.",
    "The species of plant grows on the south side of the mountain, near the island's only church.",
    "The university built a large museum of art and science history in the capital.",
]


@pytest.fixture(scope="module")
def teacher(minilm_dir: Path) -> Teacher:
    return load_teacher("minilm-l6")


@pytest.fixture(scope="module")
def batch(teacher: Teacher) -> dict[str, torch.Tensor]:
    enc = teacher.tokenizer(TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _last(model: torch.nn.Module, x: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**x).last_hidden_state[x["attention_mask"].bool()]  # [N, H]


def _cka(a: torch.Tensor, b: torch.Tensor) -> float:
    """Linear CKA between token representations (invariant to rotations and scale of either side)."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float((a.T @ b).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm()))


def test_load_minilm(teacher: Teacher, minilm_dir: Path, batch: dict) -> None:
    assert teacher.family == "bert" and teacher.name == "minilm-l6" and teacher.path == minilm_dir
    assert arch_of(teacher.config) == Arch(6, 384, 12, 1536)
    n = sum(p.numel() for p in teacher.model.parameters())
    assert n == 22_713_216 == config_param_count(teacher.config).total
    with torch.no_grad():
        out = teacher.model(**batch, output_hidden_states=True, output_attentions=True)
    assert len(out.hidden_states) == 7 and out.attentions[0].shape[1] == 12


def test_inspect_prints_22_7m(minilm_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kdnas.cli import main

    assert main(["inspect", "minilm-l6"]) == 0
    out = capsys.readouterr().out
    assert "params          22.7M" in out and "layers          6" in out and "hidden          384" in out


@pytest.mark.parametrize("arch", [None, Arch(4, 256, 8, 1024)])
def test_flops_within_5_percent_of_flop_counter(teacher: Teacher, arch: Arch | None) -> None:
    arch = arch or arch_of(teacher.config)
    model = build_student(teacher.config, arch).eval()
    x = {
        "input_ids": torch.randint(1000, 20000, (1, 128)),
        "attention_mask": torch.ones(1, 128, dtype=torch.long),
    }
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(**x)
    counted = fc.get_total_flops()
    assert abs(forward_flops(arch, seq_len=128) - counted) <= 0.05 * counted
    assert forward_flops(arch, seq_len=128, teacher_config=teacher.config) == counted
    assert param_count(arch, teacher.config).total == sum(p.numel() for p in model.parameters())


def test_inheriting_own_arch_is_the_teacher(teacher: Teacher, batch: dict) -> None:
    s = inherit_student(teacher.model, arch_of(teacher.config))
    torch.testing.assert_close(_last(s, batch), _last(teacher.model, batch), rtol=0, atol=0)


@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_inherited_student_is_closer_than_random(teacher: Teacher, batch: dict, importance: str) -> None:
    target_full = _last(teacher.model, batch)
    random_cka = {}
    for arch in (Arch(4, 256, 8, 1024), Arch(3, 192, 6, 768)):
        plan = plan_inheritance(teacher.model, arch, importance=importance, batches=[batch])
        target = target_full[:, plan.hidden]
        inherited = _last(inherit_student(teacher.model, arch, importance=importance, batches=[batch]), batch)
        random = _last(build_student(teacher.config, arch, seed=0), batch)
        cos_inh = torch.cosine_similarity(inherited, target, dim=-1).mean().item()
        cos_rand = torch.cosine_similarity(random, target, dim=-1).mean().item()
        cka_inh, random_cka[arch] = _cka(inherited, target_full), _cka(random, target_full)
        # measured: cosine ~0.5-0.7 inherited vs ~0.0 random; CKA ~0.7-0.85 vs ~0.35
        assert cos_inh > 0.4 and cos_inh > cos_rand + 0.3, (arch.arch_id, cos_inh, cos_rand)
        assert cka_inh > random_cka[arch] + 0.15, (arch.arch_id, cka_inh, random_cka[arch])
