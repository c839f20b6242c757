"""Hand-picked baselines the search is judged against: the teacher cut to every other layer (DistilBERT-style
init, fine-tuned directly) and the published small shapes (TinyBERT-4L-312, MiniLM-L3-H384, BERT-mini, BERT-small),
distilled on the same budget as the searched students.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from kdnas.errors import ModelError
from kdnas.models.student import arch_of, build_student
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

EVERY_OTHER_LAYER = "every-other-layer"
TINYBERT = "tinybert-4L-312H"
TINYBERT_ARCH = {"num_layers": 4, "hidden_size": 312, "num_heads": 12, "ffn_size": 1200}
MINILM_L3 = "minilm-L3-H384"
BERT_MINI = "bert-mini-L4-H256"
BERT_SMALL = "bert-small-L4-H512"
SHAPES: dict[str, dict[str, int]] = {
    TINYBERT: TINYBERT_ARCH,
    MINILM_L3: {"num_layers": 3, "hidden_size": 384, "num_heads": 12, "ffn_size": 1536},
    BERT_MINI: {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "ffn_size": 1024},
    BERT_SMALL: {"num_layers": 4, "hidden_size": 512, "num_heads": 8, "ffn_size": 2048},
}
"""The published hand-made shapes (Jiao et al. 2020; Wang et al. 2020; Turc et al. 2019), by baseline name."""
_LAYER_KEY = re.compile(r"^(.*?\blayer\.)(\d+)(\..*)$")


def every_other_layers(num_layers: int) -> list[int]:
    """Teacher layers kept by the DistilBERT recipe: 0, 2, 4, ..."""
    return list(range(0, num_layers, 2))


def baseline_archs(teacher_config: PretrainedConfig, *, family: bool = False) -> dict[str, Arch]:
    """Name -> Arch of each baseline for this teacher (same HF family and activation as the teacher).

    family=False: every-other-layer and the TinyBERT shape; True: every shape of `SHAPES` as well. A shape
    wider or deeper than the teacher inherits what the teacher has and starts the rest at random. A shape that is
    the every-other-layer arch itself (MiniLM-L3-H384 of a 6-layer, 384-wide teacher such as minilm-l6) is left
    out: built, distilled and fine-tuned from the same init it would be the same model, scored twice. So is a
    shape deeper than the teacher (TinyBERT's 4 layers of a 2-layer teacher): the layer-wise losses have no
    teacher layer to match its extra layers to.
    """
    t = arch_of(teacher_config)
    out = {EVERY_OTHER_LAYER: t.replace(num_layers=len(every_other_layers(t.num_layers)))}
    for name, shape in SHAPES.items():
        if family or name == TINYBERT:
            arch = Arch(**shape, activation=t.activation)  # type: ignore[arg-type]
            if arch.arch_id != out[EVERY_OTHER_LAYER].arch_id and arch.num_layers <= t.num_layers:
                out[name] = arch
    return out


def truncate_layers(
    teacher_model: PreTrainedModel, layers: list[int] | None = None, *, attn_implementation: str = "eager"
) -> PreTrainedModel:
    """A copy of the teacher keeping only `layers` (default every other one: 0, 2, 4, ...), weights copied.

    Embeddings (and the pooler, if any) are copied as they are; student layer i is teacher layer `layers[i]`.
    """
    cfg = teacher_model.config
    t = arch_of(cfg)
    keep = every_other_layers(t.num_layers) if layers is None else list(layers)
    if not keep or any(not 0 <= i < t.num_layers for i in keep) or len(set(keep)) != len(keep):
        raise ModelError(f"layers {keep}: give distinct teacher layer indices in 0..{t.num_layers - 1}")
    student = build_student(cfg, t.replace(num_layers=len(keep)), attn_implementation=attn_implementation)
    src = teacher_model.state_dict()
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    for k, v in src.items():
        m = _LAYER_KEY.match(k)
        if m is None:
            state[k] = v.clone()
        elif int(m.group(2)) in new_index:
            state[f"{m.group(1)}{new_index[int(m.group(2))]}{m.group(3)}"] = v.clone()
    target = student.state_dict()
    missing = sorted(set(target) - set(state))
    extra = sorted(set(state) - set(target))
    if missing or extra:
        raise ModelError(
            f"cannot map the teacher's layers onto a {len(keep)}-layer copy ({type(teacher_model).__name__}): "
            f"missing {missing[:3]}, unexpected {extra[:3]}"
        )
    student.load_state_dict(state, strict=True)
    return student.eval()


def every_other_layer(
    teacher_model: PreTrainedModel, *, attn_implementation: str = "eager"
) -> PreTrainedModel:
    """The DistilBERT-style baseline: teacher layers 0, 2, 4, ... with their weights (see `truncate_layers`)."""
    return truncate_layers(teacher_model, None, attn_implementation=attn_implementation)
