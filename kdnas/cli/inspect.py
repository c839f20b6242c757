"""`kdnas inspect TEACHER [--arch ...]`: a teacher's shape and cost (params, GFLOPs, activation memory), and
optionally a student of the teacher's family side by side with the ratios.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from kdnas.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from kdnas.space.arch import Arch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="show a teacher's shape and cost (params, GFLOPs, activation memory); --arch compares a student",
        description="Show a teacher's family, layers, widths, vocabulary, parameters (total and "
        "non-embedding), matmul GFLOPs and peak inference activation memory at a sequence length. With --arch, "
        "a student of the teacher's family is shown next to it with the student/teacher ratios.",
    )
    p.add_argument("teacher", help="zoo teacher name (e.g. minilm-l6), local HF model dir, or hub id")
    p.add_argument(
        "--seq-len", type=int, default=128, help="sequence length for FLOPs and memory (default 128)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="batch size for FLOPs and memory (default 1)")
    p.add_argument(
        "--arch",
        default=None,
        help="a student to compare, e.g. L=4,H=256,A=4,F=1024 or L4-H256-A4-F1024-gelu",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--cache-dir", default=None, help="zoo cache dir (default $KDNAS_CACHE or ~/.cache/kdnas)")
    p.set_defaults(func=_run)


def describe(config: PretrainedConfig, *, seq_len: int, batch_size: int = 1) -> dict[str, Any]:
    """Shape and cost of `AutoModel.from_config(config)` as a flat dict (units in the keys)."""
    from kdnas.models.student import arch_of
    from kdnas.space.cost import config_activation_bytes, config_forward_flops, config_param_count

    arch = arch_of(config)
    pc = config_param_count(config)
    out: dict[str, Any] = {
        "family": str(config.model_type),
        "arch_id": arch.arch_id,
        "layers": arch.num_layers,
        "hidden": arch.hidden_size,
        "heads": arch.num_heads,
        "head_dim": arch.head_dim,
        "ffn": arch.ffn_size,
        "activation": arch.activation,
        "vocab": int(config.vocab_size),
        "max_positions": int(getattr(config, "max_position_embeddings", 0) or 0),
        "params": pc.total,
        "params_non_embedding": pc.non_embedding,
        "params_embedding": pc.embedding,
        "seq_len": seq_len,
        "batch_size": batch_size,
        "gflops": config_forward_flops(config, seq_len=seq_len, batch_size=batch_size) / 1e9,
        "activation_mb": config_activation_bytes(config, seq_len=seq_len, batch_size=batch_size) / 2**20,
    }
    if arch.family == "mobilebert":
        out["bottleneck"] = arch.bottleneck_size
        out["ffn_stacked"] = arch.num_ffn_stacked
    return out


_ROWS: list[tuple[str, str, str]] = [
    # (key, label, kind): kind "int" plain, "count" 22.7M, "float" 2.87, "" text
    ("family", "family", ""),
    ("layers", "layers", "int"),
    ("hidden", "hidden", "int"),
    ("heads", "heads", "int"),
    ("head_dim", "head dim", "int"),
    ("ffn", "FFN", "int"),
    ("bottleneck", "bottleneck", "int"),
    ("ffn_stacked", "FFNs stacked", "int"),
    ("activation", "activation", ""),
    ("vocab", "vocab", "int"),
    ("max_positions", "max positions", "int"),
    ("params", "params", "count"),
    ("params_non_embedding", "  non-embedding", "count"),
    ("params_embedding", "  embedding", "count"),
    ("gflops", "GFLOPs", "float"),
    ("activation_mb", "activation MB", "float"),
]


def _fmt(v: Any, kind: str) -> str:
    from kdnas.space.cost import human

    if v is None:
        return "-"
    if kind == "count":
        return human(v)
    if kind == "float":
        return f"{v:.3g}"
    return str(v)


def format_table(teacher: dict[str, Any], student: dict[str, Any] | None = None, *, name: str = "") -> str:
    """The text `kdnas inspect` prints."""
    seq = f"seq_len {teacher['seq_len']}, batch {teacher['batch_size']}"
    lines = [f"{name} ({teacher['family']}, {seq})" if name else seq]
    rows = [r for r in _ROWS if r[0] in teacher or (student and r[0] in student)]
    if student is None:
        for key, label, kind in rows:
            lines.append(f"{label:<16}{_fmt(teacher.get(key), kind)}")
        return "\n".join(lines)
    lines.append(f"{'':<16}{'teacher':>12}{'student':>12}{'ratio':>8}")
    for key, label, kind in rows:
        t, s = teacher.get(key), student.get(key)
        ratio = ""
        if (
            kind in ("int", "count", "float")
            and isinstance(t, int | float)
            and isinstance(s, int | float)
            and t
        ):
            ratio = f"{s / t:.3g}" if key not in ("vocab", "max_positions") or s != t else ""
        lines.append(f"{label:<16}{_fmt(t, kind):>12}{_fmt(s, kind):>12}{ratio:>8}")
    lines.append(f"{'arch':<16}{teacher['arch_id']}  ->  {student['arch_id']}")
    return "\n".join(lines)


def _student(config: PretrainedConfig, arch: Arch, *, seq_len: int, batch_size: int) -> dict[str, Any]:
    from kdnas.models.student import student_config

    return describe(student_config(config, arch), seq_len=seq_len, batch_size=batch_size)


def _run(args: argparse.Namespace) -> int:
    from kdnas.models.teacher import load_teacher_config
    from kdnas.space.arch import Arch

    problems = []
    if args.seq_len < 1:
        problems.append(f"--seq-len: {args.seq_len} must be a positive integer")
    if args.batch_size < 1:
        problems.append(f"--batch-size: {args.batch_size} must be a positive integer")
    if problems:
        raise ConfigError(problems)
    arch = Arch.parse(args.arch) if args.arch else None
    config = load_teacher_config(args.teacher, cache_dir=args.cache_dir)
    max_pos = int(getattr(config, "max_position_embeddings", 0) or 0)
    if max_pos and args.seq_len > max_pos:
        raise ConfigError(f"--seq-len: {args.seq_len} is longer than the teacher's {max_pos} positions")
    teacher = describe(config, seq_len=args.seq_len, batch_size=args.batch_size)
    student = _student(config, arch, seq_len=args.seq_len, batch_size=args.batch_size) if arch else None
    if args.json:
        print(json.dumps({"teacher": args.teacher, **teacher, "student": student}, indent=2))
    else:
        print(format_table(teacher, student, name=str(args.teacher)))
    return 0
