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


@pytest.fixture(scope="module")
def wiki_tasks(wiki_en_dir, zoo_cache):
    return {lang: load_task(f"wiki-vital-{lang}", cache_dir=zoo_cache) for lang in ("en", "fr", "es")}


def _agreement(space, src, tgt):
    """Share of the articles titled alike in both languages whose two topics fall in the same shared class."""
    src_class = {n: k for k, c in enumerate(space.classes) for n in c.source_labels}
    tgt_class = {n: k for k, c in enumerate(space.classes) for n in c.target_labels}

    def labels(task):
        return {k: task.label_names[y] for s in ("train", "dev", "test")
                for k, y in zip(task.split(s).keys, task.split(s).labels)}  # fmt: skip

    a, b = labels(src), labels(tgt)
    both = sorted(set(a) & set(b))
    same = sum(src_class.get(a[k], -1) == tgt_class.get(b[k], -2) for k in both)
    return same / len(both), len(both)


def test_topic_map_agrees_with_articles_titled_alike(wiki_tasks):
    """The topic map checked against the data: articles with the same title in en and fr / es (people, places,
    works) land in the same shared class."""
    from kdnas.data.topics import shared_label_space

    en = wiki_tasks["en"]
    for lang, floor in (("fr", 0.98), ("es", 0.96)):
        t = wiki_tasks[lang]
        assert t.language == lang
        space = shared_label_space(en.name, en.label_names, t.name, t.label_names)
        share, n = _agreement(space, en, t)
        assert n > 1000 and share >= floor, (lang, share, n)
    assert wiki_tasks["en"].language == "en"


def test_zero_shot_on_real_topics_with_a_tiny_model(wiki_tasks, zoo_cache):
    from kdnas.evaluate.config import EvaluateConfig
    from kdnas.evaluate.encoder import Encoder
    from kdnas.evaluate.retention import retention_table
    from kdnas.evaluate.runner import evaluate_encoder, load_tasks
    from kdnas.testing import tiny_teacher, tiny_tokenizer

    refs = [
        "wiki-vital-en",
        "wiki-vital-en>wiki-vital-fr",
        "wiki-vital-en>wiki-vital-es",
        "wiki-vital-es>wiki-vital-en",
    ]
    tasks = load_tasks(refs, cache_dir=zoo_cache, max_train=50)
    en, to_fr, to_es, from_es = tasks
    assert to_fr.source is en and to_es.source is en  # loaded once, fine-tuned once
    assert to_fr.excluded == {} and len(to_fr.test) == len(wiki_tasks["fr"].test) and to_fr.num_labels == 11
    assert to_es.excluded == {} and to_es.num_labels == 8
    assert set(from_es.excluded) == {"Biology and health sciences", "Physical sciences"}
    assert len(from_es.test) + sum(from_es.excluded.values()) == len(wiki_tasks["en"].test)
    cfg = EvaluateConfig(lrs=[1e-3], seeds=[0], epochs=1, batch_size=16, max_len=32, threads=1,
                         max_train_examples=50, eval_batch_size=128)  # fmt: skip
    enc = Encoder(model=tiny_teacher(), tokenizer=tiny_tokenizer(), name="tiny")
    report = evaluate_encoder(enc, tasks, cfg)
    assert list(report.results) == refs
    es = report.results["wiki-vital-en>wiki-vital-es"]
    assert es.language == "es" and es.n_test == len(to_es.test) and es.n_train == 50
    assert es.zero_shot["unmapped_source"] == ["Biology and health sciences", "Physical sciences"]
    assert 0.0 <= es.test_mean <= 1.0
    table = retention_table(report, [report])
    assert table.zero_shot == refs[1:] and list(table.language_groups()) == ["en", "fr", "es"]
    assert "### es" in table.to_markdown()
