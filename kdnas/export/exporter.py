"""`export_model`: an HF folder (model, tokenizer, config), ONNX fp32 and int8, checks, timings and a model card.

Everything is written into a temporary sibling dir and renamed into place, so a crash never leaves half an export.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import KdnasError
from kdnas.export import onnx as onnx_mod
from kdnas.export.card import ModelCardInfo, library_versions, render_card, today
from kdnas.export.onnx import ExportError, NumericsCheck
from kdnas.export.timing import hardware_description, measure_export, measure_speedups

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from kdnas.latency.config import TargetConfig
    from kdnas.latency.result import LatencyResult

log = logging.getLogger(__name__)

# Keys that must never reach an exported config.json: they would make transformers look for code elsewhere.
_FORBIDDEN_CONFIG_KEYS = ("auto_map", "kdnas", "custom_pipelines")


@dataclass
class ExportResult:
    """What `export_model` wrote and measured (also saved as export.json in the folder)."""

    out_dir: Path
    """The export folder."""
    files: dict[str, str] = field(default_factory=dict)
    """Role -> file name in the folder: config, weights, tokenizer, onnx, int8, card."""
    checks: dict[str, NumericsCheck] = field(default_factory=dict)
    """ONNX file name -> numerics against PyTorch."""
    latency: dict[str, LatencyResult] = field(default_factory=dict)
    """Backend -> measured latency (kdnas.latency, on the target's first shape)."""
    speedups: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Backend -> speed-up over the teacher timed side by side in the same workers (`timing.measure_speedups`):
    speedup, lo, hi, cv, teacher_ms, student_ms, rounds, reliable."""
    params_total: int = 0
    """All parameters."""
    params_non_embedding: int = 0
    """Parameters outside the embedding block (what the transformer layers cost)."""
    params_word_embedding: int = 0
    """Parameters of the word-embedding table (vocab_size x embedding width)."""
    vocab_size: int = 0
    """Rows of the word-embedding table (tokens the tokenizer can produce)."""
    opset: int | None = None
    """ONNX opset of model.onnx."""
    onnx_outputs: list[str] = field(default_factory=list)
    """Outputs of the ONNX graphs: last_hidden_state, and sentence_embedding for a sentence-embedding export."""
    hardware: str = ""
    """Fingerprint of the machine that measured latency."""
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions at export time."""
    created: str = ""
    """Export date (UTC)."""
    warnings: list[str] = field(default_factory=list)
    """Things the user should know (e.g. int8 lost more accuracy than expected)."""
    card_args: dict[str, Any] = field(default_factory=dict, repr=False)
    """What the card was rendered from (info, name, family, input names), so `set_speedups` can render it again;
    not written to export.json."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "files": self.files,
            "checks": {k: v.to_dict() for k, v in self.checks.items()},
            "onnx_outputs": self.onnx_outputs,
            "latency": {k: v.to_dict() for k, v in self.latency.items()},
            "speedups": self.speedups,
            "params_total": self.params_total,
            "params_non_embedding": self.params_non_embedding,
            "params_word_embedding": self.params_word_embedding,
            "vocab_size": self.vocab_size,
            "opset": self.opset,
            "hardware": self.hardware,
            "versions": self.versions,
            "created": self.created,
            "warnings": self.warnings,
        }


def param_counts(model: PreTrainedModel) -> tuple[int, int]:
    """(total, non-embedding) parameter counts; embeddings are the parameters under the `embeddings` block."""
    total = sum(p.numel() for p in model.parameters())
    emb_module = getattr(model, "embeddings", None)
    if emb_module is not None:
        emb = sum(p.numel() for p in emb_module.parameters())
    else:
        emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
    return total, total - emb


def export_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    onnx: bool = True,
    int8: bool = True,
    overwrite: bool = False,
    card: ModelCardInfo | None = None,
    target: TargetConfig | None = None,
    measure: bool = True,
    sentence_dir: str | Path | None = None,
    beside_teacher: bool = True,
) -> ExportResult:
    """Export `model` (an HF base encoder) and `tokenizer` into `out_dir`; return what was written and measured.

    Writes config.json + model.safetensors + tokenizer files (loadable by `AutoModel`/`AutoTokenizer` alone),
    model.onnx (fp32, must match PyTorch to 1e-3) and model-int8.onnx (dynamic int8, warned below cosine 0.98),
    export.json (checks, latency, provenance) and README.md (the model card). Latency is measured on `target`
    (default: CPU, 2 threads, batch 1, sequence 128) unless `measure=False`.
    `sentence_dir`: a model dir whose sentence-transformers files (modules.json, 1_Pooling, 2_Dense, ...) are
    copied along, so the export loads with `SentenceTransformer(out_dir)` and embeds as the student was trained.
    `beside_teacher`: with `measure` and a card naming the teacher, also time the export side by side with the
    teacher (`ExportResult.speedups`); off when the caller times several exports together (`export_run`, then
    `set_speedups`).
    Raises ExportError if `out_dir` exists and `overwrite` is False, or if a check fails.
    """
    out = Path(out_dir)
    if int8 and not onnx:
        raise ExportError(
            "int8 export needs the fp32 ONNX file it is quantized from: drop --no-onnx or add --no-int8"
        )
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists: choose another --out or pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; remove it or choose another --out")
    if onnx:  # fail before any work if the extra is missing
        from kdnas._imports import optional_import

        for mod in ("onnx", "onnxscript", "onnxruntime"):
            optional_import(mod, purpose="ONNX export (or pass --no-onnx)")
    _check_config(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the export should get normal permissions
    try:
        result = _write(
            model,
            tokenizer,
            tmp,
            name=out.name,
            onnx=onnx,
            int8=int8,
            card=card,
            target=target,
            measure=measure,
            sentence_dir=sentence_dir,
            beside_teacher=beside_teacher,
        )
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    result.out_dir = out
    _replace_text(out / "export.json", json.dumps(result.to_dict(), indent=2) + "\n")
    return result


def set_speedups(result: ExportResult, speedups: dict[str, dict[str, Any]]) -> None:
    """Give a finished export (made with `beside_teacher=False`) its side-by-side speed-ups over the teacher:
    export.json and the card are written again with them."""
    result.speedups = speedups
    out = Path(result.out_dir)
    if result.card_args:
        _replace_text(out / "README.md", render_card(result=result, **result.card_args))
    _replace_text(out / "export.json", json.dumps(result.to_dict(), indent=2) + "\n")


def _replace_text(path: Path, text: str) -> None:
    """Write `path` (again) in one step (a kill leaves the old file or the new one), keeping its permissions; a
    new file gets the ones the umask gives (mkstemp's are private)."""
    umask = os.umask(0)
    os.umask(umask)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


SENTENCE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
"""Top-level sentence-transformers files of a model dir; module dirs (1_Pooling, 2_Dense, ...) come along."""


def copy_sentence_files(src: str | Path, dst: Path) -> dict[str, str]:
    """Copy the sentence-transformers layout of `src` into `dst` (nothing when `src` has no modules.json);
    returns the roles written (`sentence_transformers`, `dense`)."""
    src = Path(src)
    if not (src / "modules.json").is_file():
        return {}
    try:
        modules = json.loads((src / "modules.json").read_text())
    except (OSError, ValueError) as e:
        raise ExportError(f"{src / 'modules.json'}: unreadable ({e}); re-distil or delete the file") from None
    for name in SENTENCE_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    files = {"sentence_transformers": "modules.json"}
    for m in modules:
        sub = str(m.get("path", ""))
        if sub and (src / sub).is_dir():
            shutil.copytree(src / sub, dst / sub, dirs_exist_ok=True)
            if str(m.get("type", "")).endswith("Dense"):
                files["dense"] = sub
    return files


def _check_config(model: PreTrainedModel) -> None:
    d = model.config.to_dict()
    bad = [k for k in _FORBIDDEN_CONFIG_KEYS if k in d]
    if bad:
        raise ExportError(
            f"the model config has {bad}: the export would need custom code to load; "
            "export a student built by kdnas.models (plain transformers families only)"
        )


def _write(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    d: Path,
    *,
    name: str,
    onnx: bool,
    int8: bool,
    card: ModelCardInfo | None,
    target: TargetConfig | None,
    measure: bool,
    sentence_dir: str | Path | None = None,
    beside_teacher: bool = True,
) -> ExportResult:
    from kdnas.latency.config import TargetConfig

    target = target or TargetConfig()
    was_training = model.training
    model.eval()
    result = ExportResult(
        out_dir=d, hardware=hardware_description(target.threads), versions=library_versions(), created=today()
    )
    result.params_total, result.params_non_embedding = param_counts(model)
    word: Any = model.get_input_embeddings().weight
    result.params_word_embedding, result.vocab_size = word.numel(), int(word.shape[0])
    if len(tokenizer) > result.vocab_size:
        raise ExportError(
            f"the tokenizer has {len(tokenizer)} tokens but the model's embedding only {result.vocab_size} rows: "
            "a student with a trimmed vocabulary must ship its trimmed tokenizer (kdnas.models.vocab.trim_tokenizer)"
        )

    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    result.files.update(config="config.json", weights="model.safetensors", tokenizer="tokenizer_config.json")

    names = onnx_mod.input_names(model, tokenizer)
    if onnx:
        batch = onnx_mod.check_batch(tokenizer, names)
        ref = onnx_mod.torch_hidden(model, batch)
        fp32 = d / "model.onnx"
        head = _sentence_head(sentence_dir)
        result.opset = onnx_mod.export_fp32(model, names, batch, fp32, head=head)
        result.files["onnx"] = fp32.name
        outputs = [("last_hidden_state", ref)]
        result.onnx_outputs = ["last_hidden_state"] + ([onnx_mod.SENTENCE_OUTPUT] if head is not None else [])
        if head is not None:
            outputs.append((onnx_mod.SENTENCE_OUTPUT, onnx_mod.torch_sentence(model, head, batch)))
        for out_name, out_ref in outputs:
            chk = onnx_mod.check(fp32, out_ref, batch, int8=False, output=out_name)
            result.checks[_check_key(fp32.name, out_name)] = chk
            if not chk.passed:
                raise ExportError(
                    f"model.onnx {out_name} differs from PyTorch by {chk.max_abs_diff:.2e} (> "
                    f"{onnx_mod.FP32_MAX_ABS}); the ONNX conversion is wrong for this model: export with --no-onnx "
                    "and report the model family"
                )
        if int8:
            q = d / "model-int8.onnx"
            onnx_mod.quantize_int8(fp32, q)
            result.files["int8"] = q.name
            for out_name, out_ref in outputs:
                chk = onnx_mod.check(q, out_ref, batch, int8=True, output=out_name)
                result.checks[_check_key(q.name, out_name)] = chk
                if not chk.passed:
                    msg = (
                        f"model-int8.onnx {out_name} mean cosine to PyTorch is {chk.mean_cosine:.4f} (< "
                        f"{onnx_mod.INT8_MIN_COSINE}): dynamic int8 loses accuracy on this model; prefer model.onnx "
                        "or check task scores with int8"
                    )
                    log.warning(msg)
                    result.warnings.append(msg)
    if was_training:
        model.train()

    if measure:
        backends = (
            ["torch"] + (["onnxruntime"] if onnx else []) + (["onnxruntime-int8"] if onnx and int8 else [])
        )
        result.latency = _measure(d, backends, target)
        if card is not None and card.teacher and beside_teacher:
            try:
                result.speedups = measure_speedups(
                    d, card.teacher, backends, target, rounds=target.compare_rounds
                )
            except KdnasError as e:  # the card then says the teacher was not timed beside it
                msg = f"the teacher {card.teacher} could not be timed beside the export: {e}"
                log.warning(msg)
                result.warnings.append(msg)

    from kdnas.models.student import arch_of

    # before the card: it says how to load the folder with sentence-transformers when it is one
    result.files.update(copy_sentence_files(sentence_dir, d) if sentence_dir is not None else {})
    info = card or ModelCardInfo()
    if info.arch is None:
        with contextlib.suppress(Exception):  # an unsupported family still exports; the card lacks the arch
            info = _with_arch(info, arch_of(model.config))
    _normal_permissions(d)
    result.card_args = {
        "info": info,
        "name": name,
        "family": str(model.config.model_type),
        "input_names": names,
    }
    text = render_card(result=result, **result.card_args)
    (d / "README.md").write_text(text, encoding="utf-8")
    result.files["card"] = "README.md"
    return result


def _check_key(file: str, output: str) -> str:
    """`model.onnx` for the token states (as always), `model.onnx sentence_embedding` for the second output."""
    return file if output == "last_hidden_state" else f"{file} {output}"


def _sentence_head(sentence_dir: str | Path | None) -> Any:
    """The sentence head of an export whose source is a sentence-transformers folder (None otherwise)."""
    if sentence_dir is None or not (Path(sentence_dir) / "modules.json").is_file():
        return None
    from kdnas.evaluate.fidelity import load_dense
    from kdnas.models.pooling import read_pooling

    pooling = read_pooling(sentence_dir)
    if pooling is None:
        return None
    return onnx_mod.sentence_head(pooling, load_dense(sentence_dir))


def _normal_permissions(d: Path) -> None:
    """Make every written file readable like any other (some writers create 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    for p in d.iterdir():
        if p.is_file():
            os.chmod(p, 0o666 & ~umask)


def _with_arch(info: ModelCardInfo, arch: Any) -> ModelCardInfo:
    import dataclasses

    return dataclasses.replace(info, arch=arch)


def _measure(d: Path, backends: list[str], target: TargetConfig) -> dict[str, LatencyResult]:
    """Latency per backend on the target's first shape (CPU: the ONNX files are CPU builds)."""
    if target.device != "cpu":
        log.warning("export timing measures CPU only; target device %s is not timed here", target.device)
    return measure_export(d, backends, target)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` dir to `out`; an existing `out` is moved aside first and deleted after."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
