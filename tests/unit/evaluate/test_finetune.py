from __future__ import annotations

import dataclasses

import pytest
import torch

from kdnas.data.tasks import Task, TaskSplit
from kdnas.errors import DataError
from kdnas.evaluate.finetune import (
    RunResult,
    TaskModel,
    TaskResult,
    capped,
    encode_split,
    finetune,
    predict_logits,
    summarize,
)
from kdnas.testing import tiny_teacher, tiny_tokenizer


def test_tiny_model_learns_a_separable_task(task, fast_cfg):
    enc = tiny_teacher()
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res, model = finetune(enc, tiny_tokenizer(), task, fast_cfg, return_model=True)
    assert res.metric == "accuracy" and res.test_mean >= 0.9, res
    assert set(res.test_metrics) == {"accuracy", "macro_f1", "mcc"}
    assert res.n_train == 64 and res.n_test == 32 and len(res.runs) == 1
    assert 1 <= res.runs[0].best_epoch <= res.runs[0].epochs_run <= fast_cfg.epochs
    assert isinstance(model, TaskModel)
    for k, v in enc.state_dict().items():  # the caller's encoder is copied, never trained
        torch.testing.assert_close(v, before[k])
    assert TaskResult.from_dict(res.to_dict()) == res


def test_untrained_head_is_near_chance(task, fast_cfg):
    """Guards the test above: without training (lr tiny) the same task is not solved."""
    cfg = dataclasses.replace(fast_cfg, lrs=[1e-9], epochs=1)
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, cfg)
    assert res.test_mean < 0.8


@pytest.mark.parametrize(("min_epochs", "expected"), [(1, 2), (3, 3)])
def test_early_stopping_waits_for_min_epochs(task, fast_cfg, min_epochs, expected):
    """A model stuck on one prediction (lr tiny: dev never improves) stops after `patience` epochs, but not
    before `min_epochs`."""
    cfg = dataclasses.replace(fast_cfg, lrs=[1e-12], epochs=6, patience=1, min_epochs=min_epochs)
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, cfg)
    assert res.runs[0].best_epoch == 1 and res.runs[0].epochs_run == expected


def test_student_lrs_replace_the_grid_for_students_only(fast_cfg):
    cfg = dataclasses.replace(fast_cfg, student_lrs=[1e-3, 5e-3])
    assert cfg.for_students().lrs == [1e-3, 5e-3] and cfg.lrs == fast_cfg.lrs
    assert fast_cfg.for_students() is fast_cfg
    assert any("student_lrs" in p for p in dataclasses.replace(fast_cfg, student_lrs=[]).check())
    assert any("student_lrs" in p for p in dataclasses.replace(fast_cfg, student_lrs=[2.0]).check())


def test_regression_and_cls_pooling(reg_task, fast_cfg):
    cfg = dataclasses.replace(fast_cfg, pooling="cls", epochs=6, batch_size=8, lrs=[3e-3])
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), reg_task, cfg)
    assert res.metric == "spearman" and set(res.test_metrics) == {"pearson", "spearman"}
    assert res.test_metrics["pearson"] > 0.7, res.test_metrics


def test_sentence_pairs_use_token_types(fast_cfg):
    tok = tiny_tokenizer()
    a = ["the river", "the song", "a river", "a song"] * 4
    b = ["the ocean", "the album", "the album", "the ocean"] * 4
    y = [0, 0, 1, 1] * 4
    sp = TaskSplit(texts=a, texts_b=b, labels=y)
    enc = encode_split(tok, sp, "classification", 16)
    assert enc.token_type_ids is not None and max(enc.token_type_ids[0]) == 1
    t = Task(
        "pairs", "classification", ["same", "diff"], sp, sp.subset([0, 1, 2, 3]), sp.subset([4, 5, 6, 7])
    )
    _, model = finetune(tiny_teacher(), tok, t, dataclasses.replace(fast_cfg, epochs=1), return_model=True)
    assert model is not None and model.use_token_types
    logits = predict_logits(model, enc, batch_size=5)
    assert logits.shape == (16, 2)


def test_predict_logits_is_order_preserving_and_padding_invariant(task):
    tok = tiny_tokenizer()
    model = TaskModel(tiny_teacher(), 2, pooling="mean", dropout=0.0).eval()
    data = encode_split(tok, task.test, "classification", 16)
    all_at_once = predict_logits(model, data, batch_size=64)
    one_by_one = torch.cat([predict_logits(model, encode_split(tok, task.test.subset([i]), "classification", 16))
                            for i in range(len(task.test))])  # fmt: skip
    torch.testing.assert_close(all_at_once, one_by_one, atol=1e-5, rtol=1e-4)


def _run(lr, seed, dev, test):
    return RunResult(lr=lr, seed=seed, dev={"accuracy": dev}, test={"accuracy": test}, best_epoch=1,
                     epochs_run=1, steps=1, train_s=0.0)  # fmt: skip


def test_summarize_picks_lr_by_mean_dev_and_reports_test_there(task):
    runs = [_run(1e-4, 0, 0.90, 0.50), _run(1e-4, 1, 0.60, 0.40),  # mean dev 0.75
            _run(3e-4, 0, 0.80, 0.70), _run(3e-4, 1, 0.80, 0.90)]  # mean dev 0.80  # fmt: skip
    res = summarize(task, runs)
    assert res.best_lr == 3e-4 and res.dev_mean == pytest.approx(0.8)
    assert res.test_mean == pytest.approx(0.8)
    assert res.test_std == pytest.approx(0.1414213, rel=1e-5)  # sample std of (0.7, 0.9)
    assert summarize(task, runs[:1]).test_std == 0.0


def test_soft_targets_must_match_train(task, fast_cfg):
    with pytest.raises(DataError, match="teacher logits"):
        finetune(tiny_teacher(), tiny_tokenizer(), task, fast_cfg, soft_targets=torch.zeros(3, 2))


def test_max_train_examples_caps_training(task, fast_cfg):
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, dataclasses.replace(fast_cfg, max_train_examples=10,
                                                                                   epochs=1))  # fmt: skip
    assert res.n_train == 10 and res.runs[0].steps == 2


def test_dev_is_capped_the_same_for_every_model_and_test_never(task, fast_cfg):
    cfg = dataclasses.replace(fast_cfg, max_train_examples=None, max_dev_examples=5)
    a, b = capped(task, cfg), capped(task, cfg)
    assert len(a.dev) == 5 < len(task.dev) and a.dev.texts == b.dev.texts
    assert set(a.dev.texts) <= set(task.dev.texts)
    assert len(a.test) == len(task.test) and len(a.train) == len(task.train)
    assert len(task.dev) > 5  # the original is untouched
    assert capped(task, dataclasses.replace(cfg, max_dev_examples=None)).dev is task.dev


def test_soft_targets_drive_training_when_alpha_is_one(task, fast_cfg):
    """With alpha=1 only the teacher logits count: logits that say the opposite class are learned."""
    y = torch.tensor(task.train.labels)
    flipped = torch.nn.functional.one_hot(1 - y, 2).float() * 6.0  # [N, 2]
    cfg = dataclasses.replace(fast_cfg, kd_alpha=1.0)
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, cfg, soft_targets=flipped)
    assert res.test_mean <= 0.2, res.test_mean


def _same_group_pairs(n: int, seed: int) -> TaskSplit:
    """Pairs of two-word texts; label 1 when both texts draw from the same cue group (a similarity task)."""
    import random

    wet, loud = "river ocean water island mountain forest".split(), "music album song film art game".split()
    r = random.Random(seed)
    a, b, y = [], [], []
    for i in range(n):
        ga = wet if i % 2 else loud
        same = (i // 2) % 2 == 0
        gb = ga if same else (loud if ga is wet else wet)
        a.append(" ".join(r.choice(ga) for _ in range(2)))
        b.append(" ".join(r.choice(gb) for _ in range(2)))
        y.append(int(same))
    return TaskSplit(texts=a, texts_b=b, labels=y)


def test_bi_encoder_pairs_encode_each_text_alone_and_learn_similarity(fast_cfg):
    tok = tiny_tokenizer()
    sp = _same_group_pairs(96, 0)
    t = Task("same-group", "classification", ["different", "same"], sp, _same_group_pairs(24, 1),
             _same_group_pairs(32, 2), pair_encoding="bi")  # fmt: skip
    enc = encode_split(tok, t.test, "classification", 16, bi=True)
    assert enc.input_ids_b is not None and enc.token_type_ids is None
    assert enc.input_ids[0] == tok(t.test.texts[0])["input_ids"]  # the first text alone, not the pair
    cfg = dataclasses.replace(fast_cfg, epochs=8, batch_size=8, lrs=[3e-3], min_epochs=8)
    res, model = finetune(tiny_teacher(), tok, t, cfg, return_model=True)
    assert model is not None and model.bi and model.head.in_features == 4 * model.encoder.config.hidden_size
    assert res.test_mean >= 0.85, res
    # the head reads [u, v, |u-v|, u*v] of the texts pooled one by one: the same logits from single-text encodings
    model.eval()
    single = [encode_split(tok, TaskSplit(texts=x, texts_b=None, labels=t.test.labels), "classification", 16)
              for x in (t.test.texts, t.test.texts_b)]  # fmt: skip
    with torch.no_grad():
        u, v = (model._pooled(**_batch(s)) for s in single)
        want = model.head(torch.cat([u, v, (u - v).abs(), u * v], -1))
    torch.testing.assert_close(predict_logits(model, enc, batch_size=7), want, atol=1e-5, rtol=1e-4)


def _batch(s):
    from kdnas.evaluate.finetune import _pad

    ids, mask = _pad(s.input_ids, list(range(len(s))), s.pad_id)
    return {"input_ids": ids, "attention_mask": mask}


def test_cross_encoder_cannot_take_what_bi_needs():
    model = TaskModel(tiny_teacher(), 2, bi=True)
    ids = torch.ones((2, 3), dtype=torch.long)
    with pytest.raises(Exception, match="second texts"):
        model(ids, ids)


@pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh runs it)"
)
def test_on_a_gpu_finetuning_learns_the_same_task(task, fast_cfg):
    enc = tiny_teacher()
    cpu, _ = finetune(enc, tiny_tokenizer(), task, dataclasses.replace(fast_cfg, device="cpu", dtype="fp32"))
    gpu, _ = finetune(enc, tiny_tokenizer(), task, dataclasses.replace(fast_cfg, device="cuda", dtype="fp32"))
    assert gpu.test_mean >= 0.9 and abs(gpu.test_mean - cpu.test_mean) <= 0.07, (cpu, gpu)
    assert all(p.device.type == "cpu" for p in enc.parameters())  # the caller's encoder is copied, not moved


def test_auto_device_is_the_cpu_without_a_gpu(task, fast_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res, _ = finetune(tiny_teacher(), tiny_tokenizer(), task, dataclasses.replace(fast_cfg, device="auto"))
    assert res.test_mean >= 0.9
