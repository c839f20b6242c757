"""Test doubles shipped with kdnas (after optuna's `optuna/testing/`): tiny random teachers and a tiny corpus.

Users can test their own extensions (backends, strategies, losses) with these in seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

WORDS = (
    "the a an of to in and is was for on that with as by at from it his her their this which are be has had "
    "city river music science history team war king queen school art film game book world year people water "
    "energy market company party election player league album song theory cell species island mountain "
    "language church museum university computer software network planet star ocean forest animal plant "
    "government president minister army battle empire century first second new old large small north south"
).split()

TINY_TEXTS = [
    "The river flows through the old city and into the ocean.",
    "A new album by the band was the first to top the music market.",
    "The university built a large museum of art and science history.",
    "The king and the queen of the empire went to war in the north.",
    "Software for the computer network was written by a small company.",
    "The species of plant on the island grows on the south mountain.",
    "In the election the party of the president won a large share.",
    "The player of the team scored in the first game of the league.",
] * 4


def tiny_vocab() -> list[str]:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-")
    return list(
        dict.fromkeys(
            specials + sorted(set(WORDS)) + chars + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
        )
    )


def tiny_tokenizer(directory: str | Path | None = None) -> PreTrainedTokenizerBase:
    """A real BERT WordPiece tokenizer with a ~200-token vocabulary (no network); saved to `directory` if given."""
    from transformers import BertTokenizerFast  # type: ignore[attr-defined]

    tok = BertTokenizerFast(
        vocab={w: i for i, w in enumerate(tiny_vocab())}, do_lower_case=True, model_max_length=128
    )
    if directory is not None:
        tok.save_pretrained(str(directory))
    return tok


def tiny_config(family: str = "bert", **overrides: Any) -> PretrainedConfig:
    """A tiny random encoder config (2 layers, hidden 32, 4 heads, FFN 64) in any supported family."""
    from transformers import AutoConfig

    vocab = len(tiny_vocab())
    base: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=2,
        pad_token_id=0,
    )
    if family == "distilbert":
        base = dict(
            vocab_size=vocab,
            dim=32,
            n_layers=2,
            n_heads=4,
            hidden_dim=64,
            max_position_embeddings=128,
            pad_token_id=0,
        )
    elif family in ("roberta", "xlm-roberta", "camembert"):
        base.update(max_position_embeddings=130, pad_token_id=1, type_vocab_size=1)
    elif family == "electra":
        base.update(embedding_size=16)
    elif family == "mpnet":
        base.pop("type_vocab_size")
        base.update(pad_token_id=1, max_position_embeddings=130)
    base.update(overrides)
    return AutoConfig.for_model(family, **base)


def tiny_teacher(
    family: str = "bert", *, seed: int = 0, num_layers: int = 2, **overrides: Any
) -> PreTrainedModel:
    """A tiny random teacher in eval mode with eager attention (attention maps available)."""
    import torch
    from transformers import AutoModel

    key = "n_layers" if family == "distilbert" else "num_hidden_layers"
    cfg = tiny_config(family, **{key: num_layers, **overrides})
    torch.manual_seed(seed)
    return AutoModel.from_config(cfg, attn_implementation="eager").eval()


def save_tiny_teacher(directory: str | Path, family: str = "bert", **kw: Any) -> Path:
    """Write a tiny teacher (model + tokenizer) as an HF folder, like a local teacher dir a user would pass."""
    d = Path(directory)
    model = tiny_teacher(family, **kw)
    model.save_pretrained(d)
    tiny_tokenizer(d)
    return d


def tiny_batch(n: int = 4, seq_len: int = 16, vocab_size: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Random `input_ids` / `attention_mask` ([n, seq_len]) with some padding at the end of the last row."""
    import torch

    g = torch.Generator().manual_seed(seed)
    v = vocab_size or len(tiny_vocab())
    ids = torch.randint(5, v, (n, seq_len), generator=g)
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones(n, seq_len, dtype=torch.long)
    mask[-1, seq_len // 2 :] = 0
    ids[-1, seq_len // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def write_tiny_corpus(path: str | Path, n_docs: int = 64) -> Path:
    """A small plain-text corpus file: one document per paragraph (blank-line separated)."""
    p = Path(path)
    p.write_text(
        "\n\n".join(TINY_TEXTS[i % len(TINY_TEXTS)] + f" Document {i}." for i in range(n_docs)) + "\n"
    )
    return p


def tiny_pair_task(kind: str = "classification") -> Any:
    """A sentence-pair `Task` over `WORDS` whose pairs are identical (label 1 / 1.0) or two different sentences
    (0 / 0.0): any encoder tells them apart by cosine with no training (train 8, dev 20, test 30 pairs)."""
    from kdnas.data.tasks import Task, TaskSplit

    def sentences(n: int, offset: int) -> list[str]:
        return [
            " ".join(WORDS[(offset + 7 * i + j) % len(WORDS)] for j in range(4 + i % 3)) for i in range(n)
        ]

    def split(n: int, offset: int) -> TaskSplit:
        a, b = sentences(n, offset), sentences(n, offset + 101)
        same = [i % 2 == 0 for i in range(n)]
        labels: list[Any] = [
            (1 if s else 0) if kind == "classification" else (1.0 if s else 0.0) for s in same
        ]
        return TaskSplit(texts=a, texts_b=[a[i] if same[i] else b[i] for i in range(n)], labels=labels)

    names = ["different", "same"] if kind == "classification" else []
    return Task(name=f"same-{kind}", kind=kind, label_names=names,  # type: ignore[arg-type]
                train=split(8, 0), dev=split(20, 300), test=split(30, 600))  # fmt: skip


def write_tiny_task(path: str | Path, labels: str = "ab", n: int = 60) -> Path:
    """A classification task file (`text,label` CSV) over `TINY_TEXTS`, the labels cycling through `labels`."""
    p = Path(path)
    rows = [f'"{TINY_TEXTS[i % len(TINY_TEXTS)]} Item {i}.",{labels[i % len(labels)]}' for i in range(n)]
    p.write_text("text,label\n" + "\n".join(rows) + "\n")
    return p


def tiny_run_config(
    directory: str | Path, *, name: str, tasks: list[str], dimensions: dict[str, Any], n_trials: int = 2,
    teacher_layers: int | None = None, evaluate: dict[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """A whole-pipeline config (a dict for `kdnas.config.from_dict`) that runs in seconds: a tiny BERT teacher
    and corpus written under `directory`, a space of `dimensions`, the fake latency backend, a random search of
    `n_trials`, one fine-tuning seed and epoch per task, no export files. `evaluate` updates that section."""
    import yaml

    d = Path(directory)
    layers: dict[str, Any] = {"num_layers": teacher_layers} if teacher_layers else {}
    teacher = save_tiny_teacher(d / "teacher", **layers)
    corpus = write_tiny_corpus(d / "corpus.txt", n_docs=120)
    space = d / "space.yaml"
    space.write_text(yaml.safe_dump({"base": "default", "dimensions": dimensions}))
    return {
        "name": name,
        "teacher": {"name": str(teacher)},
        "corpus": {"sources": [str(corpus)], "seq_len": 32},
        "target": {
            "backend": "fake",
            "seq_lens": [32],
            "speedups": [1.2],
            "calibrate_archs": 0,
            "compare_rounds": 2,
        },
        "distill": {"proxy_tokens": 600, "full_tokens": 800, "batch_size": 8, "relation_heads": 2},
        "search": {
            "space": str(space),
            "strategy": "random",
            "n_trials": n_trials,
            "episode_size": n_trials,
            "promote_fraction": 0.0,
        },
        "evaluate": {
            "tasks": tasks,
            "seeds": [0],
            "epochs": 1,
            "min_epochs": 1,
            "max_len": 32,
            "static_peer": False,
            "pair_similarity": False,
            **(evaluate or {}),
        },
        "export": {"onnx": False, "int8": False},
    }
