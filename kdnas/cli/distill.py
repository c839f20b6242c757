"""`kdnas distill --teacher T --arch L=4,H=256,A=4,F=1024 --corpus C --tokens N --out DIR`: distill one student.

Writes DIR/model (an HF folder: weights, config, tokenizer), DIR/train_log.jsonl, DIR/result.json and a
checkpoint; `--resume DIR` continues a killed run from its last checkpoint with the settings it was started with.
Under `torchrun --nproc-per-node W -m kdnas distill ...` the W processes share the steps (kdnas.distill.parallel);
rank 0 writes every file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdnas.errors import ConfigError, DistillError

if TYPE_CHECKING:
    from kdnas.distill.parallel import World

log = logging.getLogger(__name__)

ARGS_FILE = "cli_args.json"
RESULT_FILE = "result.json"
# options that define the run (saved at the start, reused by --resume)
_RUN_KEYS = ("teacher", "arch", "corpus", "tokens", "steps", "init", "seq_len", "seed", "mode", "config",
             "max_documents", "lr", "batch_size", "grad_accum", "cache_dir")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "distill",
        help="distill one student architecture from a teacher on a corpus",
        description="Distill a student of shape --arch from --teacher on --corpus for a token budget, with "
        "checkpoints; --resume DIR continues an interrupted run exactly.",
    )
    p.add_argument("--teacher", help="zoo name, local HF model dir or hub id (default: the config's)")
    p.add_argument("--arch", help="student shape, e.g. L=4,H=256,A=4,F=1024 (or an arch_id)")
    p.add_argument("--corpus", help="comma-separated corpus sources: zoo names or .txt/.jsonl/.csv files")
    p.add_argument("--tokens", type=int, help="token budget (default: distill.full_tokens of the config)")
    p.add_argument("--steps", type=int, help="budget in optimiser steps instead of tokens")
    p.add_argument("--out", help="output dir (must not hold another run)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--init", choices=("inherit", "random"), help="student init (default: the config's)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: the config's corpus.seq_len)")
    p.add_argument("--mode", choices=("standard", "flash"), default=None,
                   help="standard (default) or flash: AutoDistill's layer-by-layer transfer first")  # fmt: skip
    p.add_argument("--lr", type=float, help="peak learning rate (default: the config's)")
    p.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: the config's)")
    p.add_argument("--grad-accum", type=int,
                   help="micro-batches per optimiser step (default: the config's); under torchrun a multiple of "
                   "the number of processes")  # fmt: skip
    p.add_argument("--max-documents", type=int, help="read at most this many documents per corpus source")
    p.add_argument("--seed", type=int, help="seed for splits, init and training (default 0)")
    p.add_argument("--config", metavar="CONFIG", help="take distill/corpus/teacher settings from this config")
    p.add_argument("--cache-dir", help="zoo cache dir (default $KDNAS_CACHE or ~/.cache/kdnas)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--max-steps", type=int, help="stop (with a checkpoint) after this many steps in total")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run-defining options: the saved ones of --resume DIR, overridden by any given now."""
    given = {k: getattr(args, k) for k in _RUN_KEYS if getattr(args, k) is not None}
    if args.resume is None:
        return given
    saved_path = Path(args.resume) / ARGS_FILE
    if not saved_path.is_file():
        raise DistillError(
            f"--resume {args.resume}: no {ARGS_FILE} there; it is not a `kdnas distill` output dir"
        )
    try:
        saved = json.loads(saved_path.read_text())
    except ValueError as e:
        raise DistillError(f"{saved_path} is corrupt ({e}); delete the dir to start afresh") from None
    return {**saved, **given}


def _run(args: argparse.Namespace) -> int:
    from kdnas.distill import parallel

    w = parallel.init_from_env()
    try:
        code = _distill(args, w)
    except BaseException:
        parallel.shutdown()  # a failing process leaves at once; torchrun then stops the others
        raise
    # rank 0 still scores and saves after the other processes are done: every process waits for it here, so
    # all of them tear the process group down together, and then leave without the interpreter's teardown, where
    # gloo's threads aborted a finished run's rank 1 (parallel.leave).
    parallel.barrier(w)
    parallel.shutdown()
    if w.size > 1:
        parallel.leave(code)
    return code


def _distill(args: argparse.Namespace, w: World) -> int:
    import torch

    from kdnas import config as kconfig
    from kdnas.distill import parallel

    if args.resume and args.out and Path(args.out) != Path(args.resume):
        raise ConfigError("--out and --resume name different dirs; --resume DIR writes into DIR")
    out_dir = Path(args.resume or args.out or "")
    if not (args.resume or args.out):
        raise ConfigError("--out: give an output dir (or --resume DIR to continue a run)")
    if not args.resume and (out_dir / ARGS_FILE).exists():
        raise DistillError(
            f"{out_dir} already holds a distillation run; pass --resume {out_dir} or another --out"
        )
    opts = _run_options(args)
    if not opts.get("arch"):
        raise ConfigError("--arch: give the student shape, e.g. L=4,H=256,A=4,F=1024")
    if opts.get("tokens") is not None and opts.get("steps") is not None:
        raise ConfigError("--tokens / --steps: give one budget, not both")
    if args.threads:
        torch.set_num_threads(args.threads)

    run = kconfig.load(opts.get("config"))
    dcfg = run.distill
    changes: dict[str, Any] = {}
    for key in ("init", "lr", "batch_size", "grad_accum"):
        if opts.get(key) is not None:
            changes[key] = opts[key]
    dcfg = dataclasses.replace(dcfg, **changes)
    ccfg = run.corpus
    cchanges: dict[str, Any] = {}
    if opts.get("corpus"):
        cchanges["sources"] = [s.strip() for s in str(opts["corpus"]).split(",") if s.strip()]
    if opts.get("seq_len"):
        cchanges["seq_len"] = opts["seq_len"]
    if opts.get("max_documents"):
        cchanges["max_documents"] = opts["max_documents"]
    ccfg = dataclasses.replace(ccfg, **cchanges)
    problems = [f"distill.{p}" for p in dcfg.check()] + [f"corpus.{p}" for p in ccfg.check()]
    if problems:
        raise ConfigError(problems)
    seed = int(opts.get("seed") or 0)
    teacher_ref = opts.get("teacher") or run.teacher.name

    parallel.check_accum(w, dcfg.grad_accum)
    parallel.barrier(w)  # every process has checked the dir before rank 0 writes into it
    if w.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if not args.resume:
            (out_dir / ARGS_FILE).write_text(json.dumps(opts, indent=1))

    from kdnas.data.corpus import build_corpus
    from kdnas.distill import distill, heldout_kd_loss
    from kdnas.models.teacher import load_teacher
    from kdnas.space.arch import Arch

    arch = Arch.parse(str(opts["arch"]))
    teacher = load_teacher(
        teacher_ref, cache_dir=opts.get("cache_dir"), with_mlm_head="logits" in dcfg.losses,
        allow_pickle=run.teacher.allow_pickle,
    )  # fmt: skip
    splits = build_corpus(ccfg, teacher.tokenizer, seed=seed, cache_dir=opts.get("cache_dir"))
    log.info("corpus: %d train rows, %d held-out rows of %d tokens", len(splits.train.input_ids),
             len(splits.heldout.input_ids), ccfg.seq_len)  # fmt: skip
    from kdnas.models.build import StudentBuilder

    student = StudentBuilder.from_config(teacher, dcfg, seed=seed, data=splits.proxy).build(arch)
    steps = opts.get("steps")
    tokens = None if steps is not None else (opts.get("tokens") or dcfg.full_tokens)
    result = distill(
        teacher, student, splits.train, dcfg, tokens=tokens, steps=steps, mode=opts.get("mode") or "standard",
        teacher_cache=out_dir / "teacher_cache", out_dir=out_dir, resume=bool(args.resume), seed=seed,
        progress=not args.no_progress, stop_after_steps=args.max_steps,
    )  # fmt: skip
    if not w.is_main:  # rank 0 reports and writes the results
        return 1 if result.failed else 0
    summary: dict[str, Any] = {
        "teacher": teacher.name, "arch": arch.to_dict(), "arch_id": arch.arch_id, "init": dcfg.init,
        **result.to_dict(history=False),
    }  # fmt: skip
    if result.failed:
        (out_dir / RESULT_FILE).write_text(json.dumps(summary, indent=1, default=str))
        raise DistillError(f"distillation failed: {result.failed}; lower distill.lr or check the data")
    if result.steps < result.total_steps:
        (out_dir / RESULT_FILE).write_text(json.dumps(summary, indent=1, default=str))
        print(f"stopped after {result.steps}/{result.total_steps} steps; continue with --resume {out_dir}")
        return 0
    summary["heldout_kd_loss"] = heldout_kd_loss(
        teacher, student, splits.heldout, dcfg, projections=result.distiller
    )
    shutil.rmtree(out_dir / "teacher_cache", ignore_errors=True)  # only needed while the run can resume
    model_dir = out_dir / "model"
    from kdnas.stages.distill import save_student

    save_student(student, teacher.tokenizer, result.distiller, model_dir)  # as `kdnas run` saves its students
    summary["model_dir"] = str(model_dir)
    (out_dir / RESULT_FILE).write_text(json.dumps(summary, indent=1, default=str))
    print(
        f"distilled {arch.arch_id} from {teacher.name}: {result.steps} steps, {result.tokens} tokens, "
        f"{result.tokens_per_s:.0f} tokens/s, final loss {result.final_loss:.4f}, held-out KD loss "
        f"{summary['heldout_kd_loss']:.4f}\nmodel: {model_dir}"
    )
    return 0
