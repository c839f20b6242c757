"""Each loss against a naive loop-based reference implementation."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from kdnas.distill import losses as L
from kdnas.errors import DistillError


def _mask(b: int, s: int) -> torch.Tensor:
    m = torch.ones(b, s, dtype=torch.long)
    m[0, s - 3 :] = 0
    m[-1, s // 2 :] = 0
    return m


def _softmax_row(scores: list[float], valid: list[bool]) -> list[float]:
    mx = max(x for x, v in zip(scores, valid) if v)
    e = [math.exp(x - mx) if v else 0.0 for x, v in zip(scores, valid)]
    z = sum(e)
    return [x / z for x in e]


def _kl(p: list[float], q: list[float], valid: list[bool]) -> float:
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi, v in zip(p, q, valid) if v and pi > 0)


def test_hidden_mse_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    b, s, d = 3, 7, 5
    pred, target = torch.randn(b, s, d, generator=g), torch.randn(b, s, d, generator=g) * 2
    mask = _mask(b, s)
    var = 3.5
    total, n = 0.0, 0
    for i in range(b):
        for j in range(s):
            if mask[i, j]:
                total += sum((float(pred[i, j, k]) - float(target[i, j, k])) ** 2 for k in range(d)) / d
                n += 1
    assert_close(L.hidden_mse(pred, target, mask, variance=var), torch.tensor(total / n / var))


def test_hidden_mse_is_one_when_predicting_the_mean() -> None:
    g = torch.Generator().manual_seed(1)
    target = torch.randn(4, 50, 8, generator=g) * torch.arange(1, 9)
    mask = torch.ones(4, 50, dtype=torch.long)
    flat = target.reshape(-1, 8)
    var = float(flat.var(0, unbiased=False).mean())
    pred = flat.mean(0).expand_as(target)
    assert_close(L.hidden_mse(pred, target, mask, variance=var), torch.tensor(1.0), rtol=1e-5, atol=1e-5)


def _probs(b: int, a: int, s: int, mask: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, a, s, s, generator=g)
    return scores.masked_fill(mask[:, None, None, :] == 0, float("-inf")).softmax(-1)


@pytest.mark.parametrize("heads_s", [4, 2])
def test_attention_kl_matches_loop(heads_s: int) -> None:
    b, s, heads_t = 2, 6, 4
    mask = _mask(b, s)
    ps, pt = _probs(b, heads_s, s, mask, 0), _probs(b, heads_t, s, mask, 1)
    if heads_s != heads_t:  # reference: head-averaged distributions
        ref_s, ref_t = ps.mean(1, keepdim=True), pt.mean(1, keepdim=True)
    else:
        ref_s, ref_t = ps, pt
    total, n = 0.0, 0
    for i in range(b):
        for q in range(s):
            if not mask[i, q]:
                continue
            valid = [bool(mask[i, k]) for k in range(s)]
            per_head = [
                _kl(ref_t[i, h, q].tolist(), ref_s[i, h, q].tolist(), valid) for h in range(ref_s.shape[1])
            ]
            total += sum(per_head) / len(per_head)
            n += 1
    assert_close(L.attention_kl(ps, pt, mask), torch.tensor(total / n), rtol=1e-5, atol=1e-6)
    assert float(L.attention_kl(pt, pt, mask)) == pytest.approx(0.0, abs=1e-6)


def _relation_ref(xs: torch.Tensor, xt: torch.Tensor, mask: torch.Tensor, heads: int) -> float:
    """KL over relation heads split as near-equal contiguous chunks, per real query token, averaged."""
    b, s, _ = xs.shape
    total, n = 0.0, 0
    for i in range(b):
        valid = [bool(mask[i, k]) for k in range(s)]
        for q in range(s):
            if not valid[q]:
                continue
            kls = []
            for cs, ct in zip(torch.tensor_split(xs[i], heads, -1), torch.tensor_split(xt[i], heads, -1)):
                ds, dt = cs.shape[-1], ct.shape[-1]
                rs = [float(cs[q] @ cs[k]) / math.sqrt(ds) for k in range(s)]
                rt = [float(ct[q] @ ct[k]) / math.sqrt(dt) for k in range(s)]
                kls.append(_kl(_softmax_row(rt, valid), _softmax_row(rs, valid), valid))
            total += sum(kls) / heads
            n += 1
    return total / n


@pytest.mark.parametrize("padded", [True, False])
@pytest.mark.parametrize(("ds", "dt", "heads"), [(8, 12, 4), (10, 12, 3), (6, 16, 2)])
def test_relation_kl_matches_loop_any_width(ds: int, dt: int, heads: int, padded: bool) -> None:
    g = torch.Generator().manual_seed(2)
    b, s = 2, 5
    mask = _mask(b, s) if padded else torch.ones(b, s, dtype=torch.long)
    s_qkv = [torch.randn(b, s, ds, generator=g) for _ in range(3)]
    t_qkv = [torch.randn(b, s, dt, generator=g) for _ in range(3)]
    ref = sum(_relation_ref(xs, xt, mask, heads) for xs, xt in zip(s_qkv, t_qkv)) / 3
    assert_close(
        L.relation_kl(s_qkv, t_qkv, mask, heads=heads),
        torch.tensor(ref, dtype=torch.float32),
        rtol=1e-5,
        atol=1e-6,
    )


def test_relation_kl_zero_for_identical_relations_and_gradient_flows() -> None:
    g = torch.Generator().manual_seed(3)
    x = [torch.randn(2, 5, 8, generator=g) for _ in range(3)]
    mask = _mask(2, 5)
    assert float(L.relation_kl(x, x, mask, heads=2)) == pytest.approx(0.0, abs=1e-6)
    xs = [torch.randn(2, 5, 4, generator=g, requires_grad=True) for _ in range(3)]
    L.relation_kl(xs, x, mask, heads=2).backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in xs)


def test_relation_heads_wider_than_state_is_an_error() -> None:
    x = [torch.randn(1, 3, 4)] * 3
    with pytest.raises(DistillError, match="relation_heads"):
        L.relation_kl(x, x, torch.ones(1, 3), heads=8)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_logit_kd_matches_loop(temperature: float) -> None:
    g = torch.Generator().manual_seed(4)
    b, s, v = 2, 4, 6
    mask = _mask(b, s)
    sl, tl = torch.randn(b, s, v, generator=g), torch.randn(b, s, v, generator=g)
    total, n = 0.0, 0
    for i in range(b):
        for j in range(s):
            if mask[i, j]:
                p = _softmax_row([x / temperature for x in tl[i, j].tolist()], [True] * v)
                q = _softmax_row([x / temperature for x in sl[i, j].tolist()], [True] * v)
                total += _kl(p, q, [True] * v) * temperature**2
                n += 1
    assert_close(
        L.logit_kd(sl, tl, mask, temperature=temperature), torch.tensor(total / n), rtol=1e-5, atol=1e-6
    )


def test_combine_weights_and_skips_zero() -> None:
    comps = {
        "hidden": torch.tensor(2.0),
        "relation": torch.tensor(3.0),
        "attention": torch.tensor(float("nan")),
    }
    assert float(L.combine(comps, {"hidden": 0.5, "relation": 2.0, "attention": 0.0})) == 7.0


# ------------------------------------------------------------------------------------------ sentence losses


def test_sentence_cosine_matches_loop() -> None:
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    ref = sum(1 - float(s[i] @ t[i]) / (float(s[i].norm()) * float(t[i].norm())) for i in range(5)) / 5
    assert L.sentence_cosine(s, t).item() == pytest.approx(ref, rel=1e-5)
    assert L.sentence_cosine(t * 3.0, t).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("ds", [8, 4])
def test_similarity_kl_matches_loop(ds: int) -> None:
    g = torch.Generator().manual_seed(4)
    b, temp = 6, 0.1
    s, t = torch.randn(b, ds, generator=g), torch.randn(b, 8, generator=g)

    def cos(x: torch.Tensor, i: int, j: int) -> float:
        return float(x[i] @ x[j]) / (float(x[i].norm()) * float(x[j].norm()))

    total = 0.0
    for i in range(b):
        others = [j for j in range(b) if j != i]
        tl = torch.tensor([cos(t, i, j) / temp for j in others], dtype=torch.float64)
        sl = torch.tensor([cos(s, i, j) / temp for j in others], dtype=torch.float64)
        tp, sp = tl.softmax(0), sl.softmax(0)
        total += float((tp * (tp.log() - sp.log())).sum())
    assert L.similarity_kl(s, t, temperature=temp).item() == pytest.approx(total / b, rel=1e-4)
    # the same neighbourhood structure at another width scores zero
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    assert L.similarity_kl(t @ q, t, temperature=temp).item() == pytest.approx(0.0, abs=1e-5)


def test_similarity_kl_single_row_is_zero_with_a_graph() -> None:
    s = torch.randn(1, 4, requires_grad=True)
    loss = L.similarity_kl(s, torch.randn(1, 4))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None
