"""Config section `evaluate`: downstream tasks and the fine-tuning protocol shared by teacher and students."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

TASK_OPTIONS = ("text_field", "text_b_field", "label_field", "kind", "resplit", "pair_encoding")
"""Keys of `evaluate.task_options` (keyword arguments of `kdnas.data.tasks.load_task`)."""
_OPTION_VALUES = {
    "kind": ("classification", "regression"),
    "resplit": ("none", "group_by_text"),
    "pair_encoding": ("cross", "bi", "embedding"),
}


@dataclass
class EvaluateConfig:
    """Downstream fine-tuning protocol (the same for the teacher, baselines and students)."""

    tasks: list[str] = field(
        default_factory=lambda: ["wiki-order-en", "wiki-same-en", "tweet-sentiment", "bbc-news"]
    )
    """The suite. Default: a sentence-order pair task (inference stand-in), a same-article pair task
    (paraphrase stand-in, macro F1), crowd-labeled tweet sentiment and BBC topic classification: topic tasks
    alone saturate (every model within 3 points of the teacher), the pair tasks leave a 1-layer student well
    behind (docs/evaluation.md#the-default-suite). Zoo task names or paths to CSV / JSONL task files; `SOURCE>TARGET` (e.g. `wiki-vital-en>wiki-vital-fr`)
    fine-tunes on SOURCE and tests zero-shot on TARGET's test split through the topic map (docs/evaluation.md)."""
    task_options: dict[str, dict[str, str]] = field(default_factory=dict)
    """Loader options of task files, keyed by their reference in `tasks`: `text_field`, `text_b_field` (the
    second text of a pair task), `label_field`, `kind` (classification | regression), `resplit` (none |
    group_by_text: each first text of a pair task in one split) and `pair_encoding` (cross: fine-tuned with the two
    texts as one sequence, the default for task files; bi: fine-tuned with each text embedded alone; embedding:
    no fine-tuning, the cosine of the two embeddings at the dev-chosen threshold, for similarity tasks), e.g.
    `{data/claims.csv: {text_field: claim, text_b_field: evidence, resplit: group_by_text}}`."""
    lrs: list[float] = field(default_factory=lambda: [2e-4])
    """Learning-rate grid; the best on dev is reported."""
    student_lrs: list[float] | None = None
    """Learning-rate grid of the students and baselines (None: `lrs`); the teacher keeps `lrs`.

    Small students want larger steps than a 12-layer teacher: the 3-layer multilingual student scored 64.4% on
    wiki-vital-en at 2e-4 (still improving at epoch 10) and 81.0% at 1e-3, while 5e-4 made a teacher worse
    (91.4 -> 87.8)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1])
    """Fine-tuning seeds; mean and spread are reported."""
    epochs: int = 10
    """Max epochs; runs stop early when dev stops improving (`patience`). Small students need more epochs than
    the teacher to converge (a 1-layer student: 64% at 3 epochs, 86% at 9 on wiki-vital-en), so a low cap
    under-reports them; 10 lets every model of the default run stop on its own."""
    batch_size: int = 32
    """Fine-tuning batch size."""
    max_len: int = 128
    """Tokens per example (both texts of a pair task together; 128 holds two sentences of the pair tasks and
    nearly every tweet and BBC lead)."""
    pooling: Literal["cls", "mean"] = "mean"
    """Sentence representation fed to the classification head."""
    task_distill: bool = False
    """Second stage as in TinyBERT: train the student on the fine-tuned teacher's logits too."""
    baselines: bool = False
    """Also distil and evaluate the manual baselines (every-other-layer teacher, TinyBERT shape), the bar the
    search is judged against; off by default because they cost about 20 of the default run's minutes here
    (`benchmarks/headline.py` turns them on)."""
    baseline_family: bool = False
    """With `baselines`: every published hand-made shape (TinyBERT-4L-312, MiniLM-L3-H384, BERT-mini L4-H256,
    BERT-small L4-H512) and the every-other-layer student distilled (`every-other-layer-kd`), all on the
    students' budget, instead of the TinyBERT shape alone. A shape that is the every-other-layer arch (MiniLM-L3-H384
    of minilm-l6) is scored once, as `every-other-layer-kd`."""
    max_train_examples: int | None = 800
    """Cap on training examples per task (None: all)."""
    max_dev_examples: int | None = 1000
    """Cap on dev examples per task (None: all). Dev only picks the epoch and the lr, and it is scored after
    every epoch: tweet-sentiment's 3,007 dev tweets cost more than its 800 training examples (3 forwards each for
    the backward) every epoch. The test split is never capped (its standard error is reported)."""
    patience: int = 1
    """Stop a run after this many epochs without a better dev score (the best epoch's weights are kept)."""
    min_epochs: int = 3
    """Early stopping never stops a run before this epoch.

    A small model can sit on the majority class through the lr warm-up (dev accuracy flat over epochs 1-2) and
    with patience 1 would stop there, scoring chance (a 3-layer multilingual student: 31% on wiki-vital-es,
    stopped after epoch 2)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and LayerNorm weights)."""
    warmup_fraction: float = 0.1
    """Fraction of the steps with a linear lr warm-up (then linear decay to 0)."""
    dropout: float = 0.1
    """Dropout before the task head."""
    eval_batch_size: int = 64
    """Batch size for scoring dev and test."""
    threads: int | None = None
    """torch CPU threads while fine-tuning (None: torch's default; 1 is far faster on a busy machine)."""
    device: str = "auto"
    """Where fine-tuning runs: `auto` is a CUDA GPU when torch sees one, else cpu; or cpu, cuda, cuda:N, mps.
    The run log says which device and dtype each stage used."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute dtype of the fine-tuning forward: `auto` uses bf16 autocast where the device has bf16 units (CPU
    flags amx_bf16 / avx512_bf16, CUDA compute 8.0+), fp32 elsewhere; losses and weights stay fp32."""
    kd_temperature: float = 2.0
    """Task distillation: softmax temperature applied to teacher and student logits."""
    kd_alpha: float = 0.5
    """Task distillation: weight of the teacher-logit loss (1 - alpha on the labels)."""
    fidelity_passages: int = 2000
    """Held-out corpus passages (sentences of held-out documents) for the label-free fidelity of each model to
    the teacher: embedding cosine, CKA, recall@10 (0 turns it off). Fewer when the held-out split is smaller."""
    pair_similarity: bool = True
    """Also score every sentence-pair task zero-shot: the cosine of the two texts' embeddings (the model's
    pooling and Dense), no fine-tuning; Spearman for regression, dev-thresholded accuracy for two classes
    (`kdnas.evaluate.pair_similarity`)."""
    static_peer: bool = True
    """Also make a static-embedding peer of the teacher (Model2Vec's recipe, `kdnas.models.static`: every
    vocabulary token embedded by the teacher alone, Zipf/SIF-weighted; about 40 s for minilm-l6) and score it
    like a student: one more row of the retention table with the suite (its table fine-tuned with a head under
    this protocol, with 10x each lr of the grid offered too and chosen on dev: a bare table learns slower),
    the fidelity figures, the zero-shot pair scores and its speed-up timed beside the teacher (torch backends:
    the table lookup alone, like every model's forward pass without tokenisation), and one more point on the
    suite plot."""

    def check(self) -> list[str]:
        out = []
        if not self.tasks:
            out.append("tasks: give at least one task (e.g. wiki-vital-en)")
        for ref, opts in self.task_options.items():
            if ref not in self.tasks:
                out.append(f"task_options.{ref}: not a reference in tasks ({', '.join(self.tasks)})")
            for k, v in opts.items():
                if k not in TASK_OPTIONS:
                    out.append(f"task_options.{ref}.{k}: unknown option; use {', '.join(TASK_OPTIONS)}")
                elif k in _OPTION_VALUES and v not in _OPTION_VALUES[k]:
                    out.append(f"task_options.{ref}.{k}: {v!r} must be one of {', '.join(_OPTION_VALUES[k])}")
        if not self.lrs or any(not 0 < lr < 1 for lr in self.lrs):
            out.append(f"lrs: {self.lrs} must be a non-empty list of learning rates in (0, 1)")
        if self.student_lrs is not None and (
            not self.student_lrs or any(not 0 < lr < 1 for lr in self.student_lrs)
        ):
            out.append(
                f"student_lrs: {self.student_lrs} must be null (use lrs) or a non-empty list of learning rates "
                "in (0, 1)"
            )
        if not self.seeds:
            out.append("seeds: give at least one seed")
        for name in ("epochs", "batch_size", "max_len", "patience", "min_epochs", "eval_batch_size"):
            if getattr(self, name) < 1:
                out.append(f"{name}: {getattr(self, name)} must be >= 1")
        if self.threads is not None and self.threads < 1:
            out.append(f"threads: {self.threads} must be >= 1 (or null for torch's default)")
        for name in ("max_train_examples", "max_dev_examples"):
            v = getattr(self, name)
            if v is not None and v < 1:
                out.append(f"{name}: {v} must be >= 1 (or null for all)")
        for name in ("weight_decay", "warmup_fraction", "dropout", "kd_alpha"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"{name}: {getattr(self, name)} must be in [0, 1]")
        if not (self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")):
            out.append(f"device: {self.device!r} must be auto, cpu, cuda, cuda:N or mps")
        if self.fidelity_passages < 0:
            out.append(f"fidelity_passages: {self.fidelity_passages} must be >= 0 (0: no fidelity figures)")
        if self.kd_temperature <= 0:
            out.append(f"kd_temperature: {self.kd_temperature} must be > 0")
        return out

    def for_students(self) -> EvaluateConfig:
        """This protocol with the students' learning-rate grid (`student_lrs`, when set)."""
        if self.student_lrs is None:
            return self
        return dataclasses.replace(self, lrs=list(self.student_lrs))
