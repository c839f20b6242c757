from __future__ import annotations

import torch

from kdnas.evaluate.losses import label_loss, logit_kd_loss, task_kd_loss


def _naive_kd(s: torch.Tensor, t: torch.Tensor, temp: float) -> torch.Tensor:
    total = torch.tensor(0.0)
    for i in range(s.shape[0]):
        p_t = torch.softmax(t[i] / temp, -1)
        p_s = torch.softmax(s[i] / temp, -1)
        total = total + (p_t * (p_t.log() - p_s.log())).sum()
    return total / s.shape[0] * temp**2


def test_logit_kd_matches_naive_reference():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    for temp in (1.0, 2.0, 4.0):
        torch.testing.assert_close(logit_kd_loss(s, t, "classification", temp), _naive_kd(s, t, temp))
    assert logit_kd_loss(t, t, "classification", 2.0).abs() < 1e-6


def test_mix_and_regression():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    ce = torch.nn.functional.cross_entropy(s, y)
    torch.testing.assert_close(task_kd_loss(s, t, y, "classification", temperature=2.0, alpha=0.0), ce)
    mixed = task_kd_loss(s, t, y, "classification", temperature=2.0, alpha=0.3)
    torch.testing.assert_close(mixed, 0.3 * logit_kd_loss(s, t, "classification", 2.0) + 0.7 * ce)
    sr, tr, yr = torch.randn(4, 1, generator=g), torch.randn(4, 1, generator=g), torch.randn(4, generator=g)
    torch.testing.assert_close(label_loss(sr, yr, "regression"), ((sr.squeeze(-1) - yr) ** 2).mean())
    torch.testing.assert_close(logit_kd_loss(sr, tr, "regression", 3.0), ((sr - tr) ** 2).mean())
