"""What a worker measures, as plain data: a student arch of a teacher, a full HF config, a model dir, or a static
(Model2Vec-format) embedding model dir.

A `ModelSpec` travels as JSON to the worker, builds the model there, and gives the cache its model key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdnas.errors import ArchError, LatencyError, ModelError
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

from kdnas.models.student import CONFIG_NOISE_KEYS as _NOISE


def config_to_dict(config: PretrainedConfig) -> dict[str, Any]:
    d = config.to_dict()
    for k in _NOISE:
        d.pop(k, None)
    return d


def config_from_dict(d: dict[str, Any]) -> PretrainedConfig:
    from transformers import AutoConfig

    d = dict(d)
    model_type = d.pop("model_type", None)
    if not model_type:
        raise ModelError("a model config needs a model_type (e.g. bert)")
    return AutoConfig.for_model(model_type, **d)


def max_positions(config: PretrainedConfig) -> int | None:
    """Longest sequence the model's position embeddings take (RoBERTa-style models lose pad_token_id + 1)."""
    n = getattr(config, "max_position_embeddings", None)
    if n is None:
        return None
    if config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):
        n -= (getattr(config, "pad_token_id", 1) or 1) + 1
    return int(n)


def family_key(config: PretrainedConfig) -> str:
    """What of the teacher changes a student's latency besides its arch: family, vocabulary, positions."""
    return f"{config.model_type}-V{config.vocab_size}-P{getattr(config, 'max_position_embeddings', 0)}"


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ModelSpec:
    """A model to measure. Build it with `build()` inside the worker (random weights except for `dir`)."""

    kind: Literal["arch", "config", "dir", "static"]
    """arch: a student of `config` (the teacher's); config: exactly `config`; dir: a saved model at `path`;
    static: a static embedding table at `path` (`kdnas.models.static`; torch backends only)."""
    config: str
    """The teacher's (arch) or the model's (config, dir) HF config as canonical JSON."""
    arch: str | None = None
    """kind arch: the Arch as JSON."""
    path: str | None = None
    """kind dir: the model dir."""

    # construction ------------------------------------------------------------------------------------------
    @classmethod
    def for_arch(cls, teacher_config: PretrainedConfig, arch: Arch) -> ModelSpec:
        from kdnas.models.student import student_config

        arch.validate()
        student_config(teacher_config, arch)  # raises ArchError/ModelError now, before any worker starts
        return cls(
            "arch",
            json.dumps(config_to_dict(teacher_config), sort_keys=True),
            arch=json.dumps(arch.to_dict(), sort_keys=True),
        )

    @classmethod
    def for_config(cls, config: PretrainedConfig) -> ModelSpec:
        return cls("config", json.dumps(config_to_dict(config), sort_keys=True))

    @classmethod
    def for_dir(cls, path: str | Path) -> ModelSpec:
        from transformers import AutoConfig

        from kdnas.models.static import is_static_dir, static_config

        p = Path(path).expanduser().resolve()
        if is_static_dir(p):
            return cls("static", json.dumps(static_config(p), sort_keys=True), path=str(p))
        if not (p / "config.json").is_file():
            raise LatencyError(
                f"{p}: not a model dir (no config.json); give a dir written by save_pretrained"
            )
        cfg = AutoConfig.from_pretrained(str(p))
        return cls("dir", json.dumps(config_to_dict(cfg), sort_keys=True), path=str(p))

    # properties --------------------------------------------------------------------------------------------
    def hf_config(self) -> PretrainedConfig:
        """The config of the model that gets built (the student's for kind arch)."""
        if self.kind == "static":
            from kdnas.models.static import StaticConfig

            return StaticConfig(**json.loads(self.config))  # type: ignore[return-value]
        cfg = config_from_dict(json.loads(self.config))
        if self.kind == "arch":
            from kdnas.models.student import student_config

            return student_config(cfg, self.get_arch())
        return cfg

    def get_arch(self) -> Arch:
        if self.arch is None:
            from kdnas.models.student import arch_of

            return arch_of(config_from_dict(json.loads(self.config)))
        return Arch.from_dict(json.loads(self.arch))

    @property
    def key(self) -> str:
        """Cache key of the model: arch id + teacher family/vocab/positions, or a hash of config (+ files)."""
        cfg = json.loads(self.config)
        if self.kind == "static":
            return f"static-{_short_hash([cfg, self._files()])}@V{cfg.get('vocab_size')}"
        fam = f"{cfg.get('model_type')}-V{cfg.get('vocab_size')}-P{cfg.get('max_position_embeddings', 0)}"
        if self.kind == "arch":
            return f"{Arch.from_dict(json.loads(self.arch or '{}')).arch_id}@{fam}"
        if self.kind == "config":
            return f"config-{_short_hash(cfg)}@{fam}"
        return f"dir-{_short_hash([cfg, self._files()])}@{fam}"

    def _files(self) -> list[tuple[str, int, int]]:
        return sorted(
            (f.name, f.stat().st_size, int(f.stat().st_mtime))
            for f in Path(self.path or ".").iterdir()
            if f.is_file()
        )

    @property
    def label(self) -> str:
        if self.kind == "arch":
            return self.get_arch().arch_id
        if self.kind in ("dir", "static"):
            return Path(self.path or "").name
        return f"{json.loads(self.config).get('model_type')}:{self.get_arch().arch_id}"

    # JSON ---------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "config": self.config, "arch": self.arch, "path": self.path}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(d["kind"], d["config"], arch=d.get("arch"), path=d.get("path"))

    # building (in the worker) -------------------------------------------------------------------------------
    def build(self, attn_implementation: str = "eager") -> PreTrainedModel:
        """The model in eval mode: random weights (arch, config) or the saved ones (dir)."""
        from transformers import AutoModel

        if self.kind == "static":
            from kdnas.models.static import load_static

            return load_static(self.path or "")[0].eval()  # type: ignore[return-value]
        if self.kind == "arch":
            from kdnas.models.student import build_student

            model = build_student(
                config_from_dict(json.loads(self.config)),
                self.get_arch(),
                attn_implementation=attn_implementation,
                seed=0,
            )
        elif self.kind == "config":
            try:
                model = AutoModel.from_config(self.hf_config(), attn_implementation=attn_implementation)
            except (ValueError, RuntimeError) as e:
                raise ArchError(f"cannot build a model from this config: {e}") from e
        else:
            try:
                model = AutoModel.from_pretrained(str(self.path), attn_implementation=attn_implementation)
            except (OSError, ValueError) as e:
                raise ModelError(f"cannot load the model in {self.path}: {e}") from e
        return model.eval()
