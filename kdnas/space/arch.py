"""A student architecture: the few numbers that define it, a stable id, and parsing from text.

`Arch` is family-neutral; `kdnas.models.student` turns it into a config of the teacher's own HF family.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from kdnas.errors import ArchError

ACTIVATIONS = ("gelu", "gelu_new", "relu", "silu", "gelu_fast")

# Short keys accepted on the command line: L=4,H=256,A=4,F=1024,act=gelu,V=30522
_SHORT = {
    "l": "num_layers",
    "layers": "num_layers",
    "num_layers": "num_layers",
    "h": "hidden_size",
    "hidden": "hidden_size",
    "hidden_size": "hidden_size",
    "a": "num_heads",
    "heads": "num_heads",
    "num_heads": "num_heads",
    "f": "ffn_size",
    "ffn": "ffn_size",
    "ffn_size": "ffn_size",
    "act": "activation",
    "activation": "activation",
    "v": "vocab_size",
    "vocab": "vocab_size",
    "vocab_size": "vocab_size",
    "family": "family",
    "b": "bottleneck_size",
    "bottleneck": "bottleneck_size",
    "bottleneck_size": "bottleneck_size",
    "s": "num_ffn_stacked",
    "stacked": "num_ffn_stacked",
    "num_ffn_stacked": "num_ffn_stacked",
}

FAMILIES = ("teacher", "mobilebert")


@dataclass(frozen=True, order=True)
class Arch:
    """A transformer encoder shape. Sizes are per layer; all layers are identical."""

    num_layers: int
    """Number of transformer layers (>= 1)."""
    hidden_size: int
    """Model width; must be divisible by `num_heads`. For `mobilebert` this is the inter-block (trunk) width."""
    num_heads: int
    """Attention heads per layer."""
    ffn_size: int
    """Inner size of the feed-forward block."""
    activation: str = "gelu"
    """FFN activation (one of ACTIVATIONS)."""
    vocab_size: int | None = None
    """Rows of the embedding table; None keeps the teacher's vocabulary (set by vocabulary trimming)."""
    family: str = "teacher"
    """`teacher`: same HF family as the teacher. `mobilebert`: AutoDistill's MobileBERT-style bottleneck space."""
    bottleneck_size: int | None = None
    """`mobilebert` only: the intra-block (bottleneck) width the attention and FFNs run at."""
    num_ffn_stacked: int | None = None
    """`mobilebert` only: feed-forward networks stacked per layer."""

    @property
    def head_dim(self) -> int:
        width = (
            self.bottleneck_size if self.family == "mobilebert" and self.bottleneck_size else self.hidden_size
        )
        return width // self.num_heads

    @property
    def arch_id(self) -> str:
        """Stable, human-readable id, e.g. `L4-H256-A4-F1024-gelu` (used as cache and table key)."""
        parts = [f"L{self.num_layers}", f"H{self.hidden_size}", f"A{self.num_heads}", f"F{self.ffn_size}"]
        if self.family == "mobilebert":
            parts = ["mb", *parts[:2], f"B{self.bottleneck_size}", f"S{self.num_ffn_stacked}", *parts[2:]]
        parts.append(self.activation)
        if self.vocab_size is not None:
            parts.append(f"V{self.vocab_size}")
        return "-".join(parts)

    def problems(self) -> list[str]:
        """Every reason this arch is invalid, empty if it is fine."""
        out: list[str] = []
        for name in ("num_layers", "hidden_size", "num_heads", "ffn_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                out.append(f"{name}: {v!r} must be a positive integer")
        if out:
            return out
        width = self.hidden_size
        if self.family == "mobilebert":
            if not self.bottleneck_size or self.bottleneck_size < 1:
                out.append("bottleneck_size: a mobilebert arch needs a positive bottleneck_size")
            else:
                width = self.bottleneck_size
            if not self.num_ffn_stacked or self.num_ffn_stacked < 1:
                out.append("num_ffn_stacked: a mobilebert arch needs num_ffn_stacked >= 1")
        elif self.family != "teacher":
            out.append(f"family: {self.family!r} is not one of {', '.join(FAMILIES)}")
        if width % self.num_heads:
            what = "bottleneck_size" if width != self.hidden_size else "hidden_size"
            out.append(f"{what}: {width} is not divisible by num_heads {self.num_heads}")
        if self.activation not in ACTIVATIONS:
            out.append(f"activation: {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.vocab_size is not None and self.vocab_size < 8:
            out.append(f"vocab_size: {self.vocab_size} is too small")
        return out

    def validate(self) -> Arch:
        """Return self, or raise ArchError listing every problem."""
        probs = self.problems()
        if probs:
            raise ArchError(f"invalid arch {self.describe()}: " + "; ".join(probs))
        return self

    def describe(self) -> str:
        s = f"L={self.num_layers},H={self.hidden_size},A={self.num_heads},F={self.ffn_size}"
        if self.family == "mobilebert":
            s += f",B={self.bottleneck_size},S={self.num_ffn_stacked},family=mobilebert"
        if self.activation != "gelu":
            s += f",act={self.activation}"
        if self.vocab_size is not None:
            s += f",V={self.vocab_size}"
        return s

    def replace(self, **changes: Any) -> Arch:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Arch:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ArchError(f"unknown arch field(s) {unknown}; known: {sorted(names)}")
        missing = [n for n in ("num_layers", "hidden_size", "num_heads", "ffn_size") if n not in d]
        if missing:
            raise ArchError(f"arch is missing {missing}")
        return cls(**d).validate()

    @classmethod
    def parse(cls, text: str) -> Arch:
        """Parse `L=4,H=256,A=4,F=1024[,act=gelu][,V=20000]` or an arch_id like `L4-H256-A4-F1024-gelu`."""
        text = text.strip()
        if "=" not in text:
            return cls._parse_id(text)
        fields: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            if "=" not in part:
                raise ArchError(
                    f"cannot parse arch {text!r}: {part!r} is not KEY=VALUE (e.g. L=4,H=256,A=4,F=1024)"
                )
            k, v = (s.strip() for s in part.split("=", 1))
            name = _SHORT.get(k.lower())
            if name is None:
                raise ArchError(f"cannot parse arch {text!r}: unknown key {k!r}; use L, H, A, F, act, V")
            if name in ("activation", "family"):
                fields[name] = v
            else:
                try:
                    fields[name] = int(v)
                except ValueError:
                    raise ArchError(f"cannot parse arch {text!r}: {k}={v!r} is not an integer") from None
        return cls.from_dict(fields)

    @classmethod
    def _parse_id(cls, text: str) -> Arch:
        mb = text.startswith("mb-")
        body = text[3:] if mb else text
        fields: dict[str, Any] = {"family": "mobilebert"} if mb else {}
        keys = {
            "L": "num_layers",
            "H": "hidden_size",
            "A": "num_heads",
            "F": "ffn_size",
            "V": "vocab_size",
            "B": "bottleneck_size",
            "S": "num_ffn_stacked",
        }
        for part in body.split("-"):
            m = re.fullmatch(r"([LHAFVBS])(\d+)", part)
            if m:
                fields[keys[m.group(1)]] = int(m.group(2))
            elif part in ACTIVATIONS:
                fields["activation"] = part
            else:
                raise ArchError(
                    f"cannot parse arch {text!r}: use L=4,H=256,A=4,F=1024 or an id like L4-H256-A4-F1024-gelu"
                )
        return cls.from_dict(fields)
