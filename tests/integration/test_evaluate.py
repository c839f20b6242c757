"""Real data and the real minilm-l6 teacher: zoo task counts and splits, and a short fine-tuning run."""

from __future__ import annotations

import pytest

from kdnas.data.splits import task_split_of
from kdnas.data.tasks import load_task

pytestmark = pytest.mark.integration


def _keys(task):
    return {s: task.split(s).keys for s in ("train", "dev", "test")}


def _check_splits(task):
    keys = _keys(task)
    sets = {s: set(k) for s, k in keys.items()}
    assert (
        not (sets["train"] & sets["dev"])
        and not (sets["train"] & sets["test"])
        and not (sets["dev"] & sets["test"])
    )
    for s, ks in keys.items():
        assert all(task_split_of(k) == s for k in ks)
    texts = {s: set(task.split(s).texts) for s in ("train", "dev", "test")}
    assert not (texts["dev"] & texts["test"]) and not (texts["train"] & texts["test"])


def test_wiki_vital_en_task(wiki_en_dir, zoo_cache):
    t = load_task("wiki-vital-en", cache_dir=zoo_cache)
    assert t.kind == "classification" and len(t.label_names) == 11 and "Uncategorized" not in t.label_names
    assert t.dropped["Uncategorized"] == 1000
    kept = len(t.train) + len(t.dev) + len(t.test)
    assert kept + sum(v for k, v in t.dropped.items() if k != "Uncategorized") == 10_033 - 1000
    assert 0.08 < len(t.test) / kept < 0.12 and 0.08 < len(t.dev) / kept < 0.12
    _check_splits(t)
    again = load_task("wiki-vital-en", cache_dir=zoo_cache)
    assert _keys(again) == _keys(t)  # deterministic, seed-independent
    assert set(t.train.labels) == set(range(11))


def test_bbc_news_task(bbc_dir, zoo_cache):
    t = load_task("bbc-news", cache_dir=zoo_cache)
    assert t.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    kept = len(t.train) + len(t.dev) + len(t.test)
    assert kept + sum(t.dropped.values()) == 2_225
    assert all(k.count("/") == 1 and k.endswith(".txt") for k in t.test.keys)  # key: <class>/<file>.txt
    _check_splits(t)
    assert _keys(load_task("bbc-news", cache_dir=zoo_cache)) == _keys(t)


def test_finetune_minilm_on_a_bbc_slice(minilm_dir, bbc_dir, zoo_cache):
    from kdnas.evaluate.config import EvaluateConfig
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.finetune import finetune

    task = load_task("bbc-news", cache_dir=zoo_cache, max_train=64)
    task.dev = task.dev.subset(list(range(48)))
    task.test = task.test.subset(list(range(64)))
    enc = load_encoder(minilm_dir)
    assert enc.model.config._attn_implementation == "eager" and enc.params == 22_713_216
    cfg = EvaluateConfig(lrs=[5e-4], seeds=[0], epochs=2, batch_size=16, max_len=64, threads=1)
    res, _ = finetune(enc.model, enc.tokenizer, task, cfg)
    assert res.test_mean > 0.6, res  # 5 classes: chance is ~0.2; sentence embeddings separate topics well
    assert res.n_train == 64 and res.runs[0].steps in (4, 8)
