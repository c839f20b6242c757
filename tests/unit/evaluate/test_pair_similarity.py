"""Zero-shot pair similarity on a tiny random encoder: identical pairs vs different ones are told apart with no
training (accuracy 1, Spearman > 0.8), the order of the two texts cannot be (chance), single texts give None."""

from __future__ import annotations

from kdnas.data.tasks import Task, TaskSplit
from kdnas.evaluate.pair_similarity import pair_similarity
from kdnas.models.pooling import Pooling
from kdnas.testing import WORDS, tiny_pair_task, tiny_teacher, tiny_tokenizer


def _sentences(n: int, offset: int) -> list[str]:
    return [" ".join(WORDS[(offset + 7 * i + j) % len(WORDS)] for j in range(4 + i % 3)) for i in range(n)]


def test_identical_pairs_are_found_without_training() -> None:
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    r = pair_similarity(model, tok, tiny_pair_task("classification"), Pooling(mode="mean"))
    assert r is not None and r.metric == "accuracy" and r.value == 1.0 and r.positive == 1 and r.test == 30
    reg = pair_similarity(model, tok, tiny_pair_task("regression"), Pooling(mode="mean"))
    assert reg is not None and reg.metric == "spearman" and reg.value > 0.8


def test_an_order_task_stays_at_chance_and_single_texts_give_none() -> None:
    model, tok = tiny_teacher("bert", seed=0).eval(), tiny_tokenizer()
    a, b = _sentences(40, 0), _sentences(40, 55)

    def split(lo: int, hi: int) -> TaskSplit:  # label 1: in order, 0: swapped; the same pairs either way
        rows = [(a[i], b[i], 1) if i % 2 else (b[i], a[i], 0) for i in range(lo, hi)]
        return TaskSplit(
            texts=[r[0] for r in rows], texts_b=[r[1] for r in rows], labels=[r[2] for r in rows]
        )

    order = Task("order", "classification", ["swapped", "in order"], split(0, 4), split(4, 20), split(20, 40))
    r = pair_similarity(model, tok, order, Pooling(mode="mean"))
    assert r is not None and r.value <= 0.75  # no signal in a symmetric cosine: near 0.5 (small test set)
    single = Task("topic", "classification", ["a", "b"], TaskSplit(["x"], None, [0]), TaskSplit(["y"], None, [1]),
                  TaskSplit(["z"], None, [0]))  # fmt: skip
    assert pair_similarity(model, tok, single, Pooling(mode="mean")) is None


def test_an_embedding_task_is_a_suite_column_scored_without_fine_tuning() -> None:
    """`pair_encoding: embedding`: evaluate_encoder scores the task from the cosine (identical pairs found: 1.0),
    with the task's main metric choosing the threshold, one deterministic score and no runs; the encoder is
    never trained; a three-class task is refused."""
    import dataclasses

    import pytest
    import torch

    from kdnas.errors import DataError
    from kdnas.evaluate.config import EvaluateConfig
    from kdnas.evaluate.encoder import Encoder
    from kdnas.evaluate.pair_similarity import embedding_result
    from kdnas.evaluate.runner import evaluate_encoder

    enc = Encoder(model=tiny_teacher("bert", seed=0), tokenizer=tiny_tokenizer(), name="tiny")
    before = {k: v.clone() for k, v in enc.model.state_dict().items()}
    task = dataclasses.replace(tiny_pair_task("classification"), pair_encoding="embedding", metric="macro_f1")
    report = evaluate_encoder(enc, [task], EvaluateConfig(tasks=[task.name], seeds=[0, 1]))
    r = report.results[task.name]
    assert (
        r.pair_encoding == "embedding" and r.metric == "macro_f1" and r.test_mean == 1.0 and r.dev_mean == 1.0
    )
    assert r.runs == [] and r.test_std == 0.0 and r.test_metrics["accuracy"] == 1.0 and r.n_test == 30
    for k, v in enc.model.state_dict().items():
        torch.testing.assert_close(v, before[k])
    reg = dataclasses.replace(tiny_pair_task("regression"), pair_encoding="embedding")
    got = embedding_result(enc, reg)
    assert (
        got.metric == "spearman" and got.test_mean > 0.8 and set(got.test_metrics) == {"pearson", "spearman"}
    )
    three = dataclasses.replace(task, label_names=["a", "b", "c"])
    with pytest.raises(DataError, match=r"3 classes.*use pair_encoding cross or bi"):
        embedding_result(enc, three)
