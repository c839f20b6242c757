"""Teacher cache: the teacher's needed outputs for a fixed token block, computed once and stored fp16 on disk.

Every search candidate reuses the memory-mapped arrays, so its proxy distillation costs about one student
forward+backward per step. Rows that do not fit the memory budget are computed on the fly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdnas.distill.mapping import capture_qkv
from kdnas.errors import DataError, DistillError
from kdnas.precision import autocast, dtype_name

log = logging.getLogger(__name__)

# Families whose attention probabilities are exactly softmax(q k^T / sqrt(d) + mask): the cache then stores
# q and k ([S, H] per row) instead of the probabilities ([heads, S, S] per row).
_PROBS_FROM_QK = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "distilbert", "mobilebert")
_STATS_MIN_ROWS = 64


# --------------------------------------------------------------------------------------------------------------
# inputs


def as_block(data: Any) -> tuple[Tensor, Tensor]:
    """A TokenBlock-like object (`input_ids`, `attention_mask`), a dict, an (ids, mask) pair or an ids tensor
    -> (input_ids LongTensor[N, S], attention_mask LongTensor[N, S]). Raises DataError for an empty block."""
    if hasattr(data, "input_ids"):
        ids, mask = data.input_ids, getattr(data, "attention_mask", None)
    elif isinstance(data, dict):
        ids, mask = data.get("input_ids"), data.get("attention_mask")
    elif isinstance(data, tuple | list) and len(data) == 2:
        ids, mask = data
    else:
        ids, mask = data, None
    if not isinstance(ids, Tensor):
        raise DataError(
            f"distillation data must be a TokenBlock (input_ids/attention_mask tensors), got {type(data).__name__}"
        )
    if mask is None:
        mask = torch.ones_like(ids)
    if ids.dim() != 2 or mask.shape != ids.shape:
        raise DataError(
            f"input_ids must be [N, S] with an attention_mask of the same shape, got {tuple(ids.shape)} and "
            f"{tuple(mask.shape)}"
        )
    if ids.shape[0] == 0 or ids.shape[1] == 0 or int(mask.sum()) == 0:
        raise DataError(
            "the token block is empty (no rows or no real tokens); check the corpus and its split"
        )
    return ids.long(), mask.long()


def block_hash(ids: Tensor, mask: Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(ids.shape)).encode())
    h.update(ids.cpu().numpy().astype(np.int64).tobytes())
    h.update(mask.cpu().numpy().astype(np.int8).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------------------
# what the teacher must provide


@dataclass(frozen=True)
class TeacherInfo:
    """Shape facts about a teacher encoder, and a fingerprint of its weights."""

    num_layers: int
    hidden_size: int
    num_heads: int
    model_type: str
    probs_from_qk: bool
    """Attention probabilities can be recomputed exactly from the cached q and k."""
    fingerprint: str


_FINGERPRINTS: weakref.WeakKeyDictionary[nn.Module, str] = weakref.WeakKeyDictionary()


def base_encoder(model: Any) -> nn.Module:
    """The base encoder of a `Teacher` (from load_teacher), an HF model with a head, or a base model."""
    if not isinstance(model, nn.Module) and hasattr(model, "model"):
        model = model.model
    if not isinstance(model, nn.Module):
        raise DistillError(f"the teacher must be an HF encoder model, got {type(model).__name__}")
    return getattr(model, "base_model", model)


def teacher_info(model: Any) -> TeacherInfo:
    base = base_encoder(model)
    cfg: Any = base.config
    layers: int = getattr(cfg, "num_hidden_layers", None) or cfg.n_layers
    hidden: int = cfg.dim if cfg.model_type == "distilbert" else cfg.hidden_size
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_heads
    pos = getattr(cfg, "position_embedding_type", "absolute") or "absolute"
    fp = _FINGERPRINTS.get(base)
    if fp is None:
        h = hashlib.blake2b(digest_size=16)
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
        for name, p in base.state_dict().items():
            h.update(name.encode())
            h.update(p.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        fp = h.hexdigest()
        _FINGERPRINTS[base] = fp
    return TeacherInfo(
        num_layers=int(layers),
        hidden_size=int(hidden),
        num_heads=int(heads),
        model_type=cfg.model_type,
        probs_from_qk=cfg.model_type in _PROBS_FROM_QK and pos == "absolute",
        fingerprint=fp,
    )


@dataclass(frozen=True)
class TeacherNeeds:
    """The teacher outputs the active losses read. Layer numbers are `hidden_states` indices (0 = embeddings)."""

    hidden: tuple[int, ...] = ()
    """Hidden states to keep ([N, S, Ht] each)."""
    qkv: tuple[int, ...] = ()
    """Layers whose query/key/value projection outputs are kept (relation loss; [N, S, Ht] each)."""
    attn: tuple[int, ...] = ()
    """Layers whose attention probabilities are needed (attention loss)."""

    def __or__(self, other: TeacherNeeds) -> TeacherNeeds:
        """Every output either asks for (what two students distilled on the same data need between them)."""
        return TeacherNeeds(
            hidden=tuple(sorted({*self.hidden, *other.hidden})),
            qkv=tuple(sorted({*self.qkv, *other.qkv})),
            attn=tuple(sorted({*self.attn, *other.attn})),
        )

    def items(self, info: TeacherInfo) -> list[str]:
        """Names of the arrays to store: hidden.L, q.L, k.L, v.L, attn.L."""
        out = [f"hidden.{layer}" for layer in sorted(set(self.hidden))]
        qkv = set(self.qkv)
        qk = set(self.attn) if info.probs_from_qk else set()
        for layer in sorted(qkv | qk):
            out += [f"q.{layer}", f"k.{layer}"] + ([f"v.{layer}"] if layer in qkv else [])
        if not info.probs_from_qk:
            out += [f"attn.{layer}" for layer in sorted(set(self.attn))]
        return out


def _item_row_shape(item: str, info: TeacherInfo, seq_len: int, qkv_width: dict[int, int]) -> tuple[int, ...]:
    kind, layer = item.split(".")
    if kind == "attn":
        return (info.num_heads, seq_len, seq_len)
    if kind in ("q", "k", "v"):
        return (seq_len, qkv_width.get(int(layer), info.hidden_size))
    return (seq_len, info.hidden_size)


def _qkv_widths(
    teacher: Any, ids: Tensor, mask: Tensor, items: Sequence[str], dtype: torch.dtype = torch.float32
) -> dict[int, int]:
    """Layer -> width of its cached q/k/v items, from one probe row (MobileBERT teachers use a bottleneck width
    there); empty when no such item is asked for."""
    qkv = [i for i in items if i[0] in "qkv"]
    if not qkv:
        return {}
    probe = run_teacher(teacher, ids[:1], mask[:1], qkv, dtype=dtype)
    return {int(k.split(".")[1]): v.shape[-1] for k, v in probe.items()}


def run_teacher(
    model: Any, ids: Tensor, mask: Tensor, items: Iterable[str], *, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """One teacher forward pass returning the named items (float32, on the CPU), e.g. hidden.3 [B, S, Ht],
    q.6 [B, S, Ht], attn.2 [B, heads, S, S]. It runs on the teacher's device (the inputs go there). dtype
    bfloat16: the forward runs under bf16 autocast (`kdnas.precision`)."""
    base = base_encoder(model)
    device = next(base.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    items = list(items)
    qkv_layers = sorted({int(i.split(".")[1]) for i in items if i[0] in "qkv"})
    need_hidden = any(i.startswith("hidden.") for i in items)
    need_attn = any(i.startswith("attn.") for i in items)
    with torch.no_grad(), autocast(device, dtype), capture_qkv(base, qkv_layers) as cap:
        out = base(
            input_ids=ids, attention_mask=mask, output_hidden_states=need_hidden, output_attentions=need_attn
        )
    res: dict[str, Tensor] = {}
    for item in items:
        kind, layer_s = item.split(".")
        layer = int(layer_s)
        if kind == "hidden":
            res[item] = out.hidden_states[layer].float().cpu()
        elif kind == "attn":
            if out.attentions is None or out.attentions[layer - 1] is None:
                raise DistillError(
                    "the teacher returned no attention probabilities; load it with attn_implementation='eager'"
                )
            res[item] = out.attentions[layer - 1].float().cpu()
        else:
            res[item] = cap[layer]["qkv".index(kind)].float().cpu()
    return res


def attention_probs_from_qk(q: Tensor, k: Tensor, mask: Tensor, heads: int) -> Tensor:
    """softmax(q_h k_h^T / sqrt(d_h) + padding mask) per head: q, k [B, S, D], mask [B, S] -> [B, heads, S, S]."""
    b, s, d = q.shape
    qh = q.float().view(b, s, heads, d // heads).transpose(1, 2)  # [B, A, S, dh]
    kh = k.float().view(b, s, heads, d // heads).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(d // heads)  # [B, A, S, S]
    scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


# --------------------------------------------------------------------------------------------------------------
# the cache


class CachedTeacher:
    """The teacher's outputs for one token block: cached rows read from memory-mapped fp16 arrays, the rest
    computed on the fly. `fetch(rows)` returns float32 tensors for those rows."""

    def __init__(
        self,
        model: Any,
        info: TeacherInfo,
        ids: Tensor,
        mask: Tensor,
        items: list[str],
        arrays: dict[str, np.ndarray],
        variances: dict[str, float],
        directory: Path | None,
        dtype: torch.dtype = torch.float32,
    ):
        self.model = model
        self.info = info
        self.input_ids = ids
        self.attention_mask = mask
        self.items = items
        self.arrays = arrays
        self.variances = variances
        """hidden.L -> mean over dims of the per-dim variance over real tokens (the hidden-MSE normaliser)."""
        self.directory = directory
        self.dtype = dtype
        """Compute dtype of the teacher forward that produced the cached rows (and computes the others)."""
        self.cached_rows = min((a.shape[0] for a in arrays.values()), default=0) if items else ids.shape[0]

    @property
    def num_rows(self) -> int:
        return int(self.input_ids.shape[0])

    def fetch(self, rows: Tensor) -> dict[str, Tensor]:
        """Teacher outputs for the given row indices ([B] LongTensor): {item: float32 [B, ...]}."""
        rows = rows.long()
        hit = rows < self.cached_rows
        out: dict[str, Tensor] = {}
        if bool(hit.all()):
            idx = rows.numpy()
            for item in self.items:
                out[item] = torch.from_numpy(np.asarray(self.arrays[item][idx])).float()
            return out
        live = run_teacher(
            self.model,
            self.input_ids[rows[~hit]],
            self.attention_mask[rows[~hit]],
            self.items,
            dtype=self.dtype,
        )
        idx = rows[hit].numpy()
        for item in self.items:
            t = torch.empty((len(rows), *live[item].shape[1:]), dtype=torch.float32)
            t[~hit] = live[item]
            if len(idx):
                t[hit] = torch.from_numpy(np.asarray(self.arrays[item][idx])).float()
            out[item] = t
        return out

    def size_mb(self) -> float:
        return sum(a.nbytes for a in self.arrays.values()) / 2**20


class TeacherCache:
    """An on-disk cache of teacher outputs under `directory`, keyed by (teacher weights, token block), one
    fp16 .npy file per item (hidden.L, q.L, ...), bounded by `budget_mb` per (teacher, block) entry.

    Items are added when a later candidate needs more (e.g. another layer); existing ones are reused. Outputs of
    a bf16-autocast teacher forward are a separate entry (`<entry>-bf16`): they differ from fp32 ones at the
    bf16 rounding level, and a run's results must not depend on which dtype filled the cache first.
    When the budget cannot hold every row, the first rows that fit are cached and the rest are computed on
    the fly at every step (logged as a warning).
    """

    def __init__(self, directory: str | Path, *, budget_mb: float = 2048):
        self.directory = Path(directory)
        self.budget_mb = budget_mb

    def entry_dir(
        self, info: TeacherInfo, ids: Tensor, mask: Tensor, dtype: torch.dtype = torch.float32
    ) -> Path:
        suffix = "" if dtype == torch.float32 else f"-{dtype_name(dtype)}"
        return self.directory / f"{info.fingerprint[:16]}-{block_hash(ids, mask)[:16]}{suffix}"

    def prepare(
        self,
        teacher: Any,
        data: Any,
        needs: TeacherNeeds,
        *,
        batch_size: int = 32,
        progress: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> CachedTeacher:
        """Make sure every item `needs` asks for is cached for `data` (computing the missing ones in one
        teacher pass over the block), and return the handle that serves them. dtype: the teacher forward's
        compute dtype (bfloat16: bf16 autocast); the arrays are fp16 on disk either way."""
        ids, mask = as_block(data)
        info = teacher_info(teacher)
        items = needs.items(info)
        entry = self.entry_dir(info, ids, mask, dtype)
        entry.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {}
        variances: dict[str, float] = {}
        missing = []
        for item in items:
            loaded = self._load(entry, item, ids.shape)
            if loaded is None:
                missing.append(item)
            else:
                arrays[item], var = loaded
                if var is not None:
                    variances[item] = var
        if missing:
            new_arrays, new_vars = self._build(
                teacher, info, ids, mask, entry, missing, batch_size, progress, dtype, keep=items
            )
            arrays.update(new_arrays)
            variances.update(new_vars)
        return CachedTeacher(teacher, info, ids, mask, items, arrays, variances, entry, dtype)

    def size_mb(self, teacher: Any, data: Any, needs: TeacherNeeds) -> float:
        """MB the items of `needs` take on disk for every row of `data` (fp16), as `prepare` stores them."""
        ids, mask = as_block(data)
        info = teacher_info(teacher)
        items = needs.items(info)
        widths = _qkv_widths(teacher, ids, mask, items)
        return (
            ids.shape[0]
            * sum(2 * math.prod(_item_row_shape(i, info, ids.shape[1], widths)) for i in items)
            / 2**20
        )

    # ------------------------------------------------------------------------------------------------------
    def _load(self, entry: Path, item: str, shape: torch.Size) -> tuple[np.ndarray, float | None] | None:
        npy, meta = entry / f"{item}.npy", entry / f"{item}.json"
        if not (npy.is_file() and meta.is_file()):
            return None
        try:
            info = json.loads(meta.read_text())
            arr = np.load(npy, mmap_mode="r")
        except (OSError, ValueError) as e:
            log.warning("teacher cache %s: unreadable item %s (%s); recomputing it", entry, item, e)
            return None
        if arr.shape[0] != info.get("rows") or arr.shape[0] > shape[0]:
            return None
        return arr, info.get("variance")

    def _make_room(self, entry: Path, need: int, *, keep: set[str]) -> int:
        """Bytes the entry's items use once room is made for `need` more: items nobody asks for now (another
        student's layers, cached by an earlier distillation of the run) are dropped, oldest first, until the
        new ones fit the budget or none is left. A later run that needs them again recomputes them. Without
        this, the second student of a run whose first filled the budget got no rows cached at all (the base
        run of 2026-12-06: 1 of 13,440)."""
        files = sorted(entry.glob("*.npy"), key=lambda f: f.stat().st_mtime)
        used = sum(f.stat().st_size for f in files)
        budget = self.budget_mb * 2**20
        dropped: list[str] = []
        for f in files:
            if used + need <= budget:
                break
            if f.stem in keep:
                continue
            size = f.stat().st_size
            f.unlink(missing_ok=True)  # a reader that mapped it keeps its mapping
            (entry / f"{f.stem}.json").unlink(missing_ok=True)
            used -= size
            dropped.append(f.stem)
        if dropped:
            log.info(
                "teacher cache %s: dropped %s (not needed now) to make room", entry.name, ", ".join(dropped)
            )
        return used

    def _build(
        self,
        teacher: Any,
        info: TeacherInfo,
        ids: Tensor,
        mask: Tensor,
        entry: Path,
        items: list[str],
        batch_size: int,
        progress: bool,
        dtype: torch.dtype = torch.float32,
        *,
        keep: Sequence[str],
    ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        n, s = ids.shape
        widths = _qkv_widths(teacher, ids, mask, items, dtype)
        row_bytes = {i: 2 * math.prod(_item_row_shape(i, info, s, widths)) for i in items}
        used = self._make_room(entry, n * sum(row_bytes.values()), keep=set(keep))
        free = self.budget_mb * 2**20 - used
        rows = int(max(0, min(n, free // max(1, sum(row_bytes.values())))))
        if rows < n:
            need_mb = (used + n * sum(row_bytes.values())) / 2**20
            log.warning(
                "teacher cache: %d of %d rows fit in teacher_cache_mb=%d (all would need %.0f MB); the other rows "
                "run the teacher at every step (raise distill.teacher_cache_mb to cache them)",
                rows,
                n,
                self.budget_mb,
                need_mb,
            )
        stat_rows = max(rows, min(n, _STATS_MIN_ROWS))
        tmp = {i: entry / f"{i}.npy.tmp{os.getpid()}" for i in items}
        mm = {
            i: np.lib.format.open_memmap(
                tmp[i], mode="w+", dtype=np.float16, shape=(rows, *_item_row_shape(i, info, s, widths))
            )
            for i in items
        }
        hidden = [i for i in items if i.startswith("hidden.")]
        sums = {i: torch.zeros(info.hidden_size, dtype=torch.float64) for i in hidden}
        sqs = {i: torch.zeros(info.hidden_size, dtype=torch.float64) for i in hidden}
        count = 0.0
        from tqdm.auto import tqdm

        bar = tqdm(total=stat_rows, desc="teacher cache", unit="row", disable=not progress, leave=False)
        for start in range(0, stat_rows, batch_size):
            stop = min(stat_rows, start + batch_size)
            out = run_teacher(teacher, ids[start:stop], mask[start:stop], items, dtype=dtype)
            m = mask[start:stop].bool()
            count += float(m.sum())
            for i in hidden:
                x = out[i][m].double()  # [tokens, H]
                sums[i] += x.sum(0)
                sqs[i] += x.pow(2).sum(0)
            if start < rows:
                hi = min(stop, rows)
                for i in items:
                    mm[i][start:hi] = out[i][: hi - start].to(torch.float16).numpy()
            bar.update(stop - start)
        bar.close()
        arrays: dict[str, np.ndarray] = {}
        variances: dict[str, float] = {}
        for i in items:
            mm[i].flush()
            del mm[i]
            if i in sums:
                mean = sums[i] / count
                variances[i] = float((sqs[i] / count - mean.pow(2)).clamp_min(0).mean())
            os.replace(tmp[i], entry / f"{i}.npy")
            meta = {"rows": rows, "variance": variances.get(i), "teacher": info.fingerprint,
                    "dtype": dtype_name(dtype)}  # fmt: skip
            meta_tmp = entry / f"{i}.json.tmp{os.getpid()}"
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, entry / f"{i}.json")
            arrays[i] = np.load(entry / f"{i}.npy", mmap_mode="r")
        return arrays, variances


def ephemeral_teacher(teacher: Any, data: Any, needs: TeacherNeeds, *, batch_size: int = 32) -> CachedTeacher:
    """No cache: every fetch runs the teacher (variances from the first rows). Used for small held-out sets."""
    ids, mask = as_block(data)
    info = teacher_info(teacher)
    items = needs.items(info)
    hidden = [i for i in items if i.startswith("hidden.")]
    variances: dict[str, float] = {}
    if hidden:
        rows = min(len(ids), _STATS_MIN_ROWS)
        acc: dict[str, list[Tensor]] = {i: [] for i in hidden}
        for start in range(0, rows, batch_size):
            sl = slice(start, min(rows, start + batch_size))
            out = run_teacher(teacher, ids[sl], mask[sl], hidden)
            for i in hidden:
                acc[i].append(out[i][mask[sl].bool()].double())
        for i in hidden:
            x = torch.cat(acc[i])
            variances[i] = float(x.var(0, unbiased=False).mean())
    handle = CachedTeacher(teacher, info, ids, mask, items, {}, variances, None)
    handle.cached_rows = 0
    return handle
