"""Zero-shot pair similarity: a sentence-pair task scored from the cosine of the two texts' embeddings, with no
fine-tuning (how an embedding model is used for search and deduplication, and what fine-tuning cannot hide).

Regression tasks: Spearman of the cosine against the gold score on test. Two-class tasks: the threshold and
direction (high cosine = which label) that are best on dev, applied to test: accuracy and macro F1. A task
whose label depends on the order of the two texts (e.g. wiki-order-en) stays at chance by construction: cosine
is symmetric; it is reported as a control.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kdnas.data.tasks import Task, TaskSplit
from kdnas.evaluate.fidelity import encode
from kdnas.evaluate.metrics import accuracy, macro_f1, spearman
from kdnas.models.pooling import Pooling


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
    dev_gold = np.asarray(task.dev.labels)
    best = (-1.0, 0.0, 1)
    for t in np.unique(dev):
        for pos in (0, 1):
            acc = accuracy(np.where(dev >= t, pos, 1 - pos), dev_gold)
            if acc > best[0]:
                best = (acc, float(t), pos)
    _, t, pos = best
    pred = np.where(test >= t, pos, 1 - pos)
    return PairSimilarity(task.name, "accuracy", accuracy(pred, gold), macro_f1=macro_f1(pred, gold, 2),
                          threshold=t, positive=pos, test=len(gold))  # fmt: skip
