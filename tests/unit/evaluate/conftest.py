"""Fixtures for the evaluate tests: a tiny separable task, a tiny regression task, a tiny teacher dir."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from kdnas.data.tasks import Task, TaskSplit
from kdnas.evaluate.config import EvaluateConfig
from kdnas.testing import WORDS

WET = "river ocean water island mountain forest".split()
LOUD = "music album song film art game".split()


def _texts(n: int, seed: int) -> tuple[list[str], list[int]]:
    r = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        cue = WET if y == 0 else LOUD
        words = [r.choice(WORDS[:20]) for _ in range(3)] + [r.choice(cue) for _ in range(2)]
        r.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    return texts, labels


def toy_task(n_train: int = 64) -> Task:
    splits = {}
    for name, n, seed in (("train", n_train, 0), ("dev", 24, 1), ("test", 32, 2)):
        t, y = _texts(n, seed)
        splits[name] = TaskSplit(texts=t, texts_b=None, labels=y)
    return Task(name="toy", kind="classification", label_names=["wet", "loud"], **splits)


def toy_regression() -> Task:
    """Score = number of WET cue words (0..3) in the text, as a float."""
    splits = {}
    for name, n, seed in (("train", 96, 0), ("dev", 24, 1), ("test", 32, 2)):
        r = random.Random(seed)
        texts, ys = [], []
        for i in range(n):
            k = i % 4
            words = [r.choice(WET) for _ in range(k)] + [r.choice(LOUD) for _ in range(3 - k)]
            r.shuffle(words)
            texts.append(" ".join(words))
            ys.append(float(k))
        splits[name] = TaskSplit(texts=texts, texts_b=None, labels=ys)
    return Task(name="toy-reg", kind="regression", label_names=[], **splits)


@pytest.fixture
def task() -> Task:
    return toy_task()


@pytest.fixture
def fast_cfg() -> EvaluateConfig:
    return EvaluateConfig(
        tasks=["toy"],
        lrs=[2e-3],
        seeds=[0],
        epochs=4,
        batch_size=8,
        max_len=16,
        patience=2,
        threads=1,
        warmup_fraction=0.0,
    )


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread avoids OpenMP contention (15 ms vs 450 ms a step)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    from kdnas.testing import save_tiny_teacher

    return save_tiny_teacher(tmp_path / "tiny")


@pytest.fixture
def reg_task() -> Task:
    return toy_regression()


@pytest.fixture
def make_task():
    return toy_task
