"""Label-free fidelity against naive references: CKA, recall@k, and the embedding fidelity of model pairs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kdnas.evaluate.fidelity import embedding_fidelity, encode, linear_cka, load_dense, recall_at_k
from kdnas.models.pooling import Pooling, write_st_config
from kdnas.testing import tiny_batch, tiny_teacher


def _naive_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    n = x.shape[0]
    h = torch.eye(n, dtype=torch.float64) - 1.0 / n
    k, l_ = x.double() @ x.double().T, y.double() @ y.double().T
    hsic = lambda a, b: torch.trace(a @ h @ b @ h)  # noqa: E731
    return float(hsic(k, l_) / torch.sqrt(hsic(k, k) * hsic(l_, l_)))


def test_linear_cka_matches_the_kernel_form_and_its_invariances() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(40, 6), torch.randn(40, 9)
    assert linear_cka(x, y) == pytest.approx(_naive_cka(x, y), rel=1e-9)
    q, _ = torch.linalg.qr(torch.randn(6, 6))
    assert linear_cka(x, 3.0 * x @ q + 1.0) == pytest.approx(1.0, abs=1e-9)  # rotation, scale, shift
    with pytest.raises(ValueError, match="same items"):
        linear_cka(x, y[:10])


def _naive_recall(s: torch.Tensor, t: torch.Tensor, k: int) -> float:
    def nn_sets(e: torch.Tensor) -> list[set[int]]:
        e = torch.nn.functional.normalize(e, dim=-1)
        out = []
        for i in range(len(e)):
            sims = [(float(e[i] @ e[j]), j) for j in range(len(e)) if j != i]
            out.append({j for _, j in sorted(sims, reverse=True)[:k]})
        return out

    return sum(len(a & b) / k for a, b in zip(nn_sets(s), nn_sets(t), strict=True)) / len(s)


def test_recall_at_k_matches_a_naive_loop() -> None:
    torch.manual_seed(1)
    t = torch.randn(30, 5)
    s = t + 0.5 * torch.randn(30, 5)
    assert recall_at_k(s, t, 5) == pytest.approx(_naive_recall(s, t, 5))
    assert recall_at_k(t, t, 5) == 1.0
    with pytest.raises(ValueError, match="more than 10"):
        recall_at_k(t[:8], t[:8], 10)


def test_a_model_is_perfectly_faithful_to_itself_and_a_stranger_is_not() -> None:
    teacher = tiny_teacher(seed=0)
    stranger = tiny_teacher(seed=7)
    b = tiny_batch(n=24, seq_len=12, seed=3)
    pooling = Pooling(mode="mean", normalize=True)
    same = embedding_fidelity(teacher, teacher, b["input_ids"], b["attention_mask"], pooling=pooling, k=5)
    assert same.mean_cosine == pytest.approx(1.0, abs=1e-5)
    assert same.cka == pytest.approx(1.0, abs=1e-6) and same.recall_at_10 == 1.0 and same.passages == 24
    other = embedding_fidelity(teacher, stranger, b["input_ids"], b["attention_mask"], pooling=pooling, k=5)
    assert other.cka < 0.99 and other.recall_at_10 < 1.0
    assert set(other.to_dict()) == {"mean_cosine", "cka", "recall_at_10", "passages", "seconds"}


def test_narrow_student_needs_its_dense_for_the_cosine(tmp_path: Path) -> None:
    teacher = tiny_teacher(seed=0)
    narrow = tiny_teacher(seed=1, hidden_size=16, num_attention_heads=2, intermediate_size=32)
    b = tiny_batch(n=16, seq_len=10, seed=4)
    pooling = Pooling(mode="mean")
    no_dense = embedding_fidelity(teacher, narrow, b["input_ids"], b["attention_mask"], pooling=pooling, k=3)
    assert no_dense.mean_cosine is None  # different widths, no projection: not comparable
    t_width = teacher.config.hidden_size
    write_st_config(tmp_path, pooling, 16, dense=(torch.randn(t_width, 16), torch.zeros(t_width)))
    dense = load_dense(tmp_path)
    assert dense is not None and dense.weight.shape == (t_width, 16)
    res = embedding_fidelity(
        teacher, narrow, b["input_ids"], b["attention_mask"], pooling=pooling, student_dense=dense, k=3
    )
    assert res.mean_cosine is not None and -1.0 <= res.mean_cosine <= 1.0
    emb, _ = encode(narrow, b["input_ids"], b["attention_mask"], pooling, dense=dense)
    assert emb.shape == (16, t_width)


def test_input_map_is_applied_to_the_student() -> None:
    teacher = tiny_teacher(seed=0)
    b = tiny_batch(n=12, seq_len=8, seed=5)
    identity = torch.arange(teacher.config.vocab_size)
    a, _ = encode(teacher, b["input_ids"], b["attention_mask"], Pooling(), input_map=identity)
    c, _ = encode(teacher, b["input_ids"], b["attention_mask"], Pooling())
    assert torch.allclose(a, c)
    scrambled = identity.flip(0)
    d, _ = encode(teacher, b["input_ids"], b["attention_mask"], Pooling(), input_map=scrambled)
    assert not torch.allclose(c, d)


def test_encode_by_length_equals_one_row_at_a_time() -> None:
    # rows of different lengths, right-padded to one width: sorted and trimmed batches give each row what it
    # gets alone at its own length, in the rows' order; tokens are each real token once
    model = tiny_teacher("bert", seed=0).eval()
    torch.manual_seed(0)
    lengths = [5, 16, 3, 9, 12, 7, 16, 4]
    ids = torch.randint(5, 100, (len(lengths), 16))
    mask = torch.zeros_like(ids)
    for r, n in enumerate(lengths):
        mask[r, :n] = 1
    ids = ids * mask
    pooling = Pooling(mode="mean", normalize=True)
    emb, toks = encode(model, ids, mask, pooling, batch_size=3, tokens=True)
    assert toks is not None and toks.shape[0] == sum(lengths)
    for r, n in enumerate(lengths):
        alone, _ = encode(model, ids[r : r + 1, :n], mask[r : r + 1, :n], pooling)
        torch.testing.assert_close(emb[r], alone[0], atol=1e-5, rtol=1e-4)
    left = mask.flip(1)  # left padding: not trimmed, still the right rows
    emb_left, _ = encode(model, ids.flip(1), left, pooling, batch_size=3)
    assert emb_left.shape == emb.shape
