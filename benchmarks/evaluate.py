"""The bar searched students must beat: teacher minilm-l6 and two manual baselines on real tasks.

For each task (default wiki-vital-en and bbc-news), under the same protocol (lr grid chosen on dev, early
stopping, several seeds, test mean ± std):
  - the teacher;
  - every-other-layer: the teacher cut to layers 0, 2, 4 (DistilBERT-style init), fine-tuned directly;
  - tinybert-4L-312H: the TinyBERT shape (4 layers, hidden 312, 12 heads, FFN 1200) distilled from the teacher
    with `kdnas.distill.distill` for `--distill-tokens` (the pipeline's full budget by default), or loaded from
    `--tinybert-dir` when already distilled.
Then retention (score / teacher score), speed-up (teacher latency / model latency measured by `kdnas.latency`
on the default target: CPU, 2 threads, batch 1, seq 128, torch) and params ratio.

    python benchmarks/evaluate.py                 # the full run, on a quiet machine (hours on 2 CPU cores)
    python benchmarks/evaluate.py --quick         # checks the script (small slices, 1 seed; not a measurement)

Record the printed table, with the machine, in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kdnas.data.tasks import Task, cap_split
from kdnas.evaluate.baselines import EVERY_OTHER_LAYER, TINYBERT, baseline_archs, every_other_layer
from kdnas.evaluate.config import EvaluateConfig
from kdnas.evaluate.encoder import Encoder, load_encoder
from kdnas.evaluate.retention import retention_table
from kdnas.evaluate.runner import evaluate_encoder, load_tasks


def _list(s: str, kind: type) -> list[Any]:
    return [kind(x) for x in s.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: small slices, 1 seed, tiny distillation")
    p.add_argument("--teacher", default="minilm-l6")
    p.add_argument("--tasks", default="wiki-vital-en,bbc-news")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--lrs", default=None, help="lr grid (default: the evaluate config's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-len", type=int, default=None)
    p.add_argument(
        "--max-train", type=int, default=None, help="cap on train examples per task (default: all)"
    )
    p.add_argument("--max-eval", type=int, default=None, help="cap on dev and test examples (default: all)")
    p.add_argument("--tinybert-dir", help="an already distilled TinyBERT-shape student (skips distillation)")
    p.add_argument(
        "--distill-tokens", type=int, default=None, help="distillation budget (default: full_tokens)"
    )
    p.add_argument("--corpus", default="wiki-vital-en", help="distillation corpus (zoo name or file)")
    p.add_argument("--no-latency", action="store_true", help="skip latency (no speed-ups)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for fine-tuning")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/benchmarks/evaluate", help="dir for results.json and table.md")
    return p.parse_args(argv)


def _cap_eval(tasks: list[Task], n: int | None) -> list[Task]:
    if n is None:
        return tasks
    for t in tasks:
        t.dev, t.test = cap_split(t.dev, n), cap_split(t.test, n)
    return tasks


def tinybert_student(
    teacher: Encoder, args: argparse.Namespace, quick: bool
) -> tuple[Encoder, dict[str, Any]]:
    """The TinyBERT-shape baseline: loaded, or distilled now with the pipeline's distillation defaults."""
    if args.tinybert_dir:
        return load_encoder(args.tinybert_dir, name=TINYBERT), {"source": args.tinybert_dir}
    from kdnas.data.config import CorpusConfig
    from kdnas.data.corpus import build_corpus
    from kdnas.distill import DistillConfig, distill
    from kdnas.models.student import build_student

    dcfg = DistillConfig()
    arch = baseline_archs(teacher.model.config)[TINYBERT]
    if dcfg.init == "inherit":
        from kdnas.models.inherit import inherit_student

        student = inherit_student(teacher.model, arch, layer_selection=dcfg.layer_selection,
                                  importance="magnitude", seed=0)  # fmt: skip
    else:
        student = build_student(teacher.model.config, arch, seed=0)
    ccfg = CorpusConfig(sources=[args.corpus], max_documents=400 if quick else None)
    corpus = build_corpus(ccfg, teacher.tokenizer, seed=0)
    tokens = args.distill_tokens or (20_000 if quick else dcfg.full_tokens)
    print(f"distilling {TINYBERT} ({arch.describe()}, init {dcfg.init}) on {args.corpus} for {tokens:,} tokens",
          flush=True)  # fmt: skip
    t0 = time.time()
    res = distill(teacher.model, student, corpus.train, dcfg, tokens=tokens, progress=not quick)
    info = {"tokens": res.tokens, "steps": res.steps, "final_loss": res.final_loss, "seconds": round(time.time() - t0, 1),
            "init": dcfg.init, "failed": res.failed}  # fmt: skip
    if res.failed:
        sys.exit(f"distilling {TINYBERT} failed: {res.failed}")
    return Encoder(model=student.eval(), tokenizer=teacher.tokenizer, name=TINYBERT), info


def latencies(
    teacher: Encoder, names: dict[str, Any], quick: bool
) -> tuple[dict[str, float], dict[str, Any]]:
    """Latency (median ms) of the teacher and each baseline arch on the default target."""
    from kdnas.errors import KdnasError
    from kdnas.latency.api import measure_arch, measure_teacher
    from kdnas.latency.config import TargetConfig

    target = TargetConfig(max_time_s=1.0) if quick else TargetConfig()
    out: dict[str, float] = {}
    try:
        out[teacher.name] = measure_teacher(teacher.model.config, target).median_ms
        for name, arch in names.items():
            out[name] = measure_arch(teacher.model.config, arch, target).median_ms
    except KdnasError as e:
        print(f"latency not measured ({e}); speed-ups left out", file=sys.stderr)
    return out, asdict(target)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = EvaluateConfig()
    cfg = EvaluateConfig(
        tasks=_list(args.tasks, str),
        seeds=[0] if args.quick else _list(args.seeds, int),
        lrs=_list(args.lrs, float) if args.lrs else ([5e-4] if args.quick else base.lrs),
        epochs=args.epochs or (1 if args.quick else base.epochs),
        max_len=args.max_len or (64 if args.quick else base.max_len),
        max_train_examples=args.max_train or (64 if args.quick else None),
        threads=args.threads, device=args.device,
    )  # fmt: skip
    problems = cfg.check()
    if problems:
        sys.exit("bad settings: " + "; ".join(problems))
    max_eval = args.max_eval or (96 if args.quick else None)
    t_start = time.time()
    tasks = _cap_eval(load_tasks(cfg.tasks, max_train=cfg.max_train_examples), max_eval)
    for t in tasks:
        print(t.describe(), flush=True)

    teacher = load_encoder(args.teacher)
    reports = [evaluate_encoder(teacher, tasks, cfg)]
    eol = Encoder(model=every_other_layer(teacher.model), tokenizer=teacher.tokenizer, name=EVERY_OTHER_LAYER)
    reports.append(evaluate_encoder(eol, tasks, cfg))
    tiny, distill_info = tinybert_student(teacher, args, args.quick)
    reports.append(evaluate_encoder(tiny, tasks, cfg))

    archs = baseline_archs(teacher.model.config)
    lat, target = ({}, None) if args.no_latency else latencies(teacher, archs, args.quick)
    table = retention_table(reports[0], reports[1:], latency_ms=lat)
    table.notes.append(
        f"Teacher {args.teacher}; seeds {cfg.seeds}; lrs {cfg.lrs}; epochs {cfg.epochs}; max_len {cfg.max_len}; "
        f"max_train {cfg.max_train_examples}; max_eval {max_eval}; {TINYBERT} distillation: {distill_info}."
    )
    if lat:
        assert target is not None
        where = f"{target['device']}, {target['threads']} threads, batch {target['batch_size']}, " \
                f"seq {target['seq_lens'][0]}, {target['backend']}"  # fmt: skip
        table.notes.append("Latency (median ms): " + ", ".join(f"{k} {v:.2f}" for k, v in lat.items())
                           + f" on {where}.")  # fmt: skip
    md = table.to_markdown()
    print()
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": sys.version.split()[0]},
        "quick": args.quick, "config": asdict(cfg), "max_eval": max_eval, "latency_ms": lat, "target": target,
        "distill": distill_info, "reports": [r.to_dict() for r in reports], "table": table.to_dict(),
        "seconds": round(time.time() - t_start, 1),
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    (out / "table.md").write_text(md)
    print(f"wrote {out / 'results.json'} and {out / 'table.md'} ({time.time() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
