"""Encoders to evaluate: a teacher (zoo name, HF dir, hub id), an exported student dir, or a model in memory.

`load_encoder` returns the base encoder with eager attention and its tokenizer, or a clear ModelError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kdnas._imports import has_module
from kdnas.errors import KdnasError, ModelError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Encoder:
    """A base encoder (no task head) and the tokenizer that goes with it."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    name: str
    path: str | None = None

    @property
    def params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_encoder(ref: str | Path, *, cache_dir: str | Path | None = None, name: str | None = None) -> Encoder:
    """Load `ref` (zoo teacher name, local HF model dir such as an exported student, or hub id)."""
    s = str(ref)
    label = name or (Path(s).name if Path(s).exists() else s)
    from kdnas.models.static import is_static_dir, load_static

    if is_static_dir(s):  # a static embedding table (kdnas.models.static): an encoder without context
        static, tok, _ = load_static(s)
        return Encoder(model=static, tokenizer=tok, name=label, path=s)  # type: ignore[arg-type]
    if has_module("kdnas.models.teacher"):
        from kdnas.models.teacher import load_teacher

        try:
            t = load_teacher(s, attn_implementation="eager", cache_dir=cache_dir)
        except KdnasError:
            raise
        except (OSError, ValueError, KeyError) as e:
            raise ModelError(
                f"{s}: cannot load as an encoder ({e}); give an HF encoder dir or a zoo name"
            ) from e
        return Encoder(model=t.model, tokenizer=t.tokenizer, name=label, path=str(getattr(t, "path", s)))
    return _load_dir(Path(s), label)


def _load_dir(path: Path, label: str) -> Encoder:
    """Fallback when `kdnas.models.teacher` is not available: a local HF encoder dir."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from kdnas.models.student import SUPPORTED_FAMILIES

    if not path.is_dir():
        raise ModelError(f"{path}: not a model dir; give an exported student dir or a teacher dir")
    if not (path / "config.json").is_file():
        raise ModelError(
            f"{path}: no config.json, so not an HF model dir (export a student with kdnas export)"
        )
    try:
        cfg = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"{path}: unreadable config.json ({e})") from e
    if cfg.model_type not in SUPPORTED_FAMILIES:
        raise ModelError(
            f"{path}: model type {cfg.model_type!r} is not a text encoder kdnas can evaluate; "
            f"supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(
            f"{path}: no usable tokenizer in the dir ({e}); save the tokenizer next to the model"
        ) from e
    try:
        model = AutoModel.from_pretrained(str(path), attn_implementation="eager")
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: cannot load the weights ({e})") from e
    return Encoder(model=model.eval(), tokenizer=tok, name=label, path=str(path))
