"""Typed run config: dataclass sections, YAML load/save, CLI overrides, validation that lists every problem.

Each section's schema lives next to the code that uses it (`kdnas/<stage>/config.py`); this module holds the
generic machinery and the top-level `RunConfig`. YAML is read with `yaml.safe_load`: a config is data only and
can never execute code; strategies and backends are chosen by name from registries.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from kdnas import recipes
from kdnas.data.config import CorpusConfig
from kdnas.distill.config import DistillConfig
from kdnas.errors import ConfigError
from kdnas.evaluate.config import EvaluateConfig
from kdnas.latency.config import TargetConfig
from kdnas.search.config import SearchConfig

T = TypeVar("T")


@dataclass
class TeacherConfig:
    """Which teacher to distill from."""

    name: str = "minilm-l6"
    """A zoo name (`kdnas fetch --list`), a local HF model dir, or a hub id (needs network)."""
    attn_implementation: Literal["eager", "sdpa"] = "eager"
    """Attention kernel used when the teacher runs for distillation (eager is needed for attention maps)."""
    allow_pickle: bool = False
    """Load a teacher whose weights are pickle files only (pytorch_model.bin, *.pt). Unpickling can run code:
    only for a checkpoint you trust. Default: safetensors only (convert with `model.save_pretrained(DIR)`)."""

    def check(self) -> list[str]:
        return [] if self.name.strip() else ["name: must not be empty (e.g. minilm-l6)"]


@dataclass
class ExportConfig:
    """What `kdnas export` writes for each recommended student."""

    onnx: bool = True
    """Also write model.onnx (fp32), checked against PyTorch."""
    int8: bool = True
    """Also write model-int8.onnx (dynamic int8 quantization)."""
    overwrite: bool = False
    """Replace an existing export dir instead of refusing."""

    def check(self) -> list[str]:
        return (
            []
            if self.onnx or not self.int8
            else ["int8: needs onnx: true (the int8 model is quantized from it)"]
        )


@dataclass
class RunConfig:
    """Everything `kdnas run` needs. Every field has a default: the embedded default run."""

    name: str = "default"
    """Run name; the run dir defaults to runs/<name>."""
    seed: int = 0
    """Seed for splits, sampling, initialisation and training."""
    run_dir: str | None = None
    """Where every stage writes its outputs (default runs/<name>)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def check(self) -> list[str]:
        out = []
        if not self.name or any(c in self.name for c in "/\\ "):
            out.append(f"name: {self.name!r} must be non-empty with no slashes or spaces")
        if self.seed < 0:
            out.append(f"seed: {self.seed} must be >= 0")
        if self.search.proxy_loss == "states" and self.search.quality == "kd_loss":
            from kdnas.distill.terms import LOSS_TERMS, state_terms

            on = [k for k, w in self.distill.losses.items() if w > 0 and k in LOSS_TERMS]
            if on and not state_terms(self.distill.losses):
                out.append(
                    f"search.proxy_loss: 'states' ranks by the losses on token states, but distill.losses has only "
                    f"sentence-embedding ones ({', '.join(on)}); use search.proxy_loss: full, or add e.g. hidden"
                )
        return out

    @property
    def resolved_run_dir(self) -> Path:
        return Path(self.run_dir) if self.run_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def hash(self) -> str:
        """Hash of the settings that change results (not the run dir or name)."""
        d = self.to_dict()
        d.pop("run_dir", None)
        d.pop("name", None)
        for section, key in _RESOURCE_KEYS:
            d.get(section, {}).pop(key, None)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_RESOURCE_KEYS = (
    ("export", "overwrite"),
    ("distill", "teacher_cache_mb"),
    ("distill", "keep_teacher_cache"),
    ("distill", "nproc"),
    ("distill", "device"),  # the same result up to float noise on any device; a run may resume on another
    ("target", "cache_dir"),
    ("target", "timeout_s"),
    ("evaluate", "threads"),
    ("evaluate", "device"),
    ("evaluate", "eval_batch_size"),
)
"""Keys that change how fast or where a run works, never its results: a run can resume with other values."""

# --------------------------------------------------------------------------------------------------------------
# generic machinery


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the typed value (nested dataclasses built)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        for a in non_none:  # first type that accepts the value without problems
            sub: list[str] = []
            out = _coerce(value, a, key, sub)
            if not sub:
                return out
        problems.append(f"{key}: {value!r} is not a {' or '.join(_type_name(a) for a in args)}")
        return None
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{key}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}{hint}")
        return value
    if origin is list or origin is tuple:
        if not isinstance(value, list | tuple):
            problems.append(f"{key}: expected a list, got {type(value).__name__} {value!r}")
            return []
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]", problems) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
            return {}
        _, v_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(v, v_tp, f"{key}.{k}", problems) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            problems.append(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
            return tp()  # type: ignore[operator]
        return _build(tp, value, f"{key}.", problems)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{key}: expected a number, got {type(value).__name__} {value!r}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{key}: expected a string, got {type(value).__name__} {value!r}")
        return value
    return value


def _build(cls: type[T], data: dict[str, Any], prefix: str, problems: list[str]) -> T:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        if k not in fields:
            close = difflib.get_close_matches(k, list(fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"; known: {', '.join(fields)}"
            problems.append(f"{prefix}{k}: unknown key{hint}")
            continue
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}", problems)
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:  # a type problem already reported above made construction fail
        problems.append(f"{prefix.rstrip('.') or 'config'}: {e}")
        return cls()
    return obj


def _check_all(obj: Any, prefix: str, problems: list[str], skip: tuple[str, ...] = ()) -> None:
    """Run every section's `check()` (cross-field rules), prefixing keys with the section path.

    Keys that already have a type problem are not reported twice; a check that trips over a wrongly typed
    value is skipped (the type problem is already reported).
    """
    check = getattr(obj, "check", None)
    if callable(check):
        try:
            found = [f"{prefix}{p}" for p in check()]
        except (TypeError, ValueError, AttributeError):
            found = []
        problems.extend(
            p for p in found if not any(p.startswith(k + ":") or p.startswith(k + ".") for k in skip)
        )
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if dataclasses.is_dataclass(v):
            _check_all(v, f"{prefix}{f.name}.", problems, skip)


def from_dict(data: dict[str, Any] | None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Build and validate a RunConfig; raise ConfigError listing every problem at once."""
    data = dict(data or {})
    problems: list[str] = []
    for dotted, value in (overrides or {}).items():
        _set_dotted(data, dotted, value, problems)
    cfg = _build(RunConfig, data, "", problems)
    _check_all(cfg, "", problems, skip=tuple(p.split(":")[0] for p in problems if "unknown key" not in p))
    if problems:
        raise ConfigError(problems)
    return cfg


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, problems: list[str]) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            problems.append(f"{dotted}: {p} is not a section")
            return
        node = nxt
    node[parts[-1]] = value


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`['--search.n_trials', '8', '--distill.lr=1e-3']` -> {'search.n_trials': 8, 'distill.lr': 0.001}.

    Values are parsed as YAML scalars/lists (`8` -> int, `[1, 2]` -> list, `true` -> bool), never evaluated.
    """
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--") or len(a) < 3:
            raise ConfigError(f"{a}: overrides look like --section.key VALUE (e.g. --search.n_trials 8)")
        key = a[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{key}: override has no value (e.g. --{key} VALUE)")
            raw = args[i + 1]
            i += 2
        try:
            out[key] = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            out[key] = raw
        if isinstance(out[key], str):
            with contextlib.suppress(ValueError):
                out[key] = float(out[key]) if any(c in out[key] for c in ".eE") else out[key]
    return out


def recipe_names() -> list[str]:
    return recipes.names()


def resolve_recipe(ref: str | None) -> tuple[dict[str, Any], str]:
    """A CONFIG argument -> (raw dict, where it came from). A path, or the name of a shipped recipe."""
    if ref is None:
        return {}, "embedded default"
    path = Path(ref)
    if path.is_file():
        return load_yaml(path), str(path)
    if ref in recipe_names():
        text = resources.files("kdnas.recipes").joinpath(f"{ref}.yaml").read_text()
        return _parse_yaml(text, f"recipe {ref}"), f"recipe {ref}"
    if path.suffix in (".yaml", ".yml") or "/" in ref:
        raise ConfigError(f"{ref}: no such config file")
    raise ConfigError(f"{ref}: neither a config file nor a shipped recipe ({', '.join(recipe_names())})")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    return _parse_yaml(text, str(path))


def _parse_yaml(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def load(ref: str | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Load CONFIG (path or recipe name; None = embedded default), apply overrides, validate."""
    data, where = resolve_recipe(ref)
    try:
        return from_dict(data, overrides)
    except ConfigError as e:
        raise ConfigError([f"{where}: {p}" for p in e.problems]) from None


def diff(a: RunConfig, b: RunConfig) -> list[str]:
    """Human-readable differences between two configs (`key: old -> new`)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    return [
        f"{k}: {fa.get(k)!r} -> {fb.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)
    ]


def changed_keys(a: RunConfig, b: RunConfig) -> list[str]:
    """Dotted keys whose values differ and change results (not the name, run dir or resource keys)."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    skip = {"name", "run_dir", *(f"{s}.{k}" for s, k in _RESOURCE_KEYS)}
    return sorted(k for k in set(fa) | set(fb) if fa.get(k) != fb.get(k) and k not in skip)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, str) for x in v):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def field_docs(cls: type) -> dict[str, str]:
    """Field -> its one-line docstring (attribute docstrings, as in litgpt), for `kdnas validate --explain`."""
    import ast
    import inspect

    try:
        tree = ast.parse(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for prev, node in itertools.pairwise(body):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = node.value.value.strip().splitlines()[0]
    return docs
