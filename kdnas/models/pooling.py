"""Sentence-embedding pooling as a sentence-transformers folder describes it, read and written.

A sentence-embedding teacher (all-MiniLM-L6-v2, all-mpnet-base-v2, multilingual-e5-small) is a transformer plus
modules after it: `1_Pooling` (mean, CLS or max over the tokens), optionally `2_Dense` and `Normalize`. kdnas
reads that chain from the teacher's `modules.json` so the sentence losses match the embedding exactly as the
teacher produces it, and writes the same chain next to every exported student (with a `Dense` module carrying the
learned projection when the student is narrower), so `SentenceTransformer(student_dir)` yields vectors in the
teacher's space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import ModelError

if TYPE_CHECKING:
    from torch import Tensor

MODES = ("mean", "cls", "max")
_ST = "sentence_transformers.models."


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector: `mode` over the non-padding tokens, then L2 normalisation
    when `normalize`. `dense` names the teacher's Dense module dir when it has one (not applied by kdnas)."""

    mode: str = "mean"
    normalize: bool = False
    dense: str | None = None
    source: str = ""
    max_seq_length: int | None = None
    prompts: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ModelError(f"pooling mode {self.mode!r} is not one of {', '.join(MODES)}")

    def describe(self) -> str:
        return f"{self.mode} pooling" + (", L2-normalised" if self.normalize else "")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ModelError(
            f"{path}: cannot read this sentence-transformers config ({e}); fix or remove it"
        ) from e


def read_pooling(model_dir: str | Path) -> Pooling | None:
    """The pooling chain of a sentence-transformers folder; None when `model_dir` has no modules.json."""
    d = Path(model_dir)
    modules_file = d / "modules.json"
    if not modules_file.is_file():
        return None
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelError(f"{modules_file}: expected a list of modules; fix or remove it")
    mode, normalize, dense = "mean", False, None
    for m in modules:
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind == "Pooling":
            cfg_file = d / m.get("path", "") / "config.json"
            cfg = _read_json(cfg_file) if cfg_file.is_file() else {}
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
            elif cfg.get("pooling_mode") in MODES:
                mode = cfg["pooling_mode"]
            elif cfg.get("pooling_mode_mean_sqrt_len_tokens") or cfg.get("pooling_mode_weightedmean_tokens"):
                raise ModelError(
                    f"{cfg_file}: pooling {cfg} is not supported by kdnas (mean, cls, max); set distill.pooling"
                )
        elif kind == "Normalize":
            normalize = True
        elif kind == "Dense":
            dense = m.get("path", "") or "Dense"
    max_len = None
    sb = d / "sentence_bert_config.json"
    if sb.is_file():
        max_len = _read_json(sb).get("max_seq_length")
    prompts: dict[str, str] = {}
    cst = d / "config_sentence_transformers.json"
    if cst.is_file():
        prompts = dict(_read_json(cst).get("prompts") or {})
    return Pooling(
        mode=mode, normalize=normalize, dense=dense, source=str(modules_file),
        max_seq_length=int(max_len) if max_len else None, prompts=prompts,
    )  # fmt: skip


def pool(hidden: Tensor, mask: Tensor, pooling: Pooling) -> Tensor:
    """Sentence vectors [B, H] from token states `hidden` [B, S, H] and attention `mask` [B, S]."""
    import torch

    m = mask.to(hidden.dtype).unsqueeze(-1)  # [B, S, 1]
    if pooling.mode == "cls":
        out = hidden[:, 0]
    elif pooling.mode == "max":
        out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    else:
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(out, dim=-1) if pooling.normalize else out


def write_st_config(
    out_dir: str | Path,
    pooling: Pooling,
    hidden_size: int,
    *,
    dense: tuple[Tensor, Tensor] | None = None,
    max_seq_length: int | None = None,
) -> None:
    """Make `out_dir` (an HF model dir) a sentence-transformers folder: Transformer, Pooling, optional Dense
    (weight [out, in], bias [out]: the projection into the teacher's space) and Normalize when the pooling has it."""
    d = Path(out_dir)
    modules: list[dict[str, Any]] = [{"idx": 0, "name": "0", "path": "", "type": _ST + "Transformer"}]
    (d / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (d / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden_size,
                "pooling_mode_cls_token": pooling.mode == "cls",
                "pooling_mode_mean_tokens": pooling.mode == "mean",
                "pooling_mode_max_tokens": pooling.mode == "max",
                "pooling_mode_mean_sqrt_len_tokens": False,
            },
            indent=2,
        )
    )
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": _ST + "Pooling"})
    if dense is not None:
        from safetensors.torch import save_file

        weight, bias = dense
        out_f, in_f = int(weight.shape[0]), int(weight.shape[1])
        if in_f != hidden_size:
            raise ModelError(
                f"Dense projection takes {in_f} features but the student's width is {hidden_size}"
            )
        dd = d / "2_Dense"
        dd.mkdir(exist_ok=True)
        (dd / "config.json").write_text(
            json.dumps(
                {
                    "in_features": in_f,
                    "out_features": out_f,
                    "bias": True,
                    "activation_function": "torch.nn.modules.linear.Identity",
                },
                indent=2,
            )
        )
        save_file(
            {
                "linear.weight": weight.detach().float().contiguous(),
                "linear.bias": bias.detach().float().contiguous(),
            },
            str(dd / "model.safetensors"),
        )
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": _ST + "Dense"})
    if pooling.normalize:
        n = len(modules)
        (d / f"{n}_Normalize").mkdir(exist_ok=True)
        modules.append({"idx": n, "name": str(n), "path": f"{n}_Normalize", "type": _ST + "Normalize"})
    (d / "modules.json").write_text(json.dumps(modules, indent=2))
    sb: dict[str, Any] = {"do_lower_case": False}
    if max_seq_length:
        sb["max_seq_length"] = int(max_seq_length)
    (d / "sentence_bert_config.json").write_text(json.dumps(sb, indent=2))
    cst: dict[str, Any] = {"__version__": {"kdnas": _version()}, "prompts": dict(pooling.prompts)}
    cst["similarity_fn_name"] = "cosine"
    (d / "config_sentence_transformers.json").write_text(json.dumps(cst, indent=2))


def load_dense_weights(model_dir: str | Path) -> tuple[Tensor, Tensor] | None:
    """The (weight, bias) of the Dense module a kdnas export carries; None when it has none."""
    d = Path(model_dir)
    modules_file = d / "modules.json"
    if not modules_file.is_file():
        return None
    for m in _read_json(modules_file):
        if str(m.get("type", "")).endswith("Dense"):
            f = d / m.get("path", "") / "model.safetensors"
            if not f.is_file():
                raise ModelError(f"{f}: the Dense module's weights are missing; re-export the student")
            from safetensors.torch import load_file

            sd = load_file(str(f))
            return sd["linear.weight"], sd["linear.bias"]
    return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("kdnas")
    except Exception:
        return "dev"
