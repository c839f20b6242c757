"""Config section `distill`: losses, layer mapping, optimiser and token budgets for proxy and full distillation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

LOSSES = ("hidden", "attention", "relation", "embedding", "logits", "sentence", "similarity")
SENTENCE_LOSSES = ("sentence", "similarity")
"""Built-in losses; `kdnas.distill.register_loss` adds more (`LOSSES` are the built-in names)."""
"""Losses on the pooled sentence embedding (they need the teacher's pooling: `pooling`)."""


@dataclass
class DistillConfig:
    """How a student is distilled from the teacher."""

    losses: dict[str, float] = field(
        default_factory=lambda: {"hidden": 1.0, "relation": 1.0, "sentence": 10.0, "similarity": 0.1}
    )
    """Loss name -> weight (default: hidden states and MiniLMv2 relations, plus the pooled sentence embedding
    and its in-batch similarity structure, so the student stays in the teacher's embedding space; the two
    sentence losses switch off, with a warning, for a teacher without a pooling config). The sentence loss
    weighs 10 and the similarity loss 0.1: at 1 and 1 the similarity term (a softmax at temperature 0.05) pulled
    the 1-layer student of minilm-l6 away from the teacher's vectors, mean cosine 0.61 against 0.84, and 1.6
    points lower retention on the suite (docs/distillation.md, `benchmarks/loss_weights.py`). Names: hidden, attention, relation, embedding (the embedding layer's output),
    logits, sentence (1 - cosine to the teacher's pooled sentence embedding) and similarity (KL of the
    in-batch cosine-similarity distributions, student vs teacher)."""
    pooling: Literal["auto", "mean", "cls", "max"] = "auto"
    """How the sentence and similarity losses pool token states: `auto` reads the teacher's
    sentence-transformers config (1_Pooling, Normalize) and turns those losses off, with a warning, for a
    teacher without one; mean / cls / max force a pooling (then no normalisation)."""
    similarity_temperature: float = 0.05
    """Softmax temperature of the similarity loss (cosines are in [-1, 1])."""
    mapping: Literal["uniform", "last", "uniform+last"] = "uniform+last"
    """Student layer i <- teacher layer floor(i*Lt/Ls) (uniform), Lt-Ls+i (last), or both concatenated."""
    relation_heads: int = 12
    """MiniLMv2 relation heads (teacher and student states are re-split into this many heads)."""
    relation_layers: Literal["last", "all"] = "last"
    """Relation loss on the last student layer only (MiniLMv2) or on every student layer via `mapping`."""
    temperature: float = 1.0
    """Softmax temperature for logit KD."""
    init: Literal["inherit", "random"] = "inherit"
    """Student initialisation: inherit (select layers and slice widths of the teacher) or random."""
    layer_selection: Literal["uniform", "first", "last"] = "uniform"
    """Which teacher layers an inherited student starts from."""
    importance: Literal["magnitude", "activation"] = "magnitude"
    """How heads, FFN neurons and hidden dims are ranked when slicing widths."""
    proj_init: Literal["random", "lstsq"] = "lstsq"
    """How the loss projections start: `lstsq`, fitted to the teacher on the first batches, or `random`.

    The projections are the hidden-state maps and the sentence Dense of a narrower student. `lstsq` fits them by
    least squares from the initialised student's states to the teacher's on the first 8,192 real tokens (a
    student forward over a few batches); `random` is nn.Linear's init. With `random` a student narrower than
    the teacher spends a short proxy learning a random Dense, and the search ranks it below wider ones for that
    reason alone (docs/distillation.md)."""
    batch_size: int = 32
    """Sequences per optimiser step (before accumulation)."""
    grad_accum: int = 1
    """Micro-batches accumulated per optimiser step."""
    nproc: int = 1
    """`kdnas run`: processes each full distillation runs in, under `torchrun` (DDP: gloo on CPU, nccl on GPU;
    whole micro-batches per process, so `grad_accum` must be a multiple of it). The result is that of one
    process up to float noise; a run can resume with another value."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_ratio: float = 0.06
    """Share of steps with linear warm-up."""
    schedule: Literal["linear", "cosine"] = "cosine"
    """Decay after warm-up."""
    grad_clip: float = 1.0
    """Max gradient norm (0 disables)."""
    proxy_tokens: int = 40_000
    """Token budget of the short proxy distillation of each search candidate."""
    proxy_mode: Literal["standard", "flash"] = "standard"
    """`flash`: AutoDistill's progressive layer-by-layer transfer instead of all layers at once."""
    flash_steps_per_layer: int = 100
    """Steps per layer in flash mode."""
    flash_lower_lr: float = 0.0
    """Flash mode: lr multiplier for the layers below the one being transferred (0 freezes them)."""
    full_tokens: int = 600_000
    """Token budget of the full distillation of a recommended student."""
    fast_tokens: int | None = 1_800_000
    """`kdnas run`: full-distillation tokens of the students whose latency budget is at least `fast_speedup` x
    faster than the teacher, in place of `full_tokens` (None: `full_tokens` for every student). The fastest
    students train fastest and gain most from more text: minilm-l6's 7x student (L2-H256-A8-F256) on 1.8M tokens
    kept 94.6% of the teacher on the suite against 93.3% on 600k, with embedding cosine 0.828 against 0.773 and
    recall@10 0.625 against 0.577, for about 4.5 more minutes of training here (docs/benchmarks.md, twenty-third session).
    Equal-latency budgets and the hand-made baselines keep `full_tokens`, so those comparisons stay on one budget;
    an arch several budgets recommend is distilled once, on the largest of their budgets."""
    fast_speedup: float = 5.0
    """The speed-up over the teacher from which a budget's student gets `fast_tokens` (a budget in ms counts by
    the teacher's latency on the target)."""
    checkpoint_every: int = 200
    """Optimiser steps between checkpoints (full distillation)."""
    teacher_cache_mb: int = 6144
    """Memory budget for the teacher-output cache (fp16, memory-mapped on disk)."""
    keep_teacher_cache: bool = False
    """`kdnas run`: keep the run's teacher cache (the teacher's outputs on the corpus, 12 GB on disk in the default
    run) after the search and distill stages. Off: the search's part (the proxy split's outputs, which the distill
    stage never reads) is deleted when the search stage has finished, the rest with the finished models'
    training checkpoints when the distill stage has, and the run log says how much was freed; only a rerun from
    the search or distill stage after a config change would read them (that rerun then runs the teacher again).
    `kdnas clean RUN_DIR` frees the same in a run dir made before."""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """Compute dtype of the teacher-cache forward and the student forward: `auto` uses bf16 autocast where the
    hardware has bf16 units (CPU flags amx_bf16 / avx512_bf16, CUDA compute 8.0+) and fp32 elsewhere; losses,
    weights and the optimiser stay fp32 (docs/distillation.md#precision)."""
    device: str = "auto"
    """Where distillation runs (teacher cache forward, student training): `auto` is a CUDA GPU when torch sees
    one, else cpu; or cpu, cuda, cuda:N. The student and teacher go back where they were when it ends; the
    run log says which device and dtype were used. Results match across devices up to float noise."""
    vocab_twins: bool = False
    """`kdnas run` with a `vocab` search dimension: also distil each recommended student with every other
    vocabulary choice of the space (same transformer), so the tables show what trimming saves and costs."""

    def check(self) -> list[str]:
        out = []
        for k, w in self.losses.items():
            if k not in LOSSES:  # the registry is read only then (it imports torch)
                from kdnas.distill.terms import known_losses

                if k not in known_losses():
                    out.append(f"losses.{k}: unknown loss; use {', '.join(known_losses())}")
            elif w < 0:
                out.append(f"losses.{k}: weight {w} must be >= 0")
        if not any(w > 0 for w in self.losses.values()):
            out.append("losses: at least one loss needs a positive weight")
        for name in (
            "relation_heads",
            "batch_size",
            "grad_accum",
            "nproc",
            "proxy_tokens",
            "full_tokens",
            "checkpoint_every",
            "flash_steps_per_layer",
            "teacher_cache_mb",
        ):
            if getattr(self, name) < 1:
                out.append(f"{name}: {getattr(self, name)} must be >= 1")
        if self.fast_tokens is not None and self.fast_tokens < 1:
            out.append(
                f"fast_tokens: {self.fast_tokens} must be >= 1 (or null: full_tokens for every student)"
            )
        if not self.fast_speedup > 1:
            out.append(f"fast_speedup: {self.fast_speedup} must be > 1 (a speed-up over the teacher)")
        if self.nproc > 1 and self.grad_accum % self.nproc:
            out.append(
                f"nproc: {self.nproc} processes share whole micro-batches, so grad_accum ({self.grad_accum}) must "
                f"be a multiple of it (e.g. grad_accum: {self.nproc * max(1, self.grad_accum // self.nproc)})"
            )
        if not 0 < self.lr < 1:
            out.append(f"lr: {self.lr} must be in (0, 1)")
        if not 0 <= self.warmup_ratio < 1:
            out.append(f"warmup_ratio: {self.warmup_ratio} must be in [0, 1)")
        if self.temperature <= 0:
            out.append(f"temperature: {self.temperature} must be > 0")
        if self.similarity_temperature <= 0:
            out.append(f"similarity_temperature: {self.similarity_temperature} must be > 0")
        if not 0 <= self.flash_lower_lr <= 1:
            out.append(f"flash_lower_lr: {self.flash_lower_lr} must be in [0, 1]")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            out.append(f"device: {self.device!r} must be auto, cpu, cuda or cuda:N")
        if self.grad_clip < 0 or self.weight_decay < 0:
            out.append("grad_clip, weight_decay: must be >= 0")
        return out
