"""The real zoo: minilm-l6 and wiki-vital-en / bbc-news fetched through kdnas.zoo, and a real corpus build."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest

from kdnas import zoo
from kdnas.data.config import CorpusConfig
from kdnas.data.corpus import build_corpus, iter_documents
from kdnas.data.splits import task_split_of

pytestmark = pytest.mark.integration


def test_minilm_dir_loads_offline(minilm_dir: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    assert zoo.is_fetched("minilm-l6") and zoo.resolve_model_ref("minilm-l6") == minilm_dir
    model = AutoModel.from_pretrained(minilm_dir, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(minilm_dir)
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (
        "bert",
        6,
        384,
        12,
    )
    assert (cfg.intermediate_size, cfg.vocab_size) == (1536, 30522)
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert tok("Hello world")["input_ids"] == [101, 7592, 2088, 102]  # uncased WordPiece
    assert zoo.verify("minilm-l6") is None


def test_wiki_vital_en_facts(wiki_en_dir: Path) -> None:
    data = json.loads((wiki_en_dir / "summaries_en-us.json").read_text(encoding="utf-8"))
    assert len(data) == 10_033
    topics = collections.Counter(a["topic"] for a in data.values())
    assert len(topics) == 12 and topics["Uncategorized"] == 1_000
    assert 4.8e6 < sum(len(a["extract"]) for a in data.values()) < 5.0e6
    all_docs = list(iter_documents("wiki-vital-en", exclude_task_eval=False))
    assert len(all_docs) == 10_033
    train_only = [d.key for d in iter_documents("wiki-vital-en")]
    assert train_only == [k for k in data if task_split_of(k) == "train"]
    assert 7_800 < len(train_only) < 8_300


def test_bbc_news_facts(bbc_dir: Path) -> None:
    docs = list(iter_documents("bbc-news", exclude_task_eval=False))
    assert len(docs) == 2_225
    assert collections.Counter(d.key.split("/")[0] for d in docs)["sports"] == 511


def test_build_corpus_with_the_real_tokenizer(minilm_dir: Path, wiki_en_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    cfg = CorpusConfig(sources=["wiki-vital-en"], seq_len=64, max_documents=400, mode="packed")
    cs = build_corpus(cfg, tok, seed=0)
    assert cs.stats["sources"][0]["documents"] == 400
    for block in (cs.proxy, cs.train, cs.heldout):
        assert len(block) > 0 and block.input_ids.shape[1] == 64
        assert (block.input_ids[:, 0] == tok.cls_token_id).all() and (
            block.input_ids[:, -1] == tok.sep_token_id
        ).all()
    assert int(cs.train.input_ids.max()) < tok.vocab_size
    text = tok.decode(cs.train.input_ids[0], skip_special_tokens=True)
    assert len(text.split()) > 20
    again = build_corpus(cfg, tok, seed=0)
    assert again.stats["cache_hit"] is True and again.train.input_ids.tolist() == cs.train.input_ids.tolist()
    sent = build_corpus(
        CorpusConfig(sources=["wiki-vital-en"], seq_len=64, max_documents=200, mode="sentence"), tok
    )
    assert int(sent.train.attention_mask.sum(1).min()) < 64


def test_tweet_sentiment_facts(zoo_cache: Path) -> None:
    from kdnas import zoo
    from kdnas.data.tasks import load_task

    zoo.fetch("tweet-sentiment")
    t = load_task("tweet-sentiment")
    assert t.label_names == ["negative", "neutral", "positive"]
    n = len(t.train) + len(t.dev) + len(t.test)
    assert n + sum(t.dropped.values()) == 38_158  # rows of the CSV
    assert t.dropped["annotator agreement < 0.6"] == 7_518 and 29_000 < n < 31_000
    majority = collections.Counter(t.test.labels).most_common(1)[0][1] / len(t.test)
    assert 0.45 < majority < 0.52
    assert not set(t.train.texts) & set(t.test.texts)


def test_wiki_pair_tasks_keep_held_out_articles_out_of_the_corpus(wiki_en_dir: Path) -> None:
    from kdnas.data.tasks import load_task

    corpus_keys = {d.key for d in iter_documents("wiki-vital-en")}
    for name in ("wiki-order-en", "wiki-same-en"):
        t = load_task(name)
        assert len(t.train) > 6_000 and len(t.test) > 700
        held = set(t.dev.keys or []) | set(t.test.keys or [])
        assert not held & corpus_keys, name
        test_sents = set(t.test.texts) | set(t.test.texts_b or [])
        assert not test_sents & (set(t.train.texts) | set(t.train.texts_b or [])), name


def test_wiki_same_en_is_scored_from_the_real_teachers_embeddings(
    minilm_dir: Path, wiki_en_dir: Path
) -> None:
    """The zoo's same-article task is an embedding task: the real teacher, with no training, separates its test
    pairs far above the majority rate (90.5 macro F1 measured), as its users compare two texts."""
    from kdnas.data.tasks import load_task
    from kdnas.evaluate.encoder import load_encoder
    from kdnas.evaluate.pair_similarity import embedding_result

    task = load_task("wiki-same-en")
    assert task.pair_encoding == "embedding" and load_task("wiki-order-en").pair_encoding == "cross"
    r = embedding_result(load_encoder("minilm-l6"), task)
    assert r.metric == "macro_f1" and r.pair_encoding == "embedding" and r.runs == []
    assert r.test_mean > 0.85 and r.majority_rate is not None and r.majority_rate < 0.55, r
