"""Vocabulary trimming on the tiny WordPiece BERT and a small synthetic Unigram (sentencepiece) tokenizer."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from kdnas.errors import DataError
from kdnas.models.vocab import (
    check_language_coverage,
    select_vocabulary,
    trim_tokenizer,
    trim_vocabulary,
    vocab_coverage,
)
from kdnas.testing import TINY_TEXTS, WORDS, tiny_teacher, tiny_tokenizer

CORPUS = list(dict.fromkeys(TINY_TEXTS))[:4]  # 4 distinct sentences
UNSEEN = "The computer played music"  # words not in CORPUS


def hidden(model: Any, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state


def assert_round_trip(orig_model: Any, orig_tok: Any, res: Any, texts: list[str]) -> None:
    a = orig_tok(texts, padding=True, return_tensors="pt")
    b = res.tokenizer(texts, padding=True, return_tensors="pt")
    mapped = torch.tensor([[res.mapping[int(i)] for i in row] for row in a["input_ids"]])
    assert torch.equal(b["input_ids"], mapped)  # raw text -> reduced ids directly
    assert torch.equal(b["attention_mask"], a["attention_mask"])
    torch.testing.assert_close(hidden(res.model, b), hidden(orig_model, a), rtol=0, atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# WordPiece (BERT)


@pytest.fixture(scope="module")
def bert() -> tuple[Any, Any]:
    return tiny_teacher("bert"), tiny_tokenizer()


def test_wordpiece_round_trip_and_reload(bert: tuple[Any, Any], tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    model, tok = bert
    rows = model.get_input_embeddings().weight.shape[0]
    res = trim_vocabulary(model, tok, CORPUS)
    assert res.vocab_size < len(tok) and res.model.config.vocab_size == res.vocab_size
    assert res.model.get_input_embeddings().weight.shape == (res.vocab_size, 32)
    assert set(tok.all_special_ids) <= set(res.kept_ids)
    assert res.kept_ids == sorted(res.kept_ids) and res.mapping[res.kept_ids[-1]] == res.vocab_size - 1
    assert model.get_input_embeddings().weight.shape[0] == rows  # the original is untouched
    assert_round_trip(model, tok, res, CORPUS)

    res.save(tmp_path)
    assert (
        not (tmp_path / "vocab.txt").exists()
        or len((tmp_path / "vocab.txt").read_text().split()) == res.vocab_size
    )
    tok2 = AutoTokenizer.from_pretrained(str(tmp_path))
    model2 = AutoModel.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    assert len(tok2) == res.vocab_size
    assert_round_trip(model, tok, type(res)(model2, tok2, res.kept_ids, res.mapping), CORPUS)


def test_wordpiece_fallback_to_subpieces_then_unk(bert: tuple[Any, Any]) -> None:
    model, tok = bert
    res = trim_vocabulary(model, tok, CORPUS)
    new = res.tokenizer
    # "computer" is one token in the full vocabulary but not in CORPUS: it falls back to kept characters
    pieces = new.convert_ids_to_tokens(new("computer", add_special_tokens=False)["input_ids"])
    assert pieces == ["c", "##o", "##m", "##p", "##u", "##t", "##e", "##r"]
    # no piece for "z" was kept (no z in CORPUS): WordPiece makes the whole word [UNK]
    assert new.convert_ids_to_tokens(new("zoo", add_special_tokens=False)["input_ids"]) == ["[UNK]"]
    without_chars = trim_vocabulary(None, tok, CORPUS, keep_chars=False)
    assert without_chars.model is None and without_chars.vocab_size < res.vocab_size
    assert without_chars.tokenizer("computer", add_special_tokens=False)["input_ids"] == [
        without_chars.tokenizer.unk_token_id
    ]


def test_size_limits(bert: tuple[Any, Any]) -> None:
    _, tok = bert
    all_kept = select_vocabulary(tok, CORPUS, keep_chars=False)
    capped = select_vocabulary(tok, CORPUS, keep_chars=False, max_size=12)
    assert len(capped) == 12 and set(capped) <= set(all_kept) and set(tok.all_special_ids) <= set(capped)
    the = tok.convert_tokens_to_ids("the")  # the most frequent word survives the cap
    assert the in capped
    frequent = select_vocabulary(tok, CORPUS, keep_chars=False, min_count=3)
    assert the in frequent and len(frequent) < len(all_kept)
    with pytest.raises(DataError, match="max_size 3 is below the 5 special"):
        select_vocabulary(tok, CORPUS, keep_chars=False, max_size=3)
    with pytest.raises(DataError, match="empty"):
        select_vocabulary(tok, [""])


def test_token_id_corpus(bert: tuple[Any, Any]) -> None:
    model, tok = bert
    enc = tok(CORPUS, padding=True, return_tensors="pt")
    from_tensor = trim_vocabulary(model, tok, enc["input_ids"], keep_chars=False)
    from_texts = trim_vocabulary(None, tok, CORPUS, keep_chars=False)
    assert from_tensor.kept_ids == from_texts.kept_ids

    class Block:  # TokenBlock-like: only ids where the mask is 1 count
        input_ids = torch.tensor([[2, 50, 51, 0], [2, 52, 0, 0]])
        attention_mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])

    res = trim_vocabulary(None, tok, Block(), keep_chars=False)
    assert res.kept_ids == [0, 1, 2, 3, 4, 50, 51, 52] and res.counts[2] == 2 and 0 not in res.counts
    with pytest.raises(DataError, match="unk token"):
        trim_vocabulary(None, tok, Block(), keep_special=False)


def test_tied_mlm_decoder_is_sliced() -> None:
    from transformers import BertForMaskedLM

    from kdnas.testing import tiny_config

    torch.manual_seed(0)
    mlm = BertForMaskedLM(tiny_config("bert")).eval()
    tok = tiny_tokenizer()
    res = trim_vocabulary(mlm, tok, CORPUS)
    assert res.model.cls.predictions.decoder.weight is res.model.bert.embeddings.word_embeddings.weight
    a = tok(CORPUS[:2], padding=True, return_tensors="pt")
    b = res.tokenizer(CORPUS[:2], padding=True, return_tensors="pt")
    with torch.no_grad():
        full = mlm(**a).logits[..., res.kept_ids]
        small = res.model(**b).logits
    assert small.shape[-1] == res.vocab_size
    torch.testing.assert_close(small, full, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------
# Unigram (sentencepiece, XLM-R style)


def unigram_tokenizer(tmp: Path, cls: str) -> Any:
    """A small XLM-R-like Unigram tokenizer: specials, whole words, a few sub-pieces, single characters."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import AutoTokenizer

    chars = sorted(set("".join(WORDS)) | set(".,"))
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -4.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    vocab += [("ing", -6.0), ("er", -6.0), ("\u2581The", -4.5), ("\u2581Th", -7.0)]
    vocab += [(c, -8.0) for c in chars] + [("\u2581" + c, -8.5) for c in chars if c.isalpha()]
    vocab += [("T", -8.0), ("<mask>", 0.0)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3))
    tok.normalizer = normalizers.Replace("  ", " ")
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    tmp.mkdir(parents=True, exist_ok=True)
    tok.save(str(tmp / "tokenizer.json"))
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                "cls_token": "<s>", "sep_token": "</s>", "mask_token": "<mask>"}  # fmt: skip
    (tmp / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": cls, **specials}))
    return AutoTokenizer.from_pretrained(str(tmp))


@pytest.mark.parametrize("cls", ["XLMRobertaTokenizer", "PreTrainedTokenizerFast"])
def test_unigram_round_trip_fallback_and_reload(tmp_path: Path, cls: str) -> None:
    from transformers import AutoModel, AutoTokenizer

    tok = unigram_tokenizer(tmp_path / "orig", cls)
    model = tiny_teacher("xlm-roberta", vocab_size=len(tok))  # positions derive from pad id 1
    res = trim_vocabulary(model, tok, CORPUS)
    assert res.vocab_size < len(tok) and res.mapping[1] == 1
    assert_round_trip(model, tok, res, CORPUS)
    assert json.loads(res.tokenizer.backend_tokenizer.to_str())["model"]["type"] == "Unigram"

    # "▁computer" and "▁music" are not in CORPUS: they fall back to kept sub-pieces (characters), not unk;
    # "z" (in neither CORPUS nor its characters) becomes unk
    new = res.tokenizer
    pieces = new.convert_ids_to_tokens(new("computer zone", add_special_tokens=False)["input_ids"])
    assert "\u2581computer" not in new.get_vocab() and "\u2581computer" in tok.get_vocab()
    assert "".join(pieces).replace("<unk>", "Z") == "\u2581computer\u2581Zone"
    assert pieces.count("<unk>") == 1

    res.save(tmp_path / "trimmed")
    tok2 = AutoTokenizer.from_pretrained(str(tmp_path / "trimmed"))
    model2 = AutoModel.from_pretrained(str(tmp_path / "trimmed"), attn_implementation="eager").eval()
    assert tok2(UNSEEN)["input_ids"] == new(UNSEEN)["input_ids"]
    assert_round_trip(model, tok, type(res)(model2, tok2, res.kept_ids, res.mapping), CORPUS)


def test_trim_tokenizer_rejects_unsorted(bert: tuple[Any, Any]) -> None:
    with pytest.raises(DataError, match="sorted"):
        trim_tokenizer(bert[1], [5, 3, 0, 1, 2])


# --------------------------------------------------------------------------------------------------------------
# coverage


def test_vocab_coverage_counts(bert: tuple[Any, Any]) -> None:
    _, tok = bert
    cov = vocab_coverage(tok, ["the city", "the ωω"])  # no piece for ω: the word is one [UNK]
    assert cov["texts"] == 2 and cov["words"] == 4 and cov["tokens"] == 4 and cov["unk"] == 1
    assert cov["unk_rate"] == 0.25 and cov["tokens_per_word"] == 1.0


def test_language_coverage_errors_and_warnings(bert: tuple[Any, Any]) -> None:
    model, tok = bert
    with pytest.raises(DataError, match=r"does not cover language\(s\) fr .*en: 4, fr: 0"):
        trim_vocabulary(model, tok, {"en": CORPUS, "fr": []})
    with pytest.raises(DataError, match=r"does not cover language\(s\) es"):
        trim_vocabulary(model, tok, {"en": CORPUS}, languages=["en", "es"])
    with pytest.raises(DataError, match=r"'ru'.*unk only \(3 of 3 tokens"):
        check_language_coverage(tok, {"en": CORPUS, "ru": ["Москва столица", "мир"]})
    with pytest.warns(UserWarning, match=r"'el': 1 of 3 tokens \(33.3%\) are unk"):
        check_language_coverage(tok, {"el": ["the city ωω"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = trim_vocabulary(model, tok, {"en": CORPUS[:2], "en2": CORPUS[2:]})
    assert set(res.coverage) == {"en", "en2"} and res.coverage["en"]["unk"] == 0
    with pytest.raises(DataError, match="needs the corpus as"):
        trim_vocabulary(model, tok, CORPUS, languages=["en"])
