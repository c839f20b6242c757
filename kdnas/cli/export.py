"""`kdnas export RUN_DIR|MODEL_DIR --out DIR`: HF folder, ONNX fp32 / int8 (checked, timed) and a model card."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export students as HF folders + ONNX (fp32, int8) with a model card",
        description="Export a run's recommended students (RUN_DIR: one folder per student under --out) or one "
        "HF model folder (MODEL_DIR: written to --out). Each export holds the HF model and tokenizer (loadable "
        "with transformers.AutoModel alone), model.onnx and model-int8.onnx checked against PyTorch, their "
        "latency, export.json and README.md (the model card).",
    )
    p.add_argument("source", metavar="RUN_DIR|MODEL_DIR", help="a `kdnas run` dir or an HF model folder")
    p.add_argument("--out", required=True, metavar="DIR", help="where to write the export")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export dir")
    p.add_argument("--no-onnx", action="store_true", help="write only the HF folder (implies --no-int8)")
    p.add_argument("--no-int8", action="store_true", help="skip the int8 ONNX file")
    p.add_argument(
        "--no-timing", action="store_true", help="do not measure latency (faster; card has no timings)"
    )
    p.add_argument(
        "--threads", type=int, metavar="N", help="threads for timing (default: the run's target, or 2)"
    )
    p.add_argument("--seq-len", type=int, metavar="N", help="sequence length for timing (default 128)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from kdnas.export.onnx import ExportError
    from kdnas.export.run_dir import _run_config, export, is_model_dir, is_run_dir
    from kdnas.latency.config import TargetConfig

    src = Path(args.source)
    if not src.exists():
        raise ExportError(f"{src}: no such run dir or model dir")
    onnx = not args.no_onnx
    int8 = onnx and not args.no_int8
    run = not is_model_dir(src) and is_run_dir(src)  # neither: `export` says what to pass
    cfg = _run_config(src) if run else None
    target = cfg.target if cfg is not None else TargetConfig()
    if args.threads is not None:
        target.threads = args.threads
    if args.seq_len is not None:
        target.seq_lens = [args.seq_len]
    problems = target.check()
    if problems:
        raise ExportError("; ".join(problems))
    con = Console()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file load/save bars would drown the summary below
    kw = dict(onnx=onnx, int8=int8, overwrite=args.overwrite, target=target, measure=not args.no_timing)
    with con.status(f"exporting {src} (ONNX export and timing take a minute)"):
        results = export(src, args.out, **kw)  # type: ignore[arg-type]
    for r in results:
        con.print(f"[bold]{r.out_dir}[/bold]: {r.params_total / 1e6:.2f} M params "
                  f"({r.params_non_embedding / 1e6:.2f} M non-embedding)")  # fmt: skip
        for name, c in r.checks.items():
            mark = "ok" if c.passed else "[yellow]below threshold[/yellow]"
            con.print(
                f"  {name}: max abs diff {c.max_abs_diff:.2e}, mean cosine {c.mean_cosine:.5f} ({mark})"
            )
        for backend, f in r.latency.items():
            con.print(f"  {backend}: {f.median_ms:.2f} ms median (batch {f.batch_size}, seq {f.seq_len}, "
                      f"{f.threads} threads)")  # fmt: skip
        for w in r.warnings:
            con.print(f"  [yellow]warning:[/yellow] {w}")
    return 0
