"""The `vocab` search dimension: choices (`full`, `corpus`, N most frequent) resolved into kept teacher token ids
on a run's training corpus, once, and stored as `vocab.json` so every stage and a resumed run use the same ids.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdnas import run_dir as rd
from kdnas.errors import ArchError, DataError, ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from kdnas.space.arch import Arch

FULL = "full"
"""Choice: the teacher's whole embedding table (Arch.vocab_size None)."""
CORPUS = "corpus"
"""Choice: every token id the training corpus uses, plus special tokens and single-character pieces."""
VocabChoice = str | int
VOCAB_FILE = rd.VOCAB
"""Run-dir file holding the resolved choices (kept ids per choice)."""
MIN_VOCAB = 8
"""Smallest N a choice may ask for (Arch.vocab_size has the same floor)."""


def check_choice(value: Any, teacher_vocab_size: int | None = None) -> str | None:
    """Why `value` is not a valid vocab choice (None when it is): `full`, `corpus` or an int N."""
    if isinstance(value, str):
        return None if value in (FULL, CORPUS) else f"{value!r} is not full, corpus or a number of tokens"
    if isinstance(value, bool) or not isinstance(value, int):
        return f"{value!r} is not full, corpus or a number of tokens"
    if value < MIN_VOCAB:
        return f"{value} tokens is too few (at least {MIN_VOCAB})"
    if teacher_vocab_size is not None and value >= teacher_vocab_size:
        return (
            f"{value} is not smaller than the teacher's vocabulary ({teacher_vocab_size:,} tokens); "
            "use `full` for the whole table"
        )
    return None


def choice_key(choice: VocabChoice) -> str:
    """The JSON key of a choice (`full`, `corpus`, `16000`)."""
    return str(choice)


def trims(choices: Iterable[VocabChoice]) -> bool:
    """Whether any choice trims the vocabulary (anything but `full`)."""
    return any(c != FULL for c in choices)


@dataclass
class VocabTable:
    """Kept teacher token ids per vocab choice, computed once from the training corpus of a run."""

    teacher_vocab_size: int
    """Rows of the teacher's embedding table."""
    unk_id: int
    """The teacher's unk token id (ids a student does not keep map to its new id)."""
    kept: dict[str, list[int]] = field(default_factory=dict)
    """Choice key (`corpus`, `16000`) -> sorted teacher ids kept (new id i is old id kept[i])."""
    corpus_tokens: int = 0
    """Real tokens counted in the corpus."""
    corpus_distinct: int = 0
    """Distinct token ids in the corpus."""
    source: str = "train"
    """Which split was counted."""

    # ---- sizes -------------------------------------------------------------------------------------------------
    def size_of(self, choice: VocabChoice) -> int | None:
        """Arch.vocab_size of a choice (None for `full`)."""
        if choice == FULL:
            return None
        key = choice_key(choice)
        if key not in self.kept:
            raise DataError(
                f"vocab choice {choice!r} was not resolved on the corpus (resolved: "
                f"{', '.join(self.kept) or 'none'}); rerun the data stage with this choice in the space"
            )
        return len(self.kept[key])

    @property
    def sizes(self) -> dict[str, int | None]:
        """Choice key -> vocab_size, `full` included (for `SearchSpace(vocab_sizes=...)`)."""
        return {FULL: None, **{k: len(v) for k, v in self.kept.items()}}

    def choice_of(self, vocab_size: int | None) -> str | None:
        """The choice key that gives `vocab_size` (`corpus` first when an N equals it), None if none does."""
        if vocab_size is None:
            return FULL
        for k in sorted(self.kept, key=lambda k: k != CORPUS):
            if len(self.kept[k]) == vocab_size:
                return k
        return None

    def ids_for(self, arch: Arch) -> list[int] | None:
        """The teacher ids of `arch`'s embedding rows; None for a full-vocabulary arch."""
        if arch.vocab_size is None:
            return None
        key = self.choice_of(arch.vocab_size)
        if key is None:
            raise ArchError(
                f"{arch.arch_id}: no vocab choice of this run keeps {arch.vocab_size} tokens (choices: "
                f"{', '.join(f'{k}={len(v)}' for k, v in self.kept.items()) or 'none'}); use an arch of the run's "
                "search space"
            )
        return self.kept[key]

    def input_map(self, arch: Arch) -> torch.Tensor | None:
        """LongTensor [teacher vocab]: teacher id -> the student's id (ids not kept -> the student's unk)."""
        ids = self.ids_for(arch)
        return None if ids is None else id_map(ids, self.teacher_vocab_size, self.unk_id)

    def unk_rate(self, arch: Arch, block: Any) -> float | None:
        """Share of `block`'s real tokens that `arch`'s trimmed vocabulary reads as unk (None for full)."""
        return unk_rate(block, self.ids_for(arch), self.teacher_vocab_size)

    # ---- JSON ------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "teacher_vocab_size": self.teacher_vocab_size,
            "unk_id": self.unk_id,
            "corpus_tokens": self.corpus_tokens,
            "corpus_distinct": self.corpus_distinct,
            "source": self.source,
            "sizes": {k: len(v) for k, v in self.kept.items()},
            "kept": self.kept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VocabTable:
        return cls(
            teacher_vocab_size=int(d["teacher_vocab_size"]),
            unk_id=int(d["unk_id"]),
            kept={str(k): [int(i) for i in v] for k, v in d.get("kept", {}).items()},
            corpus_tokens=int(d.get("corpus_tokens", 0)),
            corpus_distinct=int(d.get("corpus_distinct", 0)),
            source=str(d.get("source", "train")),
        )

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename), kept ids one list per line."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        kept = d.pop("kept")
        body = json.dumps(d, indent=2)[:-2]
        rows = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in kept.items())
        text = body + ',\n  "kept": {\n' + rows + "\n  }\n}\n"
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
        return p

    @classmethod
    def load(cls, path: str | Path) -> VocabTable:
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(
                f"{p}: unreadable vocabulary table ({e}); delete it and rerun the data stage"
            ) from None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def id_map(kept_ids: Sequence[int], teacher_vocab_size: int, unk_id: int) -> torch.Tensor:
    """LongTensor [teacher_vocab_size]: old id -> new id for kept ids, the new unk id for every other id."""
    import torch

    kept = torch.as_tensor(list(kept_ids), dtype=torch.long)
    pos = torch.searchsorted(kept, torch.tensor([unk_id]))
    if int(pos) >= len(kept) or int(kept[pos]) != unk_id:
        raise DataError(f"the unk token id {unk_id} is not among the kept ids; keep the special tokens")
    out = torch.full((teacher_vocab_size,), int(pos), dtype=torch.long)
    out[kept] = torch.arange(len(kept))
    return out


def token_counts(block: Any, vocab_size: int, *, rows_per_chunk: int = 4096) -> np.ndarray:
    """Occurrences of each id [vocab_size] among the real tokens of a TokenBlock, or of a list of them (read
    in chunks of rows)."""
    import torch

    if isinstance(block, list | tuple):
        return sum((token_counts(b, vocab_size, rows_per_chunk=rows_per_chunk) for b in block),
                   np.zeros(vocab_size, dtype=np.int64))  # fmt: skip
    counts = np.zeros(vocab_size, dtype=np.int64)
    n = len(block)
    for start in range(0, n, rows_per_chunk):
        b = block[slice(start, min(n, start + rows_per_chunk))]
        ids = b["input_ids"][b["attention_mask"].bool()]
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
            raise DataError(
                f"the corpus has token ids outside [0, {vocab_size}) (the teacher's vocabulary); it was "
                "tokenized with another tokenizer: rebuild the corpus with the teacher's"
            )
        counts += torch.bincount(ids, minlength=vocab_size).numpy()
    return counts


def check_trimmable(tokenizer: PreTrainedTokenizerBase) -> None:
    """ModelError when kdnas cannot rebuild `tokenizer` over a subset of its ids (slow or unsupported type)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError(
            f"the teacher's tokenizer ({type(tokenizer).__name__}) is a slow one, so a trimmed vocabulary "
            "cannot be exported; give the teacher a tokenizer.json (fast tokenizer) or drop the `vocab` dimension"
        )
    typ = json.loads(backend.to_str()).get("model", {}).get("type")
    if typ not in ("Unigram", "WordPiece", "BPE", "WordLevel"):
        raise ModelError(
            f"the teacher's tokenizer is a {typ} model, which kdnas cannot trim (it trims Unigram, WordPiece, "
            "BPE and WordLevel); drop the `vocab` dimension from the search space (keep `full`)"
        )
    if tokenizer.unk_token_id is None:
        raise ModelError(
            "the teacher's tokenizer has no unk token, so tokens outside a trimmed vocabulary have nowhere to go; "
            "drop the `vocab` dimension from the search space (keep `full`)"
        )


def build_vocab_table(
    tokenizer: PreTrainedTokenizerBase,
    block: Any,
    choices: Sequence[VocabChoice],
    *,
    teacher_vocab_size: int,
    source: str = "train",
) -> VocabTable:
    """Resolve `choices` on the token block `block` (the run's distillation data: proxy and train splits).

    `corpus`: every id the block uses, plus special tokens and the single-character pieces of the characters in
    the used pieces (so unseen words fall back to characters, not unk). N: the N most frequent of those, with
    the specials and single characters always kept. Raises DataError when the corpus has fewer than N
    (specials and characters included) or when N cannot hold the specials and characters.
    """
    from collections import Counter

    from kdnas.models.vocab import select_vocabulary

    bad = [f"{c!r}: {why}" for c in choices if (why := check_choice(c, teacher_vocab_size))]
    if bad:
        raise DataError("vocab choices: " + "; ".join(bad))
    check_trimmable(tokenizer)
    counts = token_counts(block, teacher_vocab_size)
    seen = np.flatnonzero(counts)
    if not len(seen):
        raise DataError("the training corpus has no tokens; the vocabulary cannot be chosen from it")
    counter: Counter[int] = Counter({int(i): int(counts[i]) for i in seen})
    table = VocabTable(
        teacher_vocab_size=teacher_vocab_size,
        unk_id=int(tokenizer.unk_token_id),
        corpus_tokens=int(counts.sum()),
        corpus_distinct=len(seen),
        source=source,
    )
    full_corpus = select_vocabulary(tokenizer, [seen.tolist()], counts=counter)
    for c in choices:
        if c == FULL:
            continue
        if c == CORPUS:
            table.kept[CORPUS] = full_corpus
            continue
        assert isinstance(c, int)
        if c > len(full_corpus):
            raise DataError(
                f"vocab choice {c}: the {source} corpus uses only {len(full_corpus):,} tokens (special and "
                f"single-character pieces included; {table.corpus_tokens:,} tokens counted), fewer than {c}; "
                "lower the choice, use `corpus`, or distil on more text (corpus.max_documents, more sources)"
            )
        try:
            table.kept[choice_key(c)] = select_vocabulary(
                tokenizer, [seen.tolist()], counts=counter, max_size=c
            )
        except DataError as e:
            raise DataError(f"vocab choice {c}: {e}") from None
    for k, ids in table.kept.items():
        if len(ids) > teacher_vocab_size or ids[-1] >= teacher_vocab_size:
            raise DataError(
                f"vocab choice {k}: kept ids exceed the teacher's vocabulary ({teacher_vocab_size})"
            )
    return table


def unk_rate(block: Any, kept_ids: Sequence[int] | None, teacher_vocab_size: int) -> float | None:
    """Share of a TokenBlock's real tokens outside `kept_ids` (a trimmed student reads them as unk)."""
    if kept_ids is None:
        return None
    counts = token_counts(block, teacher_vocab_size)
    total = int(counts.sum())
    if not total:
        return 0.0
    kept = np.zeros(teacher_vocab_size, dtype=bool)
    kept[np.asarray(list(kept_ids), dtype=np.int64)] = True
    return float(counts[~kept].sum()) / total
