"""`kdnas latency`: measure students / a teacher / model dirs per backend and shape, or calibrate a predictor.

`kdnas latency --teacher T --arch L=4,H=256,A=4,F=1024 --backend torch,onnxruntime --batch 1,32 --seq 128`
`kdnas latency calibrate --teacher T --space default --n 60`
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,32") from None
    if not out or any(x < 1 for x in out):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,32")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "latency",
        help="measure latency on this machine, or calibrate a latency predictor",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "action",
        nargs="?",
        choices=["measure", "calibrate"],
        default="measure",
        help="measure (default) or calibrate a predictor",
    )
    p.add_argument(
        "--teacher",
        help="zoo name, model dir or hub id; its students are built in its family and "
        "it is measured too (speed-up column)",
    )
    p.add_argument(
        "--arch", action="append", default=[], help="student arch, e.g. L=4,H=256,A=4,F=1024 (repeat)"
    )
    p.add_argument("--model", action="append", default=[], help="a saved model dir to measure (repeat)")
    p.add_argument(
        "--backend",
        default="torch",
        help="comma-separated: torch, torch-bf16, onnxruntime, onnxruntime-int8, torch-cuda, torch-cuda-bf16, torch-cuda-fp16 (default torch)",
    )
    p.add_argument("--batch", type=_ints, default=[1], help="batch sizes, e.g. 1,32 (default 1)")
    p.add_argument("--seq", type=_ints, default=[128], help="sequence lengths (default 128)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads to pin (default 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--attn", choices=["auto", "eager", "sdpa"], default="auto", help="torch attention (default auto)"
    )
    p.add_argument("--max-time", type=float, default=8.0, help="time cap per measurement in s (default 8)")
    p.add_argument("--rel-ci", type=float, default=0.03, help="stop at this relative CI width (default 0.03)")
    p.add_argument(
        "--timeout", type=float, default=180.0, help="kill a worker stuck this long (default 180 s)"
    )
    p.add_argument("--cache-dir", help="latency cache dir (default <kdnas cache>/latency)")
    p.add_argument("--no-cache", action="store_true", help="measure again, ignore and do not fill the cache")
    p.add_argument("--json", action="store_true", help="print results as JSON lines instead of a table")
    g = p.add_argument_group("calibrate")
    g.add_argument(
        "--space", default="default", help="search space (name or YAML) or 'default' (teacher dims)"
    )
    g.add_argument("--n", type=int, default=60, help="design archs to measure (default 60)")
    g.add_argument("--holdout", type=float, default=0.33, help="share of the design held out (default 0.33)")
    g.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)


def _target(args: argparse.Namespace, backend: str) -> Any:
    from kdnas.errors import ConfigError
    from kdnas.latency.config import TargetConfig

    t = TargetConfig(
        device=args.device,
        threads=args.threads,
        batch_size=args.batch[0],
        seq_lens=list(args.seq),
        backend=backend,
        attn_implementation=args.attn,
        rel_ci=args.rel_ci,
        max_time_s=args.max_time,
        timeout_s=args.timeout,
        cache_dir=args.cache_dir,
    )
    problems = t.check()
    if problems:
        raise ConfigError(problems)
    return t


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from kdnas.errors import LatencyError

    backends = [b.strip() for b in args.backend.split(",") if b.strip()]
    if not backends:
        raise LatencyError("--backend: give at least one backend, e.g. torch")
    from kdnas.latency.api import resolve_backend
    from kdnas.latency.backends import get_backend

    for b in backends:
        get_backend(resolve_backend(b, args.device))  # unknown names: LatencyError listing the known ones
    if args.action == "calibrate":
        return _calibrate(args, backends)
    return _measure(args, backends)


def _measure(args: argparse.Namespace, backends: list[str]) -> int:
    from rich.console import Console
    from rich.table import Table

    from kdnas.errors import LatencyError
    from kdnas.latency.api import load_teacher_config, measure_many
    from kdnas.latency.fingerprint import fingerprint
    from kdnas.latency.result import LatencyResult, Shape
    from kdnas.latency.spec import ModelSpec
    from kdnas.space.arch import Arch

    if not args.arch and not args.model and not args.teacher:
        raise LatencyError(
            "nothing to measure: give --arch L=4,H=256,A=4,F=1024, --model DIR and/or --teacher T"
        )
    archs = [Arch.parse(a) for a in args.arch]
    if args.teacher:
        tcfg = load_teacher_config(args.teacher)
    else:
        from transformers import BertConfig

        tcfg = BertConfig()  # bert-base-uncased's vocabulary and positions
    specs: list[ModelSpec] = []
    names: list[str] = []
    if args.teacher:
        specs.append(ModelSpec.for_config(tcfg))
        names.append(f"teacher {args.teacher}")
    for a in archs:
        specs.append(ModelSpec.for_arch(tcfg, a))
        names.append(a.describe())
    for m in args.model:
        specs.append(ModelSpec.for_dir(m))
        names.append(m)
    shapes = [Shape(b, s) for b in args.batch for s in args.seq]
    target = _target(args, backends[0])
    out = measure_many(
        specs,
        target,
        backends=backends,
        shapes=shapes,
        cache=False if args.no_cache else None,
        progress=_progress,
    )
    fp = fingerprint(target.threads, target.device)
    if args.json:
        for (i, b, sh), r in sorted(out.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2])):
            rec = r.to_dict() if isinstance(r, LatencyResult) else {"error": str(r)}
            rec.update(name=names[i], backend=b, shape=str(sh))
            print(json.dumps(rec))
        return 0 if all(isinstance(r, LatencyResult) for r in out.values()) else 1
    table = Table(caption=f"{fp.describe()} [fingerprint {fp.id}]")
    for col in ("model", "backend", "shape", "median ms", "p90 ms", "repeats", "±CI", "attn", "speed-up"):
        table.add_column(col, justify="right" if col not in ("model", "backend", "attn") else "left")
    failed = 0
    for i in range(len(specs)):
        for b in backends:
            for sh in shapes:
                r = out[(i, b, sh)]
                if not isinstance(r, LatencyResult):
                    failed += 1
                    table.add_row(names[i], b, str(sh), "[red]failed[/red]", "", "", "", "", "")
                    continue
                t = out.get((0, b, sh)) if args.teacher else None
                speed = f"{t.median_ms / r.median_ms:.2f}x" if isinstance(t, LatencyResult) and i > 0 else ""
                ci = f"{r.ci_rel / 2:.1%}" if r.ci_rel is not None else "n/a"
                table.add_row(
                    names[i],
                    b,
                    str(sh),
                    f"{r.median_ms:.2f}",
                    f"{r.p90_ms:.2f}",
                    f"{r.repeats}{' (cached)' if r.cached else ''}",
                    ci,
                    r.attn or "",
                    speed,
                )
    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print(table)
    for r in out.values():
        if not isinstance(r, LatencyResult):
            console.print(f"[red]error:[/red] {r}", markup=True, highlight=False)
    return 1 if failed else 0


def _calibrate(args: argparse.Namespace, backends: list[str]) -> int:
    from kdnas.errors import LatencyError
    from kdnas.latency.api import load_teacher_config
    from kdnas.latency.calibrate import calibrate

    if not args.teacher:
        raise LatencyError("calibrate needs --teacher (students are built in its family)")
    if len(backends) != 1 or len(args.batch) != 1 or len(args.seq) != 1:
        raise LatencyError("calibrate fits one target: give one --backend, one --batch and one --seq")
    tcfg = load_teacher_config(args.teacher)
    space: Any = args.space
    try:
        from kdnas.space.spaces import load_space
    except ImportError:  # no search-space module: `default` is a Latin hypercube over the teacher's dims
        if space != "default":
            raise LatencyError("search spaces are not available in this kdnas; use --space default") from None
    else:
        space = load_space(args.space, tcfg)
    target = _target(args, backends[0])
    cal = calibrate(
        tcfg,
        space,
        target,
        n=args.n,
        holdout_fraction=args.holdout,
        seed=args.seed,
        cache=False if args.no_cache else None,
        progress=_progress,
    )
    print(
        f"latency predictor for {args.teacher} on {backends[0]} b{args.batch[0]}/s{args.seq[0]}, "
        f"{args.threads} threads: {cal.accuracy.describe()}"
    )
    for line in cal.failed:
        print(f"  not measured: {line}", file=sys.stderr)
    if cal.path:
        print(f"saved to {cal.path}")
    return 0
