"""Zero-shot pair similarity: a sentence-pair task scored from the cosine of the two texts' embeddings, with no
fine-tuning (how an embedding model is used for search and deduplication, and what fine-tuning cannot hide).

Regression tasks: Spearman of the cosine against the gold score on test. Two-class tasks: the threshold and
direction (high cosine = which label) that are best on dev, applied to test: accuracy and macro F1. A task
whose label depends on the order of the two texts (e.g. wiki-order-en) stays at chance by construction: cosine
is symmetric; it is reported as a control.

`embedding_result` is the same scoring as a suite column (`pair_encoding: embedding`, MTEB's pair-classification
protocol): the threshold chosen on dev by the task's main metric, every metric of the task on test, as a
`TaskResult` with no fine-tuning runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from kdnas.data.tasks import Task, TaskSplit
from kdnas.evaluate.fidelity import encode
from kdnas.evaluate.metrics import MAIN_METRIC, accuracy, macro_f1, score, spearman
from kdnas.models.pooling import Pooling

if TYPE_CHECKING:
    from kdnas.evaluate.encoder import Encoder
    from kdnas.evaluate.results import TaskResult


@dataclass
class PairSimilarity:
    task: str
    metric: str
    """spearman (regression) or accuracy (two classes; macro_f1 beside it)."""
    value: float
    macro_f1: float | None = None
    threshold: float | None = None
    """The dev-chosen cosine threshold (two classes)."""
    positive: int | None = None
    """The label predicted above the threshold."""
    test: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cosines(model: nn.Module, tokenizer: Any, split: TaskSplit, pooling: Pooling, dense: nn.Module | None,
             max_len: int, input_map: torch.Tensor | None) -> np.ndarray:  # fmt: skip
    assert split.texts_b is not None
    embs = []
    for texts in (split.texts, split.texts_b):
        tok = tokenizer(list(texts), truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        e, _ = encode(
            model, tok["input_ids"], tok["attention_mask"], pooling, dense=dense, input_map=input_map
        )
        embs.append(nn.functional.normalize(e.float(), dim=-1))
    return (embs[0] * embs[1]).sum(-1).numpy()  # [N]


def pair_similarity(
    model: nn.Module, tokenizer: Any, task: Task, pooling: Pooling, *, dense: nn.Module | None = None,
    max_len: int = 128, input_map: torch.Tensor | None = None,
) -> PairSimilarity | None:  # fmt: skip
    """The zero-shot score of a pair task (None for a single-text task or one with more than two classes)."""
    if not task.is_pair or (task.kind == "classification" and task.num_labels != 2):
        return None
    test = _cosines(model, tokenizer, task.test, pooling, dense, max_len, input_map)
    gold = np.asarray(task.test.labels)
    if task.kind != "classification":
        return PairSimilarity(task.name, "spearman", spearman(test, gold.astype(float)), test=len(gold))
    dev = _cosines(model, tokenizer, task.dev, pooling, dense, max_len, input_map)
    t, pos = _threshold(dev, np.asarray(task.dev.labels), "accuracy")
    pred = np.where(test >= t, pos, 1 - pos)
    return PairSimilarity(task.name, "accuracy", accuracy(pred, gold), macro_f1=macro_f1(pred, gold, 2),
                          threshold=t, positive=pos, test=len(gold))  # fmt: skip


def _threshold(cos: np.ndarray, gold: np.ndarray, metric: str) -> tuple[float, int]:
    """(threshold, label above it) of a two-class split whose `metric` is best (ties: the first found)."""
    best = (-np.inf, 0.0, 1)
    for t in np.unique(cos):
        for pos in (0, 1):
            v = score("classification", np.where(cos >= t, pos, 1 - pos), gold, 2)[metric]
            if v > best[0]:
                best = (v, float(t), pos)
    return best[1], best[2]


@torch.inference_mode()
def embedding_result(encoder: Encoder, task: Task, *, max_len: int = 128) -> TaskResult:
    """`task` scored from the cosine of its two texts' embeddings, no fine-tuning (see the module docstring)."""
    from kdnas.data.tasks import check_pair_encoding
    from kdnas.evaluate.fidelity import embedding_parts
    from kdnas.evaluate.results import majority_rate, summarize_fixed

    check_pair_encoding(task, "embedding", task.name)
    pooling, dense = embedding_parts(encoder.path)
    model, tok = encoder.model.eval(), encoder.tokenizer
    metric = task.metric or MAIN_METRIC[task.kind]
    dev = _cosines(model, tok, task.dev, pooling, dense, max_len, None)
    test = _cosines(model, tok, task.test, pooling, dense, max_len, None)
    dev_gold, gold = np.asarray(task.dev.labels), np.asarray(task.test.labels)
    if task.kind == "classification":
        t, pos = _threshold(dev, dev_gold, metric)
        dev_m = score("classification", np.where(dev >= t, pos, 1 - pos), dev_gold, 2)
        test_m = score("classification", np.where(test >= t, pos, 1 - pos), gold, 2)
    else:
        dev_m, test_m = (
            score("regression", dev, dev_gold.astype(float)),
            score("regression", test, gold.astype(float)),
        )
    return summarize_fixed(task, metric, dev_m, test_m, majority=majority_rate(task))
