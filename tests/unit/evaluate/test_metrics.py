from __future__ import annotations

import math

import numpy as np
import pytest

from kdnas.evaluate.metrics import accuracy, confusion_matrix, macro_f1, mcc, pearson, score, spearman

PRED = [0, 1, 1, 2, 2, 0]
GOLD = [0, 1, 2, 2, 1, 0]


def test_confusion_matrix_rows_are_gold():
    c = confusion_matrix(PRED, GOLD, 3)
    assert c.tolist() == [[2, 0, 0], [0, 1, 1], [0, 1, 1]]


def test_multiclass_by_hand():
    assert accuracy(PRED, GOLD) == pytest.approx(4 / 6)
    # F1: class 0 = 1, classes 1 and 2 = 2*1 / (2*1 + 1 + 1) = 0.5
    assert macro_f1(PRED, GOLD) == pytest.approx((1 + 0.5 + 0.5) / 3)
    # Gorodkin: (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (4*6 - 12) / sqrt(24 * 24)
    assert mcc(PRED, GOLD) == pytest.approx(0.5)


def test_binary_mcc_matches_the_textbook_formula():
    pred, gold = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    tp, fp, tn, fn = 2, 1, 1, 1
    want = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert mcc(pred, gold) == pytest.approx(want) == pytest.approx(1 / 6)


def test_degenerate_cases():
    assert mcc([1, 1, 1], [0, 1, 1]) == 0.0  # one predicted class: undefined -> 0
    assert mcc([0, 1, 0], [0, 1, 0]) == pytest.approx(1.0)
    assert macro_f1([0, 0], [0, 0]) == 1.0  # absent classes do not count
    assert macro_f1([0, 1, 0, 1], [0, 1, 0, 1], num_labels=4) == 1.0
    assert pearson([1, 1, 1], [1, 2, 3]) == 0.0
    with pytest.raises(ValueError):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError):
        accuracy([], [])


def test_pearson_spearman_by_hand():
    x, y = [1, 2, 3, 4], [2, 4, 5, 9]
    assert pearson(x, y) == pytest.approx(11 / math.sqrt(5 * 26))
    assert spearman(x, y) == pytest.approx(1.0)
    # ties get average ranks: x -> [1, 2.5, 2.5, 4], y -> [1, 3, 2, 4]
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_score_selects_metrics_by_kind():
    c = score("classification", np.array(PRED), np.array(GOLD), 3)
    assert set(c) == {"accuracy", "macro_f1", "mcc"}
    r = score("regression", [0.1, 0.5, 0.9], [0.0, 1.0, 2.0])
    assert set(r) == {"pearson", "spearman"} and r["spearman"] == pytest.approx(1.0)
    with pytest.raises(ValueError):
        score("ranking", [1], [1])
