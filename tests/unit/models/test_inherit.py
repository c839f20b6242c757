"""Weight inheritance on tiny teachers of every family: identity, closeness vs random init, slicing rules."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from kdnas.errors import ArchError, ModelError
from kdnas.models.importance import compute_importance
from kdnas.models.inherit import inherit_student, plan_inheritance, select_layers
from kdnas.models.student import arch_of, build_student
from kdnas.space.arch import Arch
from kdnas.testing import tiny_batch, tiny_teacher

FAMILIES = ("bert", "roberta", "xlm-roberta", "mpnet", "distilbert", "electra")


def _teacher(family: str, **kw: object) -> torch.nn.Module:
    # init 0.1 (not 0.02) so that the layers, not just the embeddings, shape the output
    return tiny_teacher(family, num_layers=4, initializer_range=0.1, **kw)


def _last(model: torch.nn.Module, x: dict) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**x).last_hidden_state[x["attention_mask"].bool()]  # [N, H]


def test_select_layers() -> None:
    assert select_layers(6, 3, "uniform") == [1, 3, 5]
    assert select_layers(6, 2, "uniform") == [2, 5]
    assert select_layers(12, 4, "uniform") == [2, 5, 8, 11]
    assert select_layers(6, 6, "uniform") == list(range(6))
    assert select_layers(6, 1, "uniform") == [5]
    assert select_layers(2, 4, "uniform") == [0, 0, 1, 1]
    assert select_layers(6, 3, "first") == [0, 1, 2]
    assert select_layers(6, 3, "last") == [3, 4, 5]
    with pytest.raises(ModelError, match="uniform"):
        select_layers(6, 3, "middle")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_own_arch_reproduces_the_teacher(family: str, importance: str) -> None:
    t = _teacher(family)
    x = tiny_batch(3, 12)
    s = inherit_student(t, arch_of(t.config), importance=importance, batches=[x])
    torch.testing.assert_close(_last(s, x), _last(t, x), rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("importance", ["magnitude", "activation"])
def test_inherited_is_closer_to_the_teacher_than_random(family: str, importance: str) -> None:
    t = _teacher(family)
    x = tiny_batch(4, 16)
    # half the layers, 3/4 of the width, narrower heads (8 -> 6 dims), half the FFN; for ELECTRA
    # (embedding 16) H=16 also removes the embedding projection
    for arch in (Arch(2, 24, 4, 32), Arch(2, 16, 2, 32)):
        plan = plan_inheritance(t, arch, importance=importance, batches=[x])
        target = _last(t, x)[:, plan.hidden]  # the teacher restricted to the kept dims
        inherited = _last(inherit_student(t, arch, importance=importance, batches=[x]), x)
        random = _last(build_student(t.config, arch, seed=0), x)
        cos_inh = torch.cosine_similarity(inherited, target, dim=-1).mean().item()
        cos_rand = torch.cosine_similarity(random, target, dim=-1).mean().item()
        assert cos_inh > 0.7 and cos_inh > cos_rand + 0.4, (arch.arch_id, cos_inh, cos_rand)


@pytest.mark.parametrize("selection", ["uniform", "first", "last"])
def test_layer_selection_copies_those_layers(selection: str) -> None:
    t = _teacher("bert")
    arch = arch_of(t.config).replace(num_layers=2)
    s = inherit_student(t, arch, layer_selection=selection)
    for i, tl in enumerate(select_layers(4, 2, selection)):
        torch.testing.assert_close(
            s.encoder.layer[i].intermediate.dense.weight, t.encoder.layer[tl].intermediate.dense.weight
        )


def test_slices_keep_the_planned_units() -> None:
    t = _teacher("bert")
    arch = Arch(2, 24, 3, 40)  # head dim 8 as the teacher's: whole heads are kept
    plan = plan_inheritance(t, arch)
    s = inherit_student(t, arch)
    hid = plan.hidden
    assert len(hid) == 24 and len(plan.heads[0]) == 3 and len(plan.ffn[0]) == 40
    torch.testing.assert_close(
        s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight[:, hid]
    )
    sl, tl = s.encoder.layer[1], t.encoder.layer[plan.layers[1]]
    rows = torch.cat([torch.arange(h * 8, h * 8 + 8) for h in plan.heads[1].tolist()])
    torch.testing.assert_close(sl.attention.self.value.weight, tl.attention.self.value.weight[rows][:, hid])
    torch.testing.assert_close(sl.output.dense.weight, tl.output.dense.weight[hid][:, plan.ffn[1]])
    torch.testing.assert_close(sl.output.LayerNorm.weight, tl.output.LayerNorm.weight[hid])
    torch.testing.assert_close(s.pooler.dense.weight, t.pooler.dense.weight[hid][:, hid])


def test_narrower_heads_rescale_queries() -> None:
    t = _teacher("bert")  # head dim 8
    arch = Arch(1, 32, 8, 64)  # head dim 4: every teacher head keeps 4 of its 8 dims, 4 heads are random
    s = inherit_student(t, arch, layer_selection="first")
    q_s, q_t = s.encoder.layer[0].attention.self.query.weight, t.encoder.layer[0].attention.self.query.weight
    k_s, k_t = s.encoder.layer[0].attention.self.key.weight, t.encoder.layer[0].attention.self.key.weight
    # each kept query row is the teacher's times sqrt(4/8); keys are copied as they are
    for r in range(16):
        match = [j for j in range(32) if torch.allclose(k_s[r], k_t[j])]
        assert len(match) == 1
        torch.testing.assert_close(q_s[r], q_t[match[0]] * 0.5**0.5)


def test_wider_and_deeper_student_keeps_the_teacher_in_its_first_units() -> None:
    t = _teacher("roberta")
    arch = Arch(6, 48, 6, 96)
    s = inherit_student(t, arch)
    w_s, w_t = s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight
    torch.testing.assert_close(w_s[:, :32], w_t)
    ffn_s, ffn_t = s.encoder.layer[5].intermediate.dense.weight, t.encoder.layer[3].intermediate.dense.weight
    torch.testing.assert_close(ffn_s[:64, :32], ffn_t)
    assert not torch.allclose(ffn_s[64:, :32], torch.zeros(32, 32))  # the rest keeps its random init


def test_vocab_ids_pick_embedding_rows() -> None:
    t = _teacher("bert")
    ids = [0, 1, 2, 3, 4, *range(40, 100)]
    arch = arch_of(t.config).replace(vocab_size=len(ids))
    s = inherit_student(t, arch, vocab_ids=ids)
    torch.testing.assert_close(s.embeddings.word_embeddings.weight, t.embeddings.word_embeddings.weight[ids])
    with pytest.raises(ArchError, match="vocab_size"):
        inherit_student(t, arch, vocab_ids=ids[:-1])
    with pytest.raises(ArchError, match="teacher token ids"):
        inherit_student(t, arch, vocab_ids=[*ids[:-1], 10_000])


def test_mpnet_keeps_one_head_set_for_its_shared_bias() -> None:
    t = _teacher("mpnet")
    arch = Arch(2, 16, 2, 32)
    plan = plan_inheritance(t, arch)
    assert all(torch.equal(h, plan.heads[0]) for h in plan.heads)
    s = inherit_student(t, arch)
    torch.testing.assert_close(
        s.encoder.relative_attention_bias.weight, t.encoder.relative_attention_bias.weight[:, plan.heads[0]]
    )


def test_mobilebert_student_is_random_init() -> None:
    t = _teacher("bert")
    arch = Arch(2, 32, 2, 32, family="mobilebert", bottleneck_size=16, num_ffn_stacked=2)
    s = inherit_student(t, arch, seed=3)
    r = build_student(t.config, arch, seed=3)
    for (n, p), (_, q) in zip(s.named_parameters(), r.named_parameters()):
        torch.testing.assert_close(p, q, msg=n)


def test_precomputed_importance_and_object_batches() -> None:
    t = _teacher("distilbert")
    x = tiny_batch(2, 8)
    block = SimpleNamespace(input_ids=x["input_ids"], attention_mask=x["attention_mask"])
    imp = compute_importance(t, "activation", [block])
    arch = Arch(2, 16, 2, 32)
    a = inherit_student(t, arch, importance=imp)
    b = inherit_student(t, arch, importance="activation", batches=[x])
    torch.testing.assert_close(_last(a, x), _last(b, x))


def test_bad_options() -> None:
    t = _teacher("bert")
    arch = Arch(1, 16, 2, 32)
    with pytest.raises(ModelError, match="batches"):
        inherit_student(t, arch, importance="activation")
    with pytest.raises(ModelError, match="magnitude"):
        inherit_student(t, arch, importance="fisher")
    with pytest.raises(ModelError, match="uniform"):
        inherit_student(t, arch, layer_selection="random")


def test_inherits_through_a_task_model() -> None:
    from transformers import AutoModelForSequenceClassification

    from kdnas.testing import tiny_config

    cfg = tiny_config("bert", num_labels=2)
    m = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager").eval()
    x = tiny_batch(2, 8)
    s = inherit_student(m, arch_of(m.config))
    torch.testing.assert_close(_last(s, x), _last(m.bert, x), rtol=0, atol=0)
