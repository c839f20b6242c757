"""The distillation loop: AdamW with warm-up and decay, clipping, accumulation, token/step budgets, flash mode,
atomic checkpoints with exact resume, NaN/inf detection and a progress bar. Entry point: `distill()`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from kdnas.distill import parallel
from kdnas.distill.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from kdnas.distill.config import DistillConfig
from kdnas.distill.distiller import Distiller, check_input_map, mlm_head, teacher_pooling
from kdnas.distill.heldout import fit_projections
from kdnas.distill.teacher_cache import (
    CachedTeacher,
    TeacherCache,
    TeacherNeeds,
    as_block,
    base_encoder,
    block_hash,
    teacher_info,
)
from kdnas.errors import ConfigError, DistillError
from kdnas.precision import autocast_forward, dtype_name, log_choice, resolve_device, resolve_dtype

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
_MANY_EPOCHS = 5
_FINAL_WINDOW = 10


@dataclass
class DistillResult:
    """What a distillation run produced. Losses are training losses (normalised as in docs/distillation.md)."""

    final_loss: float
    """Mean total loss over the last (up to) 10 steps of the last stage; nan if no step ran."""
    loss_by_component: dict[str, float]
    """Same window, per loss component (hidden, relation, ...)."""
    history: list[dict[str, Any]]
    """One entry per optimiser step: step, stage, loss, loss_<component>, lr, tokens, grad_norm."""
    steps: int
    """Optimiser steps done (including those before a resume)."""
    tokens: int
    """Real (non-padding) tokens the student has seen."""
    seconds: float
    """Training wall time, summed over resumed sessions (teacher-cache building excluded)."""
    tokens_per_s: float
    """tokens / seconds."""
    failed: str | None = None
    """Why the run stopped (non-finite loss or gradient), or None."""
    loss_by_stage: dict[str, float] = field(default_factory=dict)
    """Final loss of each stage (flash mode: layer1..layerL then all; standard: all)."""
    total_steps: int = 0
    """Steps the budget asked for; `steps < total_steps` without `failed` means stopped early (resumable)."""
    setup_seconds: float = 0.0
    """Time spent preparing the teacher cache in this session."""
    distiller: Distiller | None = field(default=None, repr=False, compare=False)
    """The trained distiller (student + projections), for `heldout_kd_loss(..., projections=...)`."""

    def to_dict(self, *, history: bool = True) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "distiller"}
        if not history:
            d.pop("history")
        return d


@dataclass(frozen=True)
class Stage:
    name: str
    steps: int
    flash_layer: int | None


_FIT_TOKENS = 8192
"""Real tokens the least-squares start of the projections is fitted on (`distill.proj_init: lstsq`): about ten
rows per input dim at width 768, one student forward over a few batches."""


def plan_stages(total_steps: int, num_layers: int, cfg: DistillConfig, mode: str) -> list[Stage]:
    """standard: one stage. flash: `flash_steps_per_layer` per student layer (shrunk so that at least a
    1/(L+1) share is left), then an all-layer stage with the remaining steps."""
    if mode != "flash":
        return [Stage("all", total_steps, None)]
    per = min(cfg.flash_steps_per_layer, total_steps // (num_layers + 1))
    if per < cfg.flash_steps_per_layer:
        warnings.warn(
            f"flash mode: the budget of {total_steps} steps allows only {per} steps per layer "
            f"(flash_steps_per_layer={cfg.flash_steps_per_layer}); raise the token budget for a full schedule",
            stacklevel=3,
        )
    stages = [Stage(f"layer{i}", per, i) for i in range(1, num_layers + 1) if per > 0]
    return [*stages, Stage("all", total_steps - per * len(stages), None)]


def lr_factor(step: int, steps: int, cfg: DistillConfig) -> float:
    """Multiplier of the peak lr at 0-based `step` of a stage of `steps`: linear warm-up, then decay to 0."""
    warm = round(cfg.warmup_ratio * steps)
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def _teacher_modules(teacher: Any) -> list[nn.Module]:
    """The modules of a teacher (an HF model, or a `Teacher` with its model and MLM head)."""
    if isinstance(teacher, nn.Module):
        return [teacher]
    return [
        m
        for m in (getattr(teacher, "model", None), getattr(teacher, "mlm_head", None))
        if isinstance(m, nn.Module)
    ]


@contextlib.contextmanager
def on_device(modules: list[nn.Module], device: torch.device) -> Iterator[None]:
    """Inside the block the modules are on `device`; after it, each is back on the device it came from (a
    no-op where they already are)."""
    homes = [next(iter(m.parameters()), torch.empty(0)).device for m in modules]
    for m in modules:
        m.to(device)
    try:
        yield
    finally:
        for m, home in zip(modules, homes, strict=True):
            m.to(home)


def _ensure_eager(student: nn.Module) -> None:
    """Eager attention: on CPU it is much faster than sdpa for small encoders and returns attention maps."""
    cfg: Any = base_encoder(student).config
    setter = getattr(student, "set_attn_implementation", None)
    if getattr(cfg, "_attn_implementation", "eager") != "eager" and callable(setter):
        setter("eager")


def _cached_teacher(
    teacher: Any,
    data: Any,
    distiller: Distiller,
    cfg: DistillConfig,
    cache: Any,
    stack: contextlib.ExitStack,
    progress: bool,
    dtype: torch.dtype = torch.float32,
    *,
    also: TeacherNeeds | None = None,
) -> CachedTeacher:
    needs = distiller.needs()
    if isinstance(cache, CachedTeacher):
        ids, mask = as_block(data)
        if block_hash(ids, mask) != block_hash(cache.input_ids, cache.attention_mask):
            raise DistillError(
                "the teacher cache handle was prepared for different data; prepare it for this block"
            )
        missing = [i for i in needs.items(cache.info) if i not in cache.items]
        if missing:
            raise DistillError(
                f"the teacher cache handle lacks {', '.join(missing)}; prepare it with these needs"
            )
        return cache
    if cache is None:
        cache = TeacherCache(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="kdnas-tcache-")),
            budget_mb=cfg.teacher_cache_mb,
        )
    elif not isinstance(cache, TeacherCache):
        cache = TeacherCache(cache, budget_mb=cfg.teacher_cache_mb)
    if also is not None:
        union = needs | also
        if union != needs:
            need_mb = cache.size_mb(teacher, data, union)
            if need_mb <= cache.budget_mb:
                log.info(
                    "teacher cache: filling the outputs of the later distillations too (%.0f MB)", need_mb
                )
                cache.prepare(teacher, data, union, batch_size=cfg.batch_size, progress=progress, dtype=dtype)
            else:
                log.info(
                    "teacher cache: the later distillations' outputs would need %.0f MB with this one's, over "
                    "teacher_cache_mb=%d; each fills its own (raise it to run the teacher once for all)",
                    need_mb,
                    cache.budget_mb,
                )
    return cache.prepare(teacher, data, needs, batch_size=cfg.batch_size, progress=progress, dtype=dtype)


def _param_groups(distiller: Distiller, cfg: DistillConfig) -> list[dict[str, Any]]:
    groups = []
    for name, params in distiller.layer_groups().items():
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        for suffix, ps, wd in (("", decay, cfg.weight_decay), (".nd", no_decay, 0.0)):
            if ps:
                groups.append({"params": ps, "name": name + suffix, "weight_decay": wd, "lr": cfg.lr})
    return groups


def _adamw(groups: list[dict[str, Any]], cfg: DistillConfig) -> torch.optim.AdamW:
    """Fused AdamW (one kernel for all parameters; much less per-parameter overhead on CPU) where supported."""
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _stage_mult(group: str, stage: Stage, cfg: DistillConfig) -> float:
    """lr multiplier of a parameter group in a stage (flash: the current layer learns, lower ones slowly)."""
    if stage.flash_layer is None:
        return 1.0
    g = group.removesuffix(".nd")
    if g == f"layer.{stage.flash_layer}" or g == f"proj.hidden_{stage.flash_layer}":
        return 1.0
    if g == "emb" or (g.startswith("layer.") and int(g.split(".")[1]) < stage.flash_layer):
        return cfg.flash_lower_lr
    return 0.0


def _fingerprint(
    cfg: DistillConfig, student: nn.Module, teacher_fp: str, data_hash: str, **extra: Any
) -> str:
    """Identity of a run for resume. `extra` carries the resolved compute dtype, so `dtype: auto` resumed on
    a machine that resolves it otherwise is refused like any other change."""
    h = hashlib.sha256()
    config: Any = base_encoder(student).config
    student_cfg = config.to_dict()
    for k in ("_name_or_path", "transformers_version", "_attn_implementation"):
        student_cfg.pop(k, None)
    cfg_dict = dataclasses.asdict(cfg)
    # the requested name (auto) is not the identity of a run; the resolved dtype in `extra` is
    cfg_dict.pop("dtype", None)
    payload = {
        "cfg": cfg_dict,
        "student": student_cfg,
        "teacher": teacher_fp,
        "data": data_hash,
        **extra,
    }
    h.update(json.dumps(payload, sort_keys=True, default=str).encode())
    return h.hexdigest()[:24]


def _window_mean(entries: list[dict[str, Any]], key: str) -> float:
    vals = [e[key] for e in entries[-_FINAL_WINDOW:] if key in e]
    return float(sum(vals) / len(vals)) if vals else float("nan")


def _summary(
    history: list[dict[str, Any]], stages: list[Stage]
) -> tuple[float, dict[str, float], dict[str, float]]:
    by_stage = {s.name: [e for e in history if e["stage"] == s.name] for s in stages}
    last = next((by_stage[s.name] for s in reversed(stages) if by_stage[s.name]), [])
    comps = sorted({k[5:] for e in last for k in e if k.startswith("loss_")})
    return (
        _window_mean(last, "loss"),
        {c: _window_mean(last, f"loss_{c}") for c in comps},
        {name: _window_mean(es, "loss") for name, es in by_stage.items() if es},
    )


def distill(
    teacher: Any,
    student: nn.Module,
    data: Any,
    cfg: DistillConfig,
    *,
    tokens: int | None = None,
    steps: int | None = None,
    mode: Literal["standard", "flash"] | None = None,
    teacher_cache: TeacherCache | CachedTeacher | str | Path | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    seed: int = 0,
    progress: bool = True,
    stop_after_steps: int | None = None,
    input_map: Tensor | None = None,
    cache_also: TeacherNeeds | None = None,
) -> DistillResult:
    """Distill `teacher` into `student` (trained in place) on the token block `data`.

    teacher: an HF encoder (base or masked-LM; its MLM head enables the logits loss) or a `Teacher`.
    data: a TokenBlock-like object with input_ids/attention_mask [N, S] (or a dict / (ids, mask) pair).
    tokens | steps: the budget (default `cfg.proxy_tokens`); tokens count real (non-padding) tokens.
    mode: standard or flash (default `cfg.proxy_mode`). teacher_cache: a TeacherCache or its dir (reused across
    candidates), a prepared CachedTeacher, or None for a temporary one. out_dir: checkpoints every
    `cfg.checkpoint_every` steps and at the end, plus train_log.jsonl. resume: continue from out_dir's
    checkpoint (exactly: the same losses as an uninterrupted run). stop_after_steps: checkpoint and return
    after this many steps in total (the run can be resumed later). input_map: for a student with a trimmed
    vocabulary, LongTensor [teacher vocab] teacher id -> student id (`kdnas.space.vocab.VocabTable.input_map`):
    the teacher and its cache see `data` as it is, the student `input_map[ids]`.
    cache_also: teacher outputs that later distillations on the same data will ask for (another student's
    layers); when they fit the cache budget together with this student's, the one teacher pass that fills the
    cache writes them too, so the later students never run the teacher (`TeacherCache.prepare`).
    The student is left in eval mode. A non-finite loss or gradient ends the run with `failed` set.
    Precision (`cfg.dtype`, `kdnas.precision`): with bf16 the teacher-cache forward and the student encoder's
    forward run under bf16 autocast; the student's outputs come back fp32, so the projections, the losses,
    the weights and the optimiser stay fp32.
    """
    problems = cfg.check()
    if problems:
        raise ConfigError([f"distill.{p}" for p in problems])
    if tokens is not None and steps is not None:
        raise DistillError("give a budget in tokens or in steps, not both")
    if (tokens is not None and tokens < 1) or (steps is not None and steps < 1):
        raise DistillError(f"the budget must be positive (tokens={tokens}, steps={steps})")
    if resume and out_dir is None:
        raise DistillError("resume needs the out_dir of the run to continue")
    mode = mode or cfg.proxy_mode
    ids, mask = as_block(data)
    check_input_map(student, ids, input_map)
    n_rows = ids.shape[0]
    base_encoder(teacher).eval()
    _ensure_eager(student)
    info = teacher_info(teacher)
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device, key="distill.dtype")
    log_choice(log, "distill", device, dtype)
    w = parallel.world()
    parallel.check_accum(w, cfg.grad_accum)
    progress = progress and w.is_main

    with contextlib.ExitStack() as stack, torch.random.fork_rng(devices=[]):
        stack.enter_context(_deterministic())
        torch.manual_seed(seed)
        distiller = Distiller(
            student,
            info,
            cfg,
            flash=mode == "flash",
            teacher_head=mlm_head(teacher),
            input_map=input_map,
            pooling=teacher_pooling(teacher),
        )
        # trained on `device`; the callers get the teacher, student and projections back where they were
        stack.enter_context(on_device([distiller, *_teacher_modules(teacher)], device))
        parallel.broadcast_module(distiller, w)
        batch = cfg.batch_size
        if n_rows < batch:
            warnings.warn(
                f"the corpus has {n_rows} rows, fewer than one batch ({batch}); using batches of {n_rows}",
                stacklevel=2,
            )
            batch = n_rows
        rows_per_step = batch * cfg.grad_accum
        tokens_per_row = float(mask.sum()) / n_rows
        if steps is None:
            budget = tokens if tokens is not None else cfg.proxy_tokens
            steps = max(1, math.ceil(budget / (rows_per_step * tokens_per_row)))
        need = steps * rows_per_step
        if need < n_rows and not isinstance(teacher_cache, CachedTeacher):
            # a budget below one epoch reads a fixed random subset of the rows, so the teacher runs (and its
            # cache is written) for those rows only, not for the whole block
            keep = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003))[:need]
            ids, mask = ids[keep], mask[keep]
            n_rows = need
        t0 = time.perf_counter()
        # processes sharing a cache dir: rank 0 computes the teacher's outputs, the others read them
        shared = isinstance(teacher_cache, (TeacherCache, str, Path))
        with parallel.main_first(w) if shared else contextlib.nullcontext():
            handle = _cached_teacher(
                teacher, (ids, mask), distiller, cfg, teacher_cache, stack, progress, dtype, also=cache_also
            )
        setup_s = time.perf_counter() - t0

        per_epoch = n_rows // batch
        epochs = steps * cfg.grad_accum / per_epoch
        if epochs > _MANY_EPOCHS:
            warnings.warn(
                f"the budget ({steps} steps) needs {epochs:.1f} epochs over {n_rows} rows; the student will overfit "
                "the corpus: use a bigger corpus or a smaller budget",
                stacklevel=2,
            )
        stages = plan_stages(steps, distiller.num_layers, cfg, mode)
        vocab_fp = (
            None if input_map is None else block_hash(input_map[None], torch.ones_like(input_map[None]))
        )
        fp = _fingerprint(
            cfg, student, info.fingerprint, block_hash(ids, mask), seed=seed, steps=steps, mode=mode,
            dtype=dtype_name(dtype), teacher_dtype=dtype_name(handle.dtype),
            **({"vocab": vocab_fp} if vocab_fp else {}),
        )  # fmt: skip

        def rows_of(micro: int) -> Tensor:
            epoch, pos = divmod(micro, per_epoch)
            g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
            return torch.randperm(n_rows, generator=g)[pos * batch : (pos + 1) * batch]

        opt = _adamw(_param_groups(distiller, cfg), cfg)
        start, seen_tokens, seconds = 0, 0, 0.0
        history: list[dict[str, Any]] = []
        ckpt_dir = Path(out_dir) if out_dir is not None else None
        if resume and ckpt_dir is not None:
            if has_checkpoint(ckpt_dir):
                state = load_checkpoint(ckpt_dir)
                if state.get("fingerprint") != fp:
                    raise DistillError(
                        f"the checkpoint in {ckpt_dir} was written by a different run (config, budget, seed, data, "
                        "student or compute dtype differ); delete it to start afresh, or use the original "
                        "settings (distill.dtype: auto resolves per machine; name fp32 or bf16 to pin it)"
                    )
                distiller.load_state_dict(state["distiller"])
                opt.load_state_dict(state["optimizer"])
                torch.set_rng_state(state["rng"])
                start, seen_tokens, seconds = state["step"], state["tokens"], state["seconds"]
                history = state["history"]
                log.info("resuming %s at step %d of %d", out_dir, start, steps)
            else:
                log.warning("no checkpoint in %s: starting from step 0", out_dir)
        if cfg.proj_init == "lstsq" and start == 0 and len(distiller.proj):
            # the projections start as the least-squares read-out of the inherited student's states on the
            # first batches (_FIT_TOKENS real tokens), not at random: a student narrower than the teacher
            # otherwise spends its first steps (all of a short proxy's) learning a random Dense, and ranks
            # below wider ones for that alone
            picked, fit_tokens = [], 0
            for micro in range(per_epoch):
                if fit_tokens >= _FIT_TOKENS:
                    break
                picked.append(rows_of(micro))
                fit_tokens += int(mask[picked[-1]].sum())
            fit_projections(distiller, handle, batch, rows=torch.cat(picked), sentence_from_tokens=True)
            parallel.broadcast_module(distiller, w)
        log_file = None
        if out_dir is not None and w.is_main:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            log_file = stack.enter_context(open(Path(out_dir) / TRAIN_LOG, "w"))
            for e in history:
                log_file.write(json.dumps(e) + "\n")

        def checkpoint(step: int) -> None:
            if ckpt_dir is None or not w.is_main:  # one writer: rank 0
                return
            save_checkpoint(
                ckpt_dir,
                {
                    "fingerprint": fp,
                    "step": step,
                    "tokens": seen_tokens,
                    "seconds": seconds,
                    "history": history,
                    "distiller": distiller.state_dict(),
                    "optimizer": opt.state_dict(),
                    "rng": torch.get_rng_state(),
                },
            )
            if log_file is not None:
                log_file.flush()

        from tqdm.auto import tqdm

        bar = stack.enter_context(
            tqdm(total=steps, initial=start, desc="distill", unit="step", disable=not progress)
        )
        stage_start = {s.name: sum(x.steps for x in stages[:i]) for i, s in enumerate(stages)}
        trainable = {p: p.requires_grad for p in distiller.parameters()}
        failed: str | None = None
        last = min(steps, stop_after_steps) if stop_after_steps is not None else steps
        distiller.train()
        stack.enter_context(autocast_forward(base_encoder(student), device, dtype))
        session_t0, session_tokens = time.perf_counter(), 0
        step = start
        current: Stage | None = None
        try:
            for step in range(start, last):
                stage = next(s for s in stages if stage_start[s.name] <= step < stage_start[s.name] + s.steps)
                if stage is not current:
                    current = stage
                    for g in opt.param_groups:  # frozen groups skip backward work entirely
                        frozen = _stage_mult(g["name"], stage, cfg) == 0.0
                        for p in g["params"]:
                            p.requires_grad_(trainable[p] and not frozen)
                t_step = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss_sum, comp_sums, step_tokens = (
                    0.0,
                    dict.fromkeys(distiller.phase_weights(stage.flash_layer), 0.0),
                    0,
                )
                for a in range(cfg.grad_accum):
                    if not w.mine(a):  # another process runs this micro-batch
                        continue
                    micro = step * cfg.grad_accum + a
                    rows = rows_of(micro)
                    # dropout is seeded per micro-batch, so any number of processes draws the same masks
                    torch.manual_seed(seed * 1_000_003 + 7_919 * micro + 1)
                    t_out = {k: v.to(device) for k, v in handle.fetch(rows).items()}
                    loss, comps = distiller(
                        ids[rows].to(device),
                        mask[rows].to(device),
                        t_out,
                        handle.variances,
                        flash_layer=stage.flash_layer,
                    )
                    if not torch.isfinite(loss):
                        bad = [k for k, v in comps.items() if not torch.isfinite(v)]
                        failed = f"non-finite loss ({float(loss.detach())}) at step {step + 1}: component(s) {', '.join(bad)}"
                        break
                    (loss / cfg.grad_accum).backward()
                    loss_sum += float(loss.detach()) / cfg.grad_accum
                    for k, v in comps.items():
                        comp_sums[k] += float(v.detach()) / cfg.grad_accum
                    step_tokens += int(mask[rows].sum())
                if w.size > 1:
                    keys = list(comp_sums)
                    stats = parallel.sum_(
                        torch.tensor(
                            [loss_sum, step_tokens, bool(failed), *comp_sums.values()], dtype=torch.float64
                        ),
                        w,
                    )
                    if stats[2] > 0:
                        failed = failed or f"non-finite loss at step {step + 1} in another process"
                    loss_sum, step_tokens = float(stats[0]), int(stats[1])
                    comp_sums = {k: float(v) for k, v in zip(keys, stats[3:].tolist(), strict=True)}
                if failed:
                    break
                if w.size > 1:
                    grouped = [p for g in opt.param_groups for p in g["params"]]
                    has = parallel.sum_(
                        torch.tensor([p.grad is not None for p in grouped], dtype=torch.float32), w
                    )
                    parallel.sum_grads([p for p, h in zip(grouped, has.tolist(), strict=True) if h > 0], w)
                params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
                clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
                gnorm = float(torch.nn.utils.clip_grad_norm_(params, clip)) if params else 0.0
                if not math.isfinite(gnorm):
                    failed = f"non-finite gradient norm at step {step + 1} (loss {loss_sum:.4g})"
                    break
                lr = cfg.lr * lr_factor(step - stage_start[stage.name], stage.steps, cfg)
                for g in opt.param_groups:
                    g["lr"] = lr * _stage_mult(g["name"], stage, cfg)
                opt.step()
                seen_tokens += step_tokens
                session_tokens += step_tokens
                seconds += time.perf_counter() - t_step
                entry = {
                    "step": step + 1,
                    "stage": stage.name,
                    "loss": loss_sum,
                    **{f"loss_{k}": v for k, v in comp_sums.items()},
                    "lr": lr,
                    "grad_norm": gnorm,
                    "tokens": seen_tokens,
                }
                history.append(entry)
                if log_file is not None:
                    log_file.write(json.dumps(entry) + "\n")
                tok_s = session_tokens / max(1e-9, time.perf_counter() - session_t0)
                bar.set_postfix(loss=f"{loss_sum:.4f}", tok_s=f"{tok_s:.0f}", refresh=False)
                bar.update(1)
                if (step + 1) % cfg.checkpoint_every == 0 and step + 1 < last:
                    checkpoint(step + 1)
            else:
                step = last
                checkpoint(last)
        finally:
            for p, flag in trainable.items():
                p.requires_grad_(flag)
            distiller.eval()
        if failed:
            log.warning("distillation failed: %s", failed)
    final, by_comp, by_stage = _summary(history, stages)
    done = len(history)
    return DistillResult(
        final_loss=final,
        loss_by_component=by_comp,
        history=history,
        steps=done,
        tokens=seen_tokens,
        seconds=seconds,
        tokens_per_s=seen_tokens / seconds if seconds > 0 else 0.0,
        failed=failed,
        loss_by_stage=by_stage,
        total_steps=steps,
        setup_seconds=setup_s,
        distiller=distiller,
    )
