"""Students as configs of the teacher's own HF family: an `Arch` becomes a `PretrainedConfig`, and back.

No model code of ours: transformers' `modeling_*.py` stay the single source of the forward pass, so a saved
student loads with `transformers.AutoModel.from_pretrained` without kdnas installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kdnas.errors import ArchError, ModelError
from kdnas.space.arch import Arch

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

# model_type -> names of (layers, hidden, heads, ffn, activation) in that family's config
_FIELDS: dict[str, tuple[str, str, str, str, str]] = {
    "bert": ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act"),
    "roberta": ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act"),
    "xlm-roberta": (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
    ),
    "camembert": (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
    ),
    "mpnet": ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act"),
    "electra": ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act"),
    "distilbert": ("n_layers", "dim", "n_heads", "hidden_dim", "activation"),
    "mobilebert": (
        "num_hidden_layers",
        "hidden_size",
        "num_attention_heads",
        "intermediate_size",
        "hidden_act",
    ),
}
SUPPORTED_FAMILIES = tuple(_FIELDS)
CONFIG_NOISE_KEYS = (
    "_name_or_path",
    "architectures",
    "transformers_version",
    "id2label",
    "label2id",
    "_attn_implementation",
    "torch_dtype",
    "dtype",
    "_commit_hash",
    "finetuning_task",
    "task_specific_params",
)
"""Keys of a config dict that do not change the forward pass (dropped when deriving or comparing configs)."""
# Families that share BERT's WordPiece vocabulary layout, so a MobileBERT-style student can reuse the tokenizer.
BERT_VOCAB_FAMILIES = ("bert", "distilbert", "electra", "mobilebert")


def _fields(config: PretrainedConfig) -> tuple[str, str, str, str, str]:
    mt = getattr(config, "model_type", None)
    if mt not in _FIELDS:
        raise ModelError(
            f"model family {mt!r} is not supported as an encoder teacher/student; "
            f"supported: {', '.join(SUPPORTED_FAMILIES)}"
        )
    return _FIELDS[mt]


def arch_of(config: PretrainedConfig) -> Arch:
    """The `Arch` of an existing model config (e.g. the teacher's)."""
    L, H, A, F, act = _fields(config)
    activation = getattr(config, act)
    if not isinstance(activation, str):
        activation = "gelu"
    activation = {"gelu_python": "gelu"}.get(activation, activation)
    if config.model_type == "mobilebert":
        return Arch(
            num_layers=getattr(config, L),
            hidden_size=getattr(config, H),
            num_heads=getattr(config, A),
            ffn_size=getattr(config, F),
            activation=activation if activation in ("gelu", "relu") else "gelu",
            family="mobilebert",
            bottleneck_size=config.intra_bottleneck_size,
            num_ffn_stacked=config.num_feedforward_networks,
        )
    return Arch(
        num_layers=getattr(config, L),
        hidden_size=getattr(config, H),
        num_heads=getattr(config, A),
        ffn_size=getattr(config, F),
        activation=activation,
    )


def student_config(teacher_config: PretrainedConfig, arch: Arch) -> PretrainedConfig:
    """The config of a student with shape `arch` in the teacher's family (or MobileBERT on its vocabulary)."""
    from transformers import AutoConfig, MobileBertConfig

    arch.validate()
    L, H, A, F, act = _fields(teacher_config)
    vocab = arch.vocab_size or teacher_config.vocab_size
    if arch.family == "mobilebert":
        if teacher_config.model_type not in BERT_VOCAB_FAMILIES:
            raise ArchError(
                f"a mobilebert-family student needs a BERT-vocabulary teacher; {teacher_config.model_type!r} "
                "is not one (use the default space)"
            )
        assert arch.bottleneck_size is not None and arch.num_ffn_stacked is not None
        return MobileBertConfig(  # type: ignore[call-arg]
            vocab_size=vocab,
            hidden_size=arch.hidden_size,
            embedding_size=min(128, arch.hidden_size),
            true_hidden_size=arch.bottleneck_size,
            intra_bottleneck_size=arch.bottleneck_size,
            num_hidden_layers=arch.num_layers,
            num_attention_heads=arch.num_heads,
            intermediate_size=arch.ffn_size,
            num_feedforward_networks=arch.num_ffn_stacked,
            hidden_act=arch.activation,
            max_position_embeddings=getattr(teacher_config, "max_position_embeddings", 512),
            type_vocab_size=getattr(teacher_config, "type_vocab_size", 2),
            pad_token_id=getattr(teacher_config, "pad_token_id", 0) or 0,
            normalization_type="layer_norm",
            use_bottleneck=True,
            key_query_shared_bottleneck=True,
            trigram_input=False,
        )
    d: dict[str, Any] = teacher_config.to_dict()
    for k in CONFIG_NOISE_KEYS:
        d.pop(k, None)
    d.update(
        {L: arch.num_layers, H: arch.hidden_size, A: arch.num_heads, F: arch.ffn_size, act: arch.activation}
    )
    d["vocab_size"] = vocab
    if teacher_config.model_type == "electra":
        d["embedding_size"] = min(d.get("embedding_size", arch.hidden_size), arch.hidden_size)
    model_type = d.pop("model_type")
    return AutoConfig.for_model(model_type, **d)


def build_student(
    teacher_config: PretrainedConfig,
    arch: Arch,
    *,
    attn_implementation: str = "eager",
    seed: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised student (the base encoder, no task head) of shape `arch`."""
    import torch
    from transformers import AutoModel

    cfg = student_config(teacher_config, arch)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        model = AutoModel.from_config(cfg, attn_implementation=attn_implementation)
    except (ValueError, RuntimeError) as e:
        raise ArchError(f"cannot build a student {arch.describe()} in family {cfg.model_type}: {e}") from e
    return model
