"""Config section `corpus`: where the distillation text comes from and how it is split and tokenized."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class CorpusConfig:
    """The unlabeled text the student is distilled on."""

    sources: list[str] = field(default_factory=lambda: ["wiki-vital-en"])
    """Zoo names (`kdnas fetch --list`), paths to .txt / .jsonl / .csv files, or `hf:NAME[:CONFIG]:SPLIT` (needs `datasets`)."""
    text_field: str = "text"
    """JSONL field or CSV column holding the text."""
    weights: list[float] | None = None
    """Sampling weight per source (default: proportional to size, smoothed by `temperature`)."""
    temperature: float = 0.7
    """XLM-R style sampling: source i is drawn with probability proportional to size_i ** temperature."""
    seq_len: int = 64
    """Tokens per training row (the width rows are stored at: short rows want a short width)."""
    mode: Literal["packed", "sentence"] = "sentence"
    """`packed`: documents concatenated and cut into full sequences; `sentence`: consecutive sentences of one
    document per row, padded (at most `seq_len` tokens and `max_sentences` sentences). Default `sentence` at
    `seq_len: 64` (rows of about 45 tokens: one to three sentences): the student's sentence embedding is trained
    on texts like those it will embed; against packed 128-token rows on the same budget it gained 0.06 cosine and
    0.055 recall@10 to the teacher and 1.4 suite points (benchmarks/corpus_rows.py, docs/benchmarks.md)."""
    max_sentences: int | None = None
    """`sentence` mode: at most this many sentences per row (None: as many as fit in `seq_len`). Short rows are
    what a sentence-embedding student is used on (queries, sentences, short passages), so the sentence losses
    match the teacher's embedding of such texts (docs/distillation.md#rows)."""
    heldout_fraction: float = 0.08
    """Share of documents kept out of training, for the held-out KD loss and the label-free fidelity (0.08 of
    wiki-vital-en gives 2,315 held-out passages, above the 2,000 the recall@10 figure is taken over)."""
    proxy_fraction: float = 0.2
    """Share of documents in the proxy set used to score candidates during search (disjoint from held-out)."""
    max_documents: int | None = None
    """Read at most this many documents per source (None: all)."""
    txt_documents: Literal["paragraph", "line"] = "paragraph"
    """.txt files: `paragraph` = documents separated by blank lines; `line` = one document per line."""
    exclude_task_eval: bool = True
    """Zoo sources: leave out every document in the zoo task's dev/test split (the corpus is train-split only)."""

    def check(self) -> list[str]:
        out = []
        if not self.sources:
            out.append("sources: give at least one corpus (e.g. wiki-vital-en)")
        if self.weights is not None and len(self.weights) != len(self.sources):
            out.append(f"weights: {len(self.weights)} weights for {len(self.sources)} sources")
        if self.weights is not None and any(w <= 0 for w in self.weights):
            out.append("weights: every weight must be > 0")
        if not 0 < self.temperature <= 1:
            out.append(f"temperature: {self.temperature} must be in (0, 1]")
        if self.seq_len < 8:
            out.append(f"seq_len: {self.seq_len} must be >= 8")
        for name in ("heldout_fraction", "proxy_fraction"):
            v = getattr(self, name)
            if not 0 < v < 1:
                out.append(f"{name}: {v} must be between 0 and 1")
        if self.heldout_fraction + self.proxy_fraction >= 1:
            out.append("proxy_fraction: proxy + held-out fractions must leave documents for training")
        if self.max_documents is not None and self.max_documents < 1:
            out.append(f"max_documents: {self.max_documents} must be >= 1")
        if self.max_sentences is not None:
            if self.max_sentences < 1:
                out.append(f"max_sentences: {self.max_sentences} must be >= 1 (or null: fill each row)")
            elif self.mode != "sentence":
                out.append(
                    f"max_sentences: {self.max_sentences} applies to mode: sentence only (mode is {self.mode})"
                )
        return out
