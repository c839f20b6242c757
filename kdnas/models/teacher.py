"""Teachers: load any HF encoder (zoo name, local dir or hub id) as an eval-mode base model with its tokenizer.

Refuses what cannot be a teacher (decoder-only, encoder-decoder, vision/audio, unsupported family) with a message.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import AssetError, ModelError
from kdnas.models.student import SUPPORTED_FAMILIES

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# model_type values of decoder-only (causal LM) families we recognise by name; `is_decoder` and the
# `architectures` list catch the rest.
DECODER_FAMILIES = frozenset(
    "gpt2 gpt_neo gpt_neox gptj gpt_bigcode llama llama4 mistral mixtral qwen2 qwen2_moe qwen3 qwen3_moe "
    "phi phi3 gemma gemma2 gemma3 gemma3_text falcon bloom opt codegen ctrl xglm mpt olmo olmo2 stablelm "
    "starcoder2 cohere granite mamba rwkv biogpt transfo-xl openai-gpt persimmon jamba deepseek_v3 smollm3".split()
)
ENCODER_DECODER_FAMILIES = frozenset(
    "t5 mt5 umt5 bart mbart pegasus marian m2m_100 led prophetnet blenderbot nllb_moe encoder-decoder".split()
)
NON_TEXT_FAMILIES = frozenset(
    "vit deit beit swin swinv2 convnext convnextv2 resnet dinov2 clip siglip blip blip-2 wav2vec2 hubert "
    "wavlm whisper speech_to_text audio-spectrogram-transformer data2vec-audio data2vec-vision "
    "mobilevit segformer detr yolos dpt sam layoutlmv3 vivit videomae timesformer clap encodec".split()
)
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass
class Teacher:
    """A loaded teacher: the eval-mode base encoder, its tokenizer and where it came from."""

    model: PreTrainedModel
    """Base encoder (no task head) in eval mode; call it with `output_hidden_states=True` /
    `output_attentions=True` to get every layer (attentions need eager attention, the default)."""
    tokenizer: PreTrainedTokenizerBase
    """The teacher's own tokenizer."""
    config: PretrainedConfig
    """The model config (`config.model_type` is the family)."""
    name: str
    """Zoo name, hub id, or the folder name of a local dir."""
    path: Path | None
    """Local model dir it was loaded from (None for a hub id)."""
    family: str
    """HF `model_type`, e.g. `bert`, `roberta`, `mpnet`, `distilbert`, `electra`."""
    mlm_head: nn.Module | None = None
    """Masked-LM head mapping hidden states [B, S, H] to logits [B, S, V] (for logit KD); None when not
    asked for (`with_mlm_head=False`) or when the checkpoint has no MLM head."""


# ---------------------------------------------------------------- resolving a reference


def zoo_teacher_names() -> list[str]:
    """Names of the teachers in the asset zoo."""
    from kdnas import zoo

    return sorted(a.name for a in zoo.ASSETS.values() if a.kind == "teacher")


def _zoo_hint() -> str:
    return f"use a zoo teacher ({', '.join(zoo_teacher_names())}) or a local HF model dir"


def resolve_teacher_ref(
    ref: str | os.PathLike[str], *, cache_dir: str | Path | None = None
) -> tuple[str, Path | None]:
    """`ref` -> (name, local dir) for a local dir or a zoo teacher (fetched now if needed), (hub id, None) else."""
    from kdnas.zoo import resolve_model_ref

    text = os.fspath(ref)
    resolved = resolve_model_ref(text, cache_dir=cache_dir)
    if isinstance(resolved, Path):
        name = resolved.resolve().name if Path(text).expanduser().is_dir() else text
        return name, resolved.resolve()
    if not _HUB_ID.match(resolved):
        raise AssetError(f"teacher {text!r} is not a local dir, a zoo name or a hub id; {_zoo_hint()}")
    return resolved, None


def _hub_reachable(timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = re.sub(r"^\w+://", "", endpoint).split("/")[0]
    hostname, _, port = host.partition(":")
    try:
        socket.create_connection((hostname, int(port or 443)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def _hub_error(ref: str) -> AssetError:
    return AssetError(
        f"the HuggingFace Hub cannot be reached (offline or no network), so {ref!r} cannot be downloaded "
        f"and is not in the local HF cache; {_zoo_hint()}"
    )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports (unexpected head keys are normal when loading a base encoder)."""
    from transformers.utils import logging as hf_logging

    old = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(old)
        if bars:
            hf_logging.enable_progress_bar()


def _from_pretrained(loader: Any, source: str, ref: str, local: bool, **kw: Any) -> Any:
    """Call `loader.from_pretrained`, local cache first for hub ids, turning network failures into AssetError."""
    if local:
        return loader.from_pretrained(source, **kw)
    try:
        return loader.from_pretrained(source, local_files_only=True, **kw)
    except OSError:
        pass
    if not _hub_reachable():
        raise _hub_error(ref)
    try:
        return loader.from_pretrained(source, **kw)
    except OSError as e:
        msg = str(e)
        if "connect" in msg.lower() or "offline" in msg.lower():
            raise _hub_error(ref) from e
        raise AssetError(f"cannot load {ref!r} from the HuggingFace Hub: {msg.splitlines()[0]}") from e


# ---------------------------------------------------------------- checking a config


def check_encoder_config(config: PretrainedConfig, ref: str) -> None:
    """Raise ModelError unless `config` is a text encoder of a supported family."""
    mt = str(getattr(config, "model_type", "") or "")
    archs = [str(a) for a in (getattr(config, "architectures", None) or [])]
    if mt in ENCODER_DECODER_FAMILIES or getattr(config, "is_encoder_decoder", False):
        raise ModelError(
            f"{ref!r} is an encoder-decoder model ({mt}); kdnas distills encoder-only teachers "
            f"(families: {', '.join(SUPPORTED_FAMILIES)})"
        )
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    if mt in DECODER_FAMILIES or getattr(config, "is_decoder", False) or causal:
        raise ModelError(
            f"{ref!r} is a decoder-only (causal LM) model ({mt or archs}); kdnas needs a bidirectional encoder "
            f"teacher such as BERT, MiniLM, RoBERTa or MPNet (families: {', '.join(SUPPORTED_FAMILIES)})"
        )
    non_text = (
        mt in NON_TEXT_FAMILIES
        or any(hasattr(config, k) for k in ("vision_config", "audio_config", "num_mel_bins", "num_channels"))
        or any(hasattr(config, k) for k in ("image_size", "sampling_rate"))
    )
    if non_text:
        raise ModelError(
            f"{ref!r} is not a text model ({mt}: vision or audio); kdnas needs a text encoder teacher "
            f"(families: {', '.join(SUPPORTED_FAMILIES)})"
        )
    if mt not in SUPPORTED_FAMILIES:
        raise ModelError(
            f"{ref!r} has model family {mt!r}, which kdnas does not support as a teacher; "
            f"supported: {', '.join(SUPPORTED_FAMILIES)}"
        )


def load_teacher_config(
    ref: str | os.PathLike[str], *, cache_dir: str | Path | None = None
) -> PretrainedConfig:
    """The config of teacher `ref` (zoo name, local dir or hub id), checked to be a supported text encoder."""
    return _load_config(ref, cache_dir=cache_dir)[0]


def _load_config(
    ref: str | os.PathLike[str], *, cache_dir: str | Path | None
) -> tuple[PretrainedConfig, str, Path | None, str]:
    from transformers import AutoConfig

    name, path = resolve_teacher_ref(ref, cache_dir=cache_dir)
    if path is not None:
        if not (path / "config.json").is_file():
            raise AssetError(
                f"{path} has no config.json, so it is not an HF model dir; save the model there with "
                "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR), or pass the dir that holds them"
            )
        source = str(path)
        try:
            config = AutoConfig.from_pretrained(source)
        except (ValueError, OSError, KeyError) as e:
            raise ModelError(f"cannot read {path / 'config.json'}: {str(e).splitlines()[0]}") from e
    else:
        source = name
        try:
            config = _from_pretrained(AutoConfig, source, name, local=False)
        except ValueError as e:
            raise ModelError(f"cannot read the config of {name!r}: {str(e).splitlines()[0]}") from e
    check_encoder_config(config, str(ref))
    return config, name, path, source


# ---------------------------------------------------------------- loading


def _mlm_head_of(mlm_model: Any) -> nn.Module:
    """The head of an HF `*ForMaskedLM` as one module: hidden states [B, S, H] -> logits [B, S, V]."""
    from torch import nn

    mt = mlm_model.config.model_type

    class _Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            if mt == "distilbert":
                self.vocab_transform = mlm_model.vocab_transform
                self.activation = mlm_model.activation
                self.vocab_layer_norm = mlm_model.vocab_layer_norm
                self.vocab_projector = mlm_model.vocab_projector
            elif mt == "electra":
                self.generator_predictions = mlm_model.generator_predictions
                self.generator_lm_head = mlm_model.generator_lm_head
            elif hasattr(mlm_model, "cls"):
                self.cls = mlm_model.cls
            else:
                self.lm_head = mlm_model.lm_head

        def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
            if mt == "distilbert":
                x = self.activation(self.vocab_transform(hidden_states))
                return self.vocab_projector(self.vocab_layer_norm(x))  # [B, S, V]
            if mt == "electra":
                return self.generator_lm_head(self.generator_predictions(hidden_states))  # [B, S, V]
            if hasattr(self, "cls"):
                return self.cls(hidden_states)  # [B, S, V]
            return self.lm_head(hidden_states)  # [B, S, V]

    return _Head().eval()


def _load_mlm_head(
    source: str, name: str, local: bool, config: PretrainedConfig, allow_pickle: bool = False
) -> nn.Module | None:
    """The checkpoint's MLM head, or None when it has none (e.g. a sentence-transformers encoder)."""
    from transformers import AutoModelForMaskedLM

    mlm, info = _from_pretrained(
        AutoModelForMaskedLM, source, name, local, config=config, output_loading_info=True,
        use_safetensors=None if allow_pickle else True,
    )  # fmt: skip
    prefix = mlm.base_model_prefix + "."
    missing_head = sorted(
        k for k in info["missing_keys"] if not k.startswith(prefix) and not k.endswith("bias")
    )
    if missing_head:
        log.info(
            "%s has no MLM head (missing %s); Teacher.mlm_head is None", name, ", ".join(missing_head[:3])
        )
        return None
    return _mlm_head_of(mlm)


def _check_tokenizer(path: Path | None, tokenizer: Any, config: PretrainedConfig, ref: str) -> None:
    where = str(path) if path is not None else ref
    if path is not None and not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise AssetError(
            f"{where} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}); save the teacher's tokenizer "
            "there with tokenizer.save_pretrained(DIR)"
        )
    n = len(tokenizer)
    if n < 10:
        raise AssetError(
            f"the tokenizer of {where} is empty ({n} tokens); save the teacher's tokenizer there with "
            "tokenizer.save_pretrained(DIR)"
        )
    vocab = int(getattr(config, "vocab_size", n) or n)
    if n > vocab:
        raise ModelError(
            f"the tokenizer of {where} has {n} tokens but the model's embedding has only {vocab} rows; "
            "they do not belong together: use the tokenizer the model was trained with"
        )


def load_teacher(
    ref: str | os.PathLike[str],
    *,
    attn_implementation: str = "eager",
    cache_dir: str | Path | None = None,
    with_mlm_head: bool = False,
    allow_pickle: bool = False,
) -> Teacher:
    """Load teacher `ref`: a zoo name (fetched into the zoo cache), a local HF model dir, or a hub id.

    Always returns the base encoder (AutoModel) in eval mode, even when the checkpoint holds a task or MLM
    head. With `with_mlm_head=True` the MLM head is loaded too when the checkpoint has one (`Teacher.mlm_head`).
    Eager attention is the default: attention maps are then available, and it is the fastest on CPU.
    Weights are read from safetensors only; a checkpoint with pickle weights only (pytorch_model.bin) is
    refused unless `allow_pickle` (`teacher.allow_pickle`), because unpickling can run code.
    """
    from transformers import AutoModel, AutoTokenizer

    config, name, path, source = _load_config(ref, cache_dir=cache_dir)
    local = path is not None
    if local:
        assert path is not None
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin")) or any(path.glob("*.pt"))
        if not has_weights:
            raise AssetError(
                f"{path} has a config.json but no weights (*.safetensors or pytorch_model.bin); "
                "save the model there with model.save_pretrained(DIR)"
            )
        if not any(path.glob("*.safetensors")):
            pickles = sorted(p.name for p in [*path.glob("*.bin"), *path.glob("*.pt")])
            if not allow_pickle:
                raise AssetError(
                    f"{path} has pickle weights only ({', '.join(pickles)}); loading a pickle can run code. "
                    "Convert it once where you trust it (AutoModel.from_pretrained(DIR).save_pretrained(DIR) "
                    "writes model.safetensors), or set teacher.allow_pickle: true for a checkpoint you trust"
                )
            log.warning(
                "loading pickle weights %s of %s: teacher.allow_pickle is set", ", ".join(pickles), path
            )
    try:
        tokenizer = _from_pretrained(AutoTokenizer, source, name, local)
    except (OSError, ValueError, TypeError) as e:
        raise AssetError(
            f"cannot load the tokenizer of {name!r} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
            "save the teacher's tokenizer next to the model with tokenizer.save_pretrained(DIR)"
        ) from e
    _check_tokenizer(path, tokenizer, config, name)

    kw: dict[str, Any] = {"attn_implementation": attn_implementation, "output_loading_info": True,
                          "use_safetensors": None if allow_pickle else True}  # fmt: skip
    with _quiet_transformers():
        try:
            model, info = _from_pretrained(AutoModel, source, name, local, config=config, **kw)
            mlm_head = _load_mlm_head(source, name, local, config, allow_pickle) if with_mlm_head else None
        except (OSError, ValueError, RuntimeError) as e:
            if isinstance(e, AssetError):
                raise
            raise ModelError(f"cannot load the weights of {name!r}: {str(e).splitlines()[0]}") from e
    missing_encoder = sorted(k for k in info["missing_keys"] if not k.startswith("pooler."))
    if missing_encoder:
        raise ModelError(
            f"the checkpoint of {name!r} lacks encoder weights ({', '.join(missing_encoder[:4])}"
            f"{', ...' if len(missing_encoder) > 4 else ''}); it does not match its config.json: re-save it "
            "with model.save_pretrained(DIR)"
        )
    model.eval()
    return Teacher(
        model=model,
        tokenizer=tokenizer,
        config=model.config,
        name=name,
        path=path,
        family=str(model.config.model_type),
        mlm_head=mlm_head,
    )
