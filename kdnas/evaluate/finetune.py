"""Fine-tuning and scoring an encoder on a labeled task: pooled encoder + linear head, lr grid x seeds.

Protocol (the same for teacher, baselines and students): per (lr, seed) a fresh copy of the encoder is trained
with AdamW and early stopping on dev; the lr with the best mean dev score is chosen; test is reported at that lr
as mean and sample std over seeds. Zero-shot transfer rides on the same runs: each run's best dev model also scores
the target test sets handed in as `transfer` scorers (`zero_shot_logits` pools source logits into target classes).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kdnas.data.tasks import Task, TaskSplit
from kdnas.errors import DataError, KdnasError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.evaluate.losses import label_loss, task_kd_loss
from kdnas.evaluate.metrics import MAIN_METRIC, score
from kdnas.evaluate.results import (  # noqa: F401  (re-exported: kdnas.evaluate.finetune.TaskResult etc.)
    RunResult,
    TaskResult,
    majority_rate,
    summarize,
    summarize_fixed,
    test_standard_error,
)
from kdnas.precision import autocast, log_choice, resolve_device, resolve_dtype

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------------
# data


@dataclass
class EncodedSplit:
    """A pre-tokenized split: variable-length token lists (padded per batch), labels as a tensor [N].
    A pair task fine-tuned as a bi-encoder keeps its second texts apart (`input_ids_b`)."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None
    labels: torch.Tensor
    pad_id: int = 0
    input_ids_b: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.input_ids)


def encode_split(
    tokenizer: PreTrainedTokenizerBase, split: TaskSplit, kind: str, max_len: int, *, bi: bool = False
) -> EncodedSplit:
    """Tokenize once (truncated to `max_len`, no padding). `bi`: the two texts of a pair split each on its own
    (a bi-encoder; each truncated to `max_len`), else as one sequence."""
    dtype = torch.float32 if kind == "regression" else torch.long
    pad = tokenizer.pad_token_id
    if bi and split.texts_b is not None:
        a, b = (
            tokenizer(texts, truncation=True, max_length=max_len, padding=False, return_attention_mask=False)
            for texts in (split.texts, split.texts_b)
        )
        return EncodedSplit(
            input_ids=list(a["input_ids"]), token_type_ids=None, input_ids_b=list(b["input_ids"]),
            labels=torch.tensor(split.labels, dtype=dtype), pad_id=int(pad) if pad is not None else 0,
        )  # fmt: skip
    enc = tokenizer(
        split.texts, split.texts_b, truncation=True, max_length=max_len, padding=False,
        return_attention_mask=False,
    )  # fmt: skip
    tt = enc.get("token_type_ids") if "token_type_ids" in tokenizer.model_input_names else None
    return EncodedSplit(
        input_ids=list(enc["input_ids"]),
        token_type_ids=tt,
        labels=torch.tensor(split.labels, dtype=dtype),
        pad_id=int(pad) if pad is not None else 0,
    )


def _pad(seqs: list[list[int]], idx: list[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask [B, S] of the token lists `idx`, padded to the longest of them."""
    seq = max(len(seqs[i]) for i in idx)
    ids = torch.full((len(idx), seq), pad_id, dtype=torch.long)  # [B, S]
    mask = torch.zeros((len(idx), seq), dtype=torch.long)  # [B, S]
    for r, i in enumerate(idx):
        n = len(seqs[i])
        ids[r, :n] = torch.tensor(seqs[i])
        mask[r, :n] = 1
    return ids, mask


def _collate(
    data: EncodedSplit, idx: list[int], use_token_types: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """Pad the examples `idx` to the longest of them (dynamic padding); a bi-encoder split's second texts as
    `input_ids_b` / `attention_mask_b`."""
    ids, mask = _pad(data.input_ids, idx, data.pad_id)
    out = {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
    if data.input_ids_b is not None:
        ids_b, mask_b = _pad(data.input_ids_b, idx, data.pad_id)
        out.update(input_ids_b=ids_b.to(device), attention_mask_b=mask_b.to(device))
    if use_token_types and data.token_type_ids is not None:
        tt = torch.zeros(tuple(ids.shape), dtype=torch.long)
        for r, i in enumerate(idx):
            tt[r, : len(data.token_type_ids[i])] = torch.tensor(data.token_type_ids[i])
        out["token_type_ids"] = tt.to(device)
    return out


# ------------------------------------------------------------------------------------------------------------
# model


class TaskModel(nn.Module):
    """Encoder -> pooled sentence vector (`cls` or `mean`) -> dropout -> linear head of `num_labels` outputs.

    `bi` (a pair task fine-tuned as a bi-encoder): each text is encoded and pooled alone, u and v, and the head
    reads [u, v, |u - v|, u * v] (Sentence-BERT's classification objective), so the pair is compared as the
    embeddings are when the model serves search or deduplication."""

    def __init__(
        self, encoder: PreTrainedModel, num_labels: int, *, pooling: str = "mean", dropout: float = 0.1,
        bi: bool = False,
    ):  # fmt: skip
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise KdnasError(f"pooling: {pooling!r} must be 'cls' or 'mean'")
        self.encoder = encoder
        self.pooling = pooling
        self.bi = bi
        hidden = _hidden_size(encoder)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(4 * hidden if bi else hidden, num_labels)
        self.use_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters

    def _pooled(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw: torch.Tensor
    ) -> torch.Tensor:
        h = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, **kw
        ).last_hidden_state  # [B, S, H]
        if self.pooling == "cls":
            return h[:, 0]  # [B, H]
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # [B, S, 1]
        return (h * m).sum(1) / m.sum(1).clamp(min=1.0)  # [B, H]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, input_ids_b: torch.Tensor | None = None,
        attention_mask_b: torch.Tensor | None = None, **kw: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        """input_ids, attention_mask [B, S] (and the second texts' [B, S_b] for a bi-encoder) -> logits [B, K]."""
        if not self.use_token_types:
            kw.pop("token_type_ids", None)
        if not self.bi:
            return self.head(self.dropout(self._pooled(input_ids, attention_mask, **kw)))  # [B, K]
        if input_ids_b is None or attention_mask_b is None:
            raise KdnasError("a bi-encoder task model needs the second texts (input_ids_b, attention_mask_b)")
        u = self._pooled(input_ids, attention_mask)  # [B, H]
        v = self._pooled(input_ids_b, attention_mask_b)  # [B, H]
        feats = torch.cat([u, v, (u - v).abs(), u * v], dim=-1)  # [B, 4H]
        return self.head(self.dropout(feats))  # [B, K]


def _hidden_size(model: PreTrainedModel) -> int:
    cfg = model.config
    for k in ("hidden_size", "dim", "d_model"):
        v = getattr(cfg, k, None)
        if isinstance(v, int):
            return v
    raise KdnasError(f"cannot tell the hidden size of a {type(model).__name__}; is it a text encoder?")


def _eager(model: PreTrainedModel) -> None:
    if getattr(model.config, "_attn_implementation", "eager") != "eager" and hasattr(
        model, "set_attn_implementation"
    ):
        with contextlib.suppress(
            ValueError, NotImplementedError
        ):  # families without an eager switch keep theirs
            model.set_attn_implementation("eager")


@torch.inference_mode()
def predict_logits(
    model: TaskModel, data: EncodedSplit, *, batch_size: int = 64, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Logits [N, K] (float32) in the split's order; batches grouped by length so padding stays small.
    dtype bfloat16: the forward runs under bf16 autocast (`kdnas.precision`)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    out = torch.empty((len(data), model.head.out_features))
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = _collate(data, idx, model.use_token_types, device)
        with autocast(device, dtype):
            logits = model(**batch)
        out[idx] = logits.float().cpu()
    model.train(was_training)
    return out


def predictions_of(logits: torch.Tensor, kind: str) -> np.ndarray:
    return (logits.squeeze(-1) if kind == "regression" else logits.argmax(-1)).numpy()


def zero_shot_logits(logits: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    """Source logits [N, K_src] -> target-class scores [N, C]: class c = logsumexp of the logits in groups[c].

    Pooling with logsumexp makes the argmax that of the summed softmax probabilities of each group; source
    classes in no group take no part. Every group must name at least one source class.
    """
    if not groups or any(not g for g in groups):
        raise ValueError(f"every target class needs at least one source class, got groups {groups}")
    return torch.stack([logits[:, g].logsumexp(-1) for g in groups], dim=-1)  # [N, C]


# ------------------------------------------------------------------------------------------------------------
# training


@dataclass
class EncodedTask:
    """The three splits of a task, tokenized once and shared by every run."""

    train: EncodedSplit
    dev: EncodedSplit
    test: EncodedSplit


def encode_task(tokenizer: PreTrainedTokenizerBase, task: Task, max_len: int) -> EncodedTask:
    bi = is_bi(task)
    return EncodedTask(
        *(encode_split(tokenizer, task.split(s), task.kind, max_len, bi=bi) for s in ("train", "dev", "test"))
    )


def is_bi(task: Task) -> bool:
    """Whether `task` is fine-tuned as a bi-encoder (a pair task with `pair_encoding: bi`)."""
    return task.is_pair and getattr(task, "pair_encoding", "cross") == "bi"


def _optimizer(model: TaskModel, lr: float, weight_decay: float) -> torch.optim.AdamW:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for n, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "LayerNorm" in n or "layer_norm" in n else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr)


def train_run(
    encoder: PreTrainedModel,
    task: Task,
    data: EncodedTask,
    cfg: EvaluateConfig,
    *,
    lr: float,
    seed: int,
    soft_targets: torch.Tensor | None = None,
    transfer: Mapping[str, Callable[[TaskModel], dict[str, float]]] | None = None,
) -> tuple[RunResult, TaskModel]:
    """Fine-tune a copy of `encoder` at `lr` / `seed`; early stopping on dev; returns the run and its best model.

    soft_targets: teacher logits [N_train, K] for task distillation (loss mixes them with the labels).
    transfer: name -> scorer run on the best dev model (e.g. a zero-shot target test set); in `RunResult.transfer`.
    Precision (`cfg.dtype`): with bf16 the model's forward (training and scoring) runs under bf16 autocast; the
    loss is computed from fp32 logits and the weights and optimiser stay fp32.
    """
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device, key="evaluate.dtype")
    log_choice(log, "evaluate", device, dtype)
    torch.manual_seed(seed)
    enc = copy.deepcopy(encoder)
    _eager(enc)
    model = TaskModel(
        enc, task.num_labels, pooling=cfg.pooling, dropout=cfg.dropout, bi=data.train.input_ids_b is not None
    ).to(device)
    model.train()
    opt = _optimizer(model, lr, cfg.weight_decay)
    n = len(data.train)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warmup = int(total * cfg.warmup_fraction)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )
    gen = torch.Generator().manual_seed(seed)
    metric = getattr(task, "metric", None) or MAIN_METRIC[task.kind]
    best_score, best_epoch, best_state, bad, steps = -math.inf, 0, None, 0, 0
    best_dev: dict[str, float] = {}
    t0 = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=gen).tolist()
        for b in range(0, n, cfg.batch_size):
            idx = perm[b : b + cfg.batch_size]
            batch = _collate(data.train, idx, model.use_token_types, device)
            with autocast(device, dtype):
                logits = model(**batch)  # [B, K]
            logits = logits.float()  # the loss in fp32
            labels = data.train.labels[idx].to(device)
            if soft_targets is not None:
                loss = task_kd_loss(logits, soft_targets[idx].to(device), labels, task.kind,
                                    temperature=cfg.kd_temperature, alpha=cfg.kd_alpha)  # fmt: skip
            else:
                loss = label_loss(logits, labels, task.kind)
            if not torch.isfinite(loss):
                raise KdnasError(
                    f"{task.name}: the loss became {loss.item()} at lr {lr}; lower the learning rate"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            steps += 1
        dev = _score(model, data.dev, task, cfg, dtype)
        log.debug("%s lr=%g seed=%d epoch %d: dev %s=%.4f", task.name, lr, seed, epoch, metric, dev[metric])
        if dev[metric] > best_score:
            best_score, best_epoch, bad = dev[metric], epoch, 0
            best_dev = dev
            best_state = (
                {k: v.detach().clone() for k, v in model.state_dict().items()} if epoch < cfg.epochs else None
            )
        else:
            bad += 1
            if bad >= cfg.patience and epoch >= cfg.min_epochs:
                break
    train_s = time.perf_counter() - t0
    if best_state is not None:
        model.load_state_dict(best_state)
    test = _score(model, data.test, task, cfg, dtype)
    scored = {name: fn(model) for name, fn in (transfer or {}).items()}
    model.eval()
    run = RunResult(lr=lr, seed=seed, dev=best_dev, test=test, best_epoch=best_epoch, epochs_run=epoch,
                    steps=steps, train_s=round(train_s, 3), transfer=scored)  # fmt: skip
    return run, model


def _score(
    model: TaskModel, data: EncodedSplit, task: Task, cfg: EvaluateConfig, dtype: torch.dtype = torch.float32
) -> dict[str, float]:
    logits = predict_logits(model, data, batch_size=cfg.eval_batch_size, dtype=dtype)
    return score(task.kind, predictions_of(logits, task.kind), data.labels.numpy(), task.num_labels)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Use `n` torch CPU threads inside the block (None: leave as is)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def finetune(
    encoder: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    task: Task,
    cfg: EvaluateConfig | None = None,
    *,
    soft_targets: torch.Tensor | None = None,
    return_model: bool = False,
    transfer: Mapping[str, Callable[[TaskModel], dict[str, float]]] | None = None,
) -> tuple[TaskResult, TaskModel | None]:
    """Run the protocol (every lr x seed) on `task`; returns the result and, if asked, the best dev model.

    The encoder is copied for every run and left untouched. `transfer` scorers run on every run's best dev
    model (see `train_run`), so a source task is fine-tuned once for all its zero-shot targets.
    """
    cfg = cfg or EvaluateConfig()
    task = capped(task, cfg)
    if soft_targets is not None and soft_targets.shape[0] != len(task.train):
        raise DataError(
            f"{task.name}: {soft_targets.shape[0]} teacher logits for {len(task.train)} training examples"
        )
    with torch_threads(cfg.threads):
        return _finetune(encoder, tokenizer, task, cfg, soft_targets, return_model, transfer)


def capped(task: Task, cfg: EvaluateConfig) -> Task:
    """`task` with train and dev cut to `max_train_examples` / `max_dev_examples` (a hash-chosen subset, the
    same for every model); test is kept whole."""
    from kdnas.data.tasks import cap_split

    for split, cap in (("train", cfg.max_train_examples), ("dev", cfg.max_dev_examples)):
        if cap is not None and len(getattr(task, split)) > cap:
            task = copy.copy(task)
            setattr(task, split, cap_split(getattr(task, split), cap))
    return task


def _finetune(
    encoder: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, task: Task, cfg: EvaluateConfig,
    soft_targets: torch.Tensor | None, return_model: bool,
    transfer: Mapping[str, Callable[[TaskModel], dict[str, float]]] | None,
) -> tuple[TaskResult, TaskModel | None]:  # fmt: skip
    data = encode_task(tokenizer, task, cfg.max_len)
    runs: list[RunResult] = []
    best_model: TaskModel | None = None
    best_dev: dict[float, float] = {}
    models: dict[float, TaskModel] = {}
    metric = getattr(task, "metric", None) or MAIN_METRIC[task.kind]
    for lr in cfg.lrs:
        for seed in cfg.seeds:
            run, model = train_run(encoder, task, data, cfg, lr=lr, seed=seed, soft_targets=soft_targets,
                                   transfer=transfer)  # fmt: skip
            log.info("%s: lr %g seed %d: dev %s %.4f, test %.4f (%d epochs, %.1f s)", task.name, lr, seed,
                     metric, run.dev[metric], run.test[metric], run.epochs_run, run.train_s)  # fmt: skip
            runs.append(run)
            if return_model and run.dev[metric] > best_dev.get(lr, -math.inf):
                best_dev[lr] = run.dev[metric]
                models[lr] = model.cpu()
            del model
    result = summarize(task, runs)
    if return_model:
        best_model = models[result.best_lr]
    return result, best_model
