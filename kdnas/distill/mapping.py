"""Which teacher layer each student layer learns from, and hooks that capture the attention q/k/v projections.

Layer numbers are 1-based over transformer layers, the index into HF `hidden_states` (0 is the embeddings).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from kdnas.errors import DistillError

if TYPE_CHECKING:
    from torch import Tensor, nn

MAPPINGS = ("uniform", "last", "uniform+last")

# (q, k, v) Linear names inside one transformer layer, per family; tried in order.
_QKV_NAMES: tuple[tuple[str, str, str], ...] = (
    (
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
    ),  # bert, roberta, xlm-r, electra, mobilebert
    ("attention.attn.q", "attention.attn.k", "attention.attn.v"),  # mpnet
    ("attention.q_lin", "attention.k_lin", "attention.v_lin"),  # distilbert
)


def layer_map(student_layers: int, teacher_layers: int, mapping: str) -> list[tuple[int, ...]]:
    """For student layer i = 1..Ls, the teacher layers it is matched to.

    uniform: floor(i * Lt / Ls); last: Lt - Ls + i; uniform+last (KD-NAS): both, in that order (their states
    are concatenated as the target). Raises DistillError when a mapping asks for a layer the teacher lacks.
    """
    if mapping not in MAPPINGS:
        raise DistillError(f"unknown layer mapping {mapping!r}; use one of {', '.join(MAPPINGS)}")
    if student_layers < 1 or teacher_layers < 1:
        raise DistillError(f"need at least one layer (student {student_layers}, teacher {teacher_layers})")
    out: list[tuple[int, ...]] = []
    for i in range(1, student_layers + 1):
        uniform = i * teacher_layers // student_layers
        last = teacher_layers - student_layers + i
        layers = {"uniform": (uniform,), "last": (last,), "uniform+last": (uniform, last)}[mapping]
        bad = [t for t in layers if not 1 <= t <= teacher_layers]
        if bad:
            raise DistillError(
                f"mapping {mapping!r} matches student layer {i} to teacher layer {bad[0]}, which does not exist: "
                f"the student has {student_layers} layers and the teacher only {teacher_layers}; use a student "
                f"with at most {teacher_layers} layers"
            )
        out.append(layers)
    return out


def encoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The list of transformer layers of an HF encoder (base model or a model with a head)."""
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "transformer.layer"):
        mod: object = base
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if mod is not None:
            return mod  # type: ignore[return-value]
    raise DistillError(
        f"cannot find the transformer layers of a {type(model).__name__} (looked for encoder.layer and "
        "transformer.layer); use a supported encoder family"
    )


def qkv_modules(model: nn.Module, layer: int) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The query, key and value Linear modules of 1-based transformer layer `layer`."""
    blocks = encoder_layers(model)
    if not 1 <= layer <= len(blocks):
        raise DistillError(f"layer {layer} does not exist (the model has {len(blocks)} layers)")
    block = blocks[layer - 1]
    for names in _QKV_NAMES:
        try:
            return tuple(block.get_submodule(n) for n in names)  # type: ignore[return-value]
        except AttributeError:
            continue
    raise DistillError(
        f"cannot find the query/key/value projections in {type(block).__name__}; the relation loss supports "
        "bert, roberta, xlm-roberta, electra, mpnet, distilbert and mobilebert layers"
    )


@contextmanager
def capture_qkv(model: nn.Module, layers: Sequence[int]) -> Iterator[dict[int, list[Tensor]]]:
    """Forward hooks that record the q, k, v projection outputs ([B, S, D] each) of `layers`.

    Yields {layer: [q, k, v]}, filled by the next forward pass; the hooks are removed on exit so the model
    is left untouched (hooks would otherwise follow it into save_pretrained/ONNX export).
    """
    captured: dict[int, list[Tensor]] = {}
    handles = []
    try:
        for layer in layers:
            captured[layer] = [None, None, None]  # type: ignore[list-item]
            for role, mod in enumerate(qkv_modules(model, layer)):

                def hook(
                    _m: nn.Module, _inp: object, out: Tensor, _layer: int = layer, _role: int = role
                ) -> None:
                    captured[_layer][_role] = out

                handles.append(mod.register_forward_hook(hook))
        yield captured
    finally:
        for h in handles:
            h.remove()
