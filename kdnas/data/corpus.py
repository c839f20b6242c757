"""Distillation corpora: `build_corpus` splits, tokenizes, mixes and caches the documents of the sources
(`kdnas.data.readers`) as proxy / train / held-out TokenBlocks; `heldout_passages` for the fidelity figures.

Splits go by a seeded hash of each document's key (`corpus_split_of`), so they never overlap; zoo sources
also leave out every document of the zoo task's dev/test split (`task_split_of`), so the corpus is train-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kdnas.data.config import CorpusConfig
from kdnas.data.readers import TEXT_SUFFIXES, Document, iter_documents
from kdnas.data.splits import corpus_split_of
from kdnas.data.tokenize import (
    PackedRows,
    RowBuilder,
    RowWriter,
    SentenceRows,
    TokenBlock,
    encode,
    load_block,
    open_block,
    specials_of,
    split_sentences,
    tokenizer_fingerprint,
)
from kdnas.errors import DataError

log = logging.getLogger(__name__)

SPLITS = ("proxy", "train", "heldout")
CACHE_FORMAT = 1
"""Bump when the cache layout or row building changes (old cache entries are then ignored)."""
_ENCODE_BATCH = 256


@dataclass
class CorpusSplits:
    """Proxy (scores candidates during search), train (full distillation) and held-out (KD loss) rows."""

    proxy: TokenBlock
    train: TokenBlock
    heldout: TokenBlock
    stats: dict[str, Any] = field(default_factory=dict)
    """Per source and split: documents, rows, tokens; plus cache key/dir and whether it was a cache hit."""


# ------------------------------------------------------------------------------------------------------------
# building token splits


def build_corpus(
    cfg: CorpusConfig, tokenizer: Any, *, seed: int = 0, cache_dir: str | Path | None = None
) -> CorpusSplits:
    """Read, split, tokenize and mix `cfg.sources` into proxy / train / held-out TokenBlocks (cached).

    The token rows are written to memory-mapped .npy files under `<cache>/corpus/<key>/`, the key hashing
    sources (and their file sizes / fetched checksums), tokenizer, seq_len, mode, seed, fractions and sampling,
    so the same call again is a cache hit. Documents stream through, so corpora larger than RAM work.
    """
    problems = cfg.check()
    if problems:
        raise DataError("corpus config: " + "; ".join(problems))
    from kdnas import zoo

    root = Path(cache_dir).expanduser() if cache_dir is not None else zoo.cache_dir()
    key_data = _cache_key_data(cfg, tokenizer, seed, root)
    key = hashlib.sha256(json.dumps(key_data, sort_keys=True).encode()).hexdigest()[:20]
    out_dir = root / "corpus" / key
    cached = _load_cached(out_dir)
    if cached is not None:
        return cached
    (root / "corpus").mkdir(parents=True, exist_ok=True)
    tmp = root / "corpus" / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        stats = _build(cfg, tokenizer, seed, root, tmp)
        stats.update(cache_key=key, key_data=key_data)
        (tmp / "meta.json").write_text(json.dumps(stats, indent=1))
        try:
            tmp.rename(out_dir)
        except OSError:  # another process built the same corpus first
            if not (out_dir / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = _load_cached(out_dir)
    assert result is not None
    result.stats["cache_hit"] = False
    return result


def _load_cached(out_dir: Path) -> CorpusSplits | None:
    try:
        stats = json.loads((out_dir / "meta.json").read_text())
        blocks = {s: load_block(out_dir, s) for s in SPLITS}
    except (OSError, ValueError):
        return None
    if any(len(blocks[s]) != stats["splits"][s]["rows"] for s in SPLITS):
        return None
    stats.update(cache_hit=True, cache_dir=str(out_dir))
    return CorpusSplits(proxy=blocks["proxy"], train=blocks["train"], heldout=blocks["heldout"], stats=stats)


def _cache_key_data(cfg: CorpusConfig, tokenizer: Any, seed: int, root: Path) -> dict[str, Any]:
    d = asdict(cfg)
    d.update(
        format=CACHE_FORMAT,
        seed=seed,
        tokenizer=tokenizer_fingerprint(tokenizer),
        sources=[_source_fingerprint(s, root) for s in cfg.sources],
    )
    if len(cfg.sources) == 1:  # sampling cannot change a single source
        d.pop("weights")
        d.pop("temperature")
    if not any(Path(s).suffix.lower() in TEXT_SUFFIXES or Path(s).is_dir() for s in cfg.sources):
        d.pop("txt_documents")
    if d.get("max_sentences") is None:  # caches made before the option keep their keys
        d.pop("max_sentences", None)
    return d


def _source_fingerprint(source: str, root: Path) -> Any:
    from kdnas import zoo

    if source in zoo.ASSETS:
        m = zoo.read_manifest(source, cache_dir=root) or {}
        return [source, [s.get("sha256") for s in m.get("sources", [])]]
    path = Path(source).expanduser()
    if path.is_file():
        st = path.stat()
        return [str(path.resolve()), st.st_size, st.st_mtime_ns]
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [str(path.resolve()), [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]]
    return source


def _build(cfg: CorpusConfig, tokenizer: Any, seed: int, root: Path, tmp: Path) -> dict[str, Any]:
    t0 = time.monotonic()
    sp = specials_of(tokenizer)
    per_source: list[dict[str, Any]] = []
    writers: list[dict[str, RowWriter]] = []
    lengths: list[dict[str, np.ndarray]] = []
    for si, source in enumerate(cfg.sources):
        ws = {s: RowWriter(tmp / f"src{si}.{s}.bin", cfg.seq_len, sp.pad) for s in SPLITS}
        builders: dict[str, RowBuilder] = {
            s: PackedRows(ws[s], sp) if cfg.mode == "packed" else SentenceRows(ws[s], sp, cfg.max_sentences)
            for s in SPLITS
        }
        docs = {s: 0 for s in SPLITS}
        chars = 0
        docs_iter = iter_documents(
            source,
            text_field=cfg.text_field,
            txt_documents=cfg.txt_documents,
            cache_dir=root,
            max_documents=cfg.max_documents,
            exclude_task_eval=cfg.exclude_task_eval,
        )
        for batch in _chunks(docs_iter, _ENCODE_BATCH):
            splits = [
                corpus_split_of(
                    d.key, seed=seed, heldout_fraction=cfg.heldout_fraction, proxy_fraction=cfg.proxy_fraction
                )
                for d in batch
            ]
            chars += sum(len(d.text) for d in batch)
            if cfg.mode == "packed":
                for split, ids in zip(splits, encode(tokenizer, [d.text for d in batch])):
                    builders[split].add(ids)
                    docs[split] += 1
            else:
                sents = [split_sentences(d.text) for d in batch]
                flat = encode(tokenizer, [s for ss in sents for s in ss])
                at = 0
                for split, ss in zip(splits, sents):
                    builders[split].add_sentences(flat[at : at + len(ss)])
                    at += len(ss)
                    docs[split] += 1
        for b in builders.values():
            b.finish()
        lens = {s: ws[s].close() for s in SPLITS}
        writers.append(ws)
        lengths.append(lens)
        info: dict[str, Any] = {
            "source": source,
            "documents": sum(docs.values()),
            "chars": chars,
            "splits": {
                s: {"documents": docs[s], "rows": ws[s].rows, "tokens": int(lens[s].sum())} for s in SPLITS
            },
        }
        per_source.append(info)
        log.info(
            "corpus: %s: %d documents, %s tokens", source, info["documents"],
            f"{sum(v['tokens'] for v in info['splits'].values()):,}",
        )  # fmt: skip
    _check_sizes(cfg, per_source)
    splits_stats = {}
    for split_i, split in enumerate(SPLITS):
        sizes = [w[split].rows for w in writers]
        counts = mix_counts(sizes, cfg.weights, cfg.temperature)
        rng = np.random.default_rng([seed, split_i, 0x6B646E61])
        src_idx, row_idx = _mix_indices(sizes, counts, rng)
        ids_out = open_block(tmp, split, len(src_idx), cfg.seq_len)
        lens_out = np.empty(len(src_idx), dtype=np.int32)
        sources_mm = [w[split].memmap() for w in writers]
        for start in range(0, len(src_idx), 4096):
            s_chunk, r_chunk = src_idx[start : start + 4096], row_idx[start : start + 4096]
            buf = np.empty((len(s_chunk), cfg.seq_len), dtype=ids_out.dtype)
            for si in np.unique(s_chunk):
                m = s_chunk == si
                buf[m] = sources_mm[si][r_chunk[m]]
                lens_out[start : start + 4096][m] = lengths[si][split][r_chunk[m]]
            ids_out[start : start + len(s_chunk)] = buf
        ids_out.flush()
        del ids_out, sources_mm
        np.save(tmp / f"{split}.lengths.npy", lens_out)
        splits_stats[split] = {
            "rows": len(src_idx),
            "tokens": int(lens_out.sum(dtype=np.int64)),
            "rows_per_source": [int(c) for c in counts],
        }
    for w in writers:
        for rw in w.values():
            rw.path.unlink()
    return {
        "sources": per_source,
        "splits": splits_stats,
        "seq_len": cfg.seq_len,
        "mode": cfg.mode,
        "seed": seed,
        "build_s": round(time.monotonic() - t0, 2),
    }


def _check_sizes(cfg: CorpusConfig, per_source: list[dict[str, Any]]) -> None:
    totals = {s: sum(p["splits"][s]["rows"] for p in per_source) for s in SPLITS}
    if all(totals.values()):
        return
    docs = sum(p["documents"] for p in per_source)
    tokens = sum(p["splits"][s]["tokens"] for p in per_source for s in SPLITS)
    by_split = ", ".join(
        f"{s} {sum(p['splits'][s]['documents'] for p in per_source)} documents -> {totals[s]} rows"
        for s in SPLITS
    )
    raise DataError(
        f"corpus too small: {docs} documents ({tokens:,} tokens in full rows) from {', '.join(cfg.sources)} give "
        f"{by_split} at seq_len {cfg.seq_len} ({cfg.mode}); every split needs at least one row: add text, lower "
        "corpus.seq_len, or raise corpus.heldout_fraction / proxy_fraction"
        + (f", or raise corpus.max_documents ({cfg.max_documents})" if cfg.max_documents else "")
    )


def mix_counts(sizes: list[int], weights: list[float] | None, temperature: float) -> list[int]:
    """Rows to draw from each source so the total stays sum(sizes) (XLM-R sampling).

    Source i gets probability weights[i] / sum(weights), or size_i ** temperature / sum_j size_j ** temperature
    when no weights are given (temperature 1: proportional to size; lower flattens towards small sources).
    Sources with no rows get none. Rounding by largest remainder.
    """
    total = sum(sizes)
    if total == 0:
        return [0] * len(sizes)
    raw = [
        (w if weights is not None else n**temperature) if n > 0 else 0.0
        for n, w in zip(sizes, weights or sizes)
    ]
    norm = sum(raw)
    exact = [r / norm * total for r in raw]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(sizes)), key=lambda i: counts[i] - exact[i])[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _mix_indices(
    sizes: list[int], counts: list[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(source index, row index) of every output row, shuffled: sub-sampled or up-sampled (repeats) per source."""
    src, rows = [], []
    for si, (n, c) in enumerate(zip(sizes, counts)):
        if c == 0:
            continue
        if c <= n:
            pick = np.sort(rng.choice(n, size=c, replace=False)) if c < n else np.arange(n)
        else:  # whole copies, then a sample without replacement for the remainder
            pick = np.concatenate([np.tile(np.arange(n), c // n), rng.choice(n, size=c % n, replace=False)])
        src.append(np.full(c, si, dtype=np.int64))
        rows.append(pick.astype(np.int64))
    if not src:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    order = rng.permutation(sum(counts))
    return np.concatenate(src)[order], np.concatenate(rows)[order]


def _chunks(it: Iterable[Document], n: int) -> Iterator[list[Document]]:
    buf: list[Document] = []
    for x in it:
        buf.append(x)
        if len(buf) >= n:
            yield buf
            buf = []
    if buf:
        yield buf


# ------------------------------------------------------------------------------------------------------------
# held-out passages (label-free fidelity)


def heldout_passages(
    cfg: CorpusConfig,
    *,
    seed: int,
    n: int = 2000,
    min_words: int = 5,
    cache_dir: str | Path | None = None,
    split: Literal["heldout", "proxy", "train"] = "heldout",
) -> list[str]:
    """Up to `n` passages of the corpus's held-out documents (the split `build_corpus` keeps out of training).

    A passage is one sentence of at least `min_words` words, so a few hundred held-out documents give the
    thousands of passages a retrieval-agreement figure needs. Taken in document order from every source in
    turn (round robin), deterministic for a seed; fewer than `n` when the held-out split is that small.
    `split` takes the passages of another split instead (`train`: what the student was distilled on, for the
    gap between the fidelity it reached there and on held-out text).
    """
    per_source: list[Iterator[str]] = []
    for source in cfg.sources:
        docs = iter_documents(
            source, text_field=cfg.text_field, txt_documents=cfg.txt_documents, cache_dir=cache_dir,
            max_documents=cfg.max_documents, exclude_task_eval=cfg.exclude_task_eval,
        )  # fmt: skip
        held = (
            d
            for d in docs
            if corpus_split_of(
                d.key, seed=seed, heldout_fraction=cfg.heldout_fraction, proxy_fraction=cfg.proxy_fraction
            )
            == split
        )
        per_source.append(s for d in held for s in split_sentences(d.text) if len(s.split()) >= min_words)
    out: list[str] = []
    seen: set[str] = set()
    while per_source and len(out) < n:
        for it in list(per_source):
            s = next(it, None)
            if s is None:
                per_source.remove(it)
            elif s not in seen:
                seen.add(s)
                out.append(s)
                if len(out) >= n:
                    break
    return out


HELDOUT_MAX_LEN = 128
"""Held-out passages (sentences) are read up to this many tokens, or `seq_len` when longer: the fidelity figures
do not move when training rows are made shorter."""


def heldout_batch(cfg: CorpusConfig, tokenizer: Any, *, seed: int, n: int) -> tuple[Any, Any]:
    """`heldout_passages` tokenised as the teacher reads them (at most max(`cfg.seq_len`, 128) tokens, padded):
    (input_ids, attention_mask) [N, S] for the fidelity figures."""
    texts = heldout_passages(cfg, seed=seed, n=n)
    width = max(cfg.seq_len, HELDOUT_MAX_LEN)
    tok = tokenizer(texts, truncation=True, max_length=width, padding=True, return_tensors="pt")
    return tok["input_ids"], tok["attention_mask"]


__all__ = [
    "CorpusSplits",
    "Document",
    "build_corpus",
    "heldout_batch",
    "heldout_passages",
    "iter_documents",
    "mix_counts",
]
