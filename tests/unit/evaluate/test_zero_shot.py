"""Zero-shot transfer in the runner: the source is fine-tuned once, every run also scores the targets."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

import kdnas.evaluate.finetune as ft
from kdnas.data.tasks import Task, TaskSplit
from kdnas.data.topics import zero_shot_task
from kdnas.evaluate.encoder import Encoder
from kdnas.evaluate.finetune import zero_shot_logits
from kdnas.evaluate.retention import ModelReport
from kdnas.evaluate.runner import evaluate_encoder, plan_sources
from kdnas.testing import WORDS, tiny_teacher, tiny_tokenizer

from .conftest import LOUD, WET

CALM = "king queen army battle empire church".split()


def test_zero_shot_logits_is_logsumexp_per_group():
    logits = torch.tensor([[1.0, 2.0, 0.5, 9.0], [3.0, -1.0, 2.5, 0.0]])  # [N=2, K=4]
    groups = [[2], [0, 1]]  # class 3 maps to nothing
    out = zero_shot_logits(logits, groups)
    ref = torch.tensor([[0.5, torch.tensor([1.0, 2.0]).exp().sum().log()],
                        [2.5, torch.tensor([3.0, -1.0]).exp().sum().log()]])  # fmt: skip
    torch.testing.assert_close(out, ref)
    assert out.argmax(-1).tolist() == [1, 1]  # the unmapped class 3 (logit 9) takes no part
    with pytest.raises(ValueError, match="at least one source class"):
        zero_shot_logits(logits, [[0], []])


def _target(n: int = 36) -> Task:
    """The toy task in another 'language' (other filler words), labels in another order, plus a 'calm' class
    the source does not have."""
    r = random.Random(7)
    texts, labels = [], []
    for i in range(n):
        y = i % 3  # 0 loud, 1 wet, 2 calm
        cue = (LOUD, WET, CALM)[y]
        words = [r.choice(WORDS[40:60]) for _ in range(3)] + [r.choice(cue) for _ in range(2)]
        r.shuffle(words)
        texts.append(" ".join(words))
        labels.append(y)
    sp = TaskSplit(texts=texts, texts_b=None, labels=labels)
    return Task(name="toy-xx", kind="classification", label_names=["loud", "wet", "calm"], train=sp, dev=sp,
                test=sp, language="xx")  # fmt: skip


def test_source_is_fine_tuned_once_for_itself_and_every_target(task, fast_cfg, monkeypatch):
    target = _target()
    zs = zero_shot_task("toy>toy-xx", task, target)
    assert zs.excluded == {"calm": 12} and len(zs.test) == 24
    zs2 = zero_shot_task("toy>toy-yy", task, dataclasses.replace(target, name="toy-yy"))
    calls = []
    real = ft.train_run
    monkeypatch.setattr(ft, "train_run", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    cfg = dataclasses.replace(fast_cfg, seeds=[0, 1])
    enc = Encoder(model=tiny_teacher(), tokenizer=tiny_tokenizer(), name="tiny")
    report = evaluate_encoder(enc, [zs, task, zs2], cfg)
    assert calls == [0, 1]  # one source, 2 seeds: two runs in all, not one per column
    assert list(report.results) == ["toy>toy-xx", "toy", "toy>toy-yy"]
    src, z = report.results["toy"], report.results["toy>toy-xx"]
    assert src.zero_shot is None and all(not r.transfer for r in src.runs)
    assert z.zero_shot is not None and z.zero_shot["excluded"] == {"calm": 12}
    assert z.zero_shot["unmapped_source"] == [] and z.zero_shot["classes"] == {
        "loud": ["loud"],
        "wet": ["wet"],
    }
    assert z.n_test == 24 and z.n_train == src.n_train and z.best_lr == src.best_lr and z.language == "xx"
    assert [r.seed for r in z.runs] == [0, 1] and [r.dev for r in z.runs] == [r.dev for r in src.runs]
    # the cue words carry over to the other filler words: the transfer works, in the target's label order
    assert src.test_mean >= 0.9 and z.test_mean >= 0.8, (src, z)
    assert (
        ModelReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report
    )  # as the pipeline stores it


def test_zero_shot_alone_does_not_report_the_source(task, fast_cfg):
    zs = zero_shot_task("toy>toy-xx", task, _target())
    plans = plan_sources([zs])
    assert len(plans) == 1 and plans[0].task is task and not plans[0].report
    enc = Encoder(model=tiny_teacher(), tokenizer=tiny_tokenizer(), name="tiny")
    report = evaluate_encoder(enc, [zs], dataclasses.replace(fast_cfg, epochs=1))
    assert list(report.results) == ["toy>toy-xx"]


def test_untrained_source_transfers_at_chance(task, fast_cfg):
    """Guards the transfer score above: with no learning the target is not solved."""
    zs = zero_shot_task("toy>toy-xx", task, _target())
    enc = Encoder(model=tiny_teacher(), tokenizer=tiny_tokenizer(), name="tiny")
    report = evaluate_encoder(enc, [zs], dataclasses.replace(fast_cfg, lrs=[1e-9], epochs=1))
    assert report.results["toy>toy-xx"].test_mean < 0.75
