"""Search spaces users pick by name or YAML: the teacher-derived default, AutoDistill's MobileBERT-style space,
and the YAML schema (`load_space`, `parse_space`). Shipped examples live in `kdnas/spaces/*.yaml`.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kdnas.errors import ConfigError, SearchError
from kdnas.space.arch import ACTIVATIONS
from kdnas.space.space import DIMENSIONS, Constraints, Dimension, SearchSpace
from kdnas.space.vocab import FULL, VocabChoice, check_choice

if TYPE_CHECKING:
    from transformers import PretrainedConfig

BUILTIN = ("default", "mobilebert")
FFN_RATIOS = (1, 2, 3, 4)
_TOP_KEYS = ("name", "description", "base", "family", "dimensions", "constraints")
_CONSTRAINT_KEYS = ("head_dim_min", "head_dim_max", "max_params_m", "max_latency_ms")


def _teacher_arch(teacher_config: PretrainedConfig):  # -> Arch
    from kdnas.models.student import arch_of

    return arch_of(teacher_config)


def _widths(limit: int, step: int) -> tuple[int, ...]:
    return tuple(range(step, limit + 1, step)) or (limit,)


def default_space(teacher_config: PretrainedConfig, *, vocab: Sequence[VocabChoice] = (FULL,)) -> SearchSpace:
    """Students in the teacher's family: depth 1..Lt, widths up to the teacher's, 1-4x FFN.

    Widths step by 64 when the teacher's width is a multiple of 64 (else by its head dim); heads come from a
    head dim (the teacher's and one other of 32/64), so every width/head pair is valid by construction.
    `vocab`: vocabulary choices (`full`, `corpus`, N most frequent corpus tokens; `kdnas.space.vocab`); with
    only `full` (the default) the space has no `vocab` dimension and every student keeps the teacher's table.
    """
    t = _teacher_arch(teacher_config)
    step = 64 if t.hidden_size % 64 == 0 and t.hidden_size >= 128 else t.head_dim
    widths = _widths(t.hidden_size, step)
    head_dims = sorted({hd for hd in (t.head_dim, 32, 64) if hd <= step and step % hd == 0} or {t.head_dim})
    teacher_ratio = t.ffn_size / t.hidden_size
    ratios = tuple(r for r in FFN_RATIOS if r <= max(teacher_ratio, 1)) or (1,)
    problems: list[str] = []
    choices = _vocab_values(list(vocab), "vocab", problems, teacher_config)
    if problems:
        raise SearchError("default space: " + "; ".join(problems))
    return SearchSpace(
        [
            Dimension("num_layers", tuple(range(1, t.num_layers + 1))),
            Dimension("hidden_size", widths),
            Dimension("head_dim", tuple(head_dims)),
            Dimension("ffn_ratio", ratios),
            Dimension("activation", (t.activation,)),
            *([Dimension("vocab", choices)] if choices != (FULL,) else []),
        ],
        family="teacher",
        teacher_config=teacher_config,
        name="default",
    )


def mobilebert_space(teacher_config: PretrainedConfig) -> SearchSpace:
    """AutoDistill's MobileBERT-style space on the teacher's (BERT WordPiece) vocabulary.

    Dimensions: layers (even depths up to 2x the teacher's), trunk (inter-block) width, intra-block
    bottleneck width, heads via a head dim over the bottleneck, 1-4 stacked FFNs, FFN size as a ratio of the
    bottleneck. Built as an HF MobileBertConfig by `kdnas.models.student.student_config`.
    """
    _check_bert_vocab(teacher_config)
    t = _teacher_arch(teacher_config)
    trunk_step = 128 if t.hidden_size % 128 == 0 and t.hidden_size >= 256 else t.head_dim
    bott_step = 64 if t.hidden_size >= 128 else t.head_dim
    bottlenecks = tuple(b for b in _widths(min(t.hidden_size, 4 * bott_step), bott_step))
    head_dims = (32, 64) if bott_step == 64 else (t.head_dim,)
    max_layers = max(2, 2 * t.num_layers)
    return SearchSpace(
        [
            Dimension("num_layers", tuple(range(2, max_layers + 1, 2))),
            Dimension("hidden_size", _widths(t.hidden_size, trunk_step)),
            Dimension("bottleneck_size", bottlenecks),
            Dimension("head_dim", head_dims),
            Dimension("num_ffn_stacked", (1, 2, 3, 4)),
            Dimension("ffn_ratio", (1, 2, 4)),
            Dimension("activation", ("gelu" if t.activation not in ("gelu", "relu") else t.activation,)),
        ],
        family="mobilebert",
        teacher_config=teacher_config,
        name="mobilebert",
    )


def _check_bert_vocab(teacher_config: PretrainedConfig) -> None:
    from kdnas.models.student import BERT_VOCAB_FAMILIES

    model_type = getattr(teacher_config, "model_type", None)
    if model_type not in BERT_VOCAB_FAMILIES:
        raise SearchError(
            "a mobilebert-family space needs a teacher with BERT's WordPiece vocabulary "
            f"({', '.join(BERT_VOCAB_FAMILIES)}); this teacher is {model_type!r}: use space: default"
        )


def shipped_spaces() -> list[str]:
    """Names of the example space YAMLs shipped in kdnas/spaces/."""
    return sorted(p.name[:-5] for p in resources.files("kdnas.spaces").iterdir() if p.name.endswith(".yaml"))


def load_space(ref: str, teacher_config: PretrainedConfig) -> SearchSpace:
    """`default`, `mobilebert`, the name of a shipped YAML (kdnas/spaces/) or a path to a space YAML."""
    if ref == "default":
        return default_space(teacher_config)
    if ref == "mobilebert":
        return mobilebert_space(teacher_config)
    path = Path(ref)
    if path.is_file():
        text, where = path.read_text(encoding="utf-8"), str(path)
    elif ref in shipped_spaces():
        text, where = resources.files("kdnas.spaces").joinpath(f"{ref}.yaml").read_text(), f"space {ref}"
    else:
        raise SearchError(
            f"search space {ref!r}: not a file, and not one of {', '.join([*BUILTIN, *shipped_spaces()])}"
        )
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a search space is a mapping with `dimensions:` (see docs/search.md)")
    space = parse_space(data, teacher_config, where=where)
    if space.name == "custom":
        space.name = path.stem
    return space


def _vocab_values(
    raw: list[Any], key: str, problems: list[str], teacher_config: PretrainedConfig | None
) -> tuple[Any, ...]:
    """The `vocab` choices, checked (full, corpus, N below the teacher's vocabulary), in the order given."""
    t_vocab = int(teacher_config.vocab_size) if teacher_config is not None else None
    bad = [f"{v!r}: {why}" for v in raw if (why := check_choice(v, t_vocab))]
    if bad:
        problems.append(f"{key}: " + "; ".join(bad))
        return ()
    if not raw:
        problems.append(f"{key}: needs at least one value")
        return ()
    return tuple(dict.fromkeys(raw))


def _values(
    name: str, raw: Any, key: str, problems: list[str], teacher_config: PretrainedConfig | None = None
) -> tuple[Any, ...]:
    """A dimension spec (list, scalar, {choices}, or {min, max, step}) -> its values, checked."""
    if name == "vocab" and isinstance(raw, dict) and set(raw) - {"choices"}:
        problems.append(f"{key}: give the vocabulary as choices: [full, corpus, 16000] (no ranges)")
        return ()
    if isinstance(raw, dict):
        unknown = set(raw) - {"choices", "min", "max", "step"}
        if unknown:
            problems.append(f"{key}: unknown key(s) {sorted(unknown)}; use choices: [...] or min/max/step")
            return ()
        if "choices" in raw:
            if set(raw) != {"choices"}:
                problems.append(f"{key}: give either choices or min/max/step, not both")
            raw = raw["choices"]
        else:
            if "min" not in raw or "max" not in raw:
                problems.append(f"{key}: a range needs min and max (step defaults to 1)")
                return ()
            lo, hi, step = raw["min"], raw["max"], raw.get("step", 1)
            if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (lo, hi, step)):
                problems.append(f"{key}: min, max and step must be numbers")
                return ()
            if step <= 0 or hi < lo:
                problems.append(f"{key}: need step > 0 and max >= min (got min={lo}, max={hi}, step={step})")
                return ()
            n = int((hi - lo) / step + 1e-9) + 1
            if n > 10_000:
                problems.append(f"{key}: {n} values; use a larger step")
                return ()
            raw = [lo + i * step for i in range(n)]
            raw = [
                int(v) if all(isinstance(x, int) for x in (lo, step)) else round(float(v), 10) for v in raw
            ]
    if not isinstance(raw, list):
        raw = [raw]
    if not raw:
        problems.append(f"{key}: needs at least one value")
        return ()
    if name == "vocab":
        return _vocab_values(raw, key, problems, teacher_config)
    if name == "activation":
        bad = [v for v in raw if v not in ACTIVATIONS]
        if bad:
            problems.append(f"{key}: {bad} not in {', '.join(ACTIVATIONS)}")
        return tuple(dict.fromkeys(raw))
    if name == "ffn_ratio":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in raw):
            problems.append(f"{key}: ratios must be positive numbers, got {raw}")
            return ()
        return tuple(sorted({int(v) if float(v).is_integer() else float(v) for v in raw}))
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in raw):
        problems.append(f"{key}: values must be positive integers, got {raw}")
        return ()
    return tuple(sorted(set(raw)))


def parse_space(
    data: dict[str, Any], teacher_config: PretrainedConfig | None, *, where: str = "space"
) -> SearchSpace:
    """Build a SearchSpace from the YAML schema (docs/search.md); ConfigError lists every problem at once.

    `base: default|mobilebert` starts from that builtin space (needs the teacher config); `dimensions` then
    replace or add dimensions and `constraints` set rules.
    """
    problems: list[str] = []
    for k in data:
        if k not in _TOP_KEYS:
            close = difflib.get_close_matches(str(k), _TOP_KEYS, n=1)
            problems.append(
                f"{k}: unknown key"
                + (f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(_TOP_KEYS)}")
            )
    base = data.get("base")
    dims: dict[str, Dimension] = {}
    family = data.get("family", "teacher")
    if base is not None:
        if base not in BUILTIN:
            problems.append(f"base: {base!r} is not one of {', '.join(BUILTIN)}")
        elif teacher_config is None:
            problems.append("base: needs the teacher config")
        else:
            b = default_space(teacher_config) if base == "default" else mobilebert_space(teacher_config)
            dims = {d.name: d for d in b.dimensions}
            family = data.get("family", b.family)
    if family not in ("teacher", "mobilebert"):
        problems.append(f"family: {family!r} is not one of teacher, mobilebert")
    raw_dims = data.get("dimensions") or {}
    if not isinstance(raw_dims, dict):
        problems.append("dimensions: must be a mapping of dimension name -> choices or range")
        raw_dims = {}
    for name, raw in raw_dims.items():
        key = f"dimensions.{name}"
        if name not in DIMENSIONS:
            close = difflib.get_close_matches(str(name), DIMENSIONS, n=1)
            problems.append(
                f"{key}: unknown dimension"
                + (f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(DIMENSIONS)}")
            )
            continue
        vals = _values(name, raw, key, problems, teacher_config)
        if vals:
            for one, two in (("num_heads", "head_dim"), ("ffn_size", "ffn_ratio")):
                other = two if name == one else one if name == two else None
                if other and other in dims and other not in raw_dims:
                    dims.pop(other)  # overriding the base's head_dim with num_heads, say
            dims[name] = Dimension(name, vals)
    if "activation" not in dims:
        act = _teacher_arch(teacher_config).activation if teacher_config is not None else "gelu"
        dims["activation"] = Dimension("activation", (act if act in ACTIVATIONS else "gelu",))
    raw_cons = data.get("constraints") or {}
    cons: dict[str, Any] = {}
    if not isinstance(raw_cons, dict):
        problems.append("constraints: must be a mapping")
        raw_cons = {}
    for k, v in raw_cons.items():
        if k not in _CONSTRAINT_KEYS:
            close = difflib.get_close_matches(str(k), _CONSTRAINT_KEYS, n=1)
            problems.append(
                f"constraints.{k}: unknown constraint"
                + (f" (did you mean {close[0]}?)" if close else f"; known: {', '.join(_CONSTRAINT_KEYS)}")
            )
        elif v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
            problems.append(f"constraints.{k}: {v!r} must be a positive number")
        else:
            cons[k] = int(v) if k.startswith("head_dim") and v is not None else v
    if cons.get("head_dim_min") and cons.get("head_dim_max") and cons["head_dim_min"] > cons["head_dim_max"]:
        problems.append("constraints: head_dim_min > head_dim_max")
    if family == "mobilebert" and teacher_config is not None:
        _check_bert_vocab(teacher_config)
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    order = {n: i for i, n in enumerate(DIMENSIONS)}
    try:
        return SearchSpace(
            sorted(dims.values(), key=lambda d: order[d.name]),
            family=family,
            constraints=Constraints(**cons),
            teacher_config=teacher_config,
            name=str(data.get("name", "custom")),
        )
    except SearchError as e:
        raise ConfigError(f"{where}: {e}") from None
