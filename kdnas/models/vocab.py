"""Vocabulary trimming: keep the tokens a target corpus uses, slice the embedding table, rebuild the tokenizer.

The trimmed model and tokenizer are plain HF objects (Unigram, WordPiece, BPE, WordLevel tokenizer.json).
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import DataError, ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_SLOW_VOCAB_FILES = (
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
)
"""Files a saved tokenizer may carry besides tokenizer.json; they would describe the untrimmed vocabulary."""
TOKEN_ID_FIELDS = (
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
    "sep_token_id",
    "cls_token_id",
    "mask_token_id",
    "unk_token_id",
    "decoder_start_token_id",
)
"""Config fields holding token ids; they follow a trimmed vocabulary's new ids."""
UNK_ONLY_RATE = 0.999
"""A language whose text is at least this share of unk tokens is not covered by the tokenizer at all."""

Corpus = Sequence[str] | Mapping[str, Sequence[str]] | Iterable[Sequence[int]] | Any
"""Texts, {language: texts}, rows of token ids, a LongTensor [N, S] or a TokenBlock (ids where mask is 1)."""


@dataclass
class TrimResult:
    """A trimmed model and tokenizer, and how the old ids map to the new ones."""

    model: PreTrainedModel | None
    """Copy of the model with the embedding rows (and any tied or untied MLM decoder rows) of `kept_ids`."""
    tokenizer: PreTrainedTokenizerBase
    """Tokenizer that maps raw text straight to the reduced ids (loads with AutoTokenizer, no kdnas needed)."""
    kept_ids: list[int]
    """Old ids kept, in new-id order (new id i is old id kept_ids[i]); pass as `vocab_ids=` to inherit_student."""
    mapping: dict[int, int]
    """Old id -> new id for every kept token."""
    counts: dict[int, int] = field(default_factory=dict)
    """Occurrences of each old id in the trimming corpus."""
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per-language `vocab_coverage` of the original tokenizer (only when the corpus was {language: texts})."""

    @property
    def vocab_size(self) -> int:
        """Rows of the trimmed embedding table (`Arch.vocab_size`)."""
        return len(self.kept_ids)

    def save(self, directory: str | Path) -> Path:
        """save_pretrained model and tokenizer into `directory` (AutoModel/AutoTokenizer load it offline)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.model is not None:
            self.model.save_pretrained(d)
        self.tokenizer.save_pretrained(str(d))
        return d


# --------------------------------------------------------------------------------------------------------------
# coverage


def vocab_coverage(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> dict[str, float]:
    """How well `tokenizer` covers `texts`: texts, words (whitespace-separated), tokens, unk, unk_rate,
    tokens_per_word and distinct tokens. Special tokens are not counted. For scripts written without spaces
    (Chinese, Japanese) a "word" is a whole run of text, so tokens_per_word is high there by construction."""
    unk = tokenizer.unk_token_id
    n_tok = n_unk = n_words = 0
    seen: set[int] = set()
    for ids, text in zip(_encode(tokenizer, list(texts)), texts):
        n_tok += len(ids)
        n_unk += sum(1 for i in ids if i == unk)
        n_words += len(text.split())
        seen.update(ids)
    return {
        "texts": float(len(texts)),
        "words": float(n_words),
        "tokens": float(n_tok),
        "unk": float(n_unk),
        "unk_rate": n_unk / n_tok if n_tok else 0.0,
        "tokens_per_word": n_tok / n_words if n_words else 0.0,
        "distinct_tokens": float(len(seen)),
    }


def check_language_coverage(
    tokenizer: PreTrainedTokenizerBase,
    corpus: Mapping[str, Sequence[str]],
    *,
    languages: Sequence[str] | None = None,
    max_unk_rate: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Per-language `vocab_coverage`; DataError for a requested language with no text or unk-only text,
    a UserWarning (with counts) for a language whose unk rate is above `max_unk_rate`."""
    counts = {lang: len(texts) for lang, texts in corpus.items()}
    wanted = list(languages) if languages is not None else list(corpus)
    missing = [lang for lang in wanted if counts.get(lang, 0) == 0]
    if missing:
        have = ", ".join(f"{lang}: {n}" for lang, n in counts.items()) or "nothing"
        raise DataError(
            f"the trimming corpus does not cover language(s) {', '.join(missing)} (texts per language: {have}); "
            "add text in every target language, or drop the language from `languages`"
        )
    report: dict[str, dict[str, float]] = {}
    for lang in corpus:
        if counts[lang] == 0:
            continue
        cov = vocab_coverage(tokenizer, corpus[lang])
        report[lang] = cov
        if cov["tokens"] == 0 or cov["unk_rate"] >= UNK_ONLY_RATE:
            raise DataError(
                f"language {lang!r}: the tokenizer maps its text to unk only ({int(cov['unk'])} of "
                f"{int(cov['tokens'])} tokens in {counts[lang]} texts): it does not cover this script; use a "
                "teacher whose vocabulary covers it (e.g. me5-small) or drop the language"
            )
        if cov["unk_rate"] > max_unk_rate:
            warnings.warn(
                f"language {lang!r}: {int(cov['unk'])} of {int(cov['tokens'])} tokens ({cov['unk_rate']:.1%}) "
                f"are unk (over {max_unk_rate:.0%}); the tokenizer covers this language poorly",
                UserWarning,
                stacklevel=2,
            )
    return report


# --------------------------------------------------------------------------------------------------------------
# choosing the ids


def count_tokens(tokenizer: PreTrainedTokenizerBase, corpus: Corpus) -> Counter[int]:
    """Occurrences of each token id in `corpus` (texts are encoded without special tokens)."""
    counts: Counter[int] = Counter()
    for ids in _id_rows(tokenizer, corpus):
        counts.update(ids)
    return counts


def select_vocabulary(
    tokenizer: PreTrainedTokenizerBase,
    corpus: Corpus,
    *,
    keep_special: bool = True,
    keep_chars: bool = True,
    min_count: int = 1,
    max_size: int | None = None,
    counts: Counter[int] | None = None,
) -> list[int]:
    """The sorted old ids to keep: special tokens, single-character pieces of the corpus' characters
    (`keep_chars`, so unseen words fall back to characters rather than unk), then tokens occurring at least
    `min_count` times, most frequent first, up to `max_size` ids in all."""
    if min_count < 1:
        raise DataError(f"min_count must be >= 1, got {min_count}")
    counts = counts if counts is not None else count_tokens(tokenizer, corpus)
    if not counts:
        raise DataError(
            "the trimming corpus is empty: it produced no tokens; pass texts in the target languages"
        )
    required: set[int] = set(_special_ids(tokenizer)) if keep_special else set()
    if keep_chars:
        required |= _char_ids(tokenizer, corpus, counts)
    if max_size is not None and max_size < len(required):
        raise DataError(
            f"max_size {max_size} is below the {len(required)} special and single-character tokens that must be "
            "kept; raise max_size or pass keep_chars=False"
        )
    frequent = sorted(
        (i for i, c in counts.items() if c >= min_count and i not in required), key=lambda i: (-counts[i], i)
    )
    if max_size is not None:
        frequent = frequent[: max_size - len(required)]
    return sorted(required | set(frequent))


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    ids = set(tokenizer.all_special_ids)
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids.update(i for i, tok in decoder.items() if getattr(tok, "special", False))
    return sorted(i for i in ids if i is not None and i >= 0)


_PIECE_MARKS = ("\u2581", "##", "\u0120")
"""Word-initial / continuation marks of sentencepiece, WordPiece and byte-level BPE pieces."""


def _char_ids(tokenizer: PreTrainedTokenizerBase, corpus: Corpus, counts: Mapping[int, int]) -> set[int]:
    """Ids of the single-character pieces (bare, word-initial `▁c`/`Ġc`, continuation `##c`) of the corpus'
    characters: those of the (normalised) texts, or for a corpus of ids those of the pieces it uses."""
    vocab = tokenizer.get_vocab()
    chars: set[str] = set()
    texts = _texts_of(corpus)
    if texts is not None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        norm = getattr(backend, "normalizer", None)
        for t in texts:
            chars.update(norm.normalize_str(t) if norm is not None else t)
    else:
        special = set(_special_ids(tokenizer))
        pieces = tokenizer.convert_ids_to_tokens([i for i in counts if i not in special])
        for piece in pieces:
            if not isinstance(piece, str):
                continue
            for mark in _PIECE_MARKS:
                piece = piece.removeprefix(mark)
            chars.update(piece)
    out = {vocab[s] for c in chars for s in (c, "\u2581" + c, "##" + c, "\u0120" + c) if s in vocab}
    if "\u2581" in vocab:
        out.add(vocab["\u2581"])
    return out


def _texts_of(corpus: Corpus) -> list[str] | None:
    if isinstance(corpus, Mapping):
        return [t for texts in corpus.values() for t in texts]
    if isinstance(corpus, Sequence) and not isinstance(corpus, str) and corpus and isinstance(corpus[0], str):
        return list(corpus)
    return None


def _encode(tokenizer: PreTrainedTokenizerBase, texts: list[str], batch: int = 512) -> Iterable[list[int]]:
    for i in range(0, len(texts), batch):
        yield from tokenizer(texts[i : i + batch], add_special_tokens=False)["input_ids"]


def _id_rows(tokenizer: PreTrainedTokenizerBase, corpus: Corpus) -> Iterable[list[int]]:
    if isinstance(corpus, str):
        raise DataError("the trimming corpus is a single string; pass a list of texts")
    texts = _texts_of(corpus)
    if texts is not None:
        yield from _encode(tokenizer, texts)
        return
    ids = getattr(corpus, "input_ids", None)
    mask = getattr(corpus, "attention_mask", None)
    if ids is not None:  # a TokenBlock
        for row, m in zip(ids, mask if mask is not None else ids):
            yield [int(i) for i, keep in zip(row, m) if mask is None or int(keep)]
        return
    try:
        rows = list(corpus)
    except TypeError:
        raise DataError(
            f"cannot read a trimming corpus from {type(corpus).__name__}; pass texts or id rows"
        ) from None
    for row in rows:
        if isinstance(row, str):
            raise DataError("mixed trimming corpus: pass either texts or rows of token ids")
        yield [int(i) for i in (row.tolist() if hasattr(row, "tolist") else row)]


# --------------------------------------------------------------------------------------------------------------
# the tokenizer


def trim_tokenizer(tokenizer: PreTrainedTokenizerBase, kept_ids: Sequence[int]) -> PreTrainedTokenizerBase:
    """A tokenizer over only `kept_ids` (new id i = old id kept_ids[i]), same class, same special tokens.

    Unigram (sentencepiece): the Unigram model is rebuilt from the kept pieces with their scores, so a word whose
    pieces were dropped is segmented into the best kept sub-pieces, and characters with no kept piece become unk.
    WordPiece: greedy longest-match over the kept vocabulary; a word with a part no kept piece matches becomes
    [UNK] as a whole (WordPiece's own rule). BPE: merges whose parts or result were dropped are removed, so
    words fall back to shorter kept tokens, then unk. Raises ModelError for a slow (Python) tokenizer.
    """
    from transformers import AutoTokenizer

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"{type(tokenizer).__name__} is a slow tokenizer; vocabulary trimming needs a fast one "
            "(AutoTokenizer.from_pretrained(..., use_fast=True), i.e. a tokenizer.json)"
        )
    kept = [int(i) for i in kept_ids]
    if len(set(kept)) != len(kept) or kept != sorted(kept):
        raise DataError("kept_ids must be sorted and without duplicates")
    mapping = {old: new for new, old in enumerate(kept)}
    spec = json.loads(backend.to_str())
    _trim_model_spec(spec["model"], kept, mapping)
    spec["added_tokens"] = [
        {**t, "id": mapping[t["id"]]} for t in spec.get("added_tokens") or [] if t["id"] in mapping
    ]
    if spec.get("post_processor") is not None:
        spec["post_processor"] = _remap_processor(spec["post_processor"], mapping)
    from tokenizers import Tokenizer

    new_backend = Tokenizer.from_str(json.dumps(spec))
    with tempfile.TemporaryDirectory(prefix="kdnas-trim-") as tmp:
        tokenizer.save_pretrained(tmp)
        for name in _SLOW_VOCAB_FILES:
            (Path(tmp) / name).unlink(missing_ok=True)
        new_backend.save(str(Path(tmp) / "tokenizer.json"))
        _drop_config_added_tokens(Path(tmp) / "tokenizer_config.json", mapping)
        out = AutoTokenizer.from_pretrained(tmp)
    _check_trimmed(tokenizer, out, mapping)
    return out


def _trim_model_spec(model: dict[str, Any], kept: list[int], mapping: dict[int, int]) -> None:
    typ = model.get("type")
    if typ == "Unigram":
        vocab = model["vocab"]
        model["vocab"] = [vocab[i] for i in kept if i < len(vocab)]
        unk = model.get("unk_id")
        if unk is not None:
            if unk not in mapping:
                raise DataError("the unk token is not among the kept ids; keep it (keep_special=True)")
            model["unk_id"] = mapping[unk]
    elif typ in ("WordPiece", "WordLevel", "BPE"):
        vocab = model["vocab"]
        model["vocab"] = {tok: mapping[i] for tok, i in vocab.items() if i in mapping}
        unk = model.get("unk_token")
        if unk is not None and unk in vocab and unk not in model["vocab"]:
            raise DataError(f"the unk token {unk!r} is not among the kept ids; keep it (keep_special=True)")
        if typ == "BPE":
            prefix = model.get("continuing_subword_prefix") or ""
            keep = model["vocab"]
            merges = []
            for m in model.get("merges", []):
                a, b = m.split(" ", 1) if isinstance(m, str) else m
                joined = a + (b[len(prefix) :] if prefix and b.startswith(prefix) else b)
                if a in keep and b in keep and joined in keep:
                    merges.append(m)
            model["merges"] = merges
    else:
        raise ModelError(
            f"cannot trim a {typ} tokenizer model; kdnas trims Unigram, WordPiece, BPE and WordLevel"
        )


def _remap_processor(node: Any, mapping: dict[int, int]) -> Any:
    """Remap token ids inside a post_processor spec (TemplateProcessing, Roberta/BertProcessing, Sequence)."""
    if isinstance(node, dict):
        typ = node.get("type")
        if typ in ("RobertaProcessing", "BertProcessing"):
            return {
                **node,
                **{k: [node[k][0], _new_id(node[k][1], mapping)] for k in ("sep", "cls") if k in node},
            }
        if typ == "TemplateProcessing":
            st = {
                name: {**tok, "ids": [_new_id(i, mapping) for i in tok.get("ids", [])]}
                for name, tok in (node.get("special_tokens") or {}).items()
            }
            return {**node, "special_tokens": st}
        return {k: _remap_processor(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_remap_processor(v, mapping) for v in node]
    return node


def _new_id(old: int, mapping: dict[int, int]) -> int:
    if old not in mapping:
        raise DataError(
            f"special token id {old} used by the tokenizer's post-processor is not kept; keep_special=True"
        )
    return mapping[old]


def _drop_config_added_tokens(path: Path, mapping: dict[int, int]) -> None:
    """Remap (or drop) the `added_tokens_decoder` ids a saved tokenizer_config.json may carry."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text())
    dec = cfg.get("added_tokens_decoder")
    if isinstance(dec, dict):
        cfg["added_tokens_decoder"] = {str(mapping[int(k)]): v for k, v in dec.items() if int(k) in mapping}
        path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))


def _check_trimmed(
    old: PreTrainedTokenizerBase, new: PreTrainedTokenizerBase, mapping: dict[int, int]
) -> None:
    for tok, old_id in zip(old.all_special_tokens, old.all_special_ids):
        if old_id in mapping and new.convert_tokens_to_ids(tok) != mapping[old_id]:
            raise ModelError(
                f"trimmed tokenizer maps special token {tok!r} to {new.convert_tokens_to_ids(tok)}, expected "
                f"{mapping[old_id]}; please report this tokenizer type ({type(old).__name__})"
            )


# --------------------------------------------------------------------------------------------------------------
# the model


def slice_embeddings(model: PreTrainedModel, kept_ids: Sequence[int]) -> PreTrainedModel:
    """A copy of `model` whose vocabulary-sized tensors keep only the rows `kept_ids` (in that order).

    Sliced: the input embedding, the output embedding (MLM decoder; tied weights stay tied) and every other
    parameter whose first dimension is the vocabulary size (decoder biases). The config's vocab_size and token
    ids follow. The pad id must not move (RoBERTa-style models derive positions from it): keep special tokens.
    """
    import torch
    from torch import nn

    emb = model.get_input_embeddings()
    if not isinstance(emb, nn.Embedding):
        raise ModelError(f"{type(model).__name__} has no nn.Embedding input embedding to slice")
    old_v = emb.weight.shape[0]
    idx = torch.as_tensor(list(kept_ids), dtype=torch.long)
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= old_v:
        raise DataError(f"kept ids must lie in [0, {old_v}) (the embedding has {old_v} rows)")
    mapping = {int(o): n for n, o in enumerate(idx.tolist())}
    pad = getattr(model.config, "pad_token_id", None)
    if pad is not None and mapping.get(pad, -1) != pad:
        raise DataError(
            f"trimming would move the pad token id {pad} to {mapping.get(pad)}; keep every special token "
            "(keep_special=True) so that the ids below it stay in place"
        )
    memo: dict[int, Any] = {}
    sliced: list[str] = []
    for name, p in model.named_parameters(remove_duplicate=True):
        if p.dim() in (1, 2) and p.shape[0] == old_v and p.shape != (old_v, old_v):
            memo[id(p)] = nn.Parameter(p.detach()[idx].clone(), requires_grad=p.requires_grad)
            sliced.append(name)
    log.debug("vocab trim: slicing %s", sliced)
    new = copy.deepcopy(model, memo)
    new_v = len(mapping)
    for mod in new.modules():
        if isinstance(mod, nn.Embedding) and mod.weight.shape[0] == new_v and mod.num_embeddings == old_v:
            mod.num_embeddings = new_v
        if isinstance(mod, nn.Linear) and mod.weight.shape[0] == new_v and mod.out_features == old_v:
            mod.out_features = new_v
    cfg = new.config
    cfg.vocab_size = new_v
    for key in TOKEN_ID_FIELDS:
        old = getattr(cfg, key, None)
        if isinstance(old, int):
            setattr(cfg, key, mapping.get(old))
    return new


def trim_vocabulary(
    model: PreTrainedModel | None,
    tokenizer: PreTrainedTokenizerBase,
    texts_or_token_ids: Corpus,
    *,
    keep_special: bool = True,
    keep_chars: bool = True,
    min_count: int = 1,
    max_size: int | None = None,
    languages: Sequence[str] | None = None,
    max_unk_rate: float = 0.05,
) -> TrimResult:
    """Keep only the tokens the target corpus uses (plus special tokens and its single characters).

    `texts_or_token_ids`: texts, {language: texts} (then every language in `languages`, default all, must have
    text that the tokenizer does not map to unk only; see `check_language_coverage`), id rows or a TokenBlock.
    Returns the sliced model copy (None in, None out), a tokenizer that maps raw text to the reduced ids, the
    kept old ids and the old -> new mapping. Text made only of kept tokens encodes to exactly the mapped ids.
    """
    coverage: dict[str, dict[str, float]] = {}
    if isinstance(texts_or_token_ids, Mapping):
        coverage = check_language_coverage(
            tokenizer, texts_or_token_ids, languages=languages, max_unk_rate=max_unk_rate
        )
    elif languages is not None:
        raise DataError(
            f"languages={list(languages)} needs the corpus as {{language: texts}} to check each language's coverage"
        )
    counts = count_tokens(tokenizer, texts_or_token_ids)
    kept = select_vocabulary(
        tokenizer,
        texts_or_token_ids,
        keep_special=keep_special,
        keep_chars=keep_chars,
        min_count=min_count,
        max_size=max_size,
        counts=counts,
    )
    if model is not None:
        emb: Any = model.get_input_embeddings()
        rows = int(emb.weight.shape[0])
        if len(tokenizer) > rows:
            raise ModelError(
                f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {rows} rows; "
                "they do not belong together"
            )
    mapping = {old: new for new, old in enumerate(kept)}
    new_tok = trim_tokenizer(tokenizer, kept)
    new_model = slice_embeddings(model, kept) if model is not None else None
    log.info("vocab trim: kept %d of %d tokens", len(kept), len(tokenizer))
    return TrimResult(new_model, new_tok, kept, mapping, dict(counts), coverage)


__all__ = [
    "TrimResult",
    "check_language_coverage",
    "count_tokens",
    "select_vocabulary",
    "slice_embeddings",
    "trim_tokenizer",
    "trim_vocabulary",
    "vocab_coverage",
]
